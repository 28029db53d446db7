//! `vouch bench`: the figures README quotes, printed as a table.
//!
//! Decode and prefill throughput of our engine and (when `llama-cpp-python` is importable)
//! of llama.cpp on the same GGUF file and thread count; verification time against
//! generation time; proof size; offline fast-path verification time.

use anyhow::{Context, Result};
use clap::Args;
use std::path::Path;
use std::time::Instant;
use vouch_inference::chat::Message;
use vouch_inference::fingerprint::Tolerance;
use vouch_inference::models::{self, SMOLLM2_135M};
use vouch_inference::ChatModel;
use vouch_types::Sampling;
use vouch_verify::attest::{self, Input};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 288)]
    prefill_tokens: usize,
    /// Generated tokens for the decode measurement.
    #[arg(long, default_value_t = 256)]
    decode_tokens: usize,
    /// Skip the llama.cpp peer even if it is installed.
    #[arg(long)]
    no_peer: bool,
    /// Also measure the portable kernels (same bits as the SIMD ones, slower).
    #[arg(long)]
    portable: bool,
}

/// Peak resident memory of this process so far, in MiB (Linux; None elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Median decode tok/s, prefill tok/s and time to first token (ms) of our engine.
fn measure(
    model: &mut ChatModel,
    prefill_ids: &[u32],
    prompt: &[u32],
    decode_tokens: usize,
    runs: usize,
) -> Result<(f64, f64, f64)> {
    model.time_fixed_decode(prompt, 4)?; // warm up
    let (mut prefill, mut decode, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, _) = model.time_fixed_decode(prefill_ids, 1)?;
        prefill.push(prefill_ids.len() as f64 / t);
        let (t0, d) = model.time_fixed_decode(prompt, decode_tokens)?;
        ttft.push(t0 * 1000.0);
        decode.push((decode_tokens - 1) as f64 / d);
    }
    Ok((median(decode), median(prefill), median(ttft)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const FILLER: &str = "The lighthouse keeper climbed the spiral stairs each evening, counting steps, trimming the wick and writing the weather into a leather logbook that smelled of salt and lamp oil. ";

pub fn run(home: &Path, a: BenchArgs) -> Result<()> {
    let runs = a.runs.max(1);
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into())
    });
    let mut model = ChatModel::load(&SMOLLM2_135M, home)?;
    let key = vouch_crypto::SigningKey::from_bytes(&[7u8; 32])?;
    println!(
        "vouch bench: {} ({}), {threads} threads, median of {runs}",
        SMOLLM2_135M.name, SMOLLM2_135M.files[0].name
    );
    println!();

    // Prefill and decode throughput on fixed token counts.
    let mut ids = Vec::new();
    while ids.len() < a.prefill_tokens {
        ids.extend(model.tokenize(FILLER)?);
    }
    ids.truncate(a.prefill_tokens);
    let short_prompt = model.tokenize(&model.render_chat(&[Message::user("Tell me a story.")]))?;
    let kernels = vouch_inference::q4::kernels_in_use();
    let ours = measure(&mut model, &ids, &short_prompt, a.decode_tokens, runs)?;
    let ours_rss = peak_rss_mib();
    let portable = if a.portable {
        use vouch_inference::q4::{set_kernels, Kernels};
        set_kernels(Kernels::Portable);
        let r = measure(&mut model, &ids, &short_prompt, a.decode_tokens, runs);
        set_kernels(Kernels::Auto);
        Some(r?)
    } else {
        None
    };

    let peer = if a.no_peer {
        Err(anyhow::anyhow!("skipped (--no-peer)"))
    } else {
        llama_cpp_peer(home, &ids, &short_prompt, a.decode_tokens, runs, &threads)
    };
    let rss = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    println!("| engine | decode tok/s ({} tokens) | prefill tok/s ({} tokens) | time to first token (ms, {}-token prompt) | peak RSS (MiB) |", a.decode_tokens, a.prefill_tokens, short_prompt.len());
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| vouch ({kernels} kernels) | {:.1} | {:.1} | {:.1} | {} |",
        ours.0,
        ours.1,
        ours.2,
        rss(ours_rss)
    );
    if let Some(p) = portable {
        println!(
            "| vouch (portable kernels, same bits) | {:.1} | {:.1} | {:.1} | |",
            p.0, p.1, p.2
        );
    }
    match &peer {
        Ok(p) => {
            println!(
                "| llama.cpp (llama-cpp-python) | {:.1} | {:.1} | {:.1} | {} |",
                p.0,
                p.1,
                p.2,
                rss(p.3)
            );
            println!(
                "| ratio vouch / llama.cpp | {:.2}x | {:.2}x | {:.2}x (llama.cpp time / ours) | |",
                ours.0 / p.0,
                ours.1 / p.1,
                p.2 / ours.2
            );
        }
        Err(e) => println!("| llama.cpp | n/a: {e} | | | |"),
    }
    println!();

    // Generation vs verification for real receipts.
    println!("| new tokens | generate (s) | verify by re-execution (s) | generate / verify | fingerprint bytes per chunk (mean; a full 32-position chunk is 258) |");
    println!("| --- | --- | --- | --- | --- |");
    let input = Input::Chat(vec![Message::user(
        "Write a long, detailed story about a lighthouse keeper and a storm. Use many paragraphs.",
    )]);
    let tol = Tolerance::default();
    let mut last_receipt = None;
    for &n in &[64u32, 256] {
        let mut gen_t = Vec::new();
        let mut ver_t = Vec::new();
        let mut produced = 0;
        let mut per32 = 0.0;
        for run in 0..runs {
            let s = Sampling {
                temperature: 0.7,
                top_p: 0.95,
                seed: 1000 + run as u64,
                max_tokens: n,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
            };
            let t = Instant::now();
            let r = attest::generate(
                &mut model,
                &key,
                &input,
                s,
                &Default::default(),
                0,
                &mut |_| {},
            )?;
            gen_t.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            vouch_verify::check_reexecute(&r, &mut model, &tol)
                .context("honest receipt failed verification")?;
            ver_t.push(t.elapsed().as_secs_f64());
            produced = r.output_tokens.len();
            per32 = r.fingerprint.proof_bytes() as f64 / r.fingerprint.chunks.len() as f64;
            last_receipt = Some(r);
        }
        let (g, v) = (median(gen_t), median(ver_t));
        println!(
            "| {n} (last run: {produced}) | {g:.3} | {v:.3} | {:.2}x | {per32:.0} |",
            g / v
        );
    }
    println!();

    // Constrained decoding: the per-token cost of the token mask (issue 20).
    constrained(&mut model, &key, runs)?;

    // Offline fast path.
    let r = last_receipt.expect("at least one receipt");
    let iters = 2000;
    let mut per = Vec::new();
    for _ in 0..runs.max(3) {
        let t = Instant::now();
        for _ in 0..iters {
            vouch_verify::check_fast(&r)?;
        }
        per.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    let json_len = serde_json::to_vec(&r)?.len();
    let t = Instant::now();
    for _ in 0..200 {
        let parsed: vouch_types::Receipt = serde_json::from_slice(&serde_json::to_vec(&r)?)?;
        vouch_verify::check_fast(&parsed)?;
    }
    let with_parse = t.elapsed().as_secs_f64() * 1e6 / 200.0;
    println!("| offline fast-path verify | µs per receipt |");
    println!("| --- | --- |");
    println!(
        "| signature + hashes + structure ({} output tokens) | {:.1} |",
        r.output_tokens.len(),
        median(per)
    );
    println!("| the same, including JSON parse of a {json_len}-byte receipt | {with_parse:.1} |");
    Ok(())
}

/// Decode with and without a JSON schema on the same prompt and sampling, and the
/// verifier's walk of the output through the grammar (its share of a re-execution or
/// audit).
fn constrained(model: &mut ChatModel, key: &vouch_crypto::SigningKey, runs: usize) -> Result<()> {
    let schema = r#"{"type":"object","properties":{"title":{"type":"string"},"story":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}}},"required":["title","story","tags"]}"#;
    let input = Input::Chat(vec![Message::user(
        "Write a long story about a lighthouse keeper as JSON with a title, the story and tags.",
    )]);
    let c = vouch_types::Constraint::json_schema(schema);
    let controls = vouch_types::Controls {
        stop: Vec::new(),
        constraint: Some(c.clone()),
    };
    let t = Instant::now();
    let grammars = model.grammars()?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    grammars.compile(&c)?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "| decode, 128 tokens max, sampled | ms per token after the first | tokens (last run) |"
    );
    println!("| --- | --- | --- |");
    // Per-token decode time: from the first token to the last (the prefill and the
    // first token, the same with or without a constraint, are left out).
    let timed = |model: &mut ChatModel,
                 s: Sampling,
                 controls: &vouch_types::Controls|
     -> Result<(f64, vouch_types::Receipt)> {
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        let r = attest::generate(model, key, &input, s, controls, 0, &mut |_| {
            last = Instant::now();
            first.get_or_insert(last);
        })?;
        let n = r.output_tokens.len().max(2) - 1;
        let ms = (last - first.unwrap_or(last)).as_secs_f64() * 1e3 / n as f64;
        Ok((ms, r))
    };
    let (mut free, mut masked, mut walk) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n_free, mut n_masked) = (0, 0);
    for run in 0..runs {
        let s = Sampling {
            temperature: 0.7,
            top_p: 0.95,
            seed: 2000 + run as u64,
            max_tokens: 128,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        };
        let (ms, r) = timed(model, s, &Default::default())?;
        n_free = r.output_tokens.len();
        free.push(ms);
        let (ms, r) = timed(model, s, &controls)?;
        n_masked = r.output_tokens.len();
        masked.push(ms);
        let t = Instant::now();
        vouch_verify::constraint_masks(&r, model)?;
        walk.push(t.elapsed().as_secs_f64() * 1e3 / n_masked as f64);
    }
    let (f, m, w) = (median(free), median(masked), median(walk));
    println!("| without a constraint | {f:.2} | {n_free} |");
    println!(
        "| with a JSON schema (llguidance mask at every token) | {m:.2} ({:+.1} %) | {n_masked} |",
        (m / f - 1.0) * 100.0
    );
    println!("| verifier: the output walked through the grammar (mask per token, no model) | {w:.3} | {n_masked} |");
    println!();
    println!("Grammar engine set-up for this tokenizer (once per model): {build_ms:.0} ms; compiling this schema: {compile_ms:.1} ms.");
    println!();
    Ok(())
}

/// Runs llama.cpp through llama-cpp-python on the same file, token ids and thread count.
fn llama_cpp_peer(
    home: &Path,
    prefill: &[u32],
    prompt: &[u32],
    n: usize,
    runs: usize,
    threads: &str,
) -> Result<(f64, f64, f64, Option<f64>)> {
    let python = std::env::var("VOUCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let gguf = SMOLLM2_135M.path(home, 0);
    models::check_files(&SMOLLM2_135M, home)?;
    let script = r#"
import json, sys, time, statistics
try:
    import llama_cpp
except Exception as e:
    print(json.dumps({"error": "llama-cpp-python not installed (pip install llama-cpp-python): %s" % e})); sys.exit(0)
a = json.load(sys.stdin)
t = int(a["threads"]) if a["threads"].isdigit() else None
llm = llama_cpp.Llama(model_path=a["gguf"], n_ctx=2048, n_threads=t, n_threads_batch=t, n_batch=512, verbose=False)
def prefill(ids):
    llm.reset(); t0 = time.perf_counter(); llm.eval(ids); return time.perf_counter() - t0
def decode(ids, n):
    llm.reset(); t0 = time.perf_counter(); llm.eval(ids)
    tok = int(llm.scores[llm.n_tokens - 1].argmax()); ttft = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(n - 1):
        llm.eval([tok]); tok = int(llm.scores[llm.n_tokens - 1].argmax())
    return ttft, time.perf_counter() - t1
decode(a["prompt"], 4)
pf, dc, tt = [], [], []
for _ in range(a["runs"]):
    pf.append(len(a["prefill"]) / prefill(a["prefill"]))
    t0, d = decode(a["prompt"], a["n"]); tt.append(t0 * 1000); dc.append((a["n"] - 1) / d)
import resource
print(json.dumps({"decode": statistics.median(dc), "prefill": statistics.median(pf), "ttft": statistics.median(tt), "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"#;
    let input = serde_json::json!({"gguf": gguf, "prefill": prefill, "prompt": prompt, "n": n, "runs": runs, "threads": threads});
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("llama.cpp peer printed no result")?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("{}", e.as_str().unwrap_or("failed"));
    }
    let f = |k: &str| v[k].as_f64().context("missing figure");
    Ok((
        f("decode")?,
        f("prefill")?,
        f("ttft")?,
        v["rss_mib"].as_f64(),
    ))
}
