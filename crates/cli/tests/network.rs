//! Four real `vouch node` processes on loopback form one network under BFT consensus
//! (commonware simplex over authenticated TCP). Node 0 serves jobs with the real model
//! and the gateway; clients keep asking it for answers while validator 2 is killed with
//! SIGKILL: the other three keep finalizing, the killed one restarts from its journal
//! and store and catches up, every receipt a client received is in the chain (on the
//! restarted node too), and every block's certificate checks against the genesis
//! validator set offline.

mod common;

use common::net::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn four_nodes_survive_a_killed_validator_and_lose_no_receipt() {
    let mut net = Net::new(4, &[0], &[]);
    net.flags[0] = vec!["--provider".into(), "--no-audit".into()];
    let mut nodes: Vec<Option<(Node, String)>> = (0..4).map(|i| Some(net.start(i))).collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().1.clone())
        .collect();

    // A funded API key on the gateway (node 0); its faucet is the genesis faucet.
    let gw = urls[0].clone();
    let api_key = net.api_key(0, &gw);

    // Load: two clients asking for short answers until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let receipts = Arc::new(Mutex::new(Vec::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (stop, receipts, errors, gw, key) = (
                stop.clone(),
                receipts.clone(),
                errors.clone(),
                gw.clone(),
                api_key.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let body = serde_json::json!({
                        "model": "smollm2-135m",
                        "max_tokens": 3,
                        "messages": [{"role": "user", "content": format!("client {c} question {k}: name a colour")}],
                    });
                    match a
                        .post(&format!("{gw}/v1/chat/completions"))
                        .header("authorization", &format!("Bearer {key}"))
                        .send_json(&body)
                    {
                        Ok(mut r) if r.status() == 200 => {
                            let v: Value = r.body_mut().read_json().unwrap();
                            let id = v["vouch"]["receipt"].as_str().unwrap().to_string();
                            receipts.lock().unwrap().push(id);
                        }
                        Ok(r) if r.status() == 429 => std::thread::sleep(Duration::from_millis(200)),
                        Ok(mut r) => errors.lock().unwrap().push(format!(
                            "{}: {}",
                            r.status(),
                            r.body_mut().read_to_string().unwrap_or_default()
                        )),
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    wait_until("answers before the kill", Duration::from_secs(120), || {
        receipts.lock().unwrap().len() >= 4
    });
    let before = height(&urls[1]);
    // SIGKILL validator 2 (not the gateway) under load.
    let (mut killed, _) = nodes[2].take().unwrap();
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    let answered_at_kill = receipts.lock().unwrap().len();
    // The other three keep finalizing: more answers get committed.
    wait_until(
        "three validators finalize",
        Duration::from_secs(120),
        || receipts.lock().unwrap().len() >= answered_at_kill + 4 && height(&urls[1]) > before + 2,
    );
    // Restart it: it catches up from its journal, store and peers.
    nodes[2] = Some(net.start(2));
    let restarted = nodes[2].as_ref().unwrap().1.clone();
    wait_until(
        "restarted validator catches up",
        Duration::from_secs(120),
        || height(&restarted) >= height(&urls[0]) && height(&restarted) > before + 2,
    );
    let answered_after = receipts.lock().unwrap().len();
    wait_until(
        "answers after the restart",
        Duration::from_secs(120),
        || receipts.lock().unwrap().len() >= answered_after + 2,
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "client errors: {:?}",
        errors.lock().unwrap()
    );

    // Every receipt a client received is committed: the gateway serves it with an
    // inclusion proof whose certificate checks offline against the genesis validators,
    // and the block it names is the same block on the restarted node and on node 1.
    let g = net.genesis();
    let a = agent();
    let all = receipts.lock().unwrap().clone();
    let block = |u: &str, h: u64| -> Value {
        agent()
            .get(&format!("{u}/v1/blocks/{h}"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    for id in &all {
        let mut r = a
            .get(&format!("{gw}/v1/receipts/{id}?wait_ms=20000"))
            .call()
            .unwrap();
        assert_eq!(r.status(), 200, "receipt {id}");
        let v: Value = r.body_mut().read_json().unwrap();
        let receipt: vouch_types::Receipt = serde_json::from_value(v.clone()).unwrap();
        let rep = vouch_verify::inclusion::check_inclusion(&receipt, Some(&g.validators))
            .unwrap_or_else(|e| panic!("receipt {id}: {e}"));
        assert!(rep.signers.len() >= 3);
        // Under BFT certificates too: bound to its job and signer, on the pinned chain.
        let trust = vouch_verify::Trust {
            chain: Some(g.chain_id()),
            validators: g.validators.clone(),
            ..Default::default()
        };
        let verdict = vouch_verify::assess(&receipt, &trust, None);
        assert_eq!(
            verdict.status,
            vouch_verify::Status::Verified,
            "{id}: {}",
            verdict.line()
        );
        let h = rep.height;
        wait_until(
            "the restarted node has the block",
            Duration::from_secs(60),
            || height(&restarted) >= h,
        );
        for u in [&urls[1], &restarted] {
            assert_eq!(
                block(u, h)["header"],
                v["inclusion"]["header"],
                "block {h} of receipt {id} on {u}"
            );
        }
    }
    // Same chain everywhere.
    let h = height(&urls[0]);
    wait_until(
        "all nodes at the same height",
        Duration::from_secs(60),
        || {
            urls.iter().skip(1).all(|u| {
                if u == &urls[2] {
                    height(&restarted) >= h
                } else {
                    height(u) >= h
                }
            })
        },
    );
    let reference = block(&urls[0], h)["header"].clone();
    for u in [&urls[1], &restarted, &urls[3]] {
        assert_eq!(block(u, h)["header"], reference, "block {h} differs on {u}");
    }
    eprintln!(
        "network: {} answers ({answered_at_kill} before the kill), height {h}",
        all.len()
    );
}
