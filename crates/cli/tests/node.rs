//! The network on one machine, as a user runs it: `vouch up` as a real process.
//!
//! - kill -9 in the middle of a load of transactions, restart, and find every transaction
//!   that was reported committed, at the same place, under the same state roots;
//! - a damaged ledger file is refused at start with a clear error;
//! - `vouch up` + `wallet new` + `infer` + `verify`: escrow, commit, audit, settlement,
//!   and the receipt's inclusion proof, with the real model.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vouch_crypto::SigningKey;
use vouch_node::DevKeys;
use vouch_state::{sign_tx, Genesis, GenesisAccount};
use vouch_types::tx::Action;
use vouch_types::Hash32;

mod common;
use common::{agent, vouch, vouch_bin};

/// A `vouch up` process and its URL; killed (SIGKILL) when dropped.
struct Node {
    _process: common::Node,
    url: String,
}

/// Starts `vouch up` on a free port and waits for its "listening on" line.
fn up(home: &Path, extra: &[&str]) -> Node {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (process, url) = common::spawn_up(home, &args, &[]);
    Node {
        _process: process,
        url,
    }
}

fn get(url: &str) -> Value {
    agent()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

fn post(url: &str, body: &Value) -> Result<(u16, Value), ureq::Error> {
    let mut r = agent().post(url).send_json(body)?;
    Ok((r.status().as_u16(), r.body_mut().read_json()?))
}

fn test_genesis(validator: &SigningKey, senders: &[SigningKey]) -> Genesis {
    let mut accounts: Vec<GenesisAccount> = senders
        .iter()
        .map(|k| GenesisAccount {
            address: k.public(),
            balance: 1_000_000_000,
            stake: 0,
        })
        .collect();
    accounts.push(GenesisAccount {
        address: validator.public(),
        balance: 0,
        stake: 1_000,
    });
    Genesis {
        chain_name: "crash-test".into(),
        time: 0,
        params: vouch_node::dev_params(),
        accounts,
        validators: vec![validator.public()],
        models: vec![],
        providers: vec![],
    }
}

#[test]
fn kill_9_under_load_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let data = home.join("node");
    let keys = DevKeys::load_or_create(&data).unwrap();
    let senders: Vec<SigningKey> = (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]).unwrap())
        .collect();
    let genesis = test_genesis(&keys.validator, &senders);
    std::fs::write(data.join("genesis.json"), genesis.to_json()).unwrap();
    let chain = genesis.chain_id();
    let args = ["--no-provider", "--block-interval-ms", "5"];

    let node = up(home, &args);
    let url = node.url.clone();
    // (tx id) -> (height, index) as reported committed; (height) -> state root as served.
    let committed: Arc<Mutex<BTreeMap<Hash32, (u64, u64)>>> = Default::default();
    let roots: Arc<Mutex<BTreeMap<u64, String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for (si, key) in senders.iter().enumerate() {
        let key = SigningKey::from_bytes(&key.to_bytes()).unwrap();
        let (url, committed, stop) = (url.clone(), committed.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let to = SigningKey::from_bytes(&[100 + si as u8; 32])
                .unwrap()
                .public();
            for nonce in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let tx = sign_tx(
                    &key,
                    &chain,
                    nonce,
                    10,
                    Action::Transfer {
                        to,
                        amount: 1 + nonce,
                    },
                );
                let id = tx.id(&chain);
                let body = json!({"tx": hex_encode(&tx.encode()), "wait": true});
                match post(&format!("{url}/v1/txs"), &body) {
                    Ok((200, v)) if v["result"]["status"] == "committed" => {
                        let h = v["result"]["height"].as_u64().unwrap();
                        let i = v["result"]["index"].as_u64().unwrap();
                        committed.lock().unwrap().insert(id, (h, i));
                    }
                    _ => return, // the node died
                }
            }
        }));
    }
    {
        let (url, roots, stop) = (url.clone(), roots.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut r) = agent().get(&format!("{url}/v1/blocks/latest")).call() else {
                    return;
                };
                let Ok(v) = r.body_mut().read_json::<Value>() else {
                    return;
                };
                if let (Some(h), Some(root)) = (
                    v["header"]["height"].as_u64(),
                    v["header"]["state_root"].as_str(),
                ) {
                    roots.lock().unwrap().insert(h, root.to_string());
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        }));
    }
    // Let the load run, then kill -9 while transactions are in flight.
    let start = Instant::now();
    while committed.lock().unwrap().len() < 300 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(node); // SIGKILL
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let committed = committed.lock().unwrap().clone();
    let roots = roots.lock().unwrap().clone();
    assert!(
        committed.len() >= 300,
        "only {} committed before the kill",
        committed.len()
    );
    assert!(!roots.is_empty());

    let node = up(home, &args);
    for (id, (h, i)) in &committed {
        let v = get(&format!("{}/v1/txs/{id}", node.url));
        assert_eq!(
            v["result"]["status"], "committed",
            "tx {id} lost after kill -9: {v}"
        );
        assert_eq!(
            (
                v["result"]["height"].as_u64().unwrap(),
                v["result"]["index"].as_u64().unwrap()
            ),
            (*h, *i)
        );
    }
    for (h, root) in &roots {
        let v = get(&format!("{}/v1/blocks/{h}", node.url));
        assert_eq!(
            v["header"]["state_root"].as_str().unwrap(),
            root,
            "state root of block {h} changed"
        );
    }
    // The chain goes on: the next nonce of a sender is accepted and commits.
    let acct = get(&format!("{}/v1/accounts/{}", node.url, senders[0].public()));
    let nonce = acct["nonce"].as_u64().unwrap();
    let tx = sign_tx(&senders[0], &chain, nonce, 10, Action::Stake { amount: 5 });
    let (code, v) = post(
        &format!("{}/v1/txs", node.url),
        &json!({"tx": hex_encode(&tx.encode()), "wait": true}),
    )
    .unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["result"]["status"], "committed", "{v}");
    eprintln!(
        "{} transactions committed before kill -9, all found after restart",
        committed.len()
    );
    drop(node);

    // A damaged ledger file is refused at start with a message naming it.
    let db = data.join("ledger.redb");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 3]).unwrap();
    let o = Command::new(vouch_bin())
        .args([
            "--home",
            home.to_str().unwrap(),
            "up",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("ledger.redb"), "{err}");
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn up_infer_verify_escrow_audit_settle() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    common::share_models(home);
    let data = home.join("node");
    let keys = DevKeys::load_or_create(&data).unwrap();
    let spec = &vouch_inference::models::SMOLLM2_135M;
    let mut g = vouch_node::dev_genesis(&keys, &[(spec.id(), spec.name, spec.licence)], 0);
    g.params.audit_rate_ppm = 1_000_000; // audit every job
    g.params.challenge_window_ms = 4_000;
    std::fs::write(data.join("genesis.json"), g.to_json()).unwrap();
    let node = up(home, &["--block-interval-ms", "50"]);
    let n = node.url.as_str();

    let (ok, addr, err) = vouch(home, n, &["wallet", "new"]);
    assert!(ok, "{err}");
    let addr = addr.trim().to_string();
    let (ok, bal, _) = vouch(home, n, &["wallet", "balance"]);
    assert!(ok && bal.contains("balance 100000000"), "{bal}");

    let receipt = home.join("r.json");
    let (ok, out, err) = vouch(
        home,
        n,
        &[
            "infer",
            "--model",
            "smollm2-135m",
            "--prompt",
            "Name a primary colour.",
            "--max-tokens",
            "16",
            "--seed",
            "3",
            "--receipt",
            receipt.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("committed in block"), "{err}");
    let r: vouch_types::Receipt =
        serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    let inc = r
        .inclusion
        .clone()
        .expect("receipt carries its inclusion proof");

    // Offline verification, with the validator set pinned by the genesis file.
    let genesis_path = data.join("genesis.json");
    let (ok, out, err) = vouch(
        home,
        n,
        &[
            "verify",
            receipt.to_str().unwrap(),
            "--genesis",
            genesis_path.to_str().unwrap(),
            "--require-inclusion",
        ],
    );
    assert!(
        ok && out.starts_with("VERIFIED: ") && out.contains("bound to job"),
        "{out}\n{err}"
    );
    // Issue 18 row 2: the same network re-created with the same validator key (another
    // genesis, so another chain id) certifies blocks with that key; pinned to the other
    // genesis, this receipt is invalid, and the line names both chain ids.
    let mut recreated = g.clone();
    recreated.time += 1;
    let recreated_path = home.join("recreated-genesis.json");
    std::fs::write(&recreated_path, recreated.to_json()).unwrap();
    let (ok, out, _) = vouch(
        home,
        n,
        &[
            "verify",
            receipt.to_str().unwrap(),
            "--genesis",
            recreated_path.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && out.starts_with("INVALID: ")
            && out.contains(&recreated.chain_id().to_hex())
            && out.contains(&g.chain_id().to_hex()),
        "{out}"
    );
    // Without a pinned genesis the line says what was not checked, and exits 3.
    let o = Command::new(vouch_bin())
        .args(["verify", receipt.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.starts_with("UNPINNED: "), "{out}");
    // Row 4: a receipt invented and signed by a random key, never committed: SIGNED ONLY
    // (exit 3) under the pinned genesis, INVALID with --require-inclusion, and the node's
    // /v1/verify answers valid: false.
    let invented = common::invented_receipt(97);
    let invented_path = home.join("invented.json");
    std::fs::write(&invented_path, serde_json::to_vec(&invented).unwrap()).unwrap();
    let o = Command::new(vouch_bin())
        .args(["verify", invented_path.to_str().unwrap(), "--genesis"])
        .arg(&genesis_path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.starts_with("SIGNED ONLY: "), "{out}");
    let (ok, out, _) = vouch(
        home,
        n,
        &[
            "verify",
            invented_path.to_str().unwrap(),
            "--genesis",
            genesis_path.to_str().unwrap(),
            "--require-inclusion",
        ],
    );
    assert!(!ok && out.starts_with("INVALID: "), "{out}");
    let (ok, out, _) = vouch(
        home,
        n,
        &[
            "--json",
            "verify",
            invented_path.to_str().unwrap(),
            "--genesis",
            genesis_path.to_str().unwrap(),
        ],
    );
    let j: Value = serde_json::from_str(&out).unwrap();
    assert!(
        !ok && j["valid"] == false && j["status"] == "signed_only",
        "{j}"
    );
    let (status, v) = post(
        &format!("{n}/v1/verify"),
        &serde_json::to_value(&invented).unwrap(),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["status"], "signed_only", "{v}");
    assert_eq!(v["provider_registered"], false, "{v}");
    // The node's verdict on the real receipt: verified, with its ledger's facts.
    let (_, v) = post(
        &format!("{n}/v1/verify"),
        &serde_json::from_slice::<Value>(&std::fs::read(&receipt).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(v["status"], "verified", "{v}");
    assert_eq!(v["ledger"]["job"]["receipt"], r.id().to_hex(), "{v}");
    // Row 3: the receipt moved to another job id (not covered by the receipt-root
    // proof): invalid, offline and at the node.
    let mut swapped = r.clone();
    swapped.inclusion.as_mut().unwrap().job = Hash32([0xee; 32]);
    let swapped_path = home.join("swapped.json");
    std::fs::write(&swapped_path, serde_json::to_vec(&swapped).unwrap()).unwrap();
    let (ok, out, _) = vouch(
        home,
        n,
        &[
            "verify",
            swapped_path.to_str().unwrap(),
            "--genesis",
            genesis_path.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && out.starts_with("INVALID: ") && out.contains("job"),
        "{out}"
    );
    let (_, v) = post(
        &format!("{n}/v1/verify"),
        &serde_json::to_value(&swapped).unwrap(),
    )
    .unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["status"], "invalid", "{v}");
    // A receipt moved to another block's proof, or a forged certificate, fails.
    let mut bad = r.clone();
    bad.inclusion.as_mut().unwrap().proof.index ^= 1;
    bad.inclusion.as_mut().unwrap().proof.leaves += 1;
    let badp = home.join("bad.json");
    std::fs::write(&badp, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, out, _) = vouch(home, n, &["verify", badp.to_str().unwrap()]);
    assert!(!ok && out.contains("INVALID"), "{out}");
    let mut bad = r.clone();
    bad.inclusion.as_mut().unwrap().header.time += 1;
    std::fs::write(&badp, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, out, _) = vouch(home, n, &["verify", badp.to_str().unwrap()]);
    assert!(!ok && out.contains("signature"), "{out}");
    let other = SigningKey::from_bytes(&[9; 32]).unwrap().public().to_hex();
    let (ok, out, _) = vouch(
        home,
        n,
        &["verify", receipt.to_str().unwrap(), "--validator", &other],
    );
    assert!(!ok && out.contains("trusted validators"), "{out}");

    // The job: escrowed, committed, audited (rate 1.0), then settled with the fee split.
    let job = inc.job;
    let deadline = Instant::now() + Duration::from_secs(120);
    let history = loop {
        let v = get(&format!("{n}/v1/jobs/{job}"));
        let events = v["history"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e[1]["event"] == "job_settled") {
            break events;
        }
        assert!(Instant::now() < deadline, "job never settled: {v}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e[1]["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "job_submitted",
            "job_committed",
            "job_audited",
            "job_settled"
        ],
        "{history:?}"
    );
    let audited = &history[2][1];
    assert_eq!(audited["pass"], true);
    // The audit was a spot check over the receipt's committed trace.
    assert!(r.trace.is_some(), "receipts commit to their trace");
    let mut resp = agent().get(&format!("{n}/metrics")).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("vouch_audit_runs_total{mode=\"spot\",result=\"pass\"}"),
        "{text}"
    );
    assert_eq!(
        audited["auditor"].as_str().unwrap(),
        keys.validator.public().to_hex()
    );
    let settled = &history[3][1];
    let tokens = u64::from(r.prompt_tokens) + r.output_tokens.len() as u64;
    let charge = tokens * 10;
    assert_eq!(
        settled["refund"].as_u64().unwrap() + charge,
        history[0][1]["escrow"].as_u64().unwrap()
    );
    assert_eq!(settled["royalty"].as_u64().unwrap(), charge / 10);
    assert_eq!(settled["validator_amount"].as_u64().unwrap(), charge / 20);
    assert_eq!(
        settled["provider_amount"].as_u64().unwrap(),
        charge - charge / 10 - charge / 20
    );
    let acct = get(&format!("{n}/v1/accounts/{addr}"));
    let fee = g.params.min_tx_fee;
    assert_eq!(
        acct["balance"].as_u64().unwrap(),
        100_000_000 - fee - charge
    );
    let author = get(&format!("{n}/v1/accounts/{}", keys.author.public()));
    assert_eq!(author["balance"].as_u64().unwrap(), charge / 10);

    // The receipt is served by id, with its proof.
    let served = get(&format!("{n}/v1/receipts/{}", r.id()));
    assert_eq!(served["inclusion"]["header"]["height"], inc.header.height);
    // tx status and block show work from the CLI.
    let (ok, out, _) = vouch(home, n, &["block", "show", &inc.header.height.to_string()]);
    assert!(ok && out.contains("commit_result"), "{out}");
    let (ok, out, _) = vouch(home, n, &["tx", "status", &job.to_hex()]);
    assert!(ok && out.contains("committed"), "{out}");
    // Spending more than the balance is refused with the reason.
    let (ok, _, err) = vouch(
        home,
        n,
        &[
            "wallet",
            "send",
            &keys.author.public().to_hex(),
            "999999999999",
        ],
    );
    assert!(!ok && err.contains("insufficient funds"), "{err}");
}

#[test]
fn bad_transactions_get_clear_reasons_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let data = home.join("node");
    let keys = DevKeys::load_or_create(&data).unwrap();
    let alice = SigningKey::from_bytes(&[1; 32]).unwrap();
    let genesis = test_genesis(&keys.validator, std::slice::from_ref(&alice));
    std::fs::write(data.join("genesis.json"), genesis.to_json()).unwrap();
    let chain = genesis.chain_id();
    let node = up(home, &["--no-provider", "--block-interval-ms", "20"]);
    let txs = format!("{}/v1/txs", node.url);
    let send = |body: Value| post(&txs, &body).unwrap();
    let bob = SigningKey::from_bytes(&[2; 32]).unwrap().public();
    let tx = |nonce: u64, action: Action| sign_tx(&alice, &chain, nonce, 10, action);
    let hexed = |t: &vouch_types::Tx| hex_encode(&t.encode());
    let expect = |(code, v): (u16, Value), want_code: u16, want: &str| {
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(code, want_code, "{v}");
        assert!(
            msg.to_lowercase().contains(want),
            "expected {want:?} in {msg:?}"
        );
    };

    // Malformed request bodies.
    let mut r = agent()
        .post(&txs)
        .header("content-type", "application/json")
        .send("{not json")
        .unwrap();
    let v: Value = r.body_mut().read_json().unwrap();
    assert_eq!(r.status().as_u16(), 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed"));
    expect(send(json!({"tx": "zz"})), 400, "malformed");
    let good = tx(0, Action::Transfer { to: bob, amount: 5 });
    let bytes = good.encode();
    expect(
        send(json!({"tx": hex_encode(&bytes[..bytes.len() - 3])})),
        400,
        "malformed transaction",
    );
    expect(send(json!({"tx": "00".repeat(10_000)})), 400, "oversized");
    // Bad signature: one bit of the signature flipped; another chain's signature.
    let mut forged = good.clone();
    forged.signature[5] ^= 1;
    expect(send(json!({"tx": hexed(&forged)})), 400, "bad signature");
    let elsewhere = sign_tx(
        &alice,
        &Hash32([3; 32]),
        0,
        10,
        Action::Transfer { to: bob, amount: 5 },
    );
    expect(send(json!({"tx": hexed(&elsewhere)})), 400, "bad signature");
    // Nonce gap, then insufficient funds, unknown model, fee too low.
    expect(
        send(json!({"tx": hexed(&tx(4, Action::Transfer { to: bob, amount: 5 }))})),
        400,
        "bad nonce",
    );
    expect(
        send(json!({"tx": hexed(&tx(0, Action::Transfer { to: bob, amount: u64::MAX / 2 }))})),
        402,
        "insufficient funds",
    );
    let unknown_model = tx(
        0,
        Action::SubmitJob {
            model: Hash32([4; 32]),
            provider: bob,
            input_hash: Hash32([5; 32]),
            max_tokens: 5,
            max_fee: 5,
        },
    );
    expect(
        send(json!({"tx": hexed(&unknown_model)})),
        400,
        "unknown model",
    );
    let cheap = sign_tx(
        &alice,
        &chain,
        0,
        1,
        Action::Transfer { to: bob, amount: 5 },
    );
    expect(send(json!({"tx": hexed(&cheap)})), 400, "fee");
    // None of that changed anything.
    let acct = get(&format!("{}/v1/accounts/{}", node.url, alice.public()));
    assert_eq!(
        (acct["nonce"].as_u64(), acct["balance"].as_u64()),
        (Some(0), Some(1_000_000_000))
    );
    // The good one commits; sending it again is a replay.
    let (code, v) = send(json!({"tx": hexed(&good), "wait": true}));
    assert_eq!(
        (code, v["result"]["status"].as_str()),
        (200, Some("committed")),
        "{v}"
    );
    expect(send(json!({"tx": hexed(&good)})), 400, "replay");
    let acct = get(&format!("{}/v1/accounts/{}", node.url, alice.public()));
    assert_eq!(acct["balance"].as_u64(), Some(1_000_000_000 - 15));
    let same_nonce_other_tx = tx(0, Action::Transfer { to: bob, amount: 6 });
    expect(
        send(json!({"tx": hexed(&same_nonce_other_tx)})),
        400,
        "replay",
    );
    // Lookups of things that do not exist.
    let v = get(&format!("{}/v1/txs/{}", node.url, Hash32([6; 32])));
    assert_eq!(v["result"]["status"], "unknown");
    let mut r = agent()
        .get(&format!("{}/v1/txs/xyz", node.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let _: Value = r.body_mut().read_json().unwrap();
    let mut r = agent()
        .get(&format!("{}/v1/blocks/999", node.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let _: Value = r.body_mut().read_json().unwrap();
}

/// A second `vouch up --follow` process applies the first one's blocks (checked against
/// the genesis file it was given), serves the same chain read-only, refuses
/// transactions with the address to send them to, and after being killed catches up.
#[test]
fn follower_process_syncs_refuses_txs_and_catches_up_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&home_a).unwrap();
    std::fs::create_dir_all(&home_b).unwrap();
    let leader = up(&home_a, &["--no-provider", "--block-interval-ms", "20"]);
    let genesis = home_a.join("node/genesis.json");
    let pay = |n: usize| {
        for i in 0..n {
            let (code, v) = post(
                &format!("{}/v1/faucet", leader.url),
                &json!({"address": Hash32([i as u8 + 1; 32]), "amount": 1_000 + i}),
            )
            .unwrap();
            assert_eq!(code, 200, "{v}");
        }
    };
    let same_head = |a: &str, b: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (x, y) = (
                get(&format!("{a}/v1/blocks/latest")),
                get(&format!("{b}/v1/blocks/latest")),
            );
            if x["id"] == y["id"] && x["id"].is_string() {
                return x;
            }
            assert!(Instant::now() < deadline, "no sync: {x} vs {y}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    pay(5);
    let follow = [
        "--follow",
        leader.url.as_str(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--block-interval-ms",
        "50",
    ];
    let follower = up(&home_b, &follow);
    let head = same_head(&leader.url, &follower.url);
    assert!(head["header"]["height"].as_u64().unwrap() >= 5, "{head}");
    let acct = format!("/v1/accounts/{}", Hash32([3; 32]));
    assert_eq!(
        get(&format!("{}{acct}", follower.url)),
        get(&format!("{}{acct}", leader.url))
    );
    // Read-only: transactions are refused with the node to send them to.
    let (code, v) = post(
        &format!("{}/v1/faucet", follower.url),
        &json!({"address": Hash32([9; 32])}),
    )
    .unwrap();
    assert_eq!(code, 404, "no faucet on a follower: {v}");
    let key = SigningKey::from_bytes(&[5; 32]).unwrap();
    let g = Genesis::from_json(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
    let tx = sign_tx(
        &key,
        &g.chain_id(),
        0,
        10,
        Action::Transfer {
            to: Hash32([1; 32]),
            amount: 1,
        },
    );
    let (code, v) = post(
        &format!("{}/v1/txs", follower.url),
        &json!({"tx": hex_encode(&tx.encode())}),
    )
    .unwrap();
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&leader.url),
        "{v}"
    );

    // Killed, the leader moves on; restarted, the follower catches up from its own height.
    drop(follower);
    pay(4);
    let follower = up(&home_b, &follow);
    let head2 = same_head(&leader.url, &follower.url);
    assert!(
        head2["header"]["height"].as_u64().unwrap()
            >= head["header"]["height"].as_u64().unwrap() + 4,
        "{head2}"
    );
    assert_eq!(
        head2["header"]["state_root"],
        get(&format!("{}/v1/blocks/latest", leader.url))["header"]["state_root"]
    );

    // A follower with another network's genesis refuses the blocks (and says why).
    let home_c = dir.path().join("c");
    std::fs::create_dir_all(&home_c).unwrap();
    let mut other = g.clone();
    other.chain_name = "another-network".into();
    let other_path = home_c.join("genesis.json");
    std::fs::write(&other_path, other.to_json()).unwrap();
    let (mut stranger, _) = common::spawn_up(
        &home_c,
        &[
            "--listen",
            "127.0.0.1:0",
            "--follow",
            leader.url.as_str(),
            "--genesis",
            other_path.to_str().unwrap(),
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = stranger.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a follower of another chain kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(home_c.join("node.log")).unwrap();
    assert!(log.contains("is for chain"), "{log}");
}
