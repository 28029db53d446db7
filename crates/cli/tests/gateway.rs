//! The OpenAI-compatible gateway with the official `openai` Python client (pip), against a
//! real `vouch up` with the real model: models, chat (plain, raw response with the receipt
//! header, streaming with usage), completions, error statuses; receipts served by id and
//! verified; API-key budgets.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

mod common;
use common::{agent, start_dev_node, vouch};

#[test]
fn official_openai_client_against_vouch_up() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_node, n) = start_dev_node(home);

    assert!(vouch(home, &n, &["wallet", "new"]).0);
    let (ok, out, err) = vouch(
        home,
        &n,
        &[
            "apikey", "create", "agent-1", "--limit", "5000000", "--fund", "10000000",
        ],
    );
    assert!(ok, "{out}{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let api_key = key["api_key"].as_str().unwrap().to_string();
    let (ok, out, err) = vouch(home, &n, &["apikey", "create", "broke"]);
    assert!(ok, "{out}{err}");
    let broke: Value = serde_json::from_str(&out).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let o = Command::new("python3")
        .arg(&script)
        .env("VOUCH_BASE_URL", format!("{n}/v1"))
        .env("VOUCH_API_KEY", &api_key)
        .env("VOUCH_BROKE_KEY", broke["api_key"].as_str().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // Errors: status codes the OpenAI client maps to its exception classes.
    let code = |k: &str| {
        r["errors"][k][0]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {}", r["errors"]))
    };
    assert_eq!(code("unknown_model"), 404);
    assert_eq!(code("negative_max_tokens"), 400);
    assert_eq!(code("huge_prompt"), 400);
    assert_eq!(code("wrong_key"), 401);
    assert_eq!(code("no_funds"), 402);
    // The receipt header names the same receipt the body does (same request, greedy).
    assert_eq!(r["header_receipt"].as_str().unwrap().len(), 64);

    // Every answer's receipt is served with its inclusion proof and verifies offline.
    for rid in [
        &r["chat"]["receipt"],
        &r["stream"]["receipt"],
        &r["completion"]["receipt"],
    ] {
        let rid = rid.as_str().unwrap();
        let mut resp = agent()
            .get(&format!("{n}/v1/receipts/{rid}"))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let receipt: Value = resp.body_mut().read_json().unwrap();
        assert!(
            receipt["inclusion"]["header"]["height"].as_u64().is_some(),
            "{receipt}"
        );
        let path = home.join(format!("{rid}.json"));
        std::fs::write(&path, receipt.to_string()).unwrap();
        let genesis = home.join("node/genesis.json");
        let (ok, out, err) = vouch(
            home,
            &n,
            &[
                "verify",
                path.to_str().unwrap(),
                "--genesis",
                genesis.to_str().unwrap(),
                "--require-inclusion",
            ],
        );
        assert!(ok && out.contains("(trusted)"), "{out}{err}");
    }
    // The streamed text is the receipt's output.
    let rid = r["stream"]["receipt"].as_str().unwrap();
    let receipt: Value = agent()
        .get(&format!("{n}/v1/receipts/{rid}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(receipt["output"], r["stream"]["text"]);

    // Budget: the key's spend is the sum of the charges; a limit below one request's
    // maximum cost is refused with 402 before any escrow.
    let token = std::fs::read_to_string(home.join("node/admin.token")).unwrap();
    let mut resp = agent()
        .get(&format!("{n}/admin/keys"))
        .header("authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    let keys: Value = resp.body_mut().read_json().unwrap();
    let k = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "agent-1")
        .unwrap()
        .clone();
    assert!(k["spent"].as_u64().unwrap() > 0, "{k}");
    assert!(k["balance"].as_u64().unwrap() < 10_000_000, "{k}");
    let (ok, out, _) = vouch(home, &n, &["apikey", "create", "tiny", "--limit", "5"]);
    assert!(ok);
    let tiny: Value = serde_json::from_str(&out).unwrap();
    let mut resp = agent()
        .post(&format!("{n}/v1/chat/completions"))
        .header("authorization", &format!("Bearer {}", tiny["api_key"].as_str().unwrap()))
        .send_json(json!({"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 402);
    let v: Value = resp.body_mut().read_json().unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spend limit"),
        "{v}"
    );
    // A revoked key stops working.
    let (ok, _, _) = vouch(
        home,
        &n,
        &["apikey", "revoke", tiny["id"].as_str().unwrap()],
    );
    assert!(ok);
    let resp = agent()
        .get(&format!("{n}/v1/wallet"))
        .header(
            "authorization",
            &format!("Bearer {}", tiny["api_key"].as_str().unwrap()),
        )
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Prometheus metrics reflect what happened.
    let mut resp = agent().get(&format!("{n}/metrics")).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    for needle in [
        "vouch_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
        "vouch_http_requests_total{route=\"/v1/chat/completions\",status=\"404\"}",
        "vouch_http_request_duration_seconds_bucket{route=\"/v1/embeddings\",le=\"+Inf\"}",
        "vouch_generated_tokens_total{kind=\"chat\"}",
        "vouch_prompt_tokens_total{kind=\"embedding\"}",
        "vouch_jobs_committed_total",
        "vouch_block_height",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
}
