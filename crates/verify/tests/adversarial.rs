//! The adversarial suite: every cheating variant is built for real (rewritten GGUF files,
//! re-signed receipts) and must be rejected by re-execution; honest receipts made with
//! and without KV cache, singly and batched, must all pass.
//!
//! Needs the real SmolLM2 weights (`vouch models fetch`).

mod common;

use common::{chat, honest_model, key, sampled, variant};
use vouch_inference::chat::Message;
use vouch_inference::fingerprint::Tolerance;
use vouch_inference::models::SMOLLM2_135M;
use vouch_inference::ChatModel;
use vouch_types::{Receipt, Sampling};
use vouch_verify::attest::{self, Input};
use vouch_verify::{check_fast, check_reexecute, check_reexecute_batch, VerifyError};

fn prompts() -> Vec<&'static str> {
    vec![
        "Name three primary colors.",
        "What is the capital of France?",
        "Write a haiku about autumn leaves.",
        "Explain photosynthesis in one sentence.",
        "List two prime numbers greater than ten.",
        "Give me a tip for learning to cook.",
        "What does a bee make?",
        "Translate 'good morning' into Spanish.",
    ]
}

/// Makes a receipt with `cheat` model but claiming the honest model's identity, signed by
/// the cheater's own (valid) key: the receipt passes every offline check.
fn cheating_receipt(
    cheat: &mut ChatModel,
    honest_id: vouch_types::ContentId,
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
    r.model = honest_id;
    r.model_name = SMOLLM2_135M.name.to_string();
    vouch_crypto::sign_receipt(&key(66), &mut r);
    check_fast(&r).expect("a well-formed lie passes the offline checks");
    r
}

fn assert_rejected(r: &Receipt, what: &str) -> VerifyError {
    let mut m = honest_model();
    match check_reexecute(r, &mut m, &Tolerance::default()) {
        Ok(rep) => panic!(
            "{what}: accepted (min matches {})",
            rep.min_match_permille()
        ),
        Err(e) => {
            eprintln!("{what}: rejected: {e}");
            e
        }
    }
}

fn model_variant_rejected(name: &str) {
    let honest_id = honest_model().id();
    let mut cheat = ChatModel::load_gguf(&variant(name)).unwrap();
    for (i, p) in prompts().iter().take(4).enumerate() {
        let s = if i % 2 == 0 {
            Sampling::greedy(24)
        } else {
            sampled(i as u64, 24)
        };
        let r = cheating_receipt(&mut cheat, honest_id, &chat(p), s);
        let e = assert_rejected(&r, &format!("{name} / {p}"));
        assert!(
            matches!(
                e,
                VerifyError::Fingerprint { .. } | VerifyError::Sampling { .. }
            ),
            "{name}: rejected for the wrong reason: {e}"
        );
    }
    // Without the disguise, the model id alone gives it away.
    let r = attest::generate(
        &mut cheat,
        &key(66),
        &chat("Hi"),
        Sampling::greedy(4),
        &Default::default(),
        1,
        &mut |_| {},
    )
    .unwrap();
    assert!(matches!(
        check_reexecute(&r, &mut honest_model(), &Tolerance::default()),
        Err(VerifyError::ModelMismatch { .. })
    ));
}

#[test]
fn another_model_last_layer_dropped_is_rejected() {
    model_variant_rejected("drop-last-layer");
}

#[test]
fn another_quantization_q4_0_is_rejected() {
    model_variant_rejected("requant-q4_0");
}

#[test]
fn another_quantization_q8_0_is_rejected() {
    model_variant_rejected("requant-q8_0");
}

#[test]
fn weights_perturbed_in_one_layer_are_rejected() {
    model_variant_rejected("noise-layer14");
}

fn honest_receipt(p: &str, s: Sampling) -> Receipt {
    let mut m = honest_model();
    attest::generate(
        &mut m,
        &key(1),
        &chat(p),
        s,
        &Default::default(),
        1,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn edited_prompt_is_rejected() {
    // The provider answered another prompt and claims it answered this one.
    for (real, claimed) in [
        ("Name three primary colors.", "Name three secondary colors."),
        ("What is the capital of France?", "What is the capital of Spain?"),
        // One word early in a longer prompt, with the answer likely unchanged.
        (
            "Read this and answer: The old cat sat on the warm mat while the dog slept by the fire and the rain fell softly on the roof all night long. Is it raining?",
            "Read this and answer: The old cow sat on the warm mat while the dog slept by the fire and the rain fell softly on the roof all night long. Is it raining?",
        ),
    ] {
        let mut r = honest_receipt(real, Sampling::greedy(24));
        let m = honest_model();
        r.prompt = m.render_chat(&[Message::user(claimed)]);
        r.prompt_tokens = m.tokenize(&r.prompt).unwrap().len() as u32;
        drop(m);
        r.input_hash = Receipt::hash_input(r.kind, &r.prompt);
        vouch_crypto::sign_receipt(&key(66), &mut r);
        check_fast(&r).unwrap();
        let e = assert_rejected(&r, "edited prompt");
        assert!(matches!(e, VerifyError::Fingerprint { .. } | VerifyError::Sampling { .. }), "{e}");
    }
}

#[test]
fn edited_output_token_is_rejected() {
    for (i, p) in prompts().iter().take(3).enumerate() {
        let mut r = honest_receipt(
            p,
            if i == 0 {
                Sampling::greedy(24)
            } else {
                sampled(i as u64, 24)
            },
        );
        let pos = r.output_tokens.len() / 2;
        r.output_tokens[pos] = if r.output_tokens[pos] == 1000 {
            1001
        } else {
            1000
        };
        let m = honest_model();
        r.output = m.detokenize(&r.output_tokens).unwrap();
        drop(m);
        r.output_hash = Receipt::hash_output(&r.output, &r.output_tokens);
        vouch_crypto::sign_receipt(&key(66), &mut r);
        check_fast(&r).unwrap();
        assert_rejected(&r, "edited output token");
    }
}

/// Keeps the first `n` output tokens (text, hash and fingerprint chunk count follow).
fn cut(r: &mut Receipt, n: usize) {
    r.output_tokens.truncate(n);
    r.output = honest_model().detokenize(&r.output_tokens).unwrap();
    r.output_hash = Receipt::hash_output(&r.output, &r.output_tokens);
    r.fingerprint
        .chunks
        .truncate(vouch_verify::expected_chunks(r.prompt_tokens as usize, n));
}

#[test]
fn truncated_output_is_rejected() {
    // 1. A generation that ran to max_tokens, cut and re-signed: the fast path sees that
    //    fewer than max_tokens tokens cannot end by length.
    let long = honest_receipt("Write a story about a dragon.", sampled(3, 40));
    assert_eq!(long.finish_reason, vouch_types::FinishReason::Length);
    let mut a = long.clone();
    cut(&mut a, long.output_tokens.len() - 3);
    vouch_crypto::sign_receipt(&key(66), &mut a);
    assert!(matches!(check_fast(&a), Err(VerifyError::Finish { .. })));
    // ... and claimed to have stopped on its own instead: re-execution sees no stop token.
    a.finish_reason = vouch_types::FinishReason::Stop;
    vouch_crypto::sign_receipt(&key(66), &mut a);
    assert_rejected(&a, "cut, claimed stop");
    // 2. A generation that stopped by itself, with its last tokens (the stop token among
    //    them) cut.
    let short = honest_receipt("Name three primary colors.", Sampling::greedy(64));
    assert_eq!(short.finish_reason, vouch_types::FinishReason::Stop);
    let mut b = short.clone();
    cut(&mut b, short.output_tokens.len() - 2);
    vouch_crypto::sign_receipt(&key(66), &mut b);
    assert_rejected(&b, "stopped answer cut short");
}

#[test]
fn wrong_seed_or_temperature_is_rejected() {
    let p = "Write a haiku about autumn leaves.";
    // Sampled with one seed, receipt claims another.
    let mut r = honest_receipt(p, sampled(11, 32));
    r.sampling.seed = 12;
    vouch_crypto::sign_receipt(&key(66), &mut r);
    assert!(matches!(
        assert_rejected(&r, "wrong seed"),
        VerifyError::Sampling { .. }
    ));
    // Sampled at temperature 0.8, receipt claims greedy.
    let mut r = honest_receipt(p, sampled(13, 32));
    r.sampling.temperature = 0.0;
    vouch_crypto::sign_receipt(&key(66), &mut r);
    assert!(matches!(
        assert_rejected(&r, "claims greedy"),
        VerifyError::Sampling { .. }
    ));
    // Greedy, receipt claims temperature 1.2 with some seed.
    let mut r = honest_receipt(p, Sampling::greedy(32));
    r.sampling.temperature = 1.2;
    r.sampling.seed = 5;
    vouch_crypto::sign_receipt(&key(66), &mut r);
    assert!(matches!(
        assert_rejected(&r, "claims sampled"),
        VerifyError::Sampling { .. }
    ));
}

#[test]
fn resigned_and_forged_signatures_are_rejected() {
    let r = honest_receipt("What does a bee make?", Sampling::greedy(8));
    check_fast(&r).unwrap();
    // The provider field names the honest key but another key signed.
    let mut a = r.clone();
    let other = key(66);
    let sig = other.sign(
        vouch_types::receipt::domain::RECEIPT_SIGNATURE,
        &a.signed_body().0,
    );
    a.signature = hex::encode(sig);
    assert!(matches!(check_fast(&a), Err(VerifyError::Signature(_))));
    // Re-signed by another key as a whole: valid for that key, and the verifier can
    // pin the provider it expects.
    let mut b = r.clone();
    vouch_crypto::sign_receipt(&other, &mut b);
    check_fast(&b).unwrap();
    assert_ne!(b.provider, r.provider);
    assert!(matches!(
        vouch_verify::check_provider(&b, &r.provider),
        Err(VerifyError::UnexpectedProvider { .. })
    ));
    vouch_verify::check_provider(&r, &r.provider).unwrap();
    // Forged: random bytes, or a signature over another receipt.
    let mut c = r.clone();
    c.signature = hex::encode([0x5au8; 64]);
    assert!(matches!(check_fast(&c), Err(VerifyError::Signature(_))));
    let mut d = r.clone();
    d.created_at += 1;
    assert!(matches!(check_fast(&d), Err(VerifyError::Signature(_))));
    // Edited output without re-signing: the hash catches it first.
    let mut e = r.clone();
    e.output.push('!');
    assert!(matches!(check_fast(&e), Err(VerifyError::OutputHash)));
}

/// Zero false positives: honest receipts made singly and batched, with and without the KV
/// cache, greedy and sampled, all pass re-execution (verified in batches).
#[test]
fn honest_receipts_all_pass() {
    let mut m = honest_model();
    let ps = prompts();
    let mut receipts = Vec::new();
    let made = |label: &str, rs: Vec<Receipt>, out: &mut Vec<(String, Receipt)>| {
        for r in rs {
            out.push((label.to_string(), r));
        }
    };
    let sampling_for = |i: usize| match i % 4 {
        0 => Sampling::greedy(16 + (i % 5) as u32 * 4),
        1 => sampled(i as u64, 24),
        2 => Sampling {
            temperature: 1.2,
            top_p: 1.0,
            seed: i as u64,
            max_tokens: 20,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        },
        _ => Sampling {
            temperature: 0.5,
            top_p: 0.5,
            seed: i as u64,
            max_tokens: 36,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        },
    };
    // Singly, with KV cache: 8 prompts x 6 samplings.
    for i in 0..48 {
        let p = ps[i % ps.len()];
        let r = attest::generate(
            &mut m,
            &key(1),
            &chat(p),
            sampling_for(i),
            &Default::default(),
            1,
            &mut |_| {},
        )
        .unwrap();
        made("single", vec![r], &mut receipts);
    }
    // Batched, with KV cache: 8 batches of 8.
    for b in 0..8 {
        let jobs: Vec<_> = (0..8)
            .map(|j| {
                let i = 100 + b * 8 + j;
                attest::prepare(
                    &m,
                    &chat(ps[(b + j) % ps.len()]),
                    sampling_for(i),
                    &Default::default(),
                )
                .unwrap()
            })
            .collect();
        made(
            "batched",
            attest::generate_batch(&mut m, &key(1), &jobs, true, 1).unwrap(),
            &mut receipts,
        );
    }
    // Without KV cache (every step recomputes the whole sequence), batches of 4, short.
    for b in 0..4 {
        let jobs: Vec<_> = (0..4)
            .map(|j| {
                let i = 300 + b * 4 + j;
                let mut s = sampling_for(i);
                s.max_tokens = s.max_tokens.min(10);
                attest::prepare(
                    &m,
                    &chat(ps[(b * 3 + j) % ps.len()]),
                    s,
                    &Default::default(),
                )
                .unwrap()
            })
            .collect();
        made(
            "no-kv-cache",
            attest::generate_batch(&mut m, &key(1), &jobs, false, 1).unwrap(),
            &mut receipts,
        );
    }
    assert!(receipts.len() >= 128);
    let tol = Tolerance::default();
    let mut worst = usize::MAX;
    let mut worst_rel = 0f32;
    for batch in receipts.chunks(8) {
        let refs: Vec<&Receipt> = batch.iter().map(|(_, r)| r).collect();
        for ((label, r), res) in batch.iter().zip(check_reexecute_batch(&refs, &mut m, &tol)) {
            match res {
                Ok(rep) => {
                    worst = worst.min(rep.min_match_permille());
                    worst_rel = worst_rel.max(rep.max_rel_err());
                }
                Err(e) => panic!(
                    "honest {label} receipt rejected: {e}\n{}",
                    serde_json::to_string(r).unwrap()
                ),
            }
        }
    }
    eprintln!(
        "{} honest receipts passed; worst chunk {worst}/1000 entries matched; max relative error {worst_rel:.2e}",
        receipts.len()
    );
}

/// Stop strings and penalties are part of the sampling rule a receipt commits to: an
/// honest receipt using them re-executes; a provider that ignored them (and claims them)
/// or cut its output at a string it was not asked for is caught.
#[test]
fn ignored_stop_strings_and_penalties_are_caught_by_reexecution() {
    let p = "Repeat the word cat ten times, separated by commas.";
    let plain = honest_receipt(p, Sampling::greedy(24));
    // Penalties: honest with them, then a cheat that ran without them.
    let penalized = Sampling {
        presence_penalty: 1.5,
        frequency_penalty: 1.0,
        ..Sampling::greedy(24)
    };
    let honest = honest_receipt(p, penalized);
    assert_eq!(honest.version, 3);
    assert_ne!(
        honest.output_tokens, plain.output_tokens,
        "the penalties must change this answer, or the test shows nothing"
    );
    {
        let mut m = honest_model();
        check_reexecute(&honest, &mut m, &Tolerance::default()).expect("honest penalized");
    }
    let mut cheat = plain.clone();
    cheat.sampling.presence_penalty = 1.5;
    cheat.sampling.frequency_penalty = 1.0;
    cheat.version = 3;
    vouch_crypto::sign_receipt(&key(1), &mut cheat);
    check_fast(&cheat).expect("a well-formed lie passes the offline checks");
    let e = assert_rejected(&cheat, "penalties claimed, not applied");
    assert!(matches!(e, VerifyError::Sampling { .. }), "{e}");

    // Stop strings: a word from the middle of the plain answer.
    let words: Vec<&str> = plain.output.split(' ').collect();
    assert!(words.len() >= 4, "{:?}", plain.output);
    let stop = vec![format!(" {}", words[2])];
    assert!(
        plain.output.contains(&stop[0]),
        "{stop:?} in {:?}",
        plain.output
    );
    let stopped = {
        let mut m = honest_model();
        attest::generate(
            &mut m,
            &key(1),
            &chat(p),
            Sampling::greedy(24),
            &vouch_types::Controls {
                stop: stop.clone(),
                constraint: None,
            },
            1,
            &mut |_| {},
        )
        .unwrap()
    };
    assert_eq!(stopped.finish_reason, vouch_types::FinishReason::Stop);
    assert!(!stopped.output.contains(&stop[0]));
    assert!(stopped.output_tokens.len() < plain.output_tokens.len());
    {
        let mut m = honest_model();
        check_reexecute(&stopped, &mut m, &Tolerance::default()).expect("honest stopped");
    }
    // Ignored: generation went on past the stop string, which the receipt claims.
    let mut cheat = plain.clone();
    cheat.stop = stop.clone();
    cheat.version = 3;
    cheat.output = attest::output_text(plain.output.clone(), &stop);
    cheat.output_hash = Receipt::hash_output(&cheat.output, &cheat.output_tokens);
    vouch_crypto::sign_receipt(&key(1), &mut cheat);
    check_fast(&cheat).expect("a well-formed lie passes the offline checks");
    let e = assert_rejected(&cheat, "stop string ignored");
    assert!(matches!(e, VerifyError::Finish { .. }), "{e}");
    // Cut short at a stop string the client never asked for: the text is not the
    // decoding of the tokens under the receipt's (empty) stop list.
    let mut cheat = stopped.clone();
    cheat.stop.clear();
    cheat.version = 2;
    vouch_crypto::sign_receipt(&key(1), &mut cheat);
    if check_fast(&cheat).is_ok() {
        assert_rejected(&cheat, "stopped without a stop string");
    }
}
