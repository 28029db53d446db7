//! Constrained decoding: the token mask an output constraint (a JSON schema or a Lark
//! grammar, see [`vouch_types::Constraint`]) allows at each output position, computed by
//! `llguidance` from the constraint and the model's tokenizer.
//!
//! The mask is part of the sampling rule: generation picks only among allowed tokens,
//! and re-execution and spot checks recompute the same mask from the receipt, so an
//! output outside the grammar, or a token sampled outside the mask, fails verification.
//! The computation is deterministic for one grammar, tokenizer and llguidance version
//! (pinned in the workspace manifest; a new version is a sampling-rule change).

use crate::tokenizer::TextTokenizer;
use crate::InferenceError;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{self, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

/// The set of tokens allowed at one position.
pub use llguidance::toktrie::SimpleVob as TokenMask;
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;
use vouch_types::{Constraint, ConstraintKind};

/// JSON compile options a schema gets when it names none (`x-guidance`): OpenAI's
/// separators and no free whitespace between tokens, so a small model cannot wander off
/// into blank lines. Part of the rule: a verifier compiles the same.
const JSON_OPTIONS: &str =
    r#"{"item_separator":", ","key_separator":": ","whitespace_flexible":false}"#;

/// The tokenizer as llguidance sees it: every token's bytes (control tokens marked as
/// special, so no grammar ever allows them) and the real tokenizer for forced text.
struct Env {
    trie: TokTrie,
    tokenizer: Arc<TextTokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<toktrie::TokenId> {
        self.tokenizer
            .encode(&String::from_utf8_lossy(s))
            .unwrap_or_default()
    }
}

/// One model's grammar compiler (built once per model: the token trie).
pub struct Grammars {
    factory: ParserFactory,
    end: u32,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grammars(end token {})", self.end)
    }
}

impl Grammars {
    /// `vocab` is the model's output size (at least the tokenizer's); `end` is the token
    /// that ends an answer (the chat end token), allowed only where the grammar may end.
    pub fn new(
        tokenizer: Arc<TextTokenizer>,
        vocab: usize,
        end: u32,
    ) -> Result<Self, InferenceError> {
        let json: serde_json::Value = serde_json::from_str(&tokenizer.to_json())
            .map_err(|e| InferenceError::Format(format!("tokenizer JSON: {e}")))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&json)
            .map_err(|e| InferenceError::Format(format!("token bytes: {e}")))?;
        words.resize(vocab.max(words.len()), Vec::new());
        let trie = TokTrie::from(&TokRxInfo::new(words.len() as u32, end), &words);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| InferenceError::Format(format!("grammar engine: {e}")))?;
        factory.quiet();
        Ok(Self { factory, end })
    }

    /// Compiles a constraint; a grammar that does not compile is the caller's error.
    pub fn compile(&self, c: &Constraint) -> Result<Guide, InferenceError> {
        c.check().map_err(InferenceError::InvalidRequest)?;
        let bad = |e: String| InferenceError::InvalidRequest(format!("constraint: {e}"));
        let grammar = match c.kind {
            ConstraintKind::JsonSchema => {
                let mut schema: serde_json::Value =
                    serde_json::from_str(&c.source).map_err(|e| bad(format!("not JSON ({e})")))?;
                match &mut schema {
                    serde_json::Value::Object(o) => {
                        if !o.contains_key("x-guidance") {
                            o.insert(
                                "x-guidance".into(),
                                serde_json::from_str(JSON_OPTIONS).expect("valid options"),
                            );
                        }
                    }
                    serde_json::Value::Bool(_) => {}
                    _ => return Err(bad("a JSON schema is an object or a boolean".into())),
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            ConstraintKind::Lark => TopLevelGrammar::from_lark(c.source.clone()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| bad(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(e));
        }
        Ok(Guide {
            matcher,
            end: self.end,
        })
    }
}

/// One output's grammar state: which tokens may come next.
pub struct Guide {
    matcher: Matcher,
    end: u32,
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guide(stopped: {})", self.matcher.is_stopped())
    }
}

impl Guide {
    /// The tokens allowed at the next position (only the end token once the grammar is
    /// complete and cannot go on).
    pub fn mask(&mut self) -> Result<TokenMask, InferenceError> {
        self.matcher
            .compute_mask_or_eos()
            .map_err(|e| InferenceError::InvalidRequest(format!("constraint: {e}")))
    }

    /// Sets every logit outside `mask` to minus infinity (the rule then never picks it).
    pub fn apply(mask: &TokenMask, logits: &mut [f32]) {
        for (t, l) in logits.iter_mut().enumerate() {
            if !mask.is_allowed(t as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Advances past `token`, which must be in the mask just computed.
    pub fn consume(&mut self, token: u32) -> Result<(), InferenceError> {
        if token == self.end {
            // The end token ends the output: nothing is consumed after it.
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| InferenceError::InvalidRequest(format!("constraint: {e}")))
    }

    /// The end token this guide allows where the grammar may end.
    pub fn end(&self) -> u32 {
        self.end
    }
}

/// The masks a constrained output was generated under, recomputed from its tokens: one
/// per output position. Fails at the first token the grammar does not allow there.
pub fn masks(guide: &mut Guide, output: &[u32]) -> Result<Vec<TokenMask>, (usize, String)> {
    let mut out = Vec::with_capacity(output.len());
    for (i, &t) in output.iter().enumerate() {
        let m = guide.mask().map_err(|e| (i, e.to_string()))?;
        if !m.is_allowed(t) {
            return Err((
                i,
                format!(
                    "token {t} is outside the grammar here ({} tokens allowed)",
                    m.num_set()
                ),
            ));
        }
        guide.consume(t).map_err(|e| (i, e.to_string()))?;
        out.push(m);
    }
    Ok(out)
}
