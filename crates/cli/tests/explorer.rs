//! The explorer page in headless Chromium (Debian `chromium`, driven by `playwright-core`
//! from npm; `scripts/test.sh` installs both) against a real `vouch up` after a real job.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{agent, invented_receipt, start_dev_node, vouch};

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
            // Above 2^53: JSON.parse rounds such a number, so the page must get it as a
            // string to verify the receipt (issue 18, row 7).
            "--seed",
            "18446744073709551557",
        ],
    );
    assert!(ok, "{out}{err}");
    // A receipt invented and signed by a random key, never committed (row 4): the node
    // says SIGNED ONLY, never valid, and so does the page.
    let invented = invented_receipt(99);
    let invented_path = home.join("invented.json");
    std::fs::write(&invented_path, serde_json::to_vec(&invented).unwrap()).unwrap();
    let v: Value = agent()
        .post(&format!("{n}/v1/verify"))
        .send_json(&invented)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["status"], "signed_only", "{v}");
    assert_eq!(v["provider_registered"], false, "{v}");
    assert!(v["committed"].is_null(), "{v}");

    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let shots = home.join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let o = Command::new("node")
        .arg(web.join("tests/explorer.mjs"))
        .arg(&n)
        .arg(&shots)
        .arg(&invented_path)
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
    // Opened from the job list: verified by the node, every fact named; the seed above
    // 2^53 survived JSON.parse in the page.
    let valid = c["valid"].as_str().unwrap();
    assert!(
        valid.contains("VERIFIED")
            && valid.contains("block")
            && valid.contains("bound to job")
            && valid.contains("this chain's validators"),
        "{c}"
    );
    assert_eq!(c["seed"], "18446744073709551557", "{c}");
    let invented = c["invented"].as_str().unwrap();
    assert!(
        invented.contains("SIGNED ONLY")
            && invented.contains("not committed")
            && invented.contains("not a registered provider")
            && !invented.contains("VERIFIED"),
        "{c}"
    );
    assert_eq!(c["inventedShownValid"], false, "{c}");
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
