//! Shared by the integration tests that run `vouch up` as a real process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const VOUCH: &str = env!("CARGO_BIN_EXE_vouch");

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
    let o = Command::new(VOUCH)
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

/// Starts `vouch up` (dev genesis, provider, validator) in `home`, sharing the model cache
/// of the default home; returns the node and its base URL.
pub fn start_dev_node(home: &Path) -> (Node, String) {
    let models_src = std::env::var_os("VOUCH_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(vouch_inference::models::default_home)
        .join("models");
    std::os::unix::fs::symlink(&models_src, home.join("models")).unwrap();
    let mut child = Command::new(VOUCH)
        .args([
            "--home",
            home.to_str().unwrap(),
            "up",
            "--listen",
            "127.0.0.1:0",
            "--block-interval-ms",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let node = Node(child);
    let url = format!(
        "http://{}",
        line.trim()
            .strip_prefix("listening on ")
            .expect("node started")
    );
    (node, url)
}

/// An HTTP client that returns error statuses as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .new_agent()
}
