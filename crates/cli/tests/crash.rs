//! Money and durability under concurrency and crashes (issue 18, rows 1 and 6), against a
//! real `vouch up` with the real model: a key's spend limit holds under 64 concurrent
//! requests (chat and transfers) and `spent` is what the ledger charged; `vouch up`
//! killed with SIGKILL under load five times loses no receipt a client was handed, and
//! `spent` still equals what the ledger charged.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{agent, spawn_up, start_dev_node, vouch, Node};

const FUND: u64 = 10_000_000;

fn new_key(home: &Path, n: &str, name: &str, limit: u64) -> (String, Value) {
    let limit = limit.to_string();
    let fund = FUND.to_string();
    let (ok, out, err) = vouch(
        home,
        n,
        &["apikey", "create", name, "--limit", &limit, "--fund", &fund],
    );
    assert!(ok, "{out}{err}");
    // One JSON document on stdout (issue 18 row 12), funding included.
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(v["funded"]["result"].is_object(), "{v}");
    (v["api_key"].as_str().unwrap().to_string(), v)
}

fn chat(n: &str, key: &str, max_tokens: u32) -> (u16, Value) {
    let r = agent()
        .post(&format!("{n}/v1/chat/completions"))
        .header("authorization", &format!("Bearer {key}"))
        .send_json(json!({"model": "smollm2-135m", "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": "Name a colour."}]}));
    match r {
        Ok(mut r) => {
            let status = r.status().as_u16();
            (status, r.body_mut().read_json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn wallet(n: &str, key: &str) -> Value {
    agent()
        .get(&format!("{n}/v1/wallet"))
        .header("authorization", &format!("Bearer {key}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// What the ledger took from a key's wallet beyond transaction fees: settled charges,
/// transfers out, and escrows still open (`FUND − balance − fee × transactions`).
fn ledger_charged(n: &str, key: &str) -> (u64, u64) {
    let w = wallet(n, key);
    let fee = 10; // dev network min_tx_fee
    let taken = FUND - w["balance"].as_u64().unwrap() - fee * w["nonce"].as_u64().unwrap();
    (taken, w["spent"].as_u64().unwrap())
}

/// Waits until every job has settled (challenge window 10 s on the dev network) and the
/// key's `spent` equals what the ledger took; returns (charged, spent).
fn settled(n: &str, key: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (charged, spent) = ledger_charged(n, key);
        let status: Value = agent()
            .get(&format!("{n}/v1/status"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let quiet = status["mempool"] == 0;
        if (quiet && charged == spent) || Instant::now() > deadline {
            return (charged, spent);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Row 1: 64 requests at once on one key whose limit covers a few; before the fix the
/// gateway read the key record before awaiting token counting, and concurrent
/// reservations overwrote each other (16 served, 6,500 charged against a limit of 1,000).
#[test]
fn spend_limit_holds_under_64_concurrent_requests_and_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_node, n) = start_dev_node(home);
    assert!(vouch(home, &n, &["wallet", "new"]).0);

    let limit = 2_000u64;
    let (key, _) = new_key(home, &n, "racer", limit);
    let barrier = std::sync::Barrier::new(64);
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    chat(&n, &key, 4)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served = results.iter().filter(|r| r.0 == 200).count();
    assert!(served >= 1, "{results:?}");
    assert!(
        results.iter().all(|r| [200, 402, 429].contains(&r.0)),
        "{results:?}"
    );
    let (charged, spent) = settled(&n, &key);
    eprintln!("chat: {served} of 64 served, charged {charged}, spent {spent}, limit {limit}");
    assert!(charged <= limit, "charged {charged} past the limit {limit}");
    assert_eq!(spent, charged, "the key's spent is what the ledger charged");

    // Transfers: 64 at once of 1,000 on a key with a limit of 10,000.
    let (tkey, _) = new_key(home, &n, "payer", 10_000);
    let to = vouch_crypto::SigningKey::from_bytes(&[7u8; 32])
        .unwrap()
        .public();
    let barrier = std::sync::Barrier::new(64);
    let paid: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    agent()
                        .post(&format!("{n}/v1/wallet/transfer"))
                        .header("authorization", &format!("Bearer {tkey}"))
                        .send_json(json!({"to": to, "amount": 1_000}))
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = paid.iter().filter(|s| **s == 200).count() as u64;
    let (charged, spent) = settled(&n, &tkey);
    let got: Value = agent()
        .get(&format!("{n}/v1/accounts/{to}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    eprintln!("transfers: {ok} of 64 accepted, charged {charged}, spent {spent}");
    assert!(charged <= 10_000, "{charged}");
    assert_eq!(got["balance"].as_u64().unwrap_or(0), charged);
    assert_eq!(ok * 1_000, charged);
    assert_eq!(spent, charged);

    // Row 12: moving money to the key's own wallet spends nothing of its limit.
    let own = wallet(&n, &tkey)["wallet"].clone();
    let r = agent()
        .post(&format!("{n}/v1/wallet/transfer"))
        .header("authorization", &format!("Bearer {tkey}"))
        .send_json(json!({"to": own, "amount": 500_000}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(wallet(&n, &tkey)["spent"].as_u64().unwrap(), spent);

    // Row 12: `--fund` beyond the wallet's means fails before any key is created.
    let before = vouch(home, &n, &["apikey", "list"]).1;
    let (ok, out, err) = vouch(
        home,
        &n,
        &["apikey", "create", "greedy", "--fund", "999999999999999999"],
    );
    assert!(!ok, "{out}");
    assert!(err.contains("no key was created"), "{err}");
    let after = vouch(home, &n, &["apikey", "list"]).1;
    assert_eq!(
        serde_json::from_str::<Value>(&before).unwrap()["keys"]
            .as_array()
            .unwrap()
            .len(),
        serde_json::from_str::<Value>(&after).unwrap()["keys"]
            .as_array()
            .unwrap()
            .len()
    );
}

fn restart(home: &Path) -> (Node, String) {
    spawn_up(
        home,
        &["--listen", "127.0.0.1:0", "--block-interval-ms", "20"],
        &[],
    )
}

/// Row 6: five SIGKILLs under load. Every receipt a client was handed is served after the
/// restart with its inclusion proof and verifies offline against the genesis; the key's
/// `spent` equals what the ledger charged.
#[test]
fn kill_9_under_load_loses_no_receipt_a_client_holds() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (node, mut n) = start_dev_node(home);
    let mut node = Some(node);
    assert!(vouch(home, &n, &["wallet", "new"]).0);
    let (key, _) = new_key(home, &n, "crashy", 0);
    let mut held: Vec<String> = Vec::new();
    for round in 0..5 {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let got = std::sync::Mutex::new(Vec::<String>::new());
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (st, body) = chat(&n, &key, 3);
                        if st == 200 {
                            got.lock()
                                .unwrap()
                                .push(body["receipt"].as_str().unwrap().to_string());
                        }
                    }
                });
            }
            // Kill once answers are flowing, with requests in flight.
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.lock().unwrap().len() < 4 + round && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            node.take(); // SIGKILL (Child::kill) and reap
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let got = got.into_inner().unwrap();
        assert!(!got.is_empty(), "round {round}: no answers");
        held.extend(got);
        let (nn, url) = restart(home);
        node = Some(nn);
        n = url;
    }
    // Every receipt handed out: served, included in a block, verified offline.
    let genesis = home.join("node/genesis.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, rid) in held.iter().enumerate() {
        let receipt = loop {
            let mut r = agent()
                .get(&format!("{n}/v1/receipts/{rid}"))
                .call()
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
            if status == 200 && v["inclusion"]["header"]["height"].as_u64().is_some() {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "receipt {rid} ({i} of {}) lost after the crashes: {status} {v}",
                held.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let f = home.join(format!("r{i}.json"));
        std::fs::write(&f, receipt.to_string()).unwrap();
        let (ok, out, err) = vouch(
            home,
            &n,
            &[
                "verify",
                f.to_str().unwrap(),
                "--genesis",
                genesis.to_str().unwrap(),
            ],
        );
        assert!(ok, "receipt {rid}: {out}{err}");
    }
    let (charged, spent) = settled(&n, &key);
    eprintln!(
        "{} receipts held across 5 kills, all served and verified; charged {charged}, spent {spent}",
        held.len()
    );
    assert_eq!(spent, charged, "the key's spent is what the ledger charged");
    drop(node);
}
