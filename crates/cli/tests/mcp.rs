//! The MCP server with the official Python `mcp` client (pip; `scripts/test.sh` installs it)
//! against a real `vouch up`: tool list, free tools, paid tools charged to the key's wallet,
//! receipts verifiable through the tool, bad and missing keys, spend limits, unknown arguments.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{invented_receipt, start_dev_node, vouch};

#[test]
fn mcp_agent_tools_are_charged_to_the_key_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_node, n) = start_dev_node(home);

    assert!(vouch(home, &n, &["wallet", "new"]).0);
    let (ok, out, err) = vouch(
        home,
        &n,
        &[
            "apikey", "create", "agent", "--limit", "5000000", "--fund", "10000000",
        ],
    );
    assert!(ok, "{out}{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let (ok, out, _) = vouch(
        home,
        &n,
        &[
            "apikey", "create", "tiny", "--limit", "3", "--fund", "1000000",
        ],
    );
    assert!(ok);
    let tiny: Value = serde_json::from_str(&out).unwrap();

    let invented = home.join("invented.json");
    std::fs::write(
        &invented,
        serde_json::to_vec(&invented_receipt(98)).unwrap(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let o = Command::new("python3")
        .arg(&script)
        .env("VOUCH_INVENTED_RECEIPT", &invented)
        .env("VOUCH_URL", &n)
        .env("VOUCH_API_KEY", key["api_key"].as_str().unwrap())
        .env("VOUCH_TINY_KEY", tiny["api_key"].as_str().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    let tools: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "embed",
            "get_model",
            "infer",
            "list_providers",
            "verify_receipt",
            "wallet_balance"
        ]
    );
    assert_eq!(
        r["providers"]["providers"][0]["models"][0], "smollm2-135m",
        "{r}"
    );
    assert_eq!(r["model"]["name"], "smollm2-135m");
    assert_eq!(r["missing_model_error"], true);
    assert!(!r["infer"]["text"].as_str().unwrap().is_empty(), "{r}");
    assert_eq!(r["infer"]["receipt"].as_str().unwrap().len(), 64);
    assert_eq!(r["embed_dim"], 384);
    // Paid from the key's own wallet, and counted against its limit.
    assert!(
        r["balance_after"].as_u64().unwrap() < r["balance_before"].as_u64().unwrap(),
        "{r}"
    );
    assert!(r["spent_after"].as_u64().unwrap() > 0);
    assert_eq!(r["verify"]["valid"], true, "{r}");
    assert_eq!(r["verify"]["status"], "verified", "{r}");
    assert!(r["verify"]["committed"]["height"].as_u64().is_some(), "{r}");
    assert_eq!(
        r["verify"]["committed"]["bound_to_job_and_signer"], true,
        "{r}"
    );
    assert_eq!(r["verify_tampered"]["valid"], false, "{r}");
    assert_eq!(r["verify_tampered"]["status"], "invalid", "{r}");
    // Row 4: a random key's receipt is signed only, never valid.
    assert_eq!(r["verify_invented"]["valid"], false, "{r}");
    assert_eq!(r["verify_invented"]["status"], "signed_only", "{r}");
    assert_eq!(r["verify_invented"]["provider_registered"], false, "{r}");
    // Unknown arguments (a path) are refused, not ignored.
    assert_eq!(r["extra_args"], -32602, "{r}");
    assert_eq!(r["bad_key"], -32001, "{r}");
    assert_eq!(r["no_key"], -32001, "{r}");
    // Issue 18 row 12: a missing or wrong key is an HTTP 401 with a Bearer challenge (the
    // MCP authorization spec), not a 200 carrying a JSON-RPC error.
    for k in ["http_bad_key", "http_no_key"] {
        assert_eq!(r[k]["status"], 401, "{k}: {r}");
        assert!(
            r[k]["www_authenticate"]
                .as_str()
                .unwrap()
                .starts_with("Bearer "),
            "{k}: {r}"
        );
    }
    // Tools without arguments refuse arguments too.
    assert_eq!(r["extra_args_no_arg_tool"], -32602, "{r}");
    assert_eq!(r["tiny"]["is_error"], true, "{r}");
    assert!(
        r["tiny"]["text"].as_str().unwrap().contains("spend limit"),
        "{r}"
    );
}
