//! State machine behaviour: every transaction's effect, every rejection reason,
//! settlement, slashing, and the supply invariant; plus property tests.

use proptest::prelude::*;
use rand::SeedableRng;
use vouch_crypto::SigningKey;
use vouch_state::*;
use vouch_types::tx::{Action, Block, Tx};
use vouch_types::Hash32;

struct Net {
    keys: Vec<SigningKey>,
    state: State,
    nonces: Vec<u64>,
    time: u64,
}

const MODEL: Hash32 = Hash32([7; 32]);
// keys: 0 = client, 1 = provider, 2 = validator, 3 = author, 4 = other validator, 5 = empty
fn net() -> Net {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(42);
    let keys: Vec<SigningKey> = (0..6).map(|_| SigningKey::generate(&mut rng)).collect();
    let a = |i: usize| keys[i].public();
    let params = Params {
        min_provider_stake: 1_000,
        audit_rate_ppm: 1_000_000,
        ..Params::default()
    };
    let g = Genesis {
        chain_name: "test".into(),
        time: 1_000,
        params,
        accounts: vec![
            GenesisAccount {
                address: a(0),
                balance: 1_000_000,
                stake: 0,
            },
            GenesisAccount {
                address: a(1),
                balance: 10_000,
                stake: 100_000,
            },
            GenesisAccount {
                address: a(2),
                balance: 10_000,
                stake: 50_000,
            },
            GenesisAccount {
                address: a(3),
                balance: 0,
                stake: 0,
            },
            GenesisAccount {
                address: a(4),
                balance: 10_000,
                stake: 50_000,
            },
        ],
        validators: vec![a(2), a(4)],
        models: vec![GenesisModel {
            id: MODEL,
            name: "smollm2-135m".into(),
            version: "1".into(),
            parent: None,
            licence: "apache-2.0".into(),
            author: a(3),
            royalty_bps: 1_000,
        }],
        providers: vec![GenesisProvider {
            address: a(1),
            models: vec![MODEL],
            price_per_token: 10,
            capacity: 2,
            endpoint: "local".into(),
        }],
    };
    let state = g.state().unwrap();
    Net {
        keys,
        state,
        nonces: vec![0; 6],
        time: 1_000,
    }
}

impl Net {
    fn addr(&self, i: usize) -> Hash32 {
        self.keys[i].public()
    }
    fn tx(&mut self, i: usize, action: Action) -> Tx {
        let tx = sign_tx(&self.keys[i], &self.state.chain, self.nonces[i], 1, action);
        self.nonces[i] += 1;
        tx
    }
    /// Proposes a block with `txs` at `time + dt`, checks that every tx was included,
    /// re-applies it on a copy as a follower would, and returns the events.
    fn block(&mut self, dt: u64, txs: Vec<Tx>) -> Vec<Event> {
        self.time += dt;
        let p = self.state.propose(&txs, self.time, self.addr(2), false);
        assert!(p.rejected.is_empty(), "rejected: {:?}", p.rejected);
        let mut follower = self.state.clone();
        let applied = follower.apply_block(&p.block, true).unwrap();
        assert_eq!(follower, p.state);
        assert_eq!(applied.events, p.applied.events);
        self.state = p.state;
        assert_eq!(self.state.total_value(), self.state.supply.expected_total());
        applied.events
    }
    fn reject(&mut self, i: usize, action: Action) -> TxError {
        let tx = self.tx(i, action);
        self.nonces[i] -= 1;
        let ctx = Ctx {
            time: self.time,
            proposer: self.addr(2),
            seed: self.state.seed(),
        };
        let before = self.state.clone();
        let err = self.state.apply_tx(&tx, &ctx).unwrap_err();
        assert_eq!(
            self.state, before,
            "a rejected transaction changed the state"
        );
        err
    }
    fn balance(&self, i: usize) -> u64 {
        self.state.account(&self.addr(i)).balance
    }
}

fn submit(n: &mut Net, max_fee: u64) -> Hash32 {
    let provider = n.addr(1);
    let tx = n.tx(
        0,
        Action::SubmitJob {
            model: MODEL,
            provider,
            input_hash: Hash32([1; 32]),
            max_tokens: 100,
            max_fee,
        },
    );
    let id = tx.id(&n.state.chain);
    n.block(10, vec![tx]);
    id
}

fn commit(n: &mut Net, job: Hash32, tokens: u32) {
    let tx = n.tx(
        1,
        Action::CommitResult {
            job,
            receipt: Hash32([2; 32]),
            output_hash: Hash32([3; 32]),
            fingerprint: Hash32([4; 32]),
            prompt_tokens: 20,
            output_tokens: tokens,
        },
    );
    n.block(10, vec![tx]);
}

#[test]
fn honest_job_settles_with_fee_split() {
    let mut n = net();
    let c0 = n.balance(0);
    let job = submit(&mut n, 5_000);
    assert_eq!(
        n.balance(0),
        c0 - 1 - 5_000,
        "fee and escrow leave the client"
    );
    commit(&mut n, job, 30);
    // 50 tokens at 10 = 500 charged. Settles after the challenge window.
    let (p0, v0, a0) = (n.balance(1), n.balance(2), n.balance(3));
    let window = n.state.params.challenge_window_ms;
    let ev = n.block(window, vec![]);
    let settled = ev
        .iter()
        .find(|e| matches!(e, Event::JobSettled { .. }))
        .unwrap();
    match settled {
        Event::JobSettled {
            refund,
            provider_amount,
            validator_amount,
            royalty,
            ..
        } => {
            assert_eq!(*refund, 4_500);
            assert_eq!(*validator_amount, 25); // 5 %
            assert_eq!(*royalty, 50); // 10 %
            assert_eq!(*provider_amount, 425);
        }
        _ => unreachable!(),
    }
    assert_eq!(n.balance(0), c0 - 1 - 500);
    assert_eq!(n.balance(1), p0 + 425);
    assert_eq!(n.balance(2), v0 + 25);
    assert_eq!(n.balance(3), a0 + 50);
    assert!(n.state.jobs.is_empty());
    assert_eq!(n.state.providers[&n.addr(1)].jobs_settled, 1);
    assert_eq!(n.state.providers[&n.addr(1)].in_flight, 0);
}

#[test]
fn failed_audit_slashes_and_rewards_the_auditor() {
    let mut n = net();
    let job = submit(&mut n, 5_000);
    commit(&mut n, job, 30);
    assert!(
        n.state.jobs[&job].audit_selected,
        "audit rate 1.0 selects every job"
    );
    let c_before = n.balance(0);
    let v = n.tx(2, Action::AuditVerdict { job, pass: false });
    n.block(10, vec![v]);
    let stake_before = n.state.account(&n.addr(1)).stake;
    let ev = n.block(n.state.params.challenge_window_ms, vec![]);
    let slash = ev.iter().find_map(|e| match e {
        Event::Slashed {
            amount,
            reward,
            burned,
            ..
        } => Some((*amount, *reward, *burned)),
        _ => None,
    });
    let (amount, reward, burned) = slash.expect("slashed");
    assert_eq!(amount, stake_before / 10);
    assert_eq!(reward + burned, amount);
    assert_eq!(n.state.account(&n.addr(1)).stake, stake_before - amount);
    assert_eq!(n.balance(0), c_before + 5_000, "client refunded in full");
    assert_eq!(n.state.supply.burned, burned);
}

#[test]
fn dispute_won_by_the_provider_slashes_the_auditor() {
    let mut n = net();
    let job = submit(&mut n, 5_000);
    commit(&mut n, job, 30);
    let v = n.tx(2, Action::AuditVerdict { job, pass: false });
    n.block(10, vec![v]);
    let d = n.tx(1, Action::Dispute { job });
    n.block(10, vec![d]);
    assert_eq!(n.state.jobs[&job].status, JobStatus::Disputed);
    // The auditor cannot vote on its own accusation.
    assert!(matches!(
        n.reject(2, Action::ResolveDispute { job, guilty: true }),
        TxError::NotAllowed { .. }
    ));
    let auditor_stake = n.state.account(&n.addr(2)).stake;
    let r = n.tx(4, Action::ResolveDispute { job, guilty: false });
    let ev = n.block(10, vec![r]);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Slashed { offender, .. } if *offender == n.addr(2))));
    assert!(ev.iter().any(|e| matches!(e, Event::JobSettled { .. })));
    assert_eq!(
        n.state.account(&n.addr(2)).stake,
        auditor_stake - auditor_stake / 10
    );
}

#[test]
fn unsubmitted_result_expires_and_refunds() {
    let mut n = net();
    let c0 = n.balance(0);
    let _job = submit(&mut n, 5_000);
    let ev = n.block(n.state.params.job_timeout_ms, vec![]);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::JobExpired { refund: 5_000, .. })));
    assert_eq!(n.balance(0), c0 - 1);
    let p = &n.state.providers[&n.addr(1)];
    assert_eq!(
        (p.in_flight, p.jobs_expired),
        (0, 1),
        "capacity is released"
    );
}

#[test]
fn unbonding_waits_for_the_period() {
    let mut n = net();
    let b0 = n.balance(1);
    let u = n.tx(1, Action::Unbond { amount: 40_000 });
    n.block(10, vec![u]);
    assert_eq!(n.state.account(&n.addr(1)).stake, 60_000);
    assert_eq!(n.balance(1), b0 - 1);
    n.block(n.state.params.unbonding_period_ms - 1, vec![]);
    assert_eq!(n.balance(1), b0 - 1);
    let ev = n.block(1, vec![]);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Unbonded { amount: 40_000, .. })));
    assert_eq!(n.balance(1), b0 - 1 + 40_000);
}

#[test]
fn registries_record_lineage_and_deduplicate_data() {
    let mut n = net();
    let child = Hash32([8; 32]);
    let m = n.tx(
        3 - 3,
        Action::RegisterModel {
            id: child,
            name: "smollm2-legal".into(),
            version: "1.1".into(),
            parent: Some(MODEL),
            licence: "apache-2.0".into(),
            royalty_bps: 500,
        },
    );
    let d = n.tx(
        0,
        Action::RegisterData {
            id: Hash32([9; 32]),
            source: "corpus".into(),
            licence: "cc-by-4.0".into(),
        },
    );
    n.block(10, vec![m, d]);
    assert_eq!(n.state.models[&child].parent, Some(MODEL));
    assert_eq!(n.state.models[&child].author, n.addr(0));
    let err = n.reject(
        2,
        Action::RegisterData {
            id: Hash32([9; 32]),
            source: "again".into(),
            licence: "x".into(),
        },
    );
    assert_eq!(
        err,
        TxError::DuplicateData {
            id: Hash32([9; 32]),
            contributor: n.addr(0)
        }
    );
    assert_eq!(
        n.reject(
            2,
            Action::RegisterModel {
                id: Hash32([10; 32]),
                name: "x".into(),
                version: "1".into(),
                parent: Some(Hash32([11; 32])),
                licence: "x".into(),
                royalty_bps: 0,
            }
        ),
        TxError::UnknownParent(Hash32([11; 32]))
    );
    assert!(matches!(
        n.reject(
            2,
            Action::RegisterModel {
                id: Hash32([10; 32]),
                name: "x".into(),
                version: "1".into(),
                parent: None,
                licence: "x".into(),
                royalty_bps: 9_000,
            }
        ),
        TxError::RoyaltyTooHigh { .. }
    ));
}

fn publish(id: u8, parents: &[Hash32], datasets: &[Hash32]) -> Action {
    Action::PublishModel {
        id: Hash32([id; 32]),
        name: format!("model-{id}"),
        version: "1".into(),
        parents: parents.to_vec(),
        datasets: datasets.to_vec(),
        licence: "apache-2.0".into(),
        royalty_bps: 200,
    }
}

fn dataset(id: u8, source: &str) -> Action {
    Action::RegisterData {
        id: Hash32([id; 32]),
        source: source.into(),
        licence: "cc-by-4.0".into(),
    }
}

#[test]
fn lineage_spans_merges_and_datasets_and_items_credit_their_first_contributor() {
    let mut n = net();
    let (d1, d2) = (Hash32([50; 32]), Hash32([51; 32]));
    let txs = vec![
        n.tx(0, dataset(50, "legal corpus")),
        n.tx(4, dataset(51, "forum dump")),
    ];
    n.block(10, txs);
    // base MODEL -> a (fine-tune on d1), b (fine-tune on d2) -> c (merge of a and b)
    let (a, b, c) = (Hash32([60; 32]), Hash32([61; 32]), Hash32([62; 32]));
    let txs = vec![
        n.tx(0, publish(60, &[MODEL], &[d1])),
        n.tx(4, publish(61, &[MODEL], &[d2])),
    ];
    n.block(10, txs);
    let tx = n.tx(0, publish(62, &[a, b], &[d1, d2]));
    n.block(10, vec![tx]);
    let l = n.state.lineage(&c).unwrap();
    assert_eq!(l.model.parents, vec![a, b]);
    let anc: Vec<(Hash32, u32)> = l.ancestors.iter().map(|x| (x.id, x.depth)).collect();
    assert_eq!(
        anc,
        vec![(a, 1), (b, 1), (MODEL, 2)],
        "the base appears once"
    );
    assert!(l.descendants.is_empty());
    assert_eq!(l.model.datasets[1].contributor, Some(n.addr(4)));
    assert_eq!(l.model.datasets[0].source.as_deref(), Some("legal corpus"));
    let base = n.state.lineage(&MODEL).unwrap();
    let desc: Vec<(Hash32, u32)> = base.descendants.iter().map(|x| (x.id, x.depth)).collect();
    assert_eq!(desc, vec![(a, 1), (b, 1), (c, 2)]);
    assert_eq!(base.model.author, n.addr(3));
    assert!(n.state.lineage(&Hash32([99; 32])).is_none());

    // Publication errors: unknown parent, unknown dataset, itself as parent, a repeat.
    assert_eq!(
        n.reject(0, publish(63, &[Hash32([98; 32])], &[])),
        TxError::UnknownParent(Hash32([98; 32]))
    );
    assert_eq!(
        n.reject(0, publish(63, &[MODEL], &[Hash32([97; 32])])),
        TxError::UnknownDataset(Hash32([97; 32]))
    );
    assert!(matches!(
        n.reject(0, publish(63, &[Hash32([63; 32])], &[])),
        TxError::InvalidField(_)
    ));
    assert!(matches!(
        n.reject(0, publish(63, &[a, a], &[])),
        TxError::InvalidField(_)
    ));
    assert_eq!(n.reject(4, publish(60, &[], &[])), TxError::ModelExists(a));

    // Items: the first contributor of each content id is credited; a later dataset that
    // holds the same item counts it as a duplicate.
    let item = |i: u8| Hash32([i; 32]);
    let tx = n.tx(
        0,
        Action::AddDataItems {
            dataset: d1,
            items: vec![item(1), item(2), item(3)],
        },
    );
    let ev = n.block(10, vec![tx]);
    assert!(ev.contains(&Event::DataItemsAdded {
        dataset: d1,
        contributor: n.addr(0),
        credited: 3,
        duplicates: 0
    }));
    let tx = n.tx(
        4,
        Action::AddDataItems {
            dataset: d2,
            items: vec![item(3), item(4)],
        },
    );
    let ev = n.block(10, vec![tx]);
    assert!(ev.contains(&Event::DataItemsAdded {
        dataset: d2,
        contributor: n.addr(4),
        credited: 1,
        duplicates: 1
    }));
    assert_eq!(n.state.items[&item(3)].contributor, n.addr(0));
    assert_eq!(n.state.items[&item(3)].dataset, d1);
    assert_eq!(n.state.items[&item(4)].contributor, n.addr(4));
    assert_eq!(
        (n.state.data[&d1].credited, n.state.data[&d1].duplicates),
        (3, 0)
    );
    assert_eq!(
        (n.state.data[&d2].credited, n.state.data[&d2].duplicates),
        (1, 1)
    );
    // Only the dataset's contributor adds to it; items must be new within the transaction.
    assert!(matches!(
        n.reject(
            0,
            Action::AddDataItems {
                dataset: d2,
                items: vec![item(5)]
            }
        ),
        TxError::NotAllowed { .. }
    ));
    assert_eq!(
        n.reject(
            0,
            Action::AddDataItems {
                dataset: Hash32([96; 32]),
                items: vec![item(5)]
            }
        ),
        TxError::UnknownDataset(Hash32([96; 32]))
    );
    assert!(matches!(
        n.reject(
            0,
            Action::AddDataItems {
                dataset: d1,
                items: vec![item(5), item(5)]
            }
        ),
        TxError::InvalidField(_)
    ));
    assert!(matches!(
        n.reject(
            0,
            Action::AddDataItems {
                dataset: d1,
                items: vec![]
            }
        ),
        TxError::InvalidField(_)
    ));
}

#[test]
fn synthetic_datasets_point_to_the_model_that_generated_them() {
    let mut n = net();
    let synth = |id: u8, model: Hash32| Action::RegisterSynthetic {
        id: Hash32([id; 32]),
        model,
        source: "synth: smollm2 on seeds.jsonl".into(),
        licence: "apache-2.0".into(),
    };
    // Only a registered model can be named as the generator.
    assert_eq!(
        n.reject(0, synth(70, Hash32([71; 32]))),
        TxError::UnknownModel(Hash32([71; 32]))
    );
    let plain_root = n.state.root();
    let tx = n.tx(0, synth(70, MODEL));
    n.block(10, vec![tx]);
    let d = Hash32([70; 32]);
    assert_eq!(n.state.data[&d].generated_by, Some(MODEL));
    assert_eq!(n.state.data[&d].contributor, n.addr(0));
    assert_ne!(n.state.root(), plain_root);
    // Its samples are items like any other: credited to the generating account.
    let item = Hash32([72; 32]);
    let tx = n.tx(
        0,
        Action::AddDataItems {
            dataset: d,
            items: vec![item],
        },
    );
    n.block(10, vec![tx]);
    assert_eq!(n.state.items[&item].dataset, d);
    // The model's lineage lists what it generated; a model trained on the synthetic data
    // shows where that data came from.
    let l = n.state.lineage(&MODEL).unwrap();
    assert_eq!(l.generated.len(), 1);
    assert_eq!(l.generated[0].id, d);
    assert_eq!(l.generated[0].generated_by, Some(MODEL));
    let tx = n.tx(0, publish(73, &[MODEL], &[d]));
    n.block(10, vec![tx]);
    let child = n.state.lineage(&Hash32([73; 32])).unwrap();
    assert_eq!(child.model.datasets[0].generated_by, Some(MODEL));
    // The id is taken, for synthetic and plain registrations alike.
    assert!(matches!(
        n.reject(4, synth(70, MODEL)),
        TxError::DuplicateData { .. }
    ));
    assert!(matches!(
        n.reject(4, dataset(70, "x")),
        TxError::DuplicateData { .. }
    ));
}

#[test]
fn annotation_consensus_is_stake_weighted_and_pays_the_annotators_who_agree() {
    let mut n = net();
    // Key 4 unbonds to 40,000 so key 1 (100,000) outweighs keys 2 and 4 together (90,000).
    let (d, item) = (Hash32([70; 32]), |i: u8| Hash32([80 + i; 32]));
    let txs = vec![
        n.tx(0, dataset(70, "reviews")),
        n.tx(4, Action::Unbond { amount: 10_000 }),
        n.tx(
            0,
            Action::Transfer {
                to: n.addr(3),
                amount: 1_000,
            },
        ),
    ];
    n.block(10, txs);
    let tx = n.tx(
        0,
        Action::AddDataItems {
            dataset: d,
            items: vec![item(0), item(1), item(2)],
        },
    );
    n.block(10, vec![tx]);
    let labels = vec!["positive".to_string(), "negative".to_string()];
    let create = |items: Vec<Hash32>, labels: &[String], annotators| Action::CreateTask {
        items,
        labels: labels.to_vec(),
        annotators,
        reward: 9_000,
    };
    // Unknown item, one label, no annotators: refused.
    assert!(
        matches!(n.reject(0, create(vec![item(9)], &labels, 3)), TxError::InvalidField(m) if m.contains("not on the ledger"))
    );
    assert!(matches!(
        n.reject(0, create(vec![item(0)], &labels[..1], 3)),
        TxError::InvalidField(_)
    ));
    assert!(matches!(
        n.reject(0, create(vec![item(0)], &labels, 0)),
        TxError::InvalidField(_)
    ));
    let before = n.balance(0);
    let tx = n.tx(0, create(vec![item(0), item(1), item(2)], &labels, 3));
    let task = tx.id(&n.state.chain);
    n.block(10, vec![tx]);
    assert_eq!(n.balance(0), before - 1 - 9_000, "the reward is escrowed");
    assert_eq!(n.state.tasks[&task].escrow, 9_000);

    let vote = |labels: Vec<u8>| Action::SubmitLabels { task, labels };
    // The creator, an account without stake, a wrong count, an unknown label: refused.
    assert!(matches!(
        n.reject(0, vote(vec![0, 0, 0])),
        TxError::NotAllowed { .. }
    ));
    assert!(matches!(
        n.reject(3, vote(vec![0, 0, 0])),
        TxError::InsufficientStake { .. }
    ));
    assert!(matches!(
        n.reject(1, vote(vec![0, 0])),
        TxError::InvalidField(_)
    ));
    assert!(matches!(
        n.reject(1, vote(vec![0, 0, 2])),
        TxError::InvalidField(_)
    ));
    assert_eq!(
        n.reject(
            1,
            Action::SubmitLabels {
                task: Hash32([1; 32]),
                labels: vec![0]
            }
        ),
        TxError::UnknownTask(Hash32([1; 32]))
    );

    let txs = vec![n.tx(1, vote(vec![0, 1, 1])), n.tx(2, vote(vec![0, 0, 0]))];
    let ev = n.block(10, txs);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::TaskDecided { .. })),
        "two of three"
    );
    assert!(
        matches!(n.reject(2, vote(vec![1, 1, 1])), TxError::InvalidField(m) if m.contains("already labelled"))
    );
    let (b1, b2, b4) = (n.balance(1), n.balance(2), n.balance(4));
    let tx = n.tx(4, vote(vec![1, 0, 0]));
    let ev = n.block(10, vec![tx]);
    // Item 0: 150,000 for "positive" against 40,000. Items 1 and 2: key 1's 100,000 for
    // "negative" outweighs keys 2 and 4 (90,000) although they are two.
    // Agreements: key 1 three, key 2 one, key 4 none: 9,000 / 4 = 2,250 per agreement.
    let decided = ev
        .iter()
        .find_map(|e| match e {
            Event::TaskDecided {
                task: t,
                labels,
                rewards,
                refund,
            } if *t == task => Some((labels.clone(), rewards.clone(), *refund)),
            _ => None,
        })
        .expect("decided by the third annotator");
    assert_eq!(decided.0, vec![0, 1, 1]);
    assert_eq!(decided.1, vec![(n.addr(1), 6_750), (n.addr(2), 2_250)]);
    assert_eq!(decided.2, 0);
    assert_eq!(n.balance(1), b1 + 6_750);
    assert_eq!(
        n.balance(2),
        b2 + 2_250 + 1,
        "and key 4's fee, as the block's proposer"
    );
    assert_eq!(n.balance(4), b4 - 1, "only the fee");
    assert_eq!(n.state.tasks[&task].decided, Some(vec![0, 1, 1]));
    assert_eq!(n.state.tasks[&task].escrow, 0);
    assert!(
        matches!(n.reject(4, vote(vec![0, 0, 0])), TxError::InvalidField(m) if m.contains("already decided"))
    );
}

#[test]
fn every_rejection_has_its_reason() {
    let mut n = net();
    let chain = n.state.chain;
    let ctx = Ctx {
        time: n.time,
        proposer: n.addr(2),
        seed: n.state.seed(),
    };
    // Bad signature: signed by another key, or for another chain.
    let mut forged = sign_tx(
        &n.keys[2],
        &chain,
        0,
        1,
        Action::Transfer {
            to: n.addr(2),
            amount: 1,
        },
    );
    forged.from = n.addr(0);
    assert!(matches!(
        n.state.check_tx(&forged, &ctx),
        Err(TxError::BadSignature { .. })
    ));
    let other_chain = sign_tx(
        &n.keys[0],
        &Hash32([1; 32]),
        0,
        1,
        Action::Stake { amount: 1 },
    );
    assert!(matches!(
        n.state.check_tx(&other_chain, &ctx),
        Err(TxError::BadSignature { .. })
    ));
    // Replay and nonce gaps.
    let t = n.tx(
        0,
        Action::Transfer {
            to: n.addr(5),
            amount: 10,
        },
    );
    n.block(10, vec![t.clone()]);
    let ctx = Ctx {
        time: n.time,
        proposer: n.addr(2),
        seed: n.state.seed(),
    };
    assert_eq!(
        n.state.check_tx(&t, &ctx),
        Err(TxError::Replay {
            expected: 1,
            got: 0
        })
    );
    let gap = sign_tx(&n.keys[0], &chain, 5, 1, Action::Stake { amount: 1 });
    assert_eq!(
        n.state.check_tx(&gap, &ctx),
        Err(TxError::BadNonce {
            expected: 1,
            got: 5
        })
    );
    // Funds, fees, amounts.
    assert!(matches!(
        n.reject(
            5,
            Action::Transfer {
                to: n.addr(0),
                amount: 11
            }
        ),
        TxError::InsufficientFunds {
            need: 12,
            balance: 10
        }
    ));
    let low_fee = sign_tx(&n.keys[0], &chain, 1, 0, Action::Stake { amount: 1 });
    assert!(matches!(
        n.state.check_tx(&low_fee, &ctx),
        Err(TxError::FeeTooLow { .. })
    ));
    let nobody = SigningKey::from_bytes(&[9; 32]).unwrap();
    let unknown = sign_tx(&nobody, &chain, 0, 1, Action::Stake { amount: 1 });
    assert!(matches!(
        n.state.check_tx(&unknown, &ctx),
        Err(TxError::UnknownAccount(_))
    ));
    assert_eq!(
        n.reject(
            0,
            Action::Transfer {
                to: n.addr(1),
                amount: 0
            }
        ),
        TxError::ZeroAmount
    );
    assert!(matches!(
        n.reject(0, Action::Unbond { amount: 1 }),
        TxError::InsufficientStake { .. }
    ));
    // Jobs.
    let provider = n.addr(1);
    assert_eq!(
        n.reject(
            0,
            Action::SubmitJob {
                model: Hash32([99; 32]),
                provider,
                input_hash: Hash32([1; 32]),
                max_tokens: 10,
                max_fee: 10,
            }
        ),
        TxError::UnknownModel(Hash32([99; 32]))
    );
    assert!(matches!(
        n.reject(
            0,
            Action::SubmitJob {
                model: MODEL,
                provider: n.addr(0),
                input_hash: Hash32([1; 32]),
                max_tokens: 10,
                max_fee: 10,
            }
        ),
        TxError::UnknownProvider(_)
    ));
    assert!(matches!(
        n.reject(
            0,
            Action::SubmitJob {
                model: MODEL,
                provider,
                input_hash: Hash32([1; 32]),
                max_tokens: 10,
                max_fee: u64::MAX,
            }
        ),
        TxError::Overflow | TxError::InsufficientFunds { .. }
    ));
    let j1 = submit(&mut n, 1_000);
    let _j2 = submit(&mut n, 1_000);
    // An escrow below the price of the requested tokens (10 per token × 10).
    assert!(matches!(
        n.reject(
            0,
            Action::SubmitJob {
                model: MODEL,
                provider,
                input_hash: Hash32([1; 32]),
                max_tokens: 10,
                max_fee: 99,
            }
        ),
        TxError::InvalidField(m) if m.contains("below the price of the requested tokens")
    ));
    // Only the provider commits, within max_tokens; only validators audit, once.
    assert!(matches!(
        n.reject(
            0,
            Action::CommitResult {
                job: j1,
                receipt: Hash32([2; 32]),
                output_hash: Hash32([3; 32]),
                fingerprint: Hash32([4; 32]),
                prompt_tokens: 1,
                output_tokens: 1,
            }
        ),
        TxError::NotAllowed { .. }
    ));
    assert!(matches!(
        n.reject(
            1,
            Action::CommitResult {
                job: j1,
                receipt: Hash32([2; 32]),
                output_hash: Hash32([3; 32]),
                fingerprint: Hash32([4; 32]),
                prompt_tokens: 1,
                output_tokens: 101,
            }
        ),
        TxError::TooManyTokens { .. }
    ));
    assert!(matches!(
        n.reject(
            2,
            Action::AuditVerdict {
                job: j1,
                pass: true
            }
        ),
        TxError::WrongJobStatus { .. }
    ));
    commit(&mut n, j1, 5);
    assert!(matches!(
        n.reject(
            0,
            Action::AuditVerdict {
                job: j1,
                pass: true
            }
        ),
        TxError::NotAllowed { .. }
    ));
    assert_eq!(
        n.reject(
            0,
            Action::Dispute {
                job: Hash32([5; 32])
            }
        ),
        TxError::UnknownJob(Hash32([5; 32]))
    );
    let a = n.tx(
        2,
        Action::AuditVerdict {
            job: j1,
            pass: true,
        },
    );
    n.block(1, vec![a]);
    assert!(matches!(
        n.reject(
            4,
            Action::AuditVerdict {
                job: j1,
                pass: false
            }
        ),
        TxError::WrongJobStatus { .. }
    ));
    // Errors read as sentences.
    let msg = TxError::Replay {
        expected: 3,
        got: 1,
    }
    .to_string();
    assert!(msg.contains("replay"), "{msg}");
}

#[test]
fn blocks_with_bad_links_or_roots_are_refused() {
    let mut n = net();
    let t = n.tx(
        0,
        Action::Transfer {
            to: n.addr(5),
            amount: 10,
        },
    );
    let p = n.state.propose(&[t], n.time + 10, n.addr(2), false);
    let check = |b: &Block| n.state.clone().apply_block(b, true);
    let mut b = p.block.clone();
    b.header.state_root = Hash32([0; 32]);
    assert!(matches!(
        check(&b),
        Err(BlockError::RootMismatch { what: "state", .. })
    ));
    let mut b = p.block.clone();
    b.header.height = 5;
    assert!(matches!(check(&b), Err(BlockError::WrongHeight { .. })));
    let mut b = p.block.clone();
    b.header.parent = Hash32([1; 32]);
    assert!(matches!(check(&b), Err(BlockError::WrongParent { .. })));
    let mut b = p.block.clone();
    b.txs[0].signature[0] ^= 1;
    assert!(matches!(
        check(&b),
        Err(BlockError::Tx { .. }) | Err(BlockError::RootMismatch { .. })
    ));
    let mut b = p.block.clone();
    b.header.time = 0;
    assert!(matches!(check(&b), Err(BlockError::TimeWentBack { .. })));
    assert!(check(&p.block).is_ok());
}

// ---------------------------------------------------------------- properties

fn arb_action(n: usize) -> impl Strategy<Value = (usize, u8, u64, usize, u32)> {
    (0..n, 0u8..10, 0u64..200_000, 0..n, 0u32..120)
}

fn build(net: &Net, ops: &[(usize, u8, u64, usize, u32)], jobs: &[Hash32]) -> Vec<(usize, Action)> {
    ops.iter()
        .map(|&(from, kind, amount, to, tokens)| {
            let job = if jobs.is_empty() {
                Hash32([0; 32])
            } else {
                jobs[amount as usize % jobs.len()]
            };
            let action = match kind {
                0 | 1 => Action::Transfer {
                    to: net.addr(to),
                    amount: amount / 10 + 1,
                },
                2 => Action::Stake {
                    amount: amount / 100 + 1,
                },
                3 => Action::Unbond {
                    amount: amount / 100 + 1,
                },
                4 | 5 => Action::SubmitJob {
                    model: MODEL,
                    provider: net.addr(1),
                    input_hash: Hash32::digest("t", &[&amount.to_le_bytes()]),
                    max_tokens: 100,
                    max_fee: amount / 20,
                },
                6 => Action::CommitResult {
                    job,
                    receipt: Hash32([2; 32]),
                    output_hash: Hash32([3; 32]),
                    fingerprint: Hash32([4; 32]),
                    prompt_tokens: 10,
                    output_tokens: tokens,
                },
                7 => Action::AuditVerdict {
                    job,
                    pass: tokens % 2 == 0,
                },
                8 => Action::Dispute { job },
                _ => Action::ResolveDispute {
                    job,
                    guilty: tokens % 3 == 0,
                },
            };
            (from, action)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random transaction sequences (many of them invalid) in random-sized blocks at
    /// random times: value is conserved, balances stay in range, and replaying the
    /// blocks on a fresh genesis gives the same root at every height.
    #[test]
    fn supply_conserved_and_replay_deterministic(
        ops in proptest::collection::vec(arb_action(6), 1..160),
        gaps in proptest::collection::vec(0u64..90_000, 1..40),
    ) {
        let mut n = net();
        let genesis_state = n.state.clone();
        let mut blocks = Vec::new();
        let mut jobs: Vec<Hash32> = Vec::new();
        let mut included = 0usize;
        let per_block = ops.len().div_ceil(gaps.len());
        for (bi, chunk) in ops.chunks(per_block.max(1)).enumerate() {
            let actions = build(&n, chunk, &jobs);
            let mut next_nonce: Vec<u64> = (0..6).map(|i| n.state.account(&n.addr(i)).nonce).collect();
            let txs: Vec<Tx> = actions
                .into_iter()
                .map(|(from, a)| {
                    next_nonce[from] += 1;
                    sign_tx(&n.keys[from], &n.state.chain, next_nonce[from] - 1, 1, a)
                })
                .collect();
            n.time += gaps[bi % gaps.len()];
            let p = n.state.propose(&txs, n.time, n.addr(2), false);
            for e in &p.applied.events {
                if let Event::JobSubmitted { job, .. } = e { jobs.push(*job); }
            }
            included += p.block.txs.len();
            n.state = p.state;
            prop_assert_eq!(n.state.total_value(), n.state.supply.expected_total());
            prop_assert!(n.state.accounts.values().all(|a| a.balance <= n.state.supply.genesis));
            blocks.push((p.block, n.state.root()));
        }
        let mut replay = genesis_state;
        for (b, root) in &blocks {
            replay.apply_block(b, true).expect("a proposed block applies on a follower");
            prop_assert_eq!(replay.root(), *root);
        }
        prop_assert_eq!(replay, n.state);
        // A transfer is always valid as account 0's first transaction (it holds far more
        // than any drawn amount), so such a sequence includes something; others may be
        // all invalid (one invalid transaction leaves its sender's later nonces open),
        // which is still a case.
        let zero_starts_with_transfer = ops.iter().find(|o| o.0 == 0).is_some_and(|o| o.1 <= 1);
        prop_assert!(!zero_starts_with_transfer || included > 0, "no transaction was valid");
    }

    /// Decoders fed arbitrary bytes return an error or a value, never panic, and a
    /// decoded value re-encodes to the same bytes (one encoding per value).
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(tx) = Tx::decode(&bytes) {
            prop_assert_eq!(tx.encode(), bytes.clone());
        }
        if let Ok(b) = Block::decode(&bytes) {
            prop_assert_eq!(b.encode(), bytes.clone());
        }
        let _ = vouch_types::Header::decode(&bytes);
    }

    /// Mutating one byte of a valid transaction never yields a different valid
    /// transaction under the same signature.
    #[test]
    fn mutated_transactions_fail(pos in 0usize..200, bit in 0u8..8) {
        let n = net();
        let tx = sign_tx(&n.keys[0], &n.state.chain, 0, 1, Action::Transfer { to: n.addr(1), amount: 5 });
        let mut b = tx.encode();
        let pos = pos % b.len();
        b[pos] ^= 1 << bit;
        if let Ok(m) = Tx::decode(&b) {
            prop_assert!(n.state.check_signature(&m).is_err());
        }
    }
}

/// Issue 18 row 5: jobs nobody pays for hold no capacity. Before the rule, `capacity`
/// (2 here) unanswered jobs at the minimum fee refused every further job as busy for
/// `job_timeout_ms`; now a job's escrow covers its tokens at the provider's price and the
/// provider's registered capacity refuses nothing, so squatting only locks the squatter's
/// own escrow (refunded at expiry) and every paying job is admitted.
#[test]
fn unanswered_jobs_hold_no_capacity_and_escrow_covers_the_tokens() {
    let mut n = net();
    let provider = n.addr(1);
    let squat = |max_fee| Action::SubmitJob {
        model: MODEL,
        provider,
        input_hash: Hash32([7; 32]),
        max_tokens: 100,
        max_fee,
    };
    // A zero or token-short escrow is refused.
    for fee in [0, 999] {
        assert!(matches!(
            n.reject(0, squat(fee)),
            TxError::InvalidField(m) if m.contains("below the price")
        ));
    }
    // Four squatting jobs (twice the capacity) at the least escrow, never answered.
    let before = n.balance(0);
    let txs: Vec<Tx> = (0..4).map(|_| n.tx(0, squat(1_000))).collect();
    n.block(10, txs);
    assert_eq!(n.state.providers[&provider].in_flight, 4);
    // A paying client is still admitted and served.
    let paid = submit(&mut n, 5_000);
    commit(&mut n, paid, 10);
    assert!(n.state.jobs.contains_key(&paid));
    // The squatting escrows come back at expiry: holding four jobs open cost the
    // squatter its transaction fees and blocked no one.
    let timeout = n.state.params.job_timeout_ms;
    let events = n.block(timeout + 1, vec![]);
    let expired: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobExpired { refund, .. } => Some(*refund),
            _ => None,
        })
        .collect();
    assert_eq!(expired, vec![1_000; 4]);
    assert_eq!(n.state.providers[&provider].in_flight, 0);
    assert!(n.balance(0) < before);
}

/// A chain whose genesis predates paid admission (no `paid_admission` field) keeps the
/// old rules (capacity refuses, any escrow is accepted) and its state root: its stored
/// blocks replay unchanged.
#[test]
fn chains_from_before_paid_admission_keep_their_rules_and_roots() {
    let mut legacy = net();
    let mut json = serde_json::to_value(&legacy.state.params).unwrap();
    json.as_object_mut().unwrap().remove("paid_admission");
    let old: vouch_state::Params = serde_json::from_value(json).unwrap();
    assert!(!old.paid_admission);
    let new_root = legacy.state.root();
    legacy.state.params = old;
    assert_ne!(
        legacy.state.root(),
        new_root,
        "the rule is part of the state root"
    );
    let provider = legacy.addr(1);
    let _ = submit(&mut legacy, 100);
    let _ = submit(&mut legacy, 100);
    assert!(matches!(
        legacy.reject(
            0,
            Action::SubmitJob {
                model: MODEL,
                provider,
                input_hash: Hash32([1; 32]),
                max_tokens: 10,
                max_fee: 10,
            }
        ),
        TxError::ProviderBusy(_)
    ));
}

/// A provider's price per token is an amount clients escrow, so on chains with paid
/// admission it must stay exact in JSON numbers (at most 2^53 − 1, like the supply);
/// chains from before the rule accept any price, as their stored blocks did.
#[test]
fn price_per_token_is_bounded_on_paid_admission_chains() {
    use vouch_state::genesis::MAX_SUPPLY;
    let register = |price_per_token| Action::RegisterProvider {
        models: vec![MODEL],
        price_per_token,
        capacity: 2,
        endpoint: "local".into(),
    };
    let mut n = net();
    assert!(n.state.params.paid_admission);
    match n.reject(1, register(MAX_SUPPLY + 1)) {
        TxError::InvalidField(m) => assert!(m.contains("price_per_token"), "{m}"),
        e => panic!("unexpected {e:?}"),
    }
    let provider = n.addr(1);
    let tx = n.tx(1, register(MAX_SUPPLY));
    n.block(10, vec![tx]);
    assert_eq!(n.state.providers[&provider].price_per_token, MAX_SUPPLY);

    let mut legacy = net();
    legacy.state.params.paid_admission = false;
    let txs = vec![
        legacy.tx(1, register(MAX_SUPPLY + 1)),
        legacy.tx(1, register(u64::MAX)),
    ];
    legacy.block(10, txs);
    assert_eq!(legacy.state.providers[&provider].price_per_token, u64::MAX);
}
