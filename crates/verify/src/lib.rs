//! Vouch verification: receipt fast-path checks and re-execution against the fingerprint
//! with an explicit tolerance.
//!
//! - [`attest`]: the provider side, running a model and producing a signed receipt.
//! - [`check_fast`]: signature, hashes and structure; no model needed (microseconds).
//! - [`spot`]: spot-check audits over a committed execution trace (about 1% of the
//!   generation's cost instead of a full prefill).
//! - [`check_reexecute`]: one batched prefill over prompt + output recomputes the hidden
//!   states and logits; the fingerprint must match within tolerance and the sampling rule
//!   with the recorded seed must give every output token. The provider's numbers are
//!   never used as the verifier's own.

pub mod attest;
pub mod inclusion;
pub mod spot;
pub mod verdict;
pub use inclusion::{check_binding, check_inclusion, InclusionError, InclusionReport};
pub use verdict::{assess, LedgerFacts, Status, Trust, Verdict};

use std::time::Instant;
use vouch_inference::constraint::{self, Guide, TokenMask};
use vouch_inference::fingerprint::{self, ChunkComparison, Tolerance};
use vouch_inference::sampling::{self, SampleMismatch};
use vouch_inference::{ChatModel, Embedder};
use vouch_types::{FinishReason, Receipt, ReceiptKind, MIN_RECEIPT_VERSION, RECEIPT_VERSION};

/// Embeddings recomputed by a verifier must agree to this (max absolute difference per
/// component of a unit vector).
pub const EMBEDDING_TOLERANCE: f32 = 1e-4;
/// Upper bounds on what a receipt may claim, so a hostile file cannot make the verifier
/// allocate or compute without limit.
pub const MAX_OUTPUT_TOKENS: usize = 8192;
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
/// Every supported model has at least this many hidden units per position, so a full
/// row can always give its share of the chunk's committed entries.
const MODEL_HIDDEN_MIN: usize = 128;

/// Why a receipt is not valid. Each message is one line meant for a person.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("unsupported receipt version {0} (this verifier knows versions {MIN_RECEIPT_VERSION} to {RECEIPT_VERSION})")]
    Version(u32),
    #[error("malformed receipt: {0}")]
    Structure(String),
    #[error("input hash does not match the prompt: the prompt was edited after signing")]
    InputHash,
    #[error("output hash does not match the output: the output was edited after signing")]
    OutputHash,
    #[error("provider signature is invalid: {0}")]
    Signature(#[from] vouch_crypto::CryptoError),
    #[error("receipt is signed by provider {actual}, not the expected {expected}")]
    UnexpectedProvider { expected: String, actual: String },
    #[error("receipt is for model {claimed} but the verifier loaded {loaded}")]
    ModelMismatch { claimed: String, loaded: String },
    #[error("receipt's tokenizer {claimed} differs from the model's tokenizer {loaded}")]
    TokenizerMismatch { claimed: String, loaded: String },
    #[error("prompt tokenizes to {actual} tokens, the receipt says {claimed}")]
    PromptTokens { claimed: u32, actual: usize },
    #[error("output text is not the decoding of the output tokens")]
    OutputText,
    #[error("finish reason {reason:?} is inconsistent: {detail}")]
    Finish {
        reason: FinishReason,
        detail: String,
    },
    #[error("activation fingerprint mismatch in {what}: {matches} of {k} committed activations agree, at least {needed} required; this output was not produced by this model from this prompt")]
    Fingerprint {
        what: String,
        matches: usize,
        k: usize,
        needed: usize,
    },
    #[error("output token {position} does not follow from the sampling rule: {source}")]
    Sampling {
        position: usize,
        source: SampleMismatch,
    },
    #[error("output token {position} breaks the receipt's constraint: {detail}")]
    Constraint { position: usize, detail: String },
    #[error("embedding differs from the recomputed one by {max_diff:.2e} (tolerance {EMBEDDING_TOLERANCE:.0e})")]
    Embedding { max_diff: f32 },
    #[error("trace: {0}")]
    Trace(String),
    #[error("spot check failed at {what}: {detail}; this output was not produced by this model from this prompt")]
    SpotCheck { what: String, detail: String },
    #[error("re-execution failed: {0}")]
    Engine(#[from] vouch_inference::InferenceError),
}

/// What re-execution measured (for reports and the calibration in docs/verification.md).
#[derive(Debug, Clone, Default)]
pub struct ReexecReport {
    pub chunks: Vec<ChunkComparison>,
    pub positions_checked: usize,
    pub prefill_tokens: usize,
    pub seconds: f64,
}

impl ReexecReport {
    /// Smallest share of matching entries over the chunks, in thousandths.
    pub fn min_match_permille(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.matches * 1000 / c.k.max(1))
            .min()
            .unwrap_or(0)
    }
    pub fn max_rel_err(&self) -> f32 {
        self.chunks
            .iter()
            .map(|c| c.max_rel_err)
            .fold(0.0, f32::max)
    }
}

fn structure(msg: impl Into<String>) -> VerifyError {
    VerifyError::Structure(msg.into())
}

/// Positions a receipt's fingerprint covers: the prompt and every output token but the
/// last (which was never fed back into the model).
pub fn fingerprint_rows(prompt_tokens: usize, n_output: usize) -> usize {
    prompt_tokens + n_output.saturating_sub(1)
}

/// Number of fingerprint chunks a receipt with these token counts must carry.
pub fn expected_chunks(prompt_tokens: usize, n_output: usize) -> usize {
    fingerprint::chunk_ranges(fingerprint_rows(prompt_tokens, n_output)).len()
}

/// Offline fast path: version, structure, hashes and signature. Needs no model.
pub fn check_fast(r: &Receipt) -> Result<(), VerifyError> {
    if !(MIN_RECEIPT_VERSION..=RECEIPT_VERSION).contains(&r.version) {
        return Err(VerifyError::Version(r.version));
    }
    if r.prompt.len() > MAX_PROMPT_BYTES {
        return Err(structure(format!(
            "prompt longer than {MAX_PROMPT_BYTES} bytes"
        )));
    }
    if r.uses_decoding_controls() && r.version < 3 {
        return Err(structure(format!(
            "version {} receipts have no stop strings, penalties or constraint",
            r.version
        )));
    }
    if Receipt::hash_input(r.kind, &r.prompt) != r.input_hash {
        return Err(VerifyError::InputHash);
    }
    match r.kind {
        ReceiptKind::Chat | ReceiptKind::Completion => {
            let n = r.output_tokens.len();
            if n == 0 {
                return Err(structure("no output tokens"));
            }
            if n > MAX_OUTPUT_TOKENS || n > r.sampling.max_tokens as usize {
                return Err(structure(format!(
                    "{n} output tokens but max_tokens is {}",
                    r.sampling.max_tokens
                )));
            }
            if r.embedding.is_some() {
                return Err(structure("a generation receipt carries an embedding"));
            }
            if Receipt::hash_output(&r.output, &r.output_tokens) != r.output_hash {
                return Err(VerifyError::OutputHash);
            }
            match r.finish_reason {
                FinishReason::Length if n != r.sampling.max_tokens as usize => {
                    return Err(VerifyError::Finish {
                        reason: r.finish_reason,
                        detail: format!(
                            "{n} tokens generated but max_tokens is {}: the output was truncated",
                            r.sampling.max_tokens
                        ),
                    })
                }
                FinishReason::None => {
                    return Err(VerifyError::Finish {
                        reason: r.finish_reason,
                        detail: "a generation must end by stop or length".into(),
                    })
                }
                _ => {}
            }
            let s = &r.sampling;
            let temperature_ok = s.temperature.is_finite() && s.temperature >= 0.0;
            let top_p_ok = s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0;
            let penalty_ok = |x: f32| x.is_finite() && x.abs() <= vouch_types::MAX_PENALTY;
            if !(temperature_ok
                && top_p_ok
                && penalty_ok(s.presence_penalty)
                && penalty_ok(s.frequency_penalty))
            {
                return Err(structure("sampling parameters out of range"));
            }
            r.controls().check().map_err(structure)?;
            let fp = &r.fingerprint;
            if fp.scheme != fingerprint::SCHEME
                || fp.top_k as usize != fingerprint::TOP_K
                || fp.chunk_tokens as usize != fingerprint::CHUNK_TOKENS
            {
                return Err(structure(format!(
                    "unknown fingerprint scheme {:?} (k={}, chunk={})",
                    fp.scheme, fp.top_k, fp.chunk_tokens
                )));
            }
            if r.prompt_tokens == 0 {
                return Err(structure("empty prompt"));
            }
            let ranges = fingerprint::chunk_ranges(fingerprint_rows(r.prompt_tokens as usize, n));
            if fp.chunks.len() != ranges.len() {
                return Err(structure(format!(
                    "fingerprint has {} chunks, {} prompt and {n} output tokens need {}: the output was truncated or extended",
                    fp.chunks.len(),
                    r.prompt_tokens,
                    ranges.len()
                )));
            }
            if let Some(t) = &r.trace {
                let rows = fingerprint_rows(r.prompt_tokens as usize, n);
                if t.scheme != spot::SCHEME || t.layers == 0 || t.positions as usize != rows {
                    return Err(structure(format!(
                        "trace commitment ({}, {} layers, {} positions) does not fit {rows} positions",
                        t.scheme, t.layers, t.positions
                    )));
                }
            }
            for (i, (c, range)) in fp.chunks.iter().zip(&ranges).enumerate() {
                let points = fingerprint::points_in_chunk(range.len(), MODEL_HIDDEN_MIN);
                if c.coeffs.len() != points
                    || (c.modulus as usize) < points
                    || c.modulus as u32 > fingerprint::PRIME
                    || c.coeffs.iter().any(|&x| x as u32 >= fingerprint::PRIME)
                {
                    return Err(structure(format!("fingerprint chunk {i} is malformed")));
                }
            }
        }
        ReceiptKind::Embedding => {
            if r.uses_decoding_controls() {
                return Err(structure(
                    "an embedding receipt carries stop strings, penalties or a constraint",
                ));
            }
            let Some(e) = &r.embedding else {
                return Err(structure("embedding receipt without an embedding"));
            };
            if e.values.len() != e.dim as usize || e.values.is_empty() {
                return Err(structure("embedding length does not match its dim"));
            }
            if e.values.iter().any(|v| !v.is_finite()) {
                return Err(structure("embedding has non-finite values"));
            }
            if !r.output_tokens.is_empty() || !r.output.is_empty() {
                return Err(structure("an embedding receipt carries generated text"));
            }
            if r.trace.is_some() {
                return Err(structure("an embedding receipt carries a trace commitment"));
            }
            if Receipt::hash_embedding(&e.values) != r.output_hash {
                return Err(VerifyError::OutputHash);
            }
        }
    }
    vouch_crypto::verify_receipt_signature(r)?;
    Ok(())
}

/// Requires the receipt to be signed by `expected` (a provider the caller dealt with).
pub fn check_provider(r: &Receipt, expected: &vouch_types::Hash32) -> Result<(), VerifyError> {
    if r.provider != *expected {
        return Err(VerifyError::UnexpectedProvider {
            expected: expected.to_hex(),
            actual: r.provider.to_hex(),
        });
    }
    Ok(())
}

fn chunk_label(range: &std::ops::Range<usize>, prompt_len: usize) -> String {
    let part = |p: usize| {
        if p < prompt_len {
            format!("prompt token {p}")
        } else {
            format!("output token {}", p + 1 - prompt_len)
        }
    };
    format!(
        "positions {}..{} ({} to {})",
        range.start,
        range.end,
        part(range.start),
        part(range.end - 1)
    )
}

/// Re-executes generation receipts in one batched prefill and checks each. Results are
/// returned per receipt, in order. Every receipt must pass [`check_fast`] first (it is
/// run here too).
pub fn check_reexecute_batch(
    receipts: &[&Receipt],
    model: &mut ChatModel,
    tol: &Tolerance,
) -> Vec<Result<ReexecReport, VerifyError>> {
    let mut results: Vec<Option<Result<ReexecReport, VerifyError>>> = Vec::new();
    let mut work = Vec::new(); // (receipt index, prompt ids)
    let mut masks = Vec::new(); // per entry of `work`
    for (i, r) in receipts.iter().enumerate() {
        match prepare(r, model).and_then(|ids| Ok((ids, constraint_masks(r, model)?))) {
            Ok((ids, m)) => {
                work.push((i, ids));
                masks.push(m);
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    if !work.is_empty() {
        let start = Instant::now();
        let pairs: Vec<(&[u32], &[u32])> = work
            .iter()
            .map(|(i, ids)| (ids.as_slice(), receipts[*i].output_tokens.as_slice()))
            .collect();
        match model.score_batch(&pairs) {
            Ok(scored) => {
                let secs = start.elapsed().as_secs_f64();
                for (((i, _), s), m) in work.iter().zip(scored).zip(&masks) {
                    let mut rep = compare(receipts[*i], model, &s, m.as_deref(), tol);
                    if let Ok(rep) = rep.as_mut() {
                        rep.seconds = secs;
                    }
                    results[*i] = Some(rep);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (i, _) in &work {
                    results[*i] = Some(Err(VerifyError::Engine(
                        vouch_inference::InferenceError::InvalidRequest(msg.clone()),
                    )));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every receipt has a result"))
        .collect()
}

/// Re-executes one generation receipt.
pub fn check_reexecute(
    r: &Receipt,
    model: &mut ChatModel,
    tol: &Tolerance,
) -> Result<ReexecReport, VerifyError> {
    check_reexecute_batch(&[r], model, tol).remove(0)
}

fn prepare(r: &Receipt, model: &ChatModel) -> Result<Vec<u32>, VerifyError> {
    check_fast(r)?;
    if r.kind == ReceiptKind::Embedding {
        return Err(structure(
            "embedding receipts are re-executed with an embedding model",
        ));
    }
    if r.model != model.id() {
        return Err(VerifyError::ModelMismatch {
            claimed: r.model.to_hex(),
            loaded: model.id().to_hex(),
        });
    }
    if r.tokenizer != model.tokenizer_id() {
        return Err(VerifyError::TokenizerMismatch {
            claimed: r.tokenizer.to_hex(),
            loaded: model.tokenizer_id().to_hex(),
        });
    }
    let ids = model.tokenize(&r.prompt)?;
    if ids.len() != r.prompt_tokens as usize {
        return Err(VerifyError::PromptTokens {
            claimed: r.prompt_tokens,
            actual: ids.len(),
        });
    }
    if let Some(&bad) = r
        .output_tokens
        .iter()
        .find(|&&t| t as usize >= model.vocab())
    {
        return Err(structure(format!(
            "output token {bad} is outside the vocabulary"
        )));
    }
    let decoded = model.detokenize(&r.output_tokens)?;
    let n = r.output_tokens.len();
    // Where a stop string first appears in the decoded output: at the last token (the
    // generation stopped there), earlier (it went on past it) or nowhere.
    let string_stop = if r.stop.is_empty() || vouch_types::stop::cut(&decoded, &r.stop).is_none() {
        None
    } else if vouch_types::stop::cut(&model.detokenize(&r.output_tokens[..n - 1])?, &r.stop)
        .is_some()
    {
        return Err(VerifyError::Finish {
            reason: r.finish_reason,
            detail: "generation continued past a stop string".into(),
        });
    } else {
        Some(n - 1)
    };
    if attest::output_text(decoded, &r.stop) != r.output {
        return Err(VerifyError::OutputText);
    }
    let stops: Vec<usize> = (0..n)
        .filter(|&i| model.is_stop(r.output_tokens[i]))
        .collect();
    let ends_on_stop_token = stops == [n - 1];
    match r.finish_reason {
        FinishReason::Stop
            if !(ends_on_stop_token || stops.is_empty() && string_stop.is_some()) =>
        {
            return Err(VerifyError::Finish {
                reason: r.finish_reason,
                detail:
                    "the output must end with exactly one stop token or at the first stop string: it was truncated or extended"
                        .into(),
            })
        }
        FinishReason::Length if !stops.is_empty() => {
            return Err(VerifyError::Finish {
                reason: r.finish_reason,
                detail: format!(
                    "generation continued past a stop token at position {}",
                    stops[0]
                ),
            })
        }
        FinishReason::Length if string_stop.is_some() => {
            return Err(VerifyError::Finish {
                reason: r.finish_reason,
                detail: "generation continued past a stop string".into(),
            })
        }
        _ => {}
    }
    if ids.len() + n > model.context() {
        return Err(structure("prompt and output exceed the model's context"));
    }
    Ok(ids)
}

/// The token masks of a constrained receipt, recomputed from its constraint and output
/// tokens (`None` without a constraint). Fails at the first token outside the grammar.
pub fn constraint_masks(
    r: &Receipt,
    model: &mut ChatModel,
) -> Result<Option<Vec<TokenMask>>, VerifyError> {
    let Some(c) = &r.constraint else {
        return Ok(None);
    };
    let mut guide = model
        .grammars()?
        .compile(c)
        .map_err(|e| structure(format!("the receipt's constraint does not compile: {e}")))?;
    constraint::masks(&mut guide, &r.output_tokens)
        .map(Some)
        .map_err(|(position, detail)| VerifyError::Constraint { position, detail })
}

/// The logits the sampling rule picks from at one position: the model's, less the
/// penalties, with every token outside the constraint's mask at minus infinity.
pub(crate) fn rule_logits<'a>(
    logits: &'a [f32],
    s: &vouch_types::Sampling,
    history: &sampling::History,
    mask: Option<&TokenMask>,
) -> std::borrow::Cow<'a, [f32]> {
    let row = history.apply(logits, s);
    match mask {
        None => row,
        Some(m) => {
            let mut row = row.into_owned();
            Guide::apply(m, &mut row);
            std::borrow::Cow::Owned(row)
        }
    }
}

fn compare(
    r: &Receipt,
    model: &ChatModel,
    s: &vouch_inference::Scored,
    masks: Option<&[TokenMask]>,
    tol: &Tolerance,
) -> Result<ReexecReport, VerifyError> {
    let hd = model.hidden_dim();
    let vocab = model.vocab();
    let n_rows = s.hidden.len() / hd;
    let ranges = fingerprint::chunk_ranges(n_rows);
    let mut rep = ReexecReport {
        prefill_tokens: n_rows,
        ..Default::default()
    };
    for (range, proof) in ranges.iter().zip(&r.fingerprint.chunks) {
        let own = &s.hidden[range.start * hd..range.end * hd];
        let c = fingerprint::compare_chunk(proof, own, hd, tol);
        if !c.passes(tol) {
            return Err(VerifyError::Fingerprint {
                what: chunk_label(range, s.prompt_len),
                matches: c.matches,
                k: c.k,
                needed: tol.needed(c.k),
            });
        }
        rep.chunks.push(c);
    }
    let mut history = sampling::History::new();
    for (pos, &tok) in r.output_tokens.iter().enumerate() {
        let logits = rule_logits(
            &s.logits[pos * vocab..(pos + 1) * vocab],
            &r.sampling,
            &history,
            masks.map(|m| &m[pos]),
        );
        sampling::check(&logits, &r.sampling, pos as u32, tok).map_err(|source| {
            VerifyError::Sampling {
                position: pos,
                source,
            }
        })?;
        history.push(tok);
        rep.positions_checked += 1;
    }
    Ok(rep)
}

/// One output token's log-probability and the likeliest alternatives, as a verifier
/// recomputes them from a receipt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f64,
    /// The `top` likeliest tokens at this position (id, log-probability), likeliest first.
    pub top: Vec<(u32, f64)>,
}

/// The log-probabilities of a generation receipt's output tokens: at each position, the
/// log-softmax of the logits the sampling rule picks from (the model's, less the
/// penalties, outside the constraint's mask at minus infinity), before temperature and
/// top-p. A pure function of the receipt and the model, so anyone with the weights gets
/// the same values: the gateway computes them this way rather than trusting a provider.
/// The final stop token, which carries no text, is left out.
pub fn logprobs(
    r: &Receipt,
    model: &mut ChatModel,
    top: usize,
) -> Result<Vec<TokenLogprob>, VerifyError> {
    let ids = prepare(r, model)?;
    let masks = constraint_masks(r, model)?;
    let s = model.score_batch(&[(&ids, &r.output_tokens)])?.remove(0);
    let vocab = model.vocab();
    let mut history = sampling::History::new();
    let mut out = Vec::with_capacity(r.output_tokens.len());
    for (pos, &tok) in r.output_tokens.iter().enumerate() {
        if pos + 1 == r.output_tokens.len() && model.is_stop(tok) {
            break;
        }
        let row = rule_logits(
            &s.logits[pos * vocab..(pos + 1) * vocab],
            &r.sampling,
            &history,
            masks.as_ref().map(|m| &m[pos]),
        );
        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let z: f64 = row.iter().map(|&l| (l as f64 - mx).exp()).sum();
        let lz = mx + z.ln();
        let mut best: Vec<(u32, f64)> = Vec::new();
        if top > 0 {
            let mut order: Vec<u32> = (0..row.len() as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            best = order
                .into_iter()
                .take(top)
                .map(|t| (t, row[t as usize] as f64 - lz))
                .collect();
        }
        out.push(TokenLogprob {
            token: tok,
            logprob: row[tok as usize] as f64 - lz,
            top: best,
        });
        history.push(tok);
    }
    Ok(out)
}

/// Recomputes an embedding receipt's vector and compares.
pub fn check_reexecute_embedding(r: &Receipt, model: &Embedder) -> Result<f32, VerifyError> {
    check_fast(r)?;
    if r.model != model.id() {
        return Err(VerifyError::ModelMismatch {
            claimed: r.model.to_hex(),
            loaded: model.id().to_hex(),
        });
    }
    if r.tokenizer != model.tokenizer_id() {
        return Err(VerifyError::TokenizerMismatch {
            claimed: r.tokenizer.to_hex(),
            loaded: model.tokenizer_id().to_hex(),
        });
    }
    let own = model.embed(&r.prompt)?;
    let claimed = &r.embedding.as_ref().expect("checked by check_fast").values;
    if own.len() != claimed.len() {
        return Err(structure("embedding dimension differs from the model's"));
    }
    let max_diff = own
        .iter()
        .zip(claimed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    if max_diff > EMBEDDING_TOLERANCE {
        return Err(VerifyError::Embedding { max_diff });
    }
    Ok(max_diff)
}
