//! The explorer page in headless Chromium (Debian `chromium`, driven by `playwright-core`
//! from npm; `scripts/test.sh` installs both) against a real `vouch up` after a real job.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const VOUCH: &str = env!("CARGO_BIN_EXE_vouch");

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vouch(home: &Path, node: &str, args: &[&str]) -> (bool, String, String) {
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

#[test]
fn explorer_shows_the_network_and_verifies_receipts_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
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
    let _node = Node(child);
    let n = format!(
        "http://{}",
        line.trim()
            .strip_prefix("listening on ")
            .expect("node started")
    );

    assert!(vouch(home, &n, &["wallet", "new"]).0);
    let (ok, out, err) = vouch(
        home,
        &n,
        &[
            "infer",
            "--prompt",
            "Say hello.",
            "--max-tokens",
            "8",
            "--seed",
            "4",
        ],
    );
    assert!(ok, "{out}{err}");

    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let shots = home.join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let o = Command::new("node")
        .arg(web.join("tests/explorer.mjs"))
        .arg(&n)
        .arg(&shots)
        .current_dir(&web)
        .output()
        .expect("run node (scripts/test.sh installs Node packages and chromium)");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let c: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(c["chain"].as_str().unwrap().contains("vouch-dev"), "{c}");
    assert!(c["blocks"].as_u64().unwrap() >= 2, "{c}");
    assert!(c["jobs"].as_u64().unwrap() >= 1, "{c}");
    assert!(
        c["providerRow"].as_str().unwrap().contains("10000000000"),
        "provider stake shown: {c}"
    );
    let models = c["models"].to_string();
    assert!(
        models.contains("smollm2-135m") && models.contains("minilm-l6"),
        "{c}"
    );
    assert!(
        c["jobRow"].as_str().unwrap().contains("committed")
            || c["jobRow"].as_str().unwrap().contains("settled"),
        "{c}"
    );
    assert!(
        c["valid"].as_str().unwrap().contains("VALID")
            && c["valid"].as_str().unwrap().contains("block"),
        "{c}"
    );
    assert!(c["invalid"].as_str().unwrap().contains("INVALID"), "{c}");
    assert!(c["notJson"].as_str().unwrap().contains("not JSON"), "{c}");
    assert_eq!(c["pageErrors"].as_array().unwrap().len(), 0, "{c}");
    // The screenshots exist and are real renderings, not blank pages.
    assert!(c["screenshotBytes"].as_u64().unwrap() > 20_000, "{c}");
    for f in ["explorer.png", "receipt-valid.png", "receipt-invalid.png"] {
        let bytes = std::fs::read(shots.join(f)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f} is not a PNG");
    }
    // Keep the screenshots for a person to look at.
    if let Some(dir) = std::env::var_os("VOUCH_SCREENSHOTS") {
        for f in ["explorer.png", "receipt-valid.png", "receipt-invalid.png"] {
            let _ = std::fs::copy(shots.join(f), Path::new(&dir).join(f));
        }
    }
}
