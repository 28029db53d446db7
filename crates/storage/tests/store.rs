//! Store round trips, restart replay, and damaged-file handling.

use vouch_crypto::SigningKey;
use vouch_state::{sign_tx, Genesis, GenesisAccount, Params};
use vouch_storage::{Store, StoreError, SNAPSHOT_EVERY};
use vouch_types::tx::Action;

fn genesis(key: &SigningKey, name: &str) -> Genesis {
    Genesis {
        chain_name: name.into(),
        time: 0,
        params: Params::default(),
        accounts: vec![GenesisAccount {
            address: key.public(),
            balance: 1_000_000,
            stake: 0,
        }],
        validators: vec![key.public()],
        models: vec![],
        providers: vec![],
    }
}

fn run_blocks(
    store: &Store,
    mut state: vouch_state::State,
    key: &SigningKey,
    n: u64,
) -> vouch_state::State {
    for i in 0..n {
        let to = SigningKey::from_bytes(&[(i % 200) as u8 + 1; 32])
            .unwrap()
            .public();
        let nonce = state.account(&key.public()).nonce;
        let tx = sign_tx(
            key,
            &state.chain,
            nonce,
            1,
            Action::Transfer { to, amount: 10 },
        );
        let p = state.propose(&[tx], state.time + 100, key.public(), false);
        assert!(p.rejected.is_empty());
        store.commit(&p.block, &p.applied, &p.state).unwrap();
        state = p.state;
    }
    state
}

#[test]
fn reopen_replays_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let key = SigningKey::from_bytes(&[7; 32]).unwrap();
    let g = genesis(&key, "t");
    let (store, state) = Store::open(&path, &g).unwrap();
    let state = run_blocks(&store, state, &key, SNAPSHOT_EVERY + 5);
    let head = store.head().unwrap().unwrap();
    assert_eq!(head.height, SNAPSHOT_EVERY + 5);
    assert_eq!(head.state_root, state.root());
    let tx_id = store.block(3).unwrap().unwrap().txs[0].id(&state.chain);
    assert_eq!(store.tx_location(&tx_id).unwrap(), Some((3, 0)));
    drop(store);
    let (store, again) = Store::open(&path, &g).unwrap();
    assert_eq!(again, state);
    // A different genesis is refused.
    drop(store);
    let err = Store::open(&path, &genesis(&key, "other")).unwrap_err();
    assert!(matches!(err, StoreError::WrongChain { .. }), "{err}");
}

#[test]
fn damaged_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]).unwrap();
    let g = genesis(&key, "t");
    let path = dir.path().join("ledger.redb");
    {
        let (store, state) = Store::open(&path, &g).unwrap();
        run_blocks(&store, state, &key, 10);
    }
    let bytes = std::fs::read(&path).unwrap();
    // Not a database at all.
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, b"this is not a ledger database, just some text").unwrap();
    let e = Store::open(&garbage, &g).unwrap_err().to_string();
    assert!(e.contains("garbage.redb"), "{e}");
    // Truncated to half.
    let truncated = dir.path().join("truncated.redb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let r = Store::open(&truncated, &g);
    assert!(r.is_err(), "a truncated database must not open silently");
    // Every page zeroed in turn in the data region: either a clear error or the exact
    // same state (the damaged page was free space), never a different state.
    let (_, good) = Store::open(&path, &g).unwrap();
    let page = 4096;
    let mut damaged = 0;
    for start in (page..bytes.len()).step_by(page) {
        let mut b = bytes.clone();
        let end = (start + page).min(b.len());
        b[start..end].iter_mut().for_each(|x| *x ^= 0x5a);
        let p = dir.path().join("flip.redb");
        std::fs::write(&p, &b).unwrap();
        match std::panic::catch_unwind(|| Store::open(&p, &g)) {
            Ok(Ok((_, s))) => assert_eq!(s, good, "page at {start} changed the state silently"),
            Ok(Err(_)) => damaged += 1,
            Err(_) => panic!("opening a damaged file panicked (page at {start})"),
        }
    }
    assert!(damaged > 0);
}

/// Row 12 (issue 18): under registration spam the state grows large; a full snapshot every
/// 32 blocks rewrote all of it each time, and the database grew with state size times
/// block count (~160 MiB in 50 s). Snapshots are now paced by the bytes the blocks write,
/// so the file stays within a small multiple of the state's size.
#[test]
fn a_large_state_is_not_rewritten_every_32_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let key = SigningKey::from_bytes(&[7; 32]).unwrap();
    let mut g = genesis(&key, "big");
    // A state of a few MiB, as many registrations leave it.
    g.accounts.extend((0..20_000u32).map(|i| {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        b[31] = 1;
        GenesisAccount {
            address: vouch_types::Hash32(b),
            balance: 1,
            stake: 0,
        }
    }));
    let (store, state) = Store::open(&path, &g).unwrap();
    let state_len = serde_json::to_vec(&state).unwrap().len() as u64;
    let blocks = 12 * SNAPSHOT_EVERY;
    let state = run_blocks(&store, state, &key, blocks);
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "state {state_len} B, {blocks} blocks, {} snapshots, file {size} B",
        store.snapshots_written()
    );
    assert!(
        store.snapshots_written() <= 2,
        "{} snapshots of a {state_len}-byte state in {blocks} small blocks",
        store.snapshots_written()
    );
    assert!(
        size < 4 * state_len + (8 << 20),
        "file is {size} bytes for a {state_len}-byte state"
    );
    // Still reopens to the same state (replay from the last snapshot).
    drop(store);
    let (_, again) = Store::open(&path, &g).unwrap();
    assert_eq!(again, state);
}
