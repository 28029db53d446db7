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

/// `vouch --json data add FILE --source SOURCE EXTRA...`, which must succeed.
fn data_add(home: &Path, url: &str, file: &str, source: &str, extra: &[&str]) -> Value {
    let mut args = vec!["data", "add", file, "--source", source];
    args.extend_from_slice(extra);
    ok(home, url, &args)
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
    let a = data_add(
        &alice,
        &url,
        a_file.to_str().unwrap(),
        "alice's forum archive",
        &["--licence", "CC-BY-4.0", "--index", index],
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
    let b = data_add(
        &bob,
        &url,
        b_file.to_str().unwrap(),
        "bob's crawl",
        &["--index", index],
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
    let c = data_add(&bob, &url, c_file.to_str().unwrap(), "bob again", &[]);
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
    let again = data_add(
        &alice,
        &url,
        a_file.to_str().unwrap(),
        "again",
        &["--index", index],
    );
    assert_eq!(again["new"], 0, "{again}");
    assert_eq!(again["registered"], false, "{again}");
}

/// Balance of the wallet in `home`.
fn balance(home: &Path, url: &str) -> u64 {
    ok(home, url, &["wallet", "balance"])["balance"]
        .as_u64()
        .unwrap()
}

#[test]
fn synthetic_data_carries_receipts_and_annotators_reach_stake_weighted_consensus() {
    let dir = tempfile::tempdir().unwrap();
    let node_home = dir.path().join("node");
    std::fs::create_dir_all(&node_home).unwrap();
    let (_node, url) = start_dev_node(&node_home);
    let owner = dir.path().join("owner");
    std::fs::create_dir_all(&owner).unwrap();
    share_models(&owner);
    ok(&owner, &url, &["wallet", "new"]);
    let smol = vouch_inference::models::SMOLLM2_135M.id().to_string();

    // Three samples from two seed prompts, each with its receipt.
    let seeds = dir.path().join("seeds.jsonl");
    std::fs::write(
        &seeds,
        "{\"prompt\": \"Write one sentence about the sea.\"}\n\"Name a fruit and describe it.\"\n",
    )
    .unwrap();
    let out = dir.path().join("samples.jsonl");
    let r = ok(
        &owner,
        &url,
        &[
            "synth",
            "--prompts",
            seeds.to_str().unwrap(),
            "--n",
            "3",
            "--max-tokens",
            "16",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r["samples"], 3, "{r}");
    assert_eq!(r["registered"], true, "{r}");
    assert_eq!(r["credited"], r["distinct"], "{r}");
    let dataset = r["dataset"].as_str().unwrap().to_string();
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["receipt"]["output"], l["text"], "sample {i}");
        assert_eq!(l["receipt"]["model"], smol.as_str());
        assert_eq!(l["seed"], (1 + i as u64).to_string());
        assert_eq!(
            l["item"].as_str().unwrap(),
            vouch_data::item_id(l["text"].as_str().unwrap()).to_string()
        );
    }
    assert_eq!(lines[2]["prompt"], "Write one sentence about the sea.");
    // Each receipt checks offline, with its proof of inclusion in a block.
    let receipt = dir.path().join("r.json");
    std::fs::write(&receipt, lines[1]["receipt"].to_string()).unwrap();
    let genesis = node_home.join("node/genesis.json");
    let (okv, vout, verr) = vouch(
        &owner,
        &url,
        &[
            "verify",
            receipt.to_str().unwrap(),
            "--genesis",
            genesis.to_str().unwrap(),
            "--require-inclusion",
        ],
    );
    assert!(okv && vout.starts_with("VERIFIED"), "{vout}{verr}");
    // On the ledger: the dataset names the model that made it; the model's lineage lists
    // the dataset.
    let d = common::net::get_json(&format!("{url}/v1/datasets/{dataset}"));
    assert_eq!(d["generated_by"], smol.as_str(), "{d}");
    let l = ok(&owner, &url, &["model", "lineage", &smol]);
    assert_eq!(l["generated"][0]["id"], dataset.as_str(), "{l}");
    let (_, text, _) = vouch(&owner, &url, &["model", "lineage", &smol]);
    assert!(text.contains("generated datasets"), "{text}");

    // Annotation of the samples: one heavy staker and two light ones.
    let annotators: Vec<_> = ["heavy", "light1", "light2"]
        .iter()
        .map(|n| {
            let h = dir.path().join(n);
            std::fs::create_dir_all(&h).unwrap();
            ok(&h, &url, &["wallet", "new"]);
            h
        })
        .collect();
    for (h, stake) in annotators.iter().zip(["60000000", "10000000", "10000000"]) {
        let (okk, o, e) = vouch(h, &url, &["wallet", "stake", stake]);
        assert!(okk, "{o}{e}");
    }
    assert_eq!(
        ok(&annotators[0], &url, &["wallet", "balance"])["stake"],
        60_000_000
    );
    let t = ok(
        &owner,
        &url,
        &[
            "task",
            "create",
            "--dataset",
            &dataset,
            "--labels",
            "good,bad",
            "--annotators",
            "3",
            "--reward",
            "10000",
        ],
    );
    assert_eq!(t["items"], 3, "{t}");
    let task = t["task"].as_str().unwrap().to_string();
    // The creator cannot vote on its own task; labels must be the task's.
    let (okk, _, e) = vouch(
        &owner,
        &url,
        &["task", "label", &task, "good", "good", "good"],
    );
    assert!(!okk, "{e}");
    let (okk, _, e) = vouch(
        &annotators[1],
        &url,
        &["task", "label", &task, "good", "meh", "bad"],
    );
    assert!(!okk && e.contains("meh"), "{e}");
    let before: Vec<u64> = annotators.iter().map(|h| balance(h, &url)).collect();
    let votes = [
        ["good", "good", "bad"],
        ["bad", "good", "good"],
        ["bad", "good", "good"],
    ];
    for (i, (h, v)) in annotators.iter().zip(votes).enumerate() {
        let mut args = vec!["task", "label", task.as_str()];
        args.extend(v);
        let r = ok(h, &url, &args);
        assert_eq!(r["votes"], i + 1, "{r}");
    }
    // Item 0 and 2: 60M of stake outweighs 2 x 10M; item 1: unanimous.
    let shown = ok(&owner, &url, &["task", "show", &task]);
    assert_eq!(
        shown["decided"],
        serde_json::json!(["good", "good", "bad"]),
        "{shown}"
    );
    // 10,000 over 5 agreements: 3 for the heavy staker, 1 each for the light ones.
    let fee = 10;
    let after: Vec<u64> = annotators.iter().map(|h| balance(h, &url)).collect();
    assert_eq!(after[0], before[0] - fee + 6_000);
    assert_eq!(after[1], before[1] - fee + 2_000);
    assert_eq!(after[2], before[2] - fee + 2_000);
}
