//! The explorer page in headless Chromium (Debian `chromium`, driven by `playwright-core`
//! from npm; `scripts/test.sh` installs both) against a real `vouch up` after a real job.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{start_dev_node, vouch};

#[test]
fn explorer_shows_the_network_and_verifies_receipts_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_node, n) = start_dev_node(home);

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
