//! Provenance against `vouch up`, as users run it: two contributors add corpora to one
//! data index (content ids, exact and near duplicates across contributors, credit on the
//! ledger to the first contributor only), publish models with their lineage (a fine-tune
//! trained on one dataset, a fine-tune of it trained on another), read the lineage
//! (ancestors, descendants, datasets, royalties paid after a settled job), and get clear
//! refusals for bad input.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{share_models, start_dev_node, vouch};

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Runs `vouch --json ARGS` and returns its JSON, failing the test with its output if it
/// failed.
fn ok(home: &Path, url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = vouch(home, url, &all);
    assert!(ok, "vouch {args:?} failed:\n{out}\n{err}");
    json(&out)
}

fn write_jsonl(path: &Path, texts: &[String]) {
    let body: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(path, body).unwrap();
}

/// An edit of a document: every `n`th word replaced.
fn edited(t: &str, n: usize) -> String {
    t.split_whitespace()
        .enumerate()
        .map(|(i, w)| if i % n == 7 % n { "altered" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn data_credit_and_model_lineage_on_a_dev_node() {
    let dir = tempfile::tempdir().unwrap();
    let node_home = dir.path().join("node");
    std::fs::create_dir_all(&node_home).unwrap();
    let (_node, url) = start_dev_node(&node_home);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    for h in [&alice, &bob] {
        std::fs::create_dir_all(h).unwrap();
        share_models(h);
        ok(h, &url, &["wallet", "new"]);
    }
    let index = dir.path().join("index");
    let index = index.to_str().unwrap();

    // Alice: 30 documents, one exact copy and one lightly edited copy among them.
    let docs = vouch_data::corpus::documents(40, 11);
    let mut a_texts: Vec<String> = docs[..30].to_vec();
    a_texts.push(docs[3].clone());
    a_texts.push(edited(&docs[5], 9));
    let a_file = dir.path().join("alice.jsonl");
    write_jsonl(&a_file, &a_texts);
    let a = ok(
        &alice,
        &url,
        &[
            "data",
            "add",
            a_file.to_str().unwrap(),
            "--source",
            "alice's forum archive",
            "--licence",
            "CC-BY-4.0",
            "--index",
            index,
        ],
    );
    assert_eq!(a["items"], 32, "{a}");
    assert_eq!(a["new"], 30, "{a}");
    assert_eq!(a["exact_duplicates"], 1, "{a}");
    assert_eq!(a["near_duplicates"], 1, "{a}");
    assert_eq!(a["credited"], 30, "{a}");
    let dups = a["duplicates"].as_array().unwrap();
    let near = dups.iter().find(|d| d["kind"] == "near").unwrap();
    assert_eq!(
        (near["item"].as_u64(), near["original_index"].as_u64()),
        (Some(31), Some(5))
    );
    // Every 9th word changed: a borderline Jaccard, so MiniLM decided.
    let j = near["jaccard"].as_f64().unwrap();
    assert!((0.35..0.6).contains(&j), "{near}");
    assert!(
        near["cosine"].as_f64().unwrap() >= 0.85,
        "confirmed by MiniLM: {near}"
    );
    let d_alice = a["dataset"].as_str().unwrap().to_string();

    // Bob: 6 new documents, 3 of Alice's verbatim and one of hers edited. The verbatim ones
    // are recorded as duplicates by the ledger; the edited one is caught by the index.
    let mut b_texts: Vec<String> = docs[30..36].to_vec();
    b_texts.extend([docs[0].clone(), docs[1].clone(), docs[2].clone()]);
    b_texts.push(edited(&docs[10], 25));
    let b_file = dir.path().join("bob.jsonl");
    write_jsonl(&b_file, &b_texts);
    let b = ok(
        &bob,
        &url,
        &[
            "data",
            "add",
            b_file.to_str().unwrap(),
            "--source",
            "bob's crawl",
            "--index",
            index,
        ],
    );
    assert_eq!(b["new"], 6, "{b}");
    assert_eq!(b["exact_duplicates"], 3, "{b}");
    assert_eq!(b["near_duplicates"], 1, "{b}");
    assert_eq!(b["credited"], 6, "{b}");
    for d in b["duplicates"].as_array().unwrap() {
        assert_eq!(
            d["original_dataset"],
            d_alice.as_str(),
            "credited to Alice: {d}"
        );
        if d["kind"] == "near" {
            // Every 25th word changed: clear on its Jaccard alone, no embedding needed.
            assert!(d["jaccard"].as_f64().unwrap() >= 0.6, "{d}");
            assert!(d["cosine"].is_null(), "{d}");
        }
    }
    let d_bob = b["dataset"].as_str().unwrap().to_string();

    // Without the shared index, Bob's verbatim copies still reach the ledger, which credits
    // them to Alice and counts them as duplicates of his dataset.
    let c_file = dir.path().join("carol.jsonl");
    write_jsonl(&c_file, &[docs[0].clone(), docs[36].clone()]);
    let c = ok(
        &bob,
        &url,
        &[
            "data",
            "add",
            c_file.to_str().unwrap(),
            "--source",
            "bob again",
        ],
    );
    assert_eq!(c["credited"], 1, "{c}");
    assert_eq!(c["ledger_duplicates"], 1, "{c}");
    let known = c["already_on_ledger"].as_object().unwrap();
    assert_eq!(known.len(), 1, "{c}");
    assert_eq!(known.values().next().unwrap()["dataset"], d_alice.as_str());

    // The dataset's duplicate clusters.
    let dd = ok(&alice, &url, &["data", "dedup", &d_alice, "--index", index]);
    assert_eq!(dd["items"], 32);
    assert_eq!(dd["clusters"].as_array().unwrap().len(), 2, "{dd}");

    // Models: Alice fine-tunes the base model on her data, Bob fine-tunes hers on his.
    let status: Value = common::agent()
        .get(&format!("{url}/v1/status"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let base = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smollm2-135m")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ft_file = dir.path().join("smollm2-legal.gguf");
    std::fs::write(&ft_file, b"fine-tuned weights, version 1.1").unwrap();
    let ft = ok(
        &alice,
        &url,
        &[
            "model",
            "publish",
            ft_file.to_str().unwrap(),
            "--name",
            "smollm2-legal",
            "--version",
            "1.1",
            "--parent",
            &base,
            "--trained-on",
            &d_alice,
            "--royalty-bps",
            "300",
        ],
    );
    let ft_id = ft["model"].as_str().unwrap().to_string();
    let ft2_file = dir.path().join("smollm2-legal-forum.gguf");
    std::fs::write(&ft2_file, b"fine-tuned again, version 2").unwrap();
    let ft2 = ok(
        &bob,
        &url,
        &[
            "model",
            "publish",
            ft2_file.to_str().unwrap(),
            "--name",
            "smollm2-legal-forum",
            "--version",
            "2.0",
            "--parent",
            &ft_id,
            "--trained-on",
            &d_bob,
            "--trained-on",
            &d_alice,
        ],
    );
    let ft2_id = ft2["model"].as_str().unwrap().to_string();

    // Publishing the same weights again, an unknown parent or dataset: refused, with why.
    let other = dir.path().join("other.gguf");
    std::fs::write(&other, b"other weights").unwrap();
    let unknown_model = "1111111111111111111111111111111111111111111111111111111111111111";
    let unknown_data = "2222222222222222222222222222222222222222222222222222222222222222";
    for (file, flag, value, why) in [
        (&ft_file, "--parent", base.as_str(), "already registered"),
        (&other, "--parent", unknown_model, "unknown parent"),
        (&other, "--trained-on", unknown_data, "unknown dataset"),
    ] {
        let (okk, out, err) = vouch(
            &alice,
            &url,
            &[
                "model",
                "publish",
                file.to_str().unwrap(),
                "--name",
                "x",
                "--version",
                "1",
                flag,
                value,
            ],
        );
        assert!(!okk, "{out}");
        assert!(format!("{out}{err}").contains(why), "{why}: {out}{err}");
    }

    // Lineage: ancestors with datasets and authors; descendants of the base.
    let l = ok(&alice, &url, &["model", "lineage", &ft2_id]);
    let anc: Vec<(String, u64)> = l["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["depth"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        anc,
        vec![
            ("smollm2-legal".to_string(), 1),
            ("smollm2-135m".to_string(), 2)
        ]
    );
    let ds: Vec<&str> = l["model"]["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["source"].as_str().unwrap())
        .collect();
    assert_eq!(ds, vec!["bob's crawl", "alice's forum archive"]);
    let (_, text, _) = vouch(&alice, &url, &["model", "lineage", &base]);
    assert!(
        text.contains("smollm2-legal-forum") && text.contains("descendants"),
        "{text}"
    );

    // A job on the base model settles; its author's royalty shows in the lineage view.
    let (okk, out, err) = vouch(
        &alice,
        &url,
        &[
            "infer",
            "--model",
            "smollm2-135m",
            "--prompt",
            "Say hi.",
            "--max-tokens",
            "4",
        ],
    );
    assert!(okk, "{out}{err}");
    let t = Instant::now();
    loop {
        let l = ok(&alice, &url, &["model", "lineage", &ft_id]);
        let base_node = &l["ancestors"][0];
        if base_node["royalties_paid"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(base_node["jobs_settled"], 1);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no royalty after settlement: {l}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Bad input: a malformed JSONL line names its file and line; nothing is registered.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{not json\n").unwrap();
    let (okk, out, err) = vouch(
        &alice,
        &url,
        &["data", "add", bad.to_str().unwrap(), "--source", "x"],
    );
    assert!(!okk, "{out}");
    assert!(err.contains("bad.jsonl:2"), "{err}");
    // Adding the same corpus again: nothing new, nothing registered.
    let again = ok(
        &alice,
        &url,
        &[
            "data",
            "add",
            a_file.to_str().unwrap(),
            "--source",
            "again",
            "--index",
            index,
        ],
    );
    assert_eq!(again["new"], 0, "{again}");
    assert_eq!(again["registered"], false, "{again}");
}
