//! A second node applying the first one's finalized blocks: certificate checked against
//! its own validator set, every root recomputed; forged, altered, out-of-order and
//! conflicting blocks refused with the reason, and nothing changed by a refusal.

use std::sync::Arc;

use vouch_crypto::SigningKey;
use vouch_node::chain::{AcceptError, Chain};
use vouch_state::{Genesis, GenesisAccount, Params};
use vouch_storage::Store;
use vouch_types::tx::{Action, Block, Certificate};

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32]).unwrap()
}

fn genesis(validator: &SigningKey, alice: &SigningKey) -> Genesis {
    Genesis {
        chain_name: "follow-test".into(),
        time: 1_000,
        params: Params::default(),
        accounts: vec![GenesisAccount {
            address: alice.public(),
            balance: 1_000_000_000,
            stake: 0,
        }],
        validators: vec![validator.public()],
        models: vec![],
        providers: vec![],
    }
}

fn open(dir: &std::path::Path, g: &Genesis, key: SigningKey) -> Chain {
    std::fs::create_dir_all(dir).unwrap();
    let (store, state) = Store::open(&dir.join("ledger.redb"), g).unwrap();
    Chain::new(store, state, g.clone(), key, Arc::default())
}

/// The leader makes a block holding `n` transfers at `time` and finalizes it alone.
fn make_block(leader: &Chain, alice: &SigningKey, n: u64, time: u64) -> Block {
    for i in 0..n {
        leader
            .submit_signed(
                alice,
                Action::Transfer {
                    to: key(50 + i as u8).public(),
                    amount: 1_000 + i,
                },
            )
            .unwrap();
    }
    let p = leader.propose(time);
    let vote = leader.vote(&p.block);
    let h = leader
        .finalize(
            p,
            Certificate {
                votes: vec![vote],
                simplex: None,
            },
        )
        .unwrap();
    leader.store().block(h).unwrap().unwrap()
}

#[test]
fn follower_applies_certified_blocks_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (validator, alice) = (key(1), key(2));
    let g = genesis(&validator, &alice);
    let leader = open(&dir.path().join("a"), &g, key(1));
    let follower = open(&dir.path().join("b"), &g, key(9));
    let blocks: Vec<Block> = (0..4)
        .map(|i| make_block(&leader, &alice, 1 + i, 2_000 + i * 100))
        .collect();

    // Out of order: a gap is refused.
    assert!(matches!(
        follower.accept(blocks[1].clone()),
        Err(AcceptError::Gap { have: 0, got: 2 })
    ));

    // Forged certificate: signed by a key that is not a validator.
    let mut forged = blocks[0].clone();
    let msg = vouch_verify::inclusion::header_vote_message(&forged.header);
    let impostor = key(7);
    forged.certificate.votes[0] = vouch_types::Vote {
        validator: impostor.public(),
        signature: impostor.sign(vouch_types::tx::domain::HEADER_SIGNATURE, &msg),
    };
    let e = follower.accept(forged).unwrap_err();
    assert!(matches!(e, AcceptError::Certificate(..)), "{e}");
    assert!(e.to_string().contains("1 required"), "{e}");

    // Altered contents under a genuine certificate: the transaction root gives it away.
    let mut altered = blocks[1].clone();
    altered.txs.pop();
    assert!(follower.accept(blocks[0].clone()).is_ok());
    let e = follower.accept(altered).unwrap_err();
    assert!(e.to_string().contains("transaction root"), "{e}");
    assert_eq!(
        follower.state().height,
        1,
        "a refused block changes nothing"
    );

    for b in &blocks[1..] {
        follower.accept(b.clone()).unwrap();
    }
    assert_eq!(follower.state().root(), leader.state().root());
    assert_eq!(follower.state().height, 4);
    // Receipts, accounts and block lookups answer the same on both.
    assert_eq!(
        follower.state().account(&alice.public()),
        leader.state().account(&alice.public())
    );
    // The same block again is fine; a different block at a known height is a conflict.
    assert!(follower.accept(blocks[2].clone()).is_ok());
    let other_dir = tempfile::tempdir().unwrap();
    let fork = open(other_dir.path(), &g, key(1));
    let fork_block = make_block(&fork, &alice, 2, 2_000);
    let e = follower.accept(fork_block).unwrap_err();
    assert!(matches!(e, AcceptError::Conflict { height: 1, .. }), "{e}");

    // A follower takes no transactions of its own.
    follower.set_upstream("http://leader.example");
    let e = follower
        .submit_signed(
            &alice,
            Action::Transfer {
                to: key(60).public(),
                amount: 1,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("http://leader.example"), "{e}");
}

#[test]
fn verify_block_refuses_a_block_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let (validator, alice) = (key(1), key(2));
    let g = genesis(&validator, &alice);
    let leader = open(&dir.path().join("a"), &g, key(1));
    let other = open(&dir.path().join("b"), &g, key(9));
    let block = make_block(&leader, &alice, 1, 60_000);
    let e = other.verify_block(&block, 50_000).unwrap_err();
    assert!(e.to_string().contains("ahead of this node's clock"), "{e}");
    assert!(other.verify_block(&block, 59_000).is_ok());
}
