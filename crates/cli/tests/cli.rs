//! End-to-end tests of the `vouch` binary with the real models (`vouch models fetch`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn vouch(args: &[&str]) -> Output {
    Command::new(common::vouch_bin())
        .args(args)
        .output()
        .expect("run vouch")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let o = vouch(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "vouch {args:?} failed: {out}\n{err}");
    out
}

fn receipts_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".json"))
        .collect();
    v.sort();
    v
}

const PROMPTS: &[&str] = &[
    "Name three primary colors.",
    "What is the capital of Italy?",
    "Give one tip for sleeping well.",
    "What is 7 times 8?",
    "Describe the sea in five words.",
    "Name a famous painter.",
    "What do plants need to grow?",
    "Say hello in French.",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What is a verb?",
    "List three fruits.",
];

fn verify_all(threads: &str, files: &[String]) {
    // Local receipts are never committed: SIGNED ONLY, re-executed; exit 0 only because
    // --allow-unverified accepts that.
    let mut args = vec![
        "--threads",
        threads,
        "verify",
        "--reexecute",
        "--allow-unverified",
    ];
    args.extend(files.iter().map(|s| s.as_str()));
    let out = ok(&args);
    let valid = out
        .lines()
        .filter(|l| l.contains("SIGNED ONLY: ") && l.contains("; re-executed: "))
        .count();
    assert_eq!(valid, files.len(), "{out}");
}

/// Honest receipts made on 1 thread verify on 2 and vice versa; batched, single and
/// no-KV-cache generations all verify (84 receipts; the library suite adds 128 more).
#[test]
fn honest_receipts_verify_across_threads_batching_and_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts: Vec<String> = (0..48)
        .map(|i| PROMPTS[i % PROMPTS.len()].to_string())
        .collect();
    let pf = tmp.path().join("prompts.txt");
    std::fs::write(&pf, prompts.join("\n")).unwrap();
    // Batched on one thread, sampled; verified on two threads.
    let d1 = tmp.path().join("batched-1t");
    ok(&[
        "--threads",
        "1",
        "infer",
        "--local",
        "--prompts-file",
        pf.to_str().unwrap(),
        "--receipt-dir",
        d1.to_str().unwrap(),
        "--max-tokens",
        "20",
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--seed",
        "5",
    ]);
    let files = receipts_in(&d1);
    assert_eq!(files.len(), 48);
    verify_all("2", &files);
    // Without KV cache on two threads, greedy; verified on one thread.
    let pf2 = tmp.path().join("short.txt");
    std::fs::write(&pf2, prompts[..24].join("\n")).unwrap();
    let d2 = tmp.path().join("nokv-2t");
    ok(&[
        "--threads",
        "2",
        "infer",
        "--local",
        "--prompts-file",
        pf2.to_str().unwrap(),
        "--receipt-dir",
        d2.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--no-kv-cache",
    ]);
    let files = receipts_in(&d2);
    assert_eq!(files.len(), 24);
    verify_all("1", &files);
    // Singly, one process per request, on two threads; verified on one thread.
    let mut singles = Vec::new();
    for (i, p) in PROMPTS.iter().enumerate() {
        let r = tmp.path().join(format!("single-{i}.json"));
        let temp = if i % 2 == 0 { "0" } else { "1.0" };
        ok(&[
            "--threads",
            "2",
            "infer",
            "--local",
            "--prompt",
            p,
            "--max-tokens",
            "16",
            "--temperature",
            temp,
            "--seed",
            &i.to_string(),
            "--receipt",
            r.to_str().unwrap(),
        ]);
        singles.push(r.display().to_string());
    }
    verify_all("1", &singles);
}

#[test]
fn verify_exit_codes_and_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.json");
    let out = ok(&[
        "infer",
        "--local",
        "--prompt",
        "Name three primary colors.",
        "--max-tokens",
        "64",
        "--receipt",
        r.to_str().unwrap(),
    ]);
    assert!(out.contains("Red"), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&r).unwrap()).unwrap();
    assert!(json["output"].as_str().unwrap().contains("Red"));
    assert_eq!(json["model"].as_str().unwrap().len(), 64);

    // A local receipt is signed, never committed: SIGNED ONLY, exit 3 (checks hold, not
    // verified); 0 with --allow-unverified.
    let o = vouch(&["verify", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));
    assert!(text(&o).0.starts_with("SIGNED ONLY: "), "{:?}", text(&o));
    let o = vouch(&["verify", "--allow-unverified", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let o = vouch(&["verify", "--reexecute", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));
    assert!(text(&o).0.contains("; re-executed: "), "{:?}", text(&o));
    let o = vouch(&[
        "verify",
        "--reexecute",
        "--allow-unverified",
        r.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    // Tampered output: exit 1, one line naming the failed check.
    let mut t = json.clone();
    t["output"] = serde_json::Value::String("Purple, Green and Orange.".into());
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&t).unwrap()).unwrap();
    let o = vouch(&["verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let (out, _) = text(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("INVALID: output hash does not match"),
        "{out}"
    );

    // Forged signature.
    let mut t = json.clone();
    t["signature"] = serde_json::Value::String("00".repeat(64));
    std::fs::write(&bad, serde_json::to_vec(&t).unwrap()).unwrap();
    let o = vouch(&["verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).0.contains("signature"), "{:?}", text(&o));

    // Pinned provider that did not sign it.
    let o = vouch(&[
        "verify",
        "--provider",
        &"ab".repeat(32),
        r.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));

    // Not a receipt at all: invalid (1). Missing file or bad usage: 2.
    std::fs::write(&bad, b"{ not json").unwrap();
    assert_eq!(
        vouch(&["verify", bad.to_str().unwrap()]).status.code(),
        Some(1)
    );
    let missing = tmp.path().join("missing.json");
    assert_eq!(
        vouch(&["verify", missing.to_str().unwrap()]).status.code(),
        Some(2)
    );
    assert_eq!(vouch(&["verify"]).status.code(), Some(2));
    assert_eq!(
        vouch(&["verify", "--bogus", r.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );

    // JSON output for scripts: the verdict's facts; `valid` only for verified.
    let o = vouch(&["verify", "--json", r.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["status"], "signed_only", "{v}");
    assert_eq!(v["signature"]["ok"], true, "{v}");
    assert!(v["committed"].is_null(), "{v}");
    // The seed is a string in JSON (receipt version 2).
    assert!(json["sampling"]["seed"].is_string(), "{json}");
    assert_eq!(json["version"], 2);
}

#[test]
fn embed_prints_vector_and_its_receipt_reexecutes() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("e.json");
    let out = ok(&[
        "embed",
        "--model",
        "minilm-l6",
        "some text",
        "--receipt",
        r.to_str().unwrap(),
    ]);
    let v: Vec<f32> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v.len(), 384);
    let o = vouch(&[
        "verify",
        "--reexecute",
        "--allow-unverified",
        r.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("embedding reproduced"),
        "{:?}",
        text(&o)
    );
    // Another text's embedding under this receipt's signature: the hash check fails.
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&r).unwrap()).unwrap();
    j["embedding"]["values"][0] = serde_json::json!(0.5);
    std::fs::write(&r, serde_json::to_vec(&j).unwrap()).unwrap();
    assert_eq!(
        vouch(&["verify", r.to_str().unwrap()]).status.code(),
        Some(1)
    );
}

#[test]
fn missing_or_corrupt_models_give_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_str().unwrap();
    let o = vouch(&["--home", h, "infer", "--local", "--prompt", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(
        err.contains("not installed") && err.contains("vouch models fetch"),
        "{err}"
    );
    let dir: PathBuf = home.path().join("models/smollm2-135m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        b"GGUF but not really",
    )
    .unwrap();
    let o = vouch(&["--home", h, "infer", "--local", "--prompt", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("corrupt"), "{err}");
    // Over-long prompts are refused before any work.
    let long = "word ".repeat(9000);
    let o = vouch(&["infer", "--local", "--prompt", &long, "--max-tokens", "8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("context"), "{:?}", text(&o).1);
}

#[test]
fn models_fetch_is_instant_when_present() {
    let out = ok(&["models", "fetch"]);
    assert!(
        out.contains("smollm2-135m") && out.contains("minilm-l6"),
        "{out}"
    );
    let list = ok(&["models", "list"]);
    assert_eq!(list.matches("installed").count(), 2, "{list}");
}

#[test]
fn json_flag_gives_machine_readable_output_and_errors() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_str().unwrap();
    // Models of an empty home: one JSON object per catalogue model, none installed.
    let o = vouch(&["--home", h, "--json", "models", "list"]);
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|v| v["name"] == "smollm2-135m"));
    assert!(lines
        .iter()
        .all(|v| v["installed"] == false && v["id"].as_str().unwrap().len() == 64));
    // The global flag works after the subcommand too.
    let o = vouch(&["--home", h, "key", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["provider_key"].as_str().unwrap().len(), 64);
    // Errors: exit 2 and {"error": ...} on stdout.
    let o = vouch(&["--home", h, "--json", "wallet", "address"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("no wallet"), "{v}");
}

/// Issue 18 row 12: `vouch ... | head -1` must not panic when the reader closes the pipe
/// (it did: "failed printing to stdout: Broken pipe"). The read end is closed before the
/// command writes anything; it exits quietly with the SIGPIPE status.
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::vouch_bin())
        .args(["--home", home.path().to_str().unwrap(), "models", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(141), "{err}");
}
