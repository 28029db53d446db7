//! A network of real `vouch node` processes on loopback, for the multi-node tests.

use super::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A port that is free now, below Linux's ephemeral range (32768-60999): a port picked
/// from that range can be taken, before the node binds it, by the local end of one of
/// the many outgoing connections the other nodes make while they dial each other.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread test processes apart; within one process, never hand out a port twice.
    let base = 20_000 + (std::process::id() % 1_000) as u16 * 12;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn get_json(url: &str) -> Value {
    agent()
        .get(url)
        .call()
        .map(|mut r| r.body_mut().read_json::<Value>().unwrap_or_default())
        .unwrap_or_default()
}

pub fn height(url: &str) -> u64 {
    get_json(&format!("{url}/v1/status"))["height"]
        .as_u64()
        .unwrap_or(0)
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The homes, keys and addresses of `n` validators sharing one genesis.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub homes: Vec<PathBuf>,
    /// Validator addresses (p2p identities).
    pub ids: Vec<String>,
    /// Provider addresses.
    pub providers: Vec<String>,
    pub p2p: Vec<u16>,
    pub api: Vec<u16>,
    pub genesis: PathBuf,
    /// Extra `vouch node` flags per node.
    pub flags: Vec<Vec<String>>,
}

impl Net {
    /// Keys for `n` nodes and a genesis in which every node is a validator and the nodes
    /// in `providers` serve jobs; `genesis_flags` go to `vouch genesis`.
    pub fn new(n: usize, providers: &[usize], genesis_flags: &[&str]) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let homes: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("n{i}"))).collect();
        let (mut ids, mut provs) = (Vec::new(), Vec::new());
        for h in &homes {
            std::fs::create_dir_all(h).unwrap();
            let (ok, out, err) = vouch(h, "http://unused", &["node", "--show-id"]);
            assert!(ok, "{err}");
            let v: Value = serde_json::from_str(&out).unwrap();
            ids.push(v["validator"].as_str().unwrap().to_string());
            provs.push(v["provider"].as_str().unwrap().to_string());
            share_models(h);
        }
        let genesis = dir.path().join("genesis.json");
        let data = |h: &PathBuf| h.join("node").to_str().unwrap().to_string();
        let mut args: Vec<String> = vec!["genesis".into()];
        for h in &homes {
            args.extend(["--validator".into(), data(h)]);
        }
        for &p in providers {
            args.extend(["--provider".into(), data(&homes[p])]);
        }
        args.extend(["--out".into(), genesis.to_str().unwrap().into()]);
        args.extend(genesis_flags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = vouch(&homes[0], "http://unused", &args);
        assert!(ok, "{out}{err}");
        Net {
            dir,
            homes,
            ids,
            providers: provs,
            p2p: (0..n).map(|_| free_port()).collect(),
            api: (0..n).map(|_| free_port()).collect(),
            genesis,
            flags: vec![Vec::new(); n],
        }
    }

    /// Starts node `i` with every other node as a peer.
    pub fn start(&self, i: usize) -> (Node, String) {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--genesis".into(),
            self.genesis.to_str().unwrap().into(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.p2p[i]),
            "--api".into(),
            format!("127.0.0.1:{}", self.api[i]),
            "--leader-timeout-ms".into(),
            "500".into(),
        ];
        for j in 0..self.homes.len() {
            if j != i {
                args.push("--peer".into());
                args.push(format!("{}@127.0.0.1:{}", self.ids[j], self.p2p[j]));
            }
        }
        args.extend(self.flags[i].iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_vouch(&self.homes[i], &args, &[])
    }

    pub fn genesis(&self) -> vouch_state::Genesis {
        vouch_state::Genesis::from_json(&std::fs::read_to_string(&self.genesis).unwrap()).unwrap()
    }

    /// A funded API key on node `i`'s gateway (its faucet is the genesis faucet when `i`
    /// is 0).
    pub fn api_key(&self, i: usize, url: &str) -> String {
        let log = || std::fs::read_to_string(self.homes[i].join("node.log")).unwrap_or_default();
        let (ok, out, err) = vouch(&self.homes[i], url, &["wallet", "new"]);
        assert!(ok, "{out}{err}\nnode {i} log:\n{}", log());
        let (ok, out, err) = vouch(
            &self.homes[i],
            url,
            &["apikey", "create", "load", "--fund", "50000000"],
        );
        assert!(ok, "{out}{err}\nnode {i} log:\n{}", log());
        let key: Value = serde_json::from_str(&out).unwrap();
        key["api_key"].as_str().unwrap().to_string()
    }
}
