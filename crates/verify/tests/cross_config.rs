//! Zero false positives across kernels, thread counts and batch sizes.
//!
//! 200 honest receipts, each made under one engine configuration (SIMD or portable
//! kernels, 1 or 2 threads, alone or in a batch of 4) and re-executed under a different
//! one, must all pass. The engine's arithmetic is defined to the bit (see
//! `crates/inference/src/q4.rs`), so more is true and is checked too: every fingerprint
//! entry of every receipt matches, off only by the half-precision rounding of the
//! commitment.
//!
//! Needs the real SmolLM2 weights (`vouch models fetch`).

use vouch_crypto::SigningKey;
use vouch_inference::chat::Message;
use vouch_inference::fingerprint::Tolerance;
use vouch_inference::models::{default_home, SMOLLM2_135M};
use vouch_inference::q4::{kernels_in_use, set_kernels, Kernels};
use vouch_inference::ChatModel;
use vouch_types::{Receipt, Sampling};
use vouch_verify::attest::{self, Input};
use vouch_verify::{check_reexecute, check_reexecute_batch};

const PROMPTS: [&str; 10] = [
    "Name three primary colors.",
    "What is 2+2?",
    "Write a haiku about the sea.",
    "Give one tip for learning a new language.",
    "What is the capital of France?",
    "Describe a cat in one sentence.",
    "List two uses of a paperclip.",
    "Why is the sky blue? Answer briefly.",
    "Translate 'good morning' into Spanish.",
    "Say something kind to a colleague.",
];

#[derive(Debug, Clone, Copy)]
struct Config {
    kernels: Kernels,
    threads: usize,
    batch: bool,
}

fn with<T>(c: Config, f: impl FnOnce() -> T + Send) -> T
where
    T: Send,
{
    set_kernels(c.kernels);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(c.threads)
        .build()
        .unwrap();
    let out = pool.install(f);
    set_kernels(Kernels::Auto);
    out
}

#[test]
fn honest_receipts_pass_across_kernels_threads_and_batches() {
    let mut model =
        ChatModel::load(&SMOLLM2_135M, &default_home()).expect("run `vouch models fetch`");
    let key = SigningKey::from_bytes(&[9u8; 32]).unwrap();
    let tol = Tolerance::default();
    let simd_available = {
        set_kernels(Kernels::Auto);
        kernels_in_use() != "portable"
    };
    let (mut receipts, mut checked, mut exact, mut portable) = (0, 0, 0, 0);
    for group in 0..50usize {
        // Threads and batching alternate; the slow portable kernels make or check one
        // group in four (50 receipts).
        let made = Config {
            kernels: if group % 8 == 4 {
                Kernels::Portable
            } else {
                Kernels::Auto
            },
            threads: 1 + group % 2,
            batch: (group / 2) % 2 == 1,
        };
        let verifier = Config {
            kernels: if group % 8 == 0 {
                Kernels::Portable
            } else {
                Kernels::Auto
            },
            threads: 3 - made.threads,
            batch: !made.batch,
        };
        if made.kernels != verifier.kernels {
            portable += 4;
        }
        let jobs: Vec<attest::Job> = (0..4)
            .map(|j| {
                let i = group * 4 + j;
                let sampling = Sampling {
                    temperature: if i % 2 == 0 { 0.0 } else { 0.8 },
                    top_p: 0.95,
                    seed: i as u64,
                    max_tokens: 6 + (i % 3) as u32 * 5,
                    presence_penalty: 0.0,
                    frequency_penalty: 0.0,
                };
                let input = Input::Chat(vec![Message::user(PROMPTS[i % PROMPTS.len()])]);
                attest::prepare(&model, &input, sampling, &Default::default()).unwrap()
            })
            .collect();
        let made_receipts: Vec<Receipt> = with(made, || {
            if made.batch {
                attest::generate_batch(&mut model, &key, &jobs, true, 0).unwrap()
            } else {
                jobs.iter()
                    .map(|j| {
                        let g = model.generate(&j.request, &mut |_| {}).unwrap();
                        attest::receipt_for(&model, &key, j, &g, 0).unwrap()
                    })
                    .collect()
            }
        });
        receipts += made_receipts.len();
        let reports = with(verifier, || {
            if verifier.batch {
                let refs: Vec<&Receipt> = made_receipts.iter().collect();
                check_reexecute_batch(&refs, &mut model, &tol)
            } else {
                made_receipts
                    .iter()
                    .map(|r| check_reexecute(r, &mut model, &tol))
                    .collect()
            }
        });
        for (r, rep) in made_receipts.iter().zip(reports) {
            let rep = rep.unwrap_or_else(|e| {
                panic!("false positive: made under {made:?}, verified under {verifier:?}, output {:?}: {e}", r.output)
            });
            checked += 1;
            // Every entry matches, within the half-precision rounding of the commitment
            // itself (2^-11 relative): the recomputation gave the committed values.
            if rep.min_match_permille() == 1000
                && rep.chunks.iter().all(|c| c.max_rel_err <= 4.9e-4)
            {
                exact += 1;
            }
        }
    }
    assert_eq!(receipts, 200);
    assert_eq!(
        portable, 52,
        "receipts made or checked by the portable kernels"
    );
    assert_eq!(checked, 200, "every honest receipt passes");
    if simd_available {
        assert_eq!(
            exact, 200,
            "every entry re-computed within the commitment's own rounding"
        );
    }
}
