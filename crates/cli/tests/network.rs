//! Four real `vouch node` processes on loopback form one network under BFT consensus
//! (commonware simplex over authenticated TCP). Node 0 serves jobs with the real model
//! and the gateway; clients keep asking it for answers while validator 2 is killed with
//! SIGKILL: the other three keep finalizing, the killed one restarts from its journal
//! and store and catches up, every receipt a client received is in the chain (on the
//! restarted node too), and every block's certificate checks against the genesis
//! validator set offline.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(url: &str) -> Value {
    agent()
        .get(&format!("{url}/v1/status"))
        .call()
        .map(|mut r| r.body_mut().read_json::<Value>().unwrap_or_default())
        .unwrap_or_default()
}

fn height(url: &str) -> u64 {
    status(url)["height"].as_u64().unwrap_or(0)
}

struct Net {
    homes: Vec<PathBuf>,
    ids: Vec<String>,
    p2p: Vec<u16>,
    api: Vec<u16>,
    genesis: PathBuf,
}

impl Net {
    fn start(&self, i: usize) -> (Node, String) {
        let listen = format!("127.0.0.1:{}", self.p2p[i]);
        let api = format!("127.0.0.1:{}", self.api[i]);
        let mut args: Vec<String> = vec![
            "node".into(),
            "--genesis".into(),
            self.genesis.to_str().unwrap().into(),
            "--listen".into(),
            listen,
            "--api".into(),
            api,
            "--leader-timeout-ms".into(),
            "500".into(),
        ];
        for j in 0..self.homes.len() {
            if j != i {
                args.push("--peer".into());
                args.push(format!("{}@127.0.0.1:{}", self.ids[j], self.p2p[j]));
            }
        }
        if i == 0 {
            args.extend(["--provider".into(), "--no-audit".into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_vouch(&self.homes[i], &args, &[])
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn four_nodes_survive_a_killed_validator_and_lose_no_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let homes: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("n{i}"))).collect();
    let mut ids = Vec::new();
    for h in &homes {
        std::fs::create_dir_all(h).unwrap();
        let (ok, out, err) = vouch(h, "http://unused", &["node", "--show-id"]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        ids.push(v["validator"].as_str().unwrap().to_string());
    }
    share_models(&homes[0]);
    let genesis = dir.path().join("genesis.json");
    let data = |h: &Path| h.join("node").to_str().unwrap().to_string();
    let (ok, out, err) = vouch(
        &homes[0],
        "http://unused",
        &[
            "genesis",
            "--validator",
            &data(&homes[0]),
            "--validator",
            &data(&homes[1]),
            "--validator",
            &data(&homes[2]),
            "--validator",
            &data(&homes[3]),
            "--provider",
            &data(&homes[0]),
            "--out",
            genesis.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let net = Net {
        homes: homes.clone(),
        ids,
        p2p: (0..4).map(|_| free_port()).collect(),
        api: (0..4).map(|_| free_port()).collect(),
        genesis: genesis.clone(),
    };
    let mut nodes: Vec<Option<(Node, String)>> = (0..4).map(|i| Some(net.start(i))).collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().1.clone())
        .collect();

    // A funded API key on the gateway (node 0); its faucet is the genesis faucet.
    let gw = urls[0].clone();
    assert!(vouch(&homes[0], &gw, &["wallet", "new"]).0);
    let (ok, out, err) = vouch(
        &homes[0],
        &gw,
        &["apikey", "create", "load", "--fund", "50000000"],
    );
    assert!(ok, "{out}{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let api_key = key["api_key"].as_str().unwrap().to_string();

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
    let g: vouch_state::Genesis =
        vouch_state::Genesis::from_json(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
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
