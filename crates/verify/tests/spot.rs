//! Spot-check audits against the real model: honest traces pass under every engine
//! configuration and every challenge seed; each tamper class is caught at the rate
//! docs/verification.md ("Spot checks") predicts, measured over many challenge seeds.
//!
//! Needs the real SmolLM2 weights (`vouch models fetch`).

mod common;

use common::{chat, honest_model, key, sampled, variant};
use vouch_inference::chat::Message;
use vouch_inference::models::SMOLLM2_135M;
use vouch_inference::q4::{set_kernels, Kernels};
use vouch_inference::trace::TraceValues;
use vouch_inference::{ChatModel, GenerateRequest};
use vouch_types::{FinishReason, Hash32, Receipt, Sampling};
use vouch_verify::attest::{self, Input};
use vouch_verify::spot::{self, Check};
use vouch_verify::{check_fast, VerifyError};

fn seed(i: u64) -> Hash32 {
    Hash32::digest("spot test seed", &[&i.to_le_bytes()])
}

const PROMPTS: [&str; 6] = [
    "Name three primary colors.",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in one sentence.",
    "Give me a tip for learning to cook.",
    "Why is the sky blue? Answer briefly.",
];

/// A receipt's trace, recomputed once (the provider's side of every audit of it).
struct Prover {
    values: TraceValues,
    hashes: vouch_inference::trace::TraceHashes,
    prompt_len: usize,
}

impl Prover {
    fn of(model: &mut ChatModel, r: &Receipt) -> Self {
        let ids = model.tokenize(&r.prompt).unwrap();
        let values = model.trace_values(&ids, &r.output_tokens).unwrap();
        let hashes = values.hashes();
        Self {
            values,
            hashes,
            prompt_len: ids.len(),
        }
    }
    fn audit(
        &self,
        model: &mut ChatModel,
        r: &Receipt,
        s: u64,
        k: usize,
    ) -> Result<spot::SpotReport, VerifyError> {
        let checks = spot::challenges(r, &seed(s), k)?;
        let opening = spot::open_trace(&self.values, &self.hashes, &checks, self.prompt_len)?;
        // What travels is bytes: the auditor decodes them.
        let opening = spot::Opening::from_bytes(&opening.to_bytes())?;
        spot::check_spot(r, model, &checks, &opening)
    }
}

/// Detections out of `seeds` challenge seeds.
fn detections(model: &mut ChatModel, r: &Receipt, p: &Prover, k: usize, seeds: u64) -> u64 {
    (0..seeds)
        .filter(|&s| p.audit(model, r, 1000 + s, k).is_err())
        .count() as u64
}

/// Asserts a measured rate is the predicted one within 4.5 standard deviations.
fn assert_rate(what: &str, hits: u64, n: u64, predicted: f64) {
    let rate = hits as f64 / n as f64;
    let sd = (predicted * (1.0 - predicted) / n as f64).sqrt();
    eprintln!("{what}: detected {hits}/{n} = {rate:.3}, predicted {predicted:.3}");
    assert!(
        (rate - predicted).abs() <= 4.5 * sd + 1e-9,
        "{what}: measured {rate:.3} over {n}, predicted {predicted:.3} (sd {sd:.3})"
    );
}

#[test]
fn honest_traces_are_reproduced_and_pass_every_challenge() {
    let mut model = honest_model();
    let mut n = 0;
    for (i, p) in PROMPTS.iter().enumerate() {
        let s = if i % 2 == 0 {
            Sampling::greedy(24)
        } else {
            sampled(i as u64, 24)
        };
        let r = attest::generate(
            &mut model,
            &key(1),
            &chat(p),
            s,
            &Default::default(),
            1,
            &mut |_| {},
        )
        .unwrap();
        let t = r.trace.clone().expect("receipts carry a trace");
        assert_eq!(t.layers, 30);
        assert_eq!(
            t.positions as usize,
            r.prompt_tokens as usize + r.output_tokens.len() - 1
        );
        // The provider's own side: recompute by prefill, reproduce the root, open.
        for (j, k) in [1usize, 16, 64, 256].into_iter().enumerate() {
            let rep = spot::audit_local(&mut model, &r, &seed(j as u64 + 10 * i as u64), k)
                .unwrap_or_else(|e| panic!("honest receipt {i} failed a k={k} audit: {e}"));
            assert_eq!(
                rep.max_rel_err, 0.0,
                "the engine reproduces honest rows exactly"
            );
            // k drawn checks and the last token's sampling step.
            assert_eq!(rep.layer_checks + rep.sample_checks, k + 1);
            n += 1;
        }
        let prover = Prover::of(&mut model, &r);
        for s in 0..20 {
            prover.audit(&mut model, &r, s, 64).unwrap();
            n += 1;
        }
    }
    eprintln!("{n} honest audits passed");
}

#[test]
fn trace_roots_are_the_same_bits_across_kernels_threads_and_batches() {
    let mut guard = honest_model();
    let model: &mut ChatModel = &mut guard;
    let jobs: Vec<attest::Job> = PROMPTS[..4]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            attest::prepare(
                model,
                &chat(p),
                sampled(40 + i as u64, 20),
                &Default::default(),
            )
            .unwrap()
        })
        .collect();
    let reference: Vec<Receipt> = jobs
        .iter()
        .map(|j| {
            let g = model.generate(&j.request, &mut |_| {}).unwrap();
            attest::receipt_for(model, &key(2), j, &g, 1).unwrap()
        })
        .collect();
    let mut configs = 0;
    for kernels in [Kernels::Auto, Kernels::Portable] {
        for threads in [1, 2] {
            for batch in [false, true] {
                set_kernels(kernels);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got: Vec<Receipt> = pool.install(|| {
                    if batch {
                        attest::generate_batch(model, &key(2), &jobs, true, 1).unwrap()
                    } else {
                        jobs.iter()
                            .map(|j| {
                                let g = model.generate(&j.request, &mut |_| {}).unwrap();
                                attest::receipt_for(model, &key(2), j, &g, 1).unwrap()
                            })
                            .collect()
                    }
                });
                set_kernels(Kernels::Auto);
                for (a, b) in reference.iter().zip(&got) {
                    assert_eq!(a.output_tokens, b.output_tokens);
                    assert_eq!(
                        a.trace, b.trace,
                        "trace root differs under {kernels:?}, {threads} threads, batch {batch}"
                    );
                }
                configs += 1;
            }
        }
    }
    // Without a KV cache (every step recomputed from scratch) too.
    let reqs: Vec<GenerateRequest> = jobs.iter().map(|j| j.request.clone()).collect();
    let gens = model.generate_batch(&reqs, false, &mut |_, _| {}).unwrap();
    for ((j, g), a) in jobs.iter().zip(&gens).zip(&reference) {
        let b = attest::receipt_for(model, &key(2), j, g, 1).unwrap();
        assert_eq!(a.trace, b.trace, "trace root differs without KV cache");
    }
    eprintln!("{} configurations, same trace roots", configs + 1);
}

/// A receipt generated by `cheat` (its own tokens and trace), claiming the honest model.
fn cheating_receipt(
    cheat: &mut ChatModel,
    honest: &ChatModel,
    input: &Input,
    s: Sampling,
) -> Receipt {
    let mut r = attest::generate(
        cheat,
        &key(66),
        input,
        s,
        &Default::default(),
        1,
        &mut |_| {},
    )
    .unwrap();
    r.model = honest.id();
    r.model_name = SMOLLM2_135M.name.to_string();
    vouch_crypto::sign_receipt(&key(66), &mut r);
    check_fast(&r).expect("a well-formed lie passes the offline checks");
    r
}

#[test]
fn whole_model_tampering_is_caught_by_every_audit() {
    let mut model = honest_model();
    for name in ["requant-q8_0", "requant-q4_0"] {
        let mut cheat = ChatModel::load_gguf(&variant(name)).unwrap();
        let mut hits = 0;
        let mut n = 0;
        for (i, p) in PROMPTS.iter().take(3).enumerate() {
            let r = cheating_receipt(&mut cheat, &model, &chat(p), Sampling::greedy(20));
            // The cheater opens its own trace (its model's numbers).
            let prover = Prover::of(&mut cheat, &r);
            for k in [1usize, 4, 16] {
                for s in 0..10 {
                    let e = prover.audit(&mut model, &r, s + 100 * i as u64, k);
                    n += 1;
                    if e.is_err() {
                        hits += 1;
                    }
                }
            }
            // Asked to reproduce its trace with the model it claims, it cannot.
            let checks = spot::challenges(&r, &seed(1), 16).unwrap();
            assert!(spot::open(&mut model, &r, &checks).is_err() || r.trace.is_none());
        }
        assert_rate(name, hits, n, 1.0);
    }
    // The cheater generates with another model, then commits the *claimed* model's honest
    // trace over those tokens (paying a prefill to hide it): every layer step is honest,
    // only sampling checks at positions where the two models disagree can see it.
    // Predicted: missed iff none of the n_s sampled positions is among the D disagreeing
    // ones, C(n-D, n_s) / C(n, n_s).
    let mut cheat = ChatModel::load_gguf(&variant("requant-q4_0")).unwrap();
    let r0 = cheating_receipt(&mut cheat, &model, &chat(PROMPTS[3]), sampled(9, 32));
    let ids = model.tokenize(&r0.prompt).unwrap();
    let values = model.trace_values(&ids, &r0.output_tokens).unwrap();
    let (r, prover) = resign_with_trace(&model, &r0, &values);
    sampling_class_rates(
        &mut model,
        &r,
        &prover,
        "other model's tokens under an honest trace",
    );

    // A model with a layer less commits to 29 layers: rejected before any check.
    let mut cheat = ChatModel::load_gguf(&variant("drop-last-layer")).unwrap();
    let r = cheating_receipt(&mut cheat, &model, &chat(PROMPTS[0]), Sampling::greedy(12));
    let prover = Prover::of(&mut cheat, &r);
    let e = prover.audit(&mut model, &r, 1, 16).unwrap_err();
    assert!(matches!(e, VerifyError::Trace(_)), "{e}");
}

/// A tamper that leaves every layer step honest and changes how tokens were chosen is seen
/// only by sampling checks at the `D` positions where the claimed rule disagrees with the
/// token. Predicted: missed iff none of the `s` sampled positions is among them,
/// `C(n-D, s) / C(n, s)`.
fn sampling_class_rates(model: &mut ChatModel, r: &Receipt, prover: &Prover, what: &str) {
    let ids = model.tokenize(&r.prompt).unwrap();
    let scored = model
        .score_batch(&[(&ids, &r.output_tokens)])
        .unwrap()
        .remove(0);
    let vocab = model.vocab();
    let n_out = r.output_tokens.len();
    let disagree = (0..n_out)
        .filter(|&i| {
            vouch_inference::sampling::check(
                &scored.logits[i * vocab..(i + 1) * vocab],
                &r.sampling,
                i as u32,
                r.output_tokens[i],
            )
            .is_err()
        })
        .count();
    assert!(disagree > 0, "{what}: the tamper changed no token");
    // The last token's sampling step is checked by every audit; the drawn sampling checks
    // fall on the other indices.
    let last_bad = vouch_inference::sampling::check(
        &scored.logits[(n_out - 1) * vocab..n_out * vocab],
        &r.sampling,
        (n_out - 1) as u32,
        r.output_tokens[n_out - 1],
    )
    .is_err();
    let (pool, bad) = (n_out - 1, disagree - usize::from(last_bad));
    let choose =
        |n: usize, m: usize| -> f64 { (0..m).map(|i| (n - i) as f64 / (m - i) as f64).product() };
    for k in [16usize, 64] {
        let ns = spot::sampling_checks(k).min(pool);
        let predicted = if last_bad || ns > pool - bad {
            1.0
        } else {
            1.0 - choose(pool - bad, ns) / choose(pool, ns)
        };
        let hits = detections(model, r, prover, k, 100);
        assert_rate(
            &format!("{what} ({disagree} of {n_out} disagree), k={k}"),
            hits,
            100,
            predicted,
        );
    }
}

#[test]
fn another_sampling_seed_is_caught_by_the_sampling_checks() {
    // The provider samples with a seed of its own choosing (say, to pick a preferred
    // answer) and signs the client's seed: the model and the trace are honest.
    let mut model = honest_model();
    let mut r = attest::generate(
        &mut model,
        &key(5),
        &chat(PROMPTS[5]),
        sampled(777, 32),
        &Default::default(),
        1,
        &mut |_| {},
    )
    .unwrap();
    r.sampling.seed = 778;
    vouch_crypto::sign_receipt(&key(5), &mut r);
    check_fast(&r).unwrap();
    let prover = Prover::of(&mut model, &r);
    sampling_class_rates(&mut model, &r, &prover, "sampled with another seed");
}

/// Layer checks a `k`-check audit of a receipt with `n_out` output tokens runs.
fn layer_checks(k: usize, n_out: usize) -> usize {
    k - spot::sampling_checks(k).min(n_out - 1)
}

#[test]
fn one_perturbed_layer_is_caught_when_its_layer_is_checked() {
    // 5% of layer 14's 4-bit weights one step off; everything after it computed honestly
    // from the perturbed residual: only a layer-14 check can see it.
    let mut model = honest_model();
    let mut cheat = ChatModel::load_gguf(&variant("noise-layer14")).unwrap();
    let r = cheating_receipt(&mut cheat, &model, &chat(PROMPTS[2]), sampled(3, 24));
    let prover = Prover::of(&mut cheat, &r);
    for (k, seeds) in [(8usize, 300u64), (16, 300), (40, 60)] {
        let hits = detections(&mut model, &r, &prover, k, seeds);
        let lc = layer_checks(k, r.output_tokens.len()) as f64;
        let predicted = (lc / 30.0).min(1.0);
        assert_rate(
            &format!("one layer perturbed, k={k}"),
            hits,
            seeds,
            predicted,
        );
    }
}

#[test]
fn one_forced_token_is_caught_by_its_sampling_check() {
    // The provider forces one output token, then generates the rest honestly and commits
    // the honest trace of the forced text: every layer step is honest, only the sampling
    // step at the forced token is not.
    let mut model = honest_model();
    let prompt = model.render_chat(&[Message::user(PROMPTS[4])]);
    let ids = model.tokenize(&prompt).unwrap();
    let max = 32u32;
    let honest = model
        .generate(
            &GenerateRequest {
                prompt_ids: ids.clone(),
                sampling: Sampling::greedy(max),
                controls: Default::default(),
            },
            &mut |_| {},
        )
        .unwrap();
    let j = 5usize;
    assert!(honest.tokens.len() > j + 1);
    let mut forced = honest.tokens[..j].to_vec();
    forced.push(if honest.tokens[j] == 1000 { 1001 } else { 1000 });
    let mut prefix = ids.clone();
    prefix.extend_from_slice(&forced);
    let rest = model
        .generate(
            &GenerateRequest {
                prompt_ids: prefix,
                sampling: Sampling::greedy(max - forced.len() as u32),
                controls: Default::default(),
            },
            &mut |_| {},
        )
        .unwrap();
    let mut tokens = forced;
    tokens.extend_from_slice(&rest.tokens);
    let values = model.trace_values(&ids, &tokens).unwrap();
    let hashes = values.hashes();
    let job = attest::prepare(
        &model,
        &chat(PROMPTS[4]),
        Sampling::greedy(max),
        &Default::default(),
    )
    .unwrap();
    let g = vouch_inference::Generation {
        tokens: tokens.clone(),
        finish: if rest.finish == FinishReason::Stop {
            FinishReason::Stop
        } else {
            FinishReason::Length
        },
        prompt_len: ids.len(),
        hidden: model
            .score_batch(&[(&ids, &tokens)])
            .unwrap()
            .remove(0)
            .hidden,
        trace: hashes.clone(),
    };
    let r = attest::receipt_for(&model, &key(67), &job, &g, 1).unwrap();
    check_fast(&r).unwrap();
    let prover = Prover {
        values,
        hashes,
        prompt_len: ids.len(),
    };
    let n_out = r.output_tokens.len();
    for (k, seeds) in [(16usize, 200u64), (64, 200)] {
        let hits = detections(&mut model, &r, &prover, k, seeds);
        // Drawn sampling checks fall on the indices before the last one.
        let predicted = spot::sampling_checks(k).min(n_out - 1) as f64 / (n_out - 1) as f64;
        assert_rate(&format!("one forced token, k={k}"), hits, seeds, predicted);
    }
    // The failure names the sampling step.
    let caught = (0..50)
        .find_map(|s| prover.audit(&mut model, &r, s, 64).err())
        .expect("caught at least once in 50 audits");
    assert!(
        matches!(caught, VerifyError::Sampling { position, .. } if position == j),
        "{caught}"
    );
}

/// Re-signs a receipt over an altered trace.
fn resign_with_trace(model: &ChatModel, r: &Receipt, values: &TraceValues) -> (Receipt, Prover) {
    let hashes = values.hashes();
    let mut r = r.clone();
    r.trace = Some(spot::commitment(&hashes));
    vouch_crypto::sign_receipt(&key(68), &mut r);
    let prompt_len = model.tokenize(&r.prompt).unwrap().len();
    (
        r,
        Prover {
            values: values.clone(),
            hashes,
            prompt_len,
        },
    )
}

#[test]
fn altered_key_value_rows_and_edited_tokens_are_caught_at_the_predicted_rates() {
    let mut model = honest_model();
    let r = attest::generate(
        &mut model,
        &key(3),
        &chat(PROMPTS[1]),
        Sampling::greedy(40),
        &Default::default(),
        1,
        &mut |_| {},
    )
    .unwrap();
    let ids = model.tokenize(&r.prompt).unwrap();
    let honest = model.trace_values(&ids, &r.output_tokens).unwrap();
    let positions = honest.positions();
    let n_out = r.output_tokens.len();
    let kv_dim = honest.kv_dim;

    // Key row of layer 7 at one position replaced, the rest of the trace as computed: a
    // layer-7 check at that position sees its own key row differ, one after it sees its
    // attention output differ. Predicted: with c checks at distinct uniform positions of
    // layer 7, missed iff all lie before the altered one.
    let (l, p) = (7usize, positions / 2);
    let mut kv = honest.clone();
    for v in &mut kv.k[l][p * kv_dim..(p + 1) * kv_dim] {
        *v = -*v;
    }
    let (rk, prover) = resign_with_trace(&model, &r, &kv);
    let k = 64;
    let lc = layer_checks(k, n_out);
    let seeds = 200u64;
    let hits = detections(&mut model, &rk, &prover, k, seeds);
    // Each layer gets floor(lc/30) or one more checks; `before` of the positions lie
    // before the altered one.
    let before = p as f64;
    let miss = |c: usize| -> f64 {
        (0..c)
            .map(|i| (before - i as f64) / (positions - i) as f64)
            .product()
    };
    let (lo, extra) = (lc / 30, lc % 30);
    let predicted =
        1.0 - (extra as f64 / 30.0 * miss(lo + 1) + (1.0 - extra as f64 / 30.0) * miss(lo));
    assert_rate("one key row altered, k=64", hits, seeds, predicted);

    // An output token edited after the trace was made: layer 0 is the auditor's own, so
    // every audit catches it, whatever k. The last token, which no trace row holds, is
    // caught by the last sampling step, which every audit checks.
    let prover = Prover {
        values: honest.clone(),
        hashes: honest.hashes(),
        prompt_len: ids.len(),
    };
    for at in [3, n_out - 1] {
        let mut edited = r.clone();
        edited.output_tokens[at] = if r.output_tokens[at] == 1000 {
            1001
        } else {
            1000
        };
        edited.output = model.detokenize(&edited.output_tokens).unwrap();
        edited.output_hash = Receipt::hash_output(&edited.output, &edited.output_tokens);
        vouch_crypto::sign_receipt(&key(3), &mut edited);
        for k in [1usize, 16] {
            let hits = detections(&mut model, &edited, &prover, k, 20);
            assert_rate(
                &format!("token {at} of {n_out} edited, trace not redone, k={k}"),
                hits,
                20,
                1.0,
            );
        }
    }

    // A residual row replaced (output of layer 20 at one position), the rest as computed.
    let mut xr = honest.clone();
    let (l2, p2) = (20usize, positions / 3);
    let h = xr.hidden;
    for v in &mut xr.x[l2][p2 * h..(p2 + 1) * h] {
        *v *= 1.01;
    }
    let (rx, prover) = resign_with_trace(&model, &r, &xr);
    let hits = detections(&mut model, &rx, &prover, 64, 200);
    // Caught by a check of layer 19 or 20 at that position, or of layer 20 after it
    // (through the key/value rows made from it... which were not altered): only the two
    // (layer, position) pairs that read or write the row see it.
    let per_pair = lc as f64 / (30.0 * positions as f64);
    let predicted = 1.0 - (1.0 - per_pair).powi(2);
    assert_rate("one residual row altered, k=64", hits, 200, predicted);
}

#[test]
fn malformed_openings_are_rejected_with_clear_errors() {
    let mut model = honest_model();
    let r = attest::generate(
        &mut model,
        &key(4),
        &chat(PROMPTS[0]),
        Sampling::greedy(12),
        &Default::default(),
        1,
        &mut |_| {},
    )
    .unwrap();
    let checks = spot::challenges(&r, &seed(5), 16).unwrap();
    assert_eq!(
        checks.len(),
        17,
        "16 drawn checks and the last sampling step"
    );
    let good = spot::open(&mut model, &r, &checks).unwrap();
    spot::check_spot(&r, &mut model, &checks, &good).unwrap();
    // Truncated bytes, a dropped proof hash, a flipped value, other challenges.
    let bytes = good.to_bytes();
    assert!(spot::Opening::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut short = good.clone();
    short.top.pop();
    assert!(spot::check_spot(&r, &mut model, &checks, &short).is_err());
    let mut flipped = good.clone();
    flipped.x[0] = -flipped.x[0] + 1.0;
    let e = spot::check_spot(&r, &mut model, &checks, &flipped).unwrap_err();
    assert!(e.to_string().contains("committed trace"), "{e}");
    let other = spot::challenges(&r, &seed(6), 16).unwrap();
    assert!(spot::check_spot(&r, &mut model, &other, &good).is_err());
    let outside = [Check::Layer { layer: 30, pos: 0 }];
    assert!(matches!(
        spot::check_spot(&r, &mut model, &outside, &good),
        Err(VerifyError::Trace(_))
    ));
    // A receipt without a trace cannot be spot-checked (re-execution still works).
    let mut bare = r.clone();
    bare.trace = None;
    vouch_crypto::sign_receipt(&key(4), &mut bare);
    assert!(spot::challenges(&bare, &seed(1), 16).is_err());
    // Challenges depend on the seed and the receipt, and are reproducible.
    assert_eq!(checks, spot::challenges(&r, &seed(5), 16).unwrap());
    assert_ne!(checks, other);
}
