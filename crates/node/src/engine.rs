//! The provider's engine boundary: what the provider role and the gateway need from a chat
//! model (identity, context, chat rendering, tokens, a signed receipt for a generation),
//! with the real model behind it ([`ModelEngine`]) and a deterministic stand-in that needs
//! no weights ([`HashEngine`], for tests of everything around the model).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vouch_crypto::SigningKey;
use vouch_inference::chat::{render_chatml, Message};
use vouch_inference::constraint::Grammars;
use vouch_inference::tokenizer::TextTokenizer;
use vouch_inference::{fingerprint, ChatModel, InferenceError};
use vouch_types::{Controls, Fingerprint, FinishReason, Hash32, Receipt, ReceiptKind, Sampling};
use vouch_verify::attest::{self, Input};

/// A chat engine as the provider role sees it. Every method takes `&self` so token
/// counting and decoding never wait for a generation in progress: an engine that holds
/// state across a generation (the real model) locks it inside [`ChatEngine::generate`].
pub trait ChatEngine: Send + Sync {
    /// Content id of the weights the receipts name.
    fn id(&self) -> Hash32;
    fn name(&self) -> &str;
    /// Positions available to prompt plus generated tokens.
    fn context(&self) -> usize;
    /// The system message the chat template adds when none is given.
    fn system_default(&self) -> Option<&str>;
    /// The exact prompt text for `messages` (ChatML with the default system message).
    fn render_chat(&self, messages: &[Message]) -> String {
        render_chatml(messages, self.system_default())
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, InferenceError>;
    fn count_tokens(&self, text: &str) -> Result<usize, InferenceError> {
        self.tokenize(text).map(|t| t.len())
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String, InferenceError>;
    /// Checks a request's decoding controls before any work or money is committed to
    /// it: bounds, and that the constraint compiles for this model.
    fn check_controls(&self, controls: &Controls) -> Result<(), InferenceError>;
    /// Runs one generation, calling `on_token` with each new token id as it is produced,
    /// and returns the receipt signed by `key`. Generation ends at the first of
    /// `controls.stop` the output contains (see [`vouch_types::stop`]); with a
    /// constraint, every token fits its grammar.
    fn generate(
        &self,
        key: &SigningKey,
        input: &Input,
        sampling: Sampling,
        controls: &Controls,
        created_at: u64,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Receipt, InferenceError>;
    /// The real model behind this engine, for what only it can do (audits by re-execution
    /// or spot checks, trace openings); `None` for stand-ins.
    fn chat_model(&self) -> Option<Arc<Mutex<ChatModel>>> {
        None
    }
}

/// The real model: generation through [`attest::generate`], tokens through the model's
/// tokenizer (shared, so counting and decoding never wait for the model).
pub struct ModelEngine {
    model: Arc<Mutex<ChatModel>>,
    grammars: Result<Arc<Grammars>, String>,
    tokenizer: Arc<TextTokenizer>,
    id: Hash32,
    name: String,
    context: usize,
    system_default: Option<String>,
}

impl ModelEngine {
    pub fn new(mut model: ChatModel) -> Self {
        ModelEngine {
            grammars: model.grammars().map_err(|e| e.to_string()),
            tokenizer: model.tokenizer(),
            id: model.id(),
            name: model.name().to_string(),
            context: model.context(),
            system_default: model.system_default().map(str::to_string),
            model: Arc::new(Mutex::new(model)),
        }
    }
}

impl ChatEngine for ModelEngine {
    fn id(&self) -> Hash32 {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn context(&self) -> usize {
        self.context
    }
    fn system_default(&self) -> Option<&str> {
        self.system_default.as_deref()
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        self.tokenizer.encode(text)
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String, InferenceError> {
        self.tokenizer.decode(ids)
    }
    fn check_controls(&self, controls: &Controls) -> Result<(), InferenceError> {
        controls.check().map_err(InferenceError::InvalidRequest)?;
        if let Some(c) = &controls.constraint {
            let g = self.grammars.as_ref().map_err(|e| {
                InferenceError::Unsupported(format!("constrained decoding for this model: {e}"))
            })?;
            g.compile(c)?;
        }
        Ok(())
    }
    fn generate(
        &self,
        key: &SigningKey,
        input: &Input,
        sampling: Sampling,
        controls: &Controls,
        created_at: u64,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Receipt, InferenceError> {
        let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        attest::generate(
            &mut model, key, input, sampling, controls, created_at, on_token,
        )
    }
    fn chat_model(&self) -> Option<Arc<Mutex<ChatModel>>> {
        Some(self.model.clone())
    }
}

/// Generated tokens of the hash rule are ids below this; prompt bytes are `BYTE_BASE + b`.
pub const BYTE_BASE: u32 = vouch_types::stand_in::VOCAB;
/// The `engine` field of a [`HashEngine`] receipt.
pub const HASH_ENGINE_NAME: &str = "vouch-hash-engine/1";
/// Width of the pseudo hidden states a [`HashEngine`] fingerprints (the verifier's least).
const HASH_HIDDEN: usize = 128;

/// The tokens the hash rule generates: [`vouch_types::stand_in::tokens`], the rule the
/// simulator's mock engine uses too.
pub fn hash_tokens(weights: &Hash32, input: &Hash32, seed: u64, max_tokens: u32) -> Vec<u32> {
    vouch_types::stand_in::tokens(weights, input, seed, max_tokens)
}

/// A word for a generated token id: two-letter syllables, one per base-75 digit
/// (distinct ids give distinct words).
fn token_word(mut t: u32, out: &mut String) {
    const C: &[u8; 15] = b"bdfghklmnprstvz";
    const V: &[u8; 5] = b"aeiou";
    out.push(' ');
    loop {
        let d = (t % 75) as usize;
        out.push(C[d / 5] as char);
        out.push(V[d % 5] as char);
        t /= 75;
        if t == 0 {
            break;
        }
    }
}

/// Holds generations back until opened (tests of queues, 429s and timeouts). Closed, a
/// generation waits before its first token; [`Gate::waiting`] says how many wait.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }
    pub fn close(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
    /// Generations waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
    fn pass(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if *open {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while !*open {
            open = self.cv.wait(open).unwrap_or_else(|p| p.into_inner());
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A deterministic engine without weights, for tests of the HTTP surface, budgets,
/// queues and streaming in milliseconds.
///
/// - Tokens: a prompt is one token per UTF-8 byte (`BYTE_BASE + byte`); generated tokens
///   follow [`hash_tokens`] (the simulator's rule) over the model id, the input hash and
///   the seed (0 when greedy: temperature 0 ignores the seed, as the real sampler does),
///   and each decodes to a space and a made-up word. `detokenize(tokenize(s)) == s`.
/// - Receipts are well formed (they pass `vouch_verify::check_fast`: hashes, bounds,
///   fingerprint structure over pseudo hidden states derived from the same hashes) and
///   signed by the provider key, but name [`HASH_ENGINE_NAME`] and a model no real weights
///   hash to: they do **not** pass re-execution or spot checks, and carry no trace.
pub struct HashEngine {
    id: Hash32,
    name: String,
    context: usize,
    system_default: Option<String>,
    token_delay: Duration,
    gate: Option<Arc<Gate>>,
    fail: bool,
}

impl HashEngine {
    /// An engine named `name` whose model id is a hash of the name; context 4096, no
    /// default system message, no delay.
    pub fn new(name: &str) -> Self {
        HashEngine {
            id: Hash32::digest("vouch hash engine model", &[name.as_bytes()]),
            name: name.to_string(),
            context: 4096,
            system_default: None,
            token_delay: Duration::ZERO,
            gate: None,
            fail: false,
        }
    }
    pub fn with_context(mut self, context: usize) -> Self {
        self.context = context;
        self
    }
    pub fn with_system_default(mut self, s: Option<&str>) -> Self {
        self.system_default = s.map(str::to_string);
        self
    }
    /// Sleeps this long per generated token.
    pub fn with_token_delay(mut self, d: Duration) -> Self {
        self.token_delay = d;
        self
    }
    /// Every generation waits at `gate` until it is open.
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }
    /// Every generation fails (an engine error after the escrow was admitted).
    pub fn failing(mut self) -> Self {
        self.fail = true;
        self
    }
    /// The tokenizer id the receipts name.
    pub fn tokenizer_id() -> Hash32 {
        Hash32::digest("vouch hash engine tokenizer v1", &[])
    }

    /// Pseudo hidden states, `rows * HASH_HIDDEN` values in [-1, 1), from `seed`.
    fn hidden(seed: &Hash32, rows: usize) -> Vec<f32> {
        let mut xof = blake3::Hasher::new_derive_key("vouch hash engine hidden v1")
            .update(seed.as_bytes())
            .finalize_xof();
        let mut buf = vec![0u8; rows * HASH_HIDDEN * 4];
        xof.fill(&mut buf);
        buf.chunks_exact(4)
            .map(|c| {
                let w = u32::from_le_bytes(c.try_into().expect("4 bytes"));
                (w >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }
}

impl ChatEngine for HashEngine {
    fn id(&self) -> Hash32 {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn context(&self) -> usize {
        self.context
    }
    fn system_default(&self) -> Option<&str> {
        self.system_default.as_deref()
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        Ok(text.bytes().map(|b| BYTE_BASE + u32::from(b)).collect())
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String, InferenceError> {
        let mut out = String::new();
        let mut bytes = Vec::new();
        let flush = |bytes: &mut Vec<u8>, out: &mut String| -> Result<(), InferenceError> {
            if !bytes.is_empty() {
                let s = std::str::from_utf8(bytes)
                    .map_err(|e| InferenceError::Tokenizer(format!("not UTF-8: {e}")))?;
                out.push_str(s);
                bytes.clear();
            }
            Ok(())
        };
        for &t in ids {
            match t.checked_sub(BYTE_BASE) {
                Some(b) if b < 256 => bytes.push(b as u8),
                Some(_) => return Err(InferenceError::BadToken(t)),
                None => {
                    flush(&mut bytes, &mut out)?;
                    token_word(t, &mut out);
                }
            }
        }
        flush(&mut bytes, &mut out)?;
        Ok(out)
    }
    fn check_controls(&self, controls: &Controls) -> Result<(), InferenceError> {
        controls.check().map_err(InferenceError::InvalidRequest)?;
        if controls.constraint.is_some() {
            return Err(InferenceError::Unsupported(
                "the hash engine (a stand-in for tests) cannot follow an output constraint".into(),
            ));
        }
        Ok(())
    }
    fn generate(
        &self,
        key: &SigningKey,
        input: &Input,
        sampling: Sampling,
        controls: &Controls,
        created_at: u64,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Receipt, InferenceError> {
        self.check_controls(controls)?;
        let stop = &controls.stop[..];
        let (kind, prompt) = match input {
            Input::Chat(m) => (ReceiptKind::Chat, self.render_chat(m)),
            Input::Completion(t) => (ReceiptKind::Completion, t.clone()),
        };
        let prompt_tokens = self.count_tokens(&prompt)?;
        if prompt_tokens == 0 {
            return Err(InferenceError::InvalidRequest("empty prompt".into()));
        }
        if sampling.max_tokens == 0 {
            return Err(InferenceError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let needed = prompt_tokens + sampling.max_tokens as usize;
        if needed > self.context {
            return Err(InferenceError::ContextOverflow {
                needed,
                context: self.context,
            });
        }
        if let Some(g) = &self.gate {
            g.pass();
        }
        if self.fail {
            return Err(InferenceError::InvalidRequest(
                "the hash engine was told to fail".into(),
            ));
        }
        let input_hash = Receipt::hash_input(kind, &prompt);
        let seed = if sampling.temperature == 0.0 {
            0
        } else {
            sampling.seed
        };
        let mut tokens = hash_tokens(&self.id, &input_hash, seed, sampling.max_tokens);
        tokens.truncate(sampling.max_tokens as usize);
        // Stop strings end the output at the token that completes one, as in the model.
        let mut stopped = false;
        if !stop.is_empty() {
            if let Some(k) = (1..=tokens.len()).find(|&k| {
                self.detokenize(&tokens[..k])
                    .is_ok_and(|t| vouch_types::stop::cut(&t, stop).is_some())
            }) {
                tokens.truncate(k);
                stopped = true;
            }
        }
        for &t in &tokens {
            if !self.token_delay.is_zero() {
                std::thread::sleep(self.token_delay);
            }
            on_token(t);
        }
        let finish = if !stopped && tokens.len() == sampling.max_tokens as usize {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let output = attest::output_text(self.detokenize(&tokens)?, stop);
        let output_hash = Receipt::hash_output(&output, &tokens);
        let rows = prompt_tokens + tokens.len() - 1;
        let seed_hash = Hash32::digest(
            "vouch hash engine states",
            &[
                self.id.as_bytes(),
                input_hash.as_bytes(),
                &seed.to_le_bytes(),
                output_hash.as_bytes(),
            ],
        );
        let chunks = fingerprint::commit(&Self::hidden(&seed_hash, rows), HASH_HIDDEN);
        let mut r = Receipt {
            version: Receipt::version_for(controls, &sampling),
            kind,
            model: self.id,
            model_name: self.name.clone(),
            tokenizer: Self::tokenizer_id(),
            engine: HASH_ENGINE_NAME.to_string(),
            input_hash,
            prompt,
            prompt_tokens: prompt_tokens as u32,
            output_hash,
            output,
            output_tokens: tokens,
            embedding: None,
            finish_reason: finish,
            sampling,
            stop: stop.to_vec(),
            constraint: None,
            fingerprint: Fingerprint {
                scheme: fingerprint::SCHEME.to_string(),
                top_k: fingerprint::TOP_K as u32,
                chunk_tokens: fingerprint::CHUNK_TOKENS as u32,
                chunks,
            },
            trace: None,
            created_at,
            provider: Hash32::default(),
            signature: String::new(),
            inclusion: None,
        };
        vouch_crypto::sign_receipt(key, &mut r);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_words_are_distinct() {
        let e = HashEngine::new("hash");
        let s = "héllo, wörld <|im_end|>\n";
        let ids = e.tokenize(s).unwrap();
        assert_eq!(ids.len(), s.len());
        assert_eq!(e.detokenize(&ids).unwrap(), s);
        let words: std::collections::HashSet<String> =
            (0..6000).map(|t| e.detokenize(&[t]).unwrap()).collect();
        assert_eq!(words.len(), 6000);
        assert_eq!(e.detokenize(&[0, 76]).unwrap(), " ba bebe");
        assert!(e.detokenize(&[BYTE_BASE + 256]).is_err());
    }

    /// The simulator's construction (`vouch_sim::jobs::mock_run`): deterministic, seeded,
    /// 2 to `max_tokens - 1` tokens.
    #[test]
    fn hash_rule_is_deterministic_seeded_and_bounded() {
        let w = Hash32::digest("w", &[]);
        let i = Hash32::digest("i", &[]);
        let t = hash_tokens(&w, &i, 42, 16);
        assert!((2..16).contains(&t.len()), "{t:?}");
        assert_eq!(t, hash_tokens(&w, &i, 42, 16));
        assert_ne!(t, hash_tokens(&w, &i, 43, 16));
        assert_eq!(hash_tokens(&w, &i, 42, 1).len(), 2);
    }

    #[test]
    fn receipts_are_well_formed_signed_and_deterministic() {
        let e = HashEngine::new("hash").with_system_default(Some("Be brief."));
        let input = Input::Chat(vec![Message::user("Name three colours.")]);
        let mut streamed = Vec::new();
        let r = e
            .generate(
                &key(),
                &input,
                Sampling::greedy(32),
                &Default::default(),
                5,
                &mut |t| streamed.push(t),
            )
            .unwrap();
        assert_eq!(streamed, r.output_tokens);
        assert_eq!(r.provider, key().public());
        assert_eq!(r.engine, HASH_ENGINE_NAME);
        assert!(r.prompt.starts_with("<|im_start|>system\nBe brief."));
        assert_eq!(r.prompt_tokens as usize, r.prompt.len());
        assert_eq!(r.finish_reason, FinishReason::Stop);
        vouch_verify::check_fast(&r).unwrap();
        // Greedy ignores the seed; sampling does not.
        let mut s = Sampling::greedy(32);
        s.seed = 99;
        let again = e
            .generate(&key(), &input, s, &Default::default(), 5, &mut |_| {})
            .unwrap();
        assert_eq!(again.output, r.output);
        s.temperature = 0.7;
        let sampled = e
            .generate(&key(), &input, s, &Default::default(), 5, &mut |_| {})
            .unwrap();
        vouch_verify::check_fast(&sampled).unwrap();
        // Short budgets end by length.
        let one = e
            .generate(
                &key(),
                &input,
                Sampling::greedy(1),
                &Default::default(),
                5,
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(one.output_tokens.len(), 1);
        assert_eq!(one.finish_reason, FinishReason::Length);
        vouch_verify::check_fast(&one).unwrap();
        // The context bounds prompt plus max_tokens.
        let small = HashEngine::new("hash").with_context(40);
        let err = small
            .generate(
                &key(),
                &input,
                Sampling::greedy(32),
                &Default::default(),
                5,
                &mut |_| {},
            )
            .unwrap_err();
        assert!(
            matches!(err, InferenceError::ContextOverflow { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_closed_gate_holds_generations_until_opened() {
        let gate = Gate::closed();
        let e = Arc::new(HashEngine::new("hash").with_gate(gate.clone()));
        let t = {
            let e = e.clone();
            std::thread::spawn(move || {
                e.generate(
                    &key(),
                    &Input::Completion("x".into()),
                    Sampling::greedy(8),
                    &Default::default(),
                    0,
                    &mut |_| {},
                )
            })
        };
        while gate.waiting() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!t.is_finished());
        gate.open();
        assert!(t.join().unwrap().is_ok());
        assert_eq!(gate.waiting(), 0);
    }
}
