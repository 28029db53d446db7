//! Four validators replicate the vouch ledger under commonware simplex in the
//! deterministic runtime: same finalized chain everywhere, no fork, every transaction
//! applied once, supply conserved; one validator down; lossy, jittery links.
//! A failing seed prints how to replay it.

use std::time::Duration;
use vouch_sim::{check_no_fork, simulate, vouch_key, SimPlan};
use vouch_state::{sign_tx, Genesis, GenesisAccount, Params};
use vouch_types::tx::{Action, Tx};

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
        partition: None,
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        success: 1.0,
        txs,
        target_height: 12,
        timeout: Duration::from_secs(120),
    }
}

fn check(g: &Genesis, p: &SimPlan, total_txs: usize) {
    let replay = format!(
        "replay: seed {} (validators {}, offline {:?}, partition {:?}, success {})",
        p.seed, p.validators, p.offline, p.partition, p.success
    );
    let out = simulate(g, p);
    check_no_fork(&out).unwrap_or_else(|e| panic!("{e}; {replay}"));
    let expected = g.state().unwrap().total_value();
    for (i, f) in out.finalized.iter().enumerate() {
        let Some(f) = f else { continue };
        let h = f.last().map(|x| x.0).unwrap_or(0);
        assert!(h >= p.target_height, "validator {i} reached {h}; {replay}");
        let st = out.states[i].as_ref().unwrap();
        assert_eq!(st.total_value(), expected, "supply; {replay}");
        let applied: usize = f.iter().map(|x| x.3).sum();
        assert_eq!(applied, total_txs, "every tx applied once; {replay}");
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
