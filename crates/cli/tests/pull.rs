//! Model weights between nodes, with real `vouch node` processes: `vouch model pull`
//! fetches SmolLM2 by content id from the peers that announce it, a peer that serves a
//! corrupted piece is caught and dropped, a pull killed halfway resumes from what already
//! verified, and a node that follows new versions fetches a published fine-tune by itself.

mod common;
use common::net::*;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;
use vouch_inference::models;

/// A peer that answers like `upstream` but flips one byte in every response longer than
/// 256 KiB: manifests, outboards and the last piece check out, bulk pieces do not.
fn corrupting_peer(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut range = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("range") {
                            range = Some(v.trim().to_string());
                        }
                    }
                }
                let mut req = agent().get(&format!("{upstream}{path}"));
                if let Some(r) = &range {
                    req = req.header("range", r);
                }
                let Ok(mut resp) = req.call() else { return };
                let status = resp.status().as_u16();
                let mut body = Vec::new();
                let _ = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 30)
                    .reader()
                    .read_to_end(&mut body);
                if body.len() > 256 * 1024 {
                    let mid = body.len() / 2;
                    body[mid] ^= 0x40;
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
    url
}

#[test]
fn models_pull_from_peers_verified_resumable_and_follow_new_versions() {
    let mut net = Net::new(3, &[0], &[]);
    net.flags[2] = vec!["--follow-models".into()];
    let nodes: Vec<_> = (0..3).map(|i| net.start(i)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.1.clone()).collect();
    let spec = &models::SMOLLM2_135M;
    let id = spec.id().to_string();

    // Every node holds SmolLM2 and says so over the p2p links.
    wait_until(
        "every node announced the model",
        Duration::from_secs(60),
        || {
            get_json(&format!("{}/v1/p2p/models/{id}/sources", urls[1]))["sources"]
                .as_array()
                .is_some_and(|s| s.len() == 3)
        },
    );
    let manifest = get_json(&format!("{}/v1/p2p/models/{id}/manifest", urls[0]));
    assert_eq!(manifest["files"][0]["hash"], spec.files[0].blake3);

    // 1. Pull into an empty home through node 1 (which names all three nodes), plus a
    //    peer that corrupts pieces; rate-capped so it can be killed a quarter of the way.
    let evil = corrupting_peer(urls[0].clone());
    let fresh = tempfile::tempdir().unwrap();
    let mut child = Command::new(vouch_bin())
        .args(["--home", fresh.path().to_str().unwrap(), "--node", &urls[1]])
        .args(["model", "pull", &id, "--peer", &evil, "--limit-rate", "15"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut percent = 0.0;
    while percent < 25.0 {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("pull ended early:\n{}", seen.join("\n")))
            .unwrap();
        if let Some(p) = line
            .split(" (")
            .nth(1)
            .and_then(|r| r.split('%').next())
            .and_then(|p| p.parse::<f64>().ok())
        {
            percent = p;
        }
        seen.push(line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = seen.join("\n");
    assert!(
        log.contains(&format!("dropped peer {evil}: group")) && log.contains("does not match"),
        "the corrupting peer is caught:\n{log}"
    );
    for u in &urls {
        assert!(!log.contains(&format!("dropped peer {u}")), "{log}");
    }
    let dest = spec.path(fresh.path(), 0);
    let part = dest.with_file_name(format!("{}.part", spec.files[0].name));
    assert!(
        part.is_file() && !dest.exists(),
        "killed mid-transfer:\n{log}"
    );

    // While another pull holds the partial file, a second one refuses to touch it.
    {
        let holder = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        holder.lock().unwrap();
        let (ok, out, err) = vouch(fresh.path(), &urls[1], &["model", "pull", &id]);
        assert!(!ok && err.contains("another pull is writing"), "{out}{err}");
    }

    // 2. Run it again: what verified is kept, the rest fetched, the file installed.
    let (ok, out, err) = vouch(fresh.path(), &urls[1], &["model", "pull", &id]);
    assert!(ok, "{out}{err}");
    let resumed_mb: f64 = err
        .lines()
        .find_map(|l| l.split("resuming, ").nth(1))
        .and_then(|r| r.split(" MB").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resume line:\n{err}"));
    assert!(resumed_mb >= 20.0, "resumed {resumed_mb} MB:\n{err}");
    assert!(out.starts_with("pulled smollm2-135m"), "{out}");
    assert!(!part.exists());
    assert_eq!(
        models::hash_file(&dest).unwrap().to_hex(),
        spec.files[0].blake3,
        "the pulled weights are the registered ones"
    );
    // The pulled model loads and is what the ledger registered.
    models::check_files(spec, fresh.path()).unwrap();

    // 3. Again: nothing to fetch.
    let (ok, out, err) = vouch(fresh.path(), &urls[1], &["--json", "model", "pull", &id]);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["fetched"], 0, "{out}");
    assert_eq!(r["reused"], spec.files[0].bytes, "{out}");

    // Refusals: an unregistered id, and a registered one nobody has.
    let bogus = "ab".repeat(32);
    let (ok, _, err) = vouch(fresh.path(), &urls[1], &["model", "pull", &bogus]);
    assert!(!ok && err.contains("not registered"), "{err}");

    // 4. A fine-tune published at node 0 reaches node 2 (--follow-models), not node 1.
    let (ok, out, err) = vouch(&net.homes[0], &urls[0], &["wallet", "new"]);
    assert!(ok, "{out}{err}");
    let ft = net.homes[0].join("smollm2-legal.gguf");
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&ft, &bytes).unwrap();
    let (ok, out, err) = vouch(
        &net.homes[0],
        &urls[0],
        &[
            "--json",
            "model",
            "publish",
            ft.to_str().unwrap(),
            "--name",
            "smollm2-legal",
            "--version",
            "1.1",
            "--parent",
            &id,
        ],
    );
    assert!(ok, "{out}{err}");
    let published: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ft_id = published["model"].as_str().unwrap().to_string();
    let ft_hash = published["seeded"].as_str().unwrap().to_string();
    let followed = net.homes[2].join("blobs").join(&ft_hash);
    wait_until(
        "node 2 pulled the new version",
        Duration::from_secs(60),
        || followed.is_file(),
    );
    assert_eq!(std::fs::read(&followed).unwrap(), bytes);
    let m = get_json(&format!("{}/v1/p2p/models/{ft_id}/manifest", urls[2]));
    assert_eq!(m["files"][0]["hash"], ft_hash.as_str(), "{m}");
    assert!(!net.homes[1].join("blobs").join(&ft_hash).exists());
    // And anyone can pull it from the network now, from either node that has it.
    let other = tempfile::tempdir().unwrap();
    let (ok, out, err) = vouch(other.path(), &urls[1], &["--json", "model", "pull", &ft_id]);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["fetched"], 3_000_000, "{out}");
    drop(nodes);
}
