//! Shared by the integration tests that run `vouch up` as a real process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub mod net;

/// The binary under test: `$VOUCH_BIN` if set (e.g. an older build, to show that a
/// regression test fails without its fix; docs/regressions.md), else the one Cargo built.
pub fn vouch_bin() -> &'static str {
    static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::env::var("VOUCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vouch").to_string())
    });
    &BIN
}

/// A running `vouch up`, killed when dropped.
pub struct Node(pub Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `vouch --home H --node N ARGS`; (success, stdout, stderr).
pub fn vouch(home: &Path, node: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(vouch_bin())
        .args(["--home", home.to_str().unwrap(), "--node", node])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Starts `vouch --home H up ARGS` with extra environment, waits for its "listening on"
/// line, and returns the process and its base URL. Its stderr (logs) goes to
/// `H/node.log`.
pub fn spawn_up(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Node, String) {
    let mut all = vec!["up"];
    all.extend_from_slice(args);
    spawn_vouch(home, &all, envs)
}

/// Starts `vouch --home H ARGS` (a command that serves the API: `up` or `node`), waits
/// for its "listening on" line; stderr goes to `H/node.log`.
pub fn spawn_vouch(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Node, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("node.log"))
        .unwrap();
    let mut child = Command::new(vouch_bin())
        .args(["--home", home.to_str().unwrap()])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start vouch up");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let node = Node(child);
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
        panic!("vouch up did not start: {line:?}\n{log}");
    };
    let url = format!("http://{addr}");
    (node, url)
}

/// Links the default home's model cache into `home`, so a test node finds the weights.
pub fn share_models(home: &Path) {
    let models_src = std::env::var_os("VOUCH_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(vouch_inference::models::default_home)
        .join("models");
    std::os::unix::fs::symlink(&models_src, home.join("models")).unwrap();
}

/// Starts `vouch up` (dev genesis, provider, validator) in `home`, sharing the model cache
/// of the default home; returns the node and its base URL.
pub fn start_dev_node(home: &Path) -> (Node, String) {
    share_models(home);
    spawn_up(
        home,
        &["--listen", "127.0.0.1:0", "--block-interval-ms", "20"],
        &[],
    )
}

/// An HTTP client that returns error statuses as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .new_agent()
}

/// A receipt invented and signed by a random key (`key` seeds it), never committed: it
/// passes the offline checks (hashes, fingerprint structure, signature) and proves
/// nothing about the network (issue 18, row 4).
pub fn invented_receipt(key: u8) -> vouch_types::Receipt {
    use vouch_types::{ChunkProof, Fingerprint, FinishReason, Receipt, ReceiptKind, Sampling};
    let prompt = "<|im_start|>user\nInvent an answer.<|im_end|>\n".to_string();
    let output = "Hello".to_string();
    let tokens = vec![19556u32, 2];
    let mut r = Receipt {
        version: vouch_types::PLAIN_RECEIPT_VERSION,
        kind: ReceiptKind::Chat,
        model: vouch_types::Hash32([7; 32]),
        model_name: "smollm2-135m".into(),
        tokenizer: vouch_types::Hash32([2; 32]),
        engine: "invented".into(),
        input_hash: Receipt::hash_input(ReceiptKind::Chat, &prompt),
        prompt,
        prompt_tokens: 9,
        output_hash: Receipt::hash_output(&output, &tokens),
        output,
        output_tokens: tokens,
        embedding: None,
        finish_reason: FinishReason::Stop,
        sampling: Sampling {
            temperature: 0.7,
            top_p: 0.9,
            seed: u64::MAX - 7,
            max_tokens: 16,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        },
        stop: Vec::new(),
        constraint: None,
        fingerprint: Fingerprint {
            scheme: "rowtop4-gf65497-f16-chunk32-v1".into(),
            top_k: 128,
            chunk_tokens: 32,
            chunks: vec![ChunkProof {
                modulus: 65497,
                coeffs: vec![0; 120],
            }],
        },
        trace: None,
        created_at: 1_795_320_000,
        provider: vouch_types::Hash32::default(),
        signature: String::new(),
        inclusion: None,
    };
    let signer = vouch_crypto::SigningKey::from_bytes(&[key; 32]).unwrap();
    vouch_crypto::sign_receipt(&signer, &mut r);
    r
}
