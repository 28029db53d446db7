//! Constrained decoding under verification (issue 20): honest constrained receipts (JSON
//! mode, JSON schemas, tool-call grammars; greedy and sampled; single, batched and on
//! several threads) all pass re-execution and spot checks, and every way a provider can
//! ignore the constraint is caught.
//!
//! Needs the real SmolLM2 weights (`vouch models fetch`).

#[allow(dead_code)]
mod common;

use common::{chat, honest_model, key, sampled};
use vouch_inference::constraint;
use vouch_inference::fingerprint::Tolerance;
use vouch_types::{Constraint, Controls, Hash32, Receipt, Sampling};
use vouch_verify::attest::{self, Input};
use vouch_verify::{check_fast, check_reexecute, check_reexecute_batch, spot, VerifyError};

const ANSWER: &str = r#"{"type":"object","properties":{"answer":{"type":"integer"}},"required":["answer"],"additionalProperties":false}"#;
const PERSON: &str = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":150},"city":{"enum":["Paris","Rome","Oslo"]}},"required":["name","age","city"],"additionalProperties":false}"#;
const TOOL: &str = r#"start: call
call: "<tool_call>\n" args "\n</tool_call>"
args: %json {"type":"object","properties":{"name":{"const":"get_weather"},"arguments":{"type":"object","properties":{"city":{"type":"string","maxLength":16}},"required":["city"],"additionalProperties":false}},"required":["name","arguments"],"additionalProperties":false,"x-guidance":{"item_separator":", ","key_separator":": ","whitespace_flexible":false}}
"#;

fn constraints() -> Vec<Constraint> {
    vec![
        Constraint::json_object(),
        Constraint::json_schema(ANSWER),
        Constraint::json_schema(PERSON),
        Constraint::lark(TOOL),
    ]
}

fn controls(c: &Constraint) -> Controls {
    Controls {
        stop: Vec::new(),
        constraint: Some(c.clone()),
    }
}

fn prompts() -> Vec<&'static str> {
    vec![
        "What is 2 + 2? Answer in JSON.",
        "Describe a person as JSON.",
        "What is the weather in Paris?",
        "Give me a JSON object about cats.",
        "How many legs does a spider have?",
        "Invent a character who lives in Rome.",
    ]
}

fn constrained(p: &str, s: Sampling, c: &Constraint) -> Receipt {
    let mut m = honest_model();
    attest::generate(&mut m, &key(1), &chat(p), s, &controls(c), 1, &mut |_| {}).unwrap()
}

fn reexec(r: &Receipt) -> Result<(), VerifyError> {
    check_reexecute(r, &mut honest_model(), &Tolerance::default()).map(|_| ())
}

fn audit(r: &Receipt, seed: u8) -> Result<(), VerifyError> {
    let k = spot::recommended_checks(r.output_tokens.len());
    spot::audit_local(&mut honest_model(), r, &Hash32([seed; 32]), k).map(|_| ())
}

/// Every output is inside its grammar: JSON parses (and matches the schema's shape),
/// the tool call reads back.
fn assert_in_grammar(r: &Receipt, c: &Constraint) {
    if r.finish_reason != vouch_types::FinishReason::Stop {
        return; // cut by max_tokens: a prefix of a valid output
    }
    match c.kind {
        vouch_types::ConstraintKind::JsonSchema => {
            let v: serde_json::Value = serde_json::from_str(&r.output)
                .unwrap_or_else(|e| panic!("{:?} is not JSON: {e}", r.output));
            assert!(v.is_object(), "{:?}", r.output);
            if c.source == ANSWER {
                assert!(v["answer"].is_i64(), "{:?}", r.output);
            }
            if c.source == PERSON {
                assert!(["Paris", "Rome", "Oslo"].contains(&v["city"].as_str().unwrap()));
            }
        }
        vouch_types::ConstraintKind::Lark => {
            let body = r
                .output
                .strip_prefix("<tool_call>\n")
                .and_then(|b| b.strip_suffix("\n</tool_call>"))
                .unwrap_or_else(|| panic!("{:?}", r.output));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["name"], "get_weather");
            assert!(v["arguments"]["city"].is_string());
        }
    }
}

#[test]
fn honest_constrained_receipts_pass_reexecution_and_spot_checks() {
    // 4 constraints x 6 prompts, greedy and sampled: singly (48), in batches of 4 with
    // and without KV cache (88 + 8), and on two threads with their own models (64):
    // 208 receipts, none rejected.
    let cs = constraints();
    let ps = prompts();
    let sampling = |i: usize| {
        if i.is_multiple_of(2) {
            Sampling::greedy(24)
        } else {
            sampled(1000 + i as u64, 24)
        }
    };
    let mut receipts: Vec<(Receipt, Constraint)> = Vec::new();
    for i in 0..48 {
        let c = &cs[i % cs.len()];
        let r = constrained(ps[(i / cs.len()) % ps.len()], sampling(i), c);
        receipts.push((r, c.clone()));
    }
    // Without the KV cache every step recomputes the whole sequence: 2 batches of it.
    for (kv, batches) in [(true, 22), (false, 2)] {
        for b in 0..batches {
            let jobs: Vec<(attest::Job, Constraint)> = (0..4)
                .map(|j| {
                    let c = cs[(b + j) % cs.len()].clone();
                    let m = honest_model();
                    let job = attest::prepare(
                        &m,
                        &chat(ps[(b * 4 + j) % ps.len()]),
                        sampling(b * 4 + j + kv as usize),
                        &controls(&c),
                    )
                    .unwrap();
                    (job, c)
                })
                .collect();
            let only: Vec<attest::Job> = jobs.iter().map(|j| j.0.clone()).collect();
            let made = attest::generate_batch(&mut honest_model(), &key(1), &only, kv, 1).unwrap();
            receipts.extend(made.into_iter().zip(jobs.into_iter().map(|j| j.1)));
        }
    }
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (cs, ps) = (cs.clone(), ps.clone());
            std::thread::spawn(move || {
                let mut m = vouch_inference::ChatModel::load(
                    &vouch_inference::models::SMOLLM2_135M,
                    &vouch_inference::models::default_home(),
                )
                .unwrap();
                (0..32)
                    .map(|i| {
                        let c = cs[(i + t) % cs.len()].clone();
                        let s = sampled(5000 + (t * 100 + i) as u64, 24);
                        let input: Input = chat(ps[i % ps.len()]);
                        let r = attest::generate(
                            &mut m,
                            &key(1),
                            &input,
                            s,
                            &controls(&c),
                            1,
                            &mut |_| {},
                        )
                        .unwrap();
                        (r, c)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        receipts.extend(t.join().unwrap());
    }
    assert!(receipts.len() >= 200, "{}", receipts.len());
    let mut stopped = 0;
    for (r, c) in &receipts {
        assert_eq!(r.constraint.as_ref(), Some(c));
        assert_eq!(r.version, vouch_types::RECEIPT_VERSION);
        check_fast(r).unwrap();
        assert_in_grammar(r, c);
        stopped += (r.finish_reason == vouch_types::FinishReason::Stop) as usize;
    }
    // Re-execution, batched 8 at a time, and one spot-check audit each.
    for chunk in receipts.chunks(8) {
        let refs: Vec<&Receipt> = chunk.iter().map(|x| &x.0).collect();
        for (res, (r, _)) in
            check_reexecute_batch(&refs, &mut honest_model(), &Tolerance::default())
                .into_iter()
                .zip(chunk)
        {
            res.unwrap_or_else(|e| panic!("honest {:?} rejected: {e}", r.output));
        }
    }
    for (i, (r, _)) in receipts.iter().enumerate() {
        audit(r, i as u8).unwrap_or_else(|e| panic!("honest {:?} failed its audit: {e}", r.output));
    }
    eprintln!(
        "{} honest constrained receipts ({stopped} complete, the rest cut by max_tokens): 0 rejected by re-execution, 0 by spot checks",
        receipts.len()
    );
}

#[test]
fn an_ignored_constraint_is_caught_by_reexecution_and_spot_checks() {
    for (p, c) in [
        ("What is 2 + 2?", Constraint::json_schema(ANSWER)),
        ("What is the weather in Paris?", Constraint::lark(TOOL)),
        ("Say hello.", Constraint::json_object()),
    ] {
        // The provider answered without the grammar and claims it used it.
        let free = {
            let mut m = honest_model();
            attest::generate(
                &mut m,
                &key(1),
                &chat(p),
                Sampling::greedy(24),
                &Default::default(),
                1,
                &mut |_| {},
            )
            .unwrap()
        };
        let mut cheat = free.clone();
        cheat.constraint = Some(c.clone());
        cheat.version = vouch_types::RECEIPT_VERSION;
        vouch_crypto::sign_receipt(&key(1), &mut cheat);
        check_fast(&cheat).expect("a well-formed lie passes the offline checks");
        let e = reexec(&cheat).expect_err("ignored constraint accepted");
        assert!(matches!(e, VerifyError::Constraint { .. }), "{e}");
        // Every spot-check audit walks the whole output through the grammar (no model
        // needed), so it is caught at every audit seed.
        for seed in 0..8 {
            let e = audit(&cheat, seed).expect_err("ignored constraint passed an audit");
            assert!(matches!(e, VerifyError::Constraint { .. }), "{e}");
        }
    }
}

#[test]
fn a_token_outside_the_mask_or_off_the_rule_is_caught() {
    let c = Constraint::json_schema(PERSON);
    let honest = constrained("Describe a person as JSON.", Sampling::greedy(40), &c);
    reexec(&honest).unwrap();
    // The masks the answer was generated under, recomputed from its tokens.
    let masks = {
        let mut m = honest_model();
        let mut g = m.grammars().unwrap().compile(&c).unwrap();
        constraint::masks(&mut g, &honest.output_tokens).unwrap()
    };
    let j = 3usize;
    // (a) Outside the mask: a token the grammar forbids at j.
    // (Ordinary text tokens only: a stop token would end the output, caught earlier.)
    let outside = (100..masks[j].len() as u32)
        .find(|&t| !masks[j].is_allowed(t))
        .unwrap();
    // (b) Inside the mask but not what the rule picks (another allowed token).
    let inside = (100..masks[j].len() as u32)
        .find(|&t| masks[j].is_allowed(t) && t != honest.output_tokens[j]);
    // The forger claims token `t` at j, then continues by the rule under the grammar
    // (greedy on the masked logits, one prefill per step), so the fingerprint, the trace
    // and every later token are honest for what it claims: only the choice at j is a lie.
    let forge = |t: u32| {
        let mut m = honest_model();
        let p = "Describe a person as JSON.";
        let job = attest::prepare(&m, &chat(p), Sampling::greedy(40), &controls(&c)).unwrap();
        let ids = job.request.prompt_ids.clone();
        let mut tokens = honest.output_tokens[..j].to_vec();
        tokens.push(t);
        let mut guide = m.grammars().unwrap().compile(&c).unwrap();
        let _ = constraint::masks(&mut guide, &tokens); // advance (t may be outside)
        let mut finish = vouch_types::FinishReason::Length;
        let vocab = m.vocab();
        while tokens.len() < 40 {
            let mut probe = tokens.clone();
            probe.push(0);
            let scored = m.score_batch(&[(&ids, &probe)]).unwrap().remove(0);
            let mut row = scored.logits[(probe.len() - 1) * vocab..].to_vec();
            if let Ok(mask) = guide.mask() {
                constraint::Guide::apply(&mask, &mut row);
            }
            let next =
                vouch_inference::sampling::sample(&row, &Sampling::greedy(40), tokens.len() as u32);
            let _ = guide.consume(next);
            tokens.push(next);
            if m.is_stop(next) {
                finish = vouch_types::FinishReason::Stop;
                break;
            }
        }
        let values = m.trace_values(&ids, &tokens).unwrap();
        let g = vouch_inference::Generation {
            tokens: tokens.clone(),
            finish,
            prompt_len: ids.len(),
            hidden: m.score_batch(&[(&ids, &tokens)]).unwrap().remove(0).hidden,
            trace: values.hashes(),
        };
        attest::receipt_for(&m, &key(1), &job, &g, 1).unwrap()
    };
    let out = forge(outside);
    check_fast(&out).expect("well-formed");
    let e = reexec(&out).expect_err("token outside the mask accepted");
    assert!(
        matches!(e, VerifyError::Constraint { position: 3, .. }),
        "{e}"
    );
    for seed in 0..8 {
        assert!(matches!(
            audit(&out, seed),
            Err(VerifyError::Constraint { .. })
        ));
    }
    let r = forge(inside.expect("the mask at j allows more than one token"));
    check_fast(&r).expect("well-formed");
    constraint::masks(
        &mut honest_model().grammars().unwrap().compile(&c).unwrap(),
        &r.output_tokens,
    )
    .expect("the forgery stays inside the grammar");
    let e = reexec(&r).expect_err("token off the rule accepted");
    assert!(
        matches!(e, VerifyError::Sampling { position: 3, .. }),
        "{e}"
    );
    // Spot checks catch such a lie only when a sampling check lands on it: the measured
    // rate over 64 audit seeds (docs/verification.md §5 states it).
    let caught = (0..64u8).filter(|&s| audit(&r, s).is_err()).count();
    let n = r.output_tokens.len();
    let k = spot::recommended_checks(n);
    eprintln!(
        "one off-rule token inside the mask ({n} output tokens, k={k}): caught by {caught} of 64 spot-check audits (predicted {:.1})",
        64.0 * spot::sampling_checks(k).min(n - 1) as f64 / (n - 1) as f64
    );
    assert!(caught < 64, "the rate must be measured, not assumed");
}
