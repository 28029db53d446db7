//! Four validators replicate the vouch ledger under commonware simplex in the
//! deterministic runtime: same finalized chain everywhere, no fork, every transaction
//! applied once, supply conserved; one validator down; lossy, jittery links.
//! A failing seed prints how to replay it.

use std::time::Duration;
use vouch_sim::jobs::{slashes, Behaviour, SimProvider};
use vouch_sim::{check_no_fork, simulate, vouch_key, Outcome, SimPlan};
use vouch_state::{sign_tx, Genesis, GenesisAccount, Params};
use vouch_state::{Event, GenesisModel, GenesisProvider};
use vouch_types::tx::{Action, Tx};
use vouch_types::Hash32;

fn sender(i: u64) -> vouch_crypto::SigningKey {
    let mut b = [7u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    vouch_crypto::SigningKey::from_bytes(&b).unwrap()
}

fn setup(n: usize, senders: u64, per_sender: u64) -> (Genesis, Vec<Tx>) {
    let mut accounts: Vec<GenesisAccount> = (0..senders)
        .map(|i| GenesisAccount {
            address: sender(i).public(),
            balance: 1_000_000_000,
            stake: 0,
        })
        .collect();
    for i in 0..n {
        accounts.push(GenesisAccount {
            address: vouch_key(i).public(),
            balance: 0,
            stake: 1_000,
        });
    }
    let g = Genesis {
        chain_name: "bft-sim".into(),
        time: 0,
        params: Params::default(),
        accounts,
        validators: (0..n).map(|i| vouch_key(i).public()).collect(),
        models: vec![],
        providers: vec![],
    };
    let chain = g.chain_id();
    let mut txs = Vec::new();
    for nonce in 0..per_sender {
        for s in 0..senders {
            txs.push(sign_tx(
                &sender(s),
                &chain,
                nonce,
                Params::default().min_tx_fee,
                Action::Transfer {
                    to: sender((s + 1) % senders).public(),
                    amount: 1 + nonce,
                },
            ));
        }
    }
    (g, txs)
}

fn plan(seed: u64, txs: Vec<Tx>) -> SimPlan {
    SimPlan {
        seed,
        validators: 4,
        offline: vec![],
        liars: vec![],
        equivocators: vec![],
        crash: None,
        partition: None,
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        success: 1.0,
        txs,
        target_height: 12,
        timeout: Duration::from_secs(120),
        providers: vec![],
        lying_auditors: vec![],
        jobs: 0,
    }
}

fn check(g: &Genesis, p: &SimPlan, total_txs: usize) -> Outcome {
    let replay = format!(
        "replay: seed {} (validators {}, offline {:?}, partition {:?}, crash {:?}, success {})",
        p.seed, p.validators, p.offline, p.partition, p.crash, p.success
    );
    let out = simulate(g, p);
    check_no_fork(&out).unwrap_or_else(|e| panic!("{e}; {replay}"));
    let expected = g.state().unwrap().total_value();
    for (i, f) in out.finalized.iter().enumerate() {
        let Some(f) = f else { continue };
        let h = f.last().map(|x| x.0).unwrap_or(0);
        assert!(h >= p.target_height, "validator {i} reached {h}; {replay}");
        let st = out.states[i].as_ref().unwrap();
        assert_eq!(
            st.total_value() + u128::from(st.supply.burned),
            expected,
            "supply; {replay}"
        );
        // Every transaction of the plan applied exactly once, and nothing twice (the
        // actors' commits, verdicts and votes come on top when jobs run).
        let chain = g.chain_id();
        let mut seen = std::collections::HashSet::new();
        for b in out.blocks[i].as_ref().unwrap() {
            for t in &b.txs {
                assert!(seen.insert(t.id(&chain)), "a tx applied twice; {replay}");
            }
        }
        assert!(
            p.txs.iter().all(|t| seen.contains(&t.id(&chain))),
            "a tx never applied; {replay}"
        );
        if p.providers.is_empty() {
            assert_eq!(seen.len(), total_txs, "every tx applied once; {replay}");
        }
        // Every finalized block carries the engine's certificate, and the offline light
        // check (which rebuilds the engine's vote message) accepts it against the
        // genesis validator set: receipts committed under BFT verify on a laptop.
        let validators = &g.validators;
        for b in out.blocks[i].as_ref().unwrap() {
            let signers = vouch_verify::inclusion::check_certificate(
                &b.header,
                &b.certificate,
                Some(validators),
            )
            .unwrap_or_else(|e| panic!("validator {i} block {}: {e}; {replay}", b.header.height));
            assert!(b.certificate.simplex.is_some());
            assert!(signers.len() * 3 > validators.len() * 2);
        }
    }
    let liars: Vec<_> = p.liars.iter().map(|i| vouch_key(*i).public()).collect();
    for (i, f) in out.finalized.iter().enumerate() {
        let Some(f) = f else { continue };
        for x in f {
            assert!(
                !liars.contains(&x.4),
                "validator {i} finalized a lying proposer's block at height {}; {replay}",
                x.0
            );
        }
    }
    let refused: u64 = out
        .refused
        .iter()
        .enumerate()
        .filter(|(i, _)| !p.liars.contains(i))
        .map(|(_, r)| r)
        .sum();
    if p.liars.is_empty() {
        assert_eq!(refused, 0, "honest blocks refused; {replay}");
    } else {
        assert!(
            refused > 0,
            "the liar's blocks were never refused; {replay}"
        );
    }
    eprintln!(
        "seed {}: height {:?}, simulated {:?}",
        p.seed,
        out.finalized
            .iter()
            .map(|f| f.as_ref().map(|f| f.len()))
            .collect::<Vec<_>>(),
        out.elapsed
    );
    out
}

#[test]
fn four_validators_agree_on_the_ledger() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    for seed in 0..3 {
        check(&g, &plan(seed, txs.clone()), n);
    }
}

#[test]
fn one_validator_down_the_others_finalize() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    for seed in 0..2 {
        let mut p = plan(seed, txs.clone());
        p.offline = vec![(seed as usize) % 4];
        check(&g, &p, n);
    }
}

#[test]
fn lossy_links_still_agree() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    let mut p = plan(11, txs);
    p.success = 0.9;
    p.jitter = Duration::from_millis(15);
    p.timeout = Duration::from_secs(300);
    check(&g, &p, n);
}

/// Many seeds: 20% of messages lost, 30 ms jitter, one validator offline in half the runs.
/// `SIM_SEEDS=N` runs more (the slow profile).
#[test]
fn many_seeds_lossy_and_crashed() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    for seed in 100..100 + seeds {
        let mut p = plan(seed, txs.clone());
        p.success = 0.8;
        p.jitter = Duration::from_millis(30);
        p.timeout = Duration::from_secs(600);
        if seed % 2 == 0 {
            p.offline = vec![(seed as usize / 2) % 4];
        }
        check(&g, &p, n);
    }
}

/// A validator proposing blocks whose state root the transactions do not produce: the
/// others refuse them (their views are skipped), nothing it proposed is finalized, and the
/// honest chain goes on with every transaction applied once.
#[test]
fn a_lying_proposer_is_refused() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    for seed in 0..3 {
        let mut p = plan(200 + seed, txs.clone());
        p.liars = vec![seed as usize];
        check(&g, &p, n);
    }
}

/// One validator cut off from the others for 8 s (as if its machine dropped off the
/// network): the other three keep finalizing, and once it is back it catches up to the
/// same chain, fetching the blocks it missed from its peers. (A real process killed and
/// restarted from its journal is the multi-process test in crates/cli/tests/network.rs.)
#[test]
fn an_isolated_validator_rejoins_and_catches_up() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    for seed in 0..3u64 {
        let mut p = plan(300 + seed, txs.clone());
        let who = seed as usize % 4;
        p.partition = Some((
            vec![who],
            Duration::from_millis(300),
            Duration::from_secs(8),
        ));
        p.target_height = 20;
        p.timeout = Duration::from_secs(300);
        check(&g, &p, n);
    }
}

/// Two validators cut off from the other two: no side has a quorum, so nothing is
/// finalized on either side (no fork), and after the partition heals all four go on
/// finalizing the same chain.
#[test]
fn a_partition_heals_without_a_fork() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    for seed in 0..2u64 {
        let mut p = plan(400 + seed, txs.clone());
        p.partition = Some((
            vec![0, 1],
            Duration::from_millis(500),
            Duration::from_secs(6),
        ));
        p.target_height = 20;
        p.timeout = Duration::from_secs(300);
        check(&g, &p, n);
    }
}

fn provider_key(i: usize) -> vouch_crypto::SigningKey {
    let mut b = [0x9cu8; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    vouch_crypto::SigningKey::from_bytes(&b).unwrap()
}

/// A network with `behaviours.len()` providers of one model and `per_provider` jobs for
/// each, every job audited (rate 1), short challenge and dispute windows.
fn setup_jobs(behaviours: &[Behaviour], per_provider: u64) -> (Genesis, Vec<Tx>, Vec<SimProvider>) {
    let n = 4;
    let model = Hash32::digest("vouch sim model", &[b"smol"]);
    let author = sender(999);
    let params = Params {
        min_provider_stake: 1_000,
        audit_rate_ppm: 1_000_000,
        challenge_window_ms: 5_000,
        dispute_period_ms: 5_000,
        job_timeout_ms: 30_000,
        ..Params::default()
    };
    let mut accounts: Vec<GenesisAccount> = (0..n)
        .map(|i| GenesisAccount {
            address: vouch_key(i).public(),
            balance: 1_000,
            stake: 100_000,
        })
        .collect();
    let clients = 3u64;
    for c in 0..clients {
        accounts.push(GenesisAccount {
            address: sender(c).public(),
            balance: 1_000_000_000,
            stake: 0,
        });
    }
    let mut providers = Vec::new();
    let mut gp = Vec::new();
    for (i, b) in behaviours.iter().enumerate() {
        let k = provider_key(i);
        accounts.push(GenesisAccount {
            address: k.public(),
            balance: 1_000,
            stake: 100_000,
        });
        gp.push(GenesisProvider {
            address: k.public(),
            models: vec![model],
            price_per_token: 3,
            capacity: 64,
            endpoint: "sim".into(),
        });
        providers.push(SimProvider {
            key: k.to_bytes(),
            behaviour: *b,
        });
    }
    accounts.push(GenesisAccount {
        address: author.public(),
        balance: 0,
        stake: 0,
    });
    let g = Genesis {
        chain_name: "bft-sim-jobs".into(),
        time: 0,
        params: params.clone(),
        accounts,
        validators: (0..n).map(|i| vouch_key(i).public()).collect(),
        models: vec![GenesisModel {
            id: model,
            name: "smol".into(),
            version: "1".into(),
            parent: None,
            licence: "apache-2.0".into(),
            author: author.public(),
            royalty_bps: 1_000,
        }],
        providers: gp,
    };
    let chain = g.chain_id();
    let mut txs = Vec::new();
    let mut nonce = vec![0u64; clients as usize];
    let mut k = 0u64;
    for round in 0..per_provider {
        for i in 0..behaviours.len() {
            let c = (k % clients) as usize;
            k += 1;
            txs.push(sign_tx(
                &sender(c as u64),
                &chain,
                nonce[c],
                params.min_tx_fee,
                Action::SubmitJob {
                    model,
                    provider: provider_key(i).public(),
                    input_hash: Hash32::digest(
                        "vouch sim input",
                        &[&round.to_le_bytes(), &(i as u64).to_le_bytes()],
                    ),
                    max_tokens: 16,
                    max_fee: 3 * (8 + 16),
                },
            ));
            nonce[c] += 1;
        }
    }
    (g, txs, providers)
}

/// Jobs and the providers that served them, from the escrow transactions.
fn jobs_by_provider(g: &Genesis, txs: &[Tx]) -> Vec<(Hash32, Hash32)> {
    let chain = g.chain_id();
    txs.iter()
        .filter_map(|t| match &t.action {
            Action::SubmitJob { provider, .. } => Some((t.id(&chain), *provider)),
            _ => None,
        })
        .collect()
}

/// Cheating providers of every kind (substituted model, edited output, truncated
/// answer, ignored seed, inflated token count, withheld receipt) next to an honest one,
/// every job audited: every cheating job ends with its provider slashed (after its
/// dispute is voted down), the honest provider is never slashed and is paid for every
/// job, and the chain stays one chain with supply conserved (slashes burned).
#[test]
fn cheating_providers_are_slashed_and_honest_ones_are_not() {
    let mut behaviours = vec![Behaviour::Honest];
    behaviours.extend(Behaviour::CHEATS);
    let (g, txs, providers) = setup_jobs(&behaviours, 2);
    let jobs = jobs_by_provider(&g, &txs);
    let honest = provider_key(0).public();
    for seed in 0..3u64 {
        let mut p = plan(500 + seed, txs.clone());
        p.providers = providers.clone();
        p.jobs = jobs.len();
        p.target_height = 5;
        p.timeout = Duration::from_secs(300);
        if seed == 2 {
            // An auditor down: its turns fall to the others.
            p.offline = vec![1];
        }
        let n = txs.len();
        let out = check(&g, &p, n);
        for (i, ev) in out.events.iter().enumerate() {
            let Some(ev) = ev else { continue };
            let replay = format!("replay: seed {} validator {i}", p.seed);
            let slashed = slashes(ev);
            for (job, provider) in &jobs {
                let hit = slashed.iter().any(|(j, o)| j == job && o == provider);
                let settled_honest = ev.iter().any(|e| {
                    matches!(e, Event::JobSettled { job: j, provider_amount, .. } if j == job && *provider_amount > 0)
                });
                if *provider == honest {
                    assert!(
                        !hit && settled_honest,
                        "honest job {job} not paid; {replay}"
                    );
                } else {
                    assert!(
                        hit && !settled_honest,
                        "cheating job {job} not slashed; {replay}"
                    );
                }
            }
            assert!(
                slashed.iter().all(|(_, o)| *o != honest),
                "honest provider slashed; {replay}"
            );
            // Cheaters disputed and lost.
            assert!(ev.iter().any(|e| matches!(e, Event::JobDisputed { .. })));
        }
    }
}

/// A validator that fails every job it audits: the honest providers dispute, the other
/// validators re-check and vote them innocent, the lying auditor is slashed for each
/// false accusation, and no honest provider is ever slashed.
#[test]
fn a_lying_auditor_is_outvoted_and_slashed() {
    let (g, txs, providers) = setup_jobs(&[Behaviour::Honest, Behaviour::Honest], 4);
    let jobs = jobs_by_provider(&g, &txs);
    let mut accusations = 0;
    for seed in 0..2u64 {
        // The liar is the validator whose turn it is to audit one of the jobs.
        let who = vouch_sim::jobs::assigned_auditor(&jobs[seed as usize].0, 4);
        let liar = vouch_key(who).public();
        let mut p = plan(600 + seed, txs.clone());
        p.providers = providers.clone();
        p.lying_auditors = vec![who];
        p.jobs = jobs.len();
        p.target_height = 5;
        p.timeout = Duration::from_secs(300);
        let out = check(&g, &p, txs.len());
        let ev = out.events[0].as_ref().unwrap();
        let false_fails = ev
            .iter()
            .filter(
                |e| matches!(e, Event::JobAudited { auditor, pass: false, .. } if *auditor == liar),
            )
            .count();
        let slashed = slashes(ev);
        assert_eq!(
            slashed.iter().filter(|(_, o)| *o == liar).count(),
            false_fails,
            "seed {}: every false accusation costs the liar",
            p.seed
        );
        assert_eq!(
            slashed.len(),
            false_fails,
            "seed {}: only the liar is slashed",
            p.seed
        );
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::JobSettled { .. }))
                .count(),
            jobs.len(),
            "seed {}: every job paid",
            p.seed
        );
        accusations += false_fails;
    }
    assert!(accusations > 0, "the liar never audited a job");
}

/// A leader that signs two different valid blocks for the same view, one for the next
/// validator and one for the other two: neither side can finalize the split alone, the
/// honest validators end on one chain (no fork, every transaction once), and the network
/// keeps finalizing with the equivocator in it.
#[test]
fn an_equivocating_leader_forks_nothing() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    let mut conflicting = 0;
    for seed in 0..3u64 {
        let mut p = plan(700 + seed, txs.clone());
        p.equivocators = vec![seed as usize % 4];
        p.target_height = 16;
        p.timeout = Duration::from_secs(300);
        let out = check(&g, &p, n);
        eprintln!(
            "seed {}: {} conflicting proposals",
            p.seed, out.equivocations
        );
        conflicting += out.equivocations;
    }
    assert!(conflicting > 0, "the equivocator never led a view");
}

/// A validator process killed and restarted: its engine and ledger tasks stop (messages
/// to it are lost while it is down), the other three keep finalizing, and the new
/// instance recovers its votes from its journal and its ledger from its store, catches up
/// from its peers, and ends on the same chain.
#[test]
fn a_crashed_validator_restarts_and_catches_up() {
    let (g, txs) = setup(4, 8, 5);
    let n = txs.len();
    for seed in 0..3u64 {
        let mut p = plan(800 + seed, txs.clone());
        p.crash = Some((
            (seed as usize + 1) % 4,
            Duration::from_millis(400),
            Duration::from_secs(6),
        ));
        p.target_height = 20;
        p.timeout = Duration::from_secs(300);
        let out = check(&g, &p, n);
        let (died, back, others) = out.crash_heights;
        assert_eq!(died, back, "seed {}: a dead validator finalized", p.seed);
        assert!(
            others > back,
            "seed {}: the others stalled while it was down",
            p.seed
        );
        eprintln!(
            "seed {}: died at height {died}, the others at {others} when it came back",
            p.seed
        );
    }
}
