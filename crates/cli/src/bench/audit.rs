//! `vouch bench audit`: what a spot-check audit costs against generating the answer and
//! against re-executing it, for 64 and 256 new tokens and k = 16, 64, 256 checks; what
//! committing to the trace costs the provider; what an audit transfers and stores.

use anyhow::{Context, Result};
use clap::Args;
use std::path::Path;
use std::time::Instant;
use vouch_inference::chat::Message;
use vouch_inference::fingerprint::Tolerance;
use vouch_inference::models::SMOLLM2_135M;
use vouch_inference::ChatModel;
use vouch_types::{Hash32, Receipt, Sampling};
use vouch_verify::attest::{self, Input};
use vouch_verify::spot;

#[derive(Args, Debug)]
pub struct AuditBenchArgs {
    /// Repetitions of each generation and re-execution (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Challenge seeds per k (the median verifier time is reported).
    #[arg(long, default_value_t = 9)]
    seeds: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A receipt with exactly `n` new tokens (seeds are tried until the story runs that long).
fn receipt_of_length(
    model: &mut ChatModel,
    key: &vouch_crypto::SigningKey,
    input: &Input,
    n: u32,
) -> Result<(Receipt, Sampling)> {
    let mut best: Option<(Receipt, Sampling)> = None;
    for seed in 0..16 {
        let s = Sampling {
            temperature: 0.7,
            top_p: 0.95,
            seed: 1000 + seed,
            max_tokens: n,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        };
        let r = attest::generate(model, key, input, s, &Default::default(), 0, &mut |_| {})?;
        let len = r.output_tokens.len();
        if len == n as usize {
            return Ok((r, s));
        }
        if best.as_ref().is_none_or(|b| b.0.output_tokens.len() < len) {
            best = Some((r, s));
        }
    }
    best.context("no generation")
}

pub fn run(home: &Path, a: AuditBenchArgs) -> Result<()> {
    let runs = a.runs.max(1);
    let threads = rayon::current_num_threads();
    let mut model = ChatModel::load(&SMOLLM2_135M, home)?;
    let key = vouch_crypto::SigningKey::from_bytes(&[7u8; 32])?;
    let input = Input::Chat(vec![Message::user(
        "Write a long, detailed story about a lighthouse keeper and a storm. Use many paragraphs.",
    )]);
    println!(
        "vouch bench audit: {} ({}), {threads} threads; generation and re-execution median of {runs}, spot checks median of {} seeds",
        SMOLLM2_135M.name, SMOLLM2_135M.files[0].name, a.seeds
    );
    println!();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut provider_rows = Vec::new();
    let mut audit_rows = Vec::new();
    for n in [64u32, 256] {
        let (r, s) = receipt_of_length(&mut model, &key, &input, n)?;
        let job = attest::prepare(&model, &input, s, &Default::default())?;
        let n_out = r.output_tokens.len();
        // Generation with and without hashing the trace (same tokens: same seed).
        let (mut with, mut without, mut reexec) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            // Alternate which goes first, so neither profits from the other's warm-up.
            for traced in [run % 2 == 0, run % 2 == 1] {
                model.set_trace(traced);
                let t = Instant::now();
                let g = model.generate(&job.request, &mut |_| {})?;
                let secs = t.elapsed().as_secs_f64();
                anyhow::ensure!(
                    g.tokens == r.output_tokens,
                    "generation is not reproducible"
                );
                if traced {
                    with.push(secs);
                } else {
                    without.push(secs);
                }
            }
            model.set_trace(true);
            let t = Instant::now();
            vouch_verify::check_reexecute(&r, &mut model, &Tolerance::default())
                .context("honest receipt failed re-execution")?;
            reexec.push(t.elapsed().as_secs_f64());
        }
        let (gen_s, bare_s, reexec_s) = (median(with), median(without), median(reexec));
        // The provider's side of an audit: one prefill with the trace captured, hashes,
        // the opening.
        let ids = model.tokenize(&r.prompt)?;
        let t = Instant::now();
        let values = model.trace_values(&ids, &r.output_tokens)?;
        let hashes = values.hashes();
        let open_s = t.elapsed().as_secs_f64();
        // The hashing a generation does (every row once), timed alone on one thread: the
        // commitment's cost without the run-to-run noise of two whole generations.
        let mut hash_t = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            one.install(|| values.hashes());
            hash_t.push(t.elapsed().as_secs_f64());
        }
        let hash_s = median(hash_t);
        let positions = hashes.positions();
        let hash_kib = (hashes.x.len() + hashes.kv.len()) as f64 * positions as f64 * 32.0 / 1024.0;
        let values_mib = 4.0
            * (values.x.iter().map(Vec::len).sum::<usize>()
                + values.k.iter().map(Vec::len).sum::<usize>()
                + values.v.iter().map(Vec::len).sum::<usize>()) as f64
            / (1024.0 * 1024.0);
        provider_rows.push(format!(
            "| {n_out} | {gen_s:.3} | {bare_s:.3} | {:+.1}% | {:.1} ms ({:.1}%) | {reexec_s:.3} | {open_s:.3} | {hash_kib:.0} KiB | {values_mib:.1} MiB |",
            100.0 * (gen_s - bare_s) / bare_s,
            hash_s * 1e3,
            100.0 * hash_s / bare_s
        ));
        let rec = spot::recommended_checks(n_out);
        let mut ks = vec![rec, 16, 64, 256];
        ks.dedup();
        for k in ks {
            let (mut wall, mut single, mut bytes, mut layer_checks, mut samples) =
                (Vec::new(), Vec::new(), Vec::new(), 0, 0);
            for seed in 0..a.seeds {
                let seed = Hash32::digest("vouch bench audit", &[&seed.to_le_bytes()]);
                let checks = spot::challenges(&r, &seed, k)?;
                let opening = spot::open_trace(&values, &hashes, &checks, ids.len())?;
                let wire = opening.to_bytes();
                let t = Instant::now();
                let decoded = spot::Opening::from_bytes(&wire)?;
                let rep = spot::check_spot(&r, &mut model, &checks, &decoded)
                    .context("honest receipt failed a spot check")?;
                wall.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                one.install(|| spot::check_spot(&r, &mut model, &checks, &decoded))?;
                single.push(t.elapsed().as_secs_f64());
                bytes.push(wire.len() as f64);
                layer_checks = rep.layer_checks;
                samples = rep.sample_checks;
            }
            let (w, s1) = (median(wall), median(single));
            let b = bytes.iter().sum::<f64>() / bytes.len() as f64;
            audit_rows.push(format!(
                "| {n_out} | {k}{} ({layer_checks} layer + {samples} sampling) | {:.1} | {:.1} | {:.2}% | {:.0}x | {:.0}x | {:.0} KiB |",
                if k == rec { ", recommended" } else { "" },
                w * 1e3,
                s1 * 1e3,
                100.0 * w / gen_s,
                gen_s / w,
                reexec_s / w,
                b / 1024.0
            ));
        }
    }
    println!(
        "Provider side (trace committed while generating; recomputed by one prefill when audited):"
    );
    println!();
    println!("| new tokens | generate with trace (s) | without (s) | difference | trace hashing alone, 1 thread (of generation) | re-execution audit (s) | provider's opening: prefill + hashes (s) | trace hashes if kept | trace values if kept |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &provider_rows {
        println!("{r}");
    }
    println!();
    println!("Auditor side (spot-check audit: decode the opening, rebuild the Merkle roots, recompute the challenged steps):");
    println!();
    println!("| new tokens | k checks | auditor wall (ms, {threads} threads) | auditor CPU (ms, 1 thread) | of generation time | cheaper than generating | cheaper than re-execution | bytes per audit |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &audit_rows {
        println!("{r}");
    }
    Ok(())
}
