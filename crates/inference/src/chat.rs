//! A chat model: llama weights + tokenizer + chat template, with generation (streaming,
//! batched, with or without KV cache) and scoring (the verifier's one-pass prefill).

use crate::constraint::{Grammars, Guide};
use crate::llama::{KvCache, Llama, SeqStep};
use crate::models::{self, ModelKind, ModelSpec};
use crate::sampling;
use crate::tokenizer::TextTokenizer;
use crate::trace::{BatchHasher, TraceHashes, TraceValues};
use crate::InferenceError;
use candle_core::quantized::gguf_file;
use std::path::Path;
use vouch_types::{ContentId, Controls, FinishReason, Hash32, Sampling};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: &str) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub sampling: Sampling,
    /// Stop strings (generation ends at the token after which the decoded output holds
    /// one, see [`vouch_types::stop`]) and the output constraint (the token mask at each
    /// position, see [`crate::constraint`]).
    pub controls: Controls,
}

/// The result of generating one sequence.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids; ends with the stop token, or the token that completed a stop
    /// string, when `finish == Stop`.
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_len: usize,
    /// Final hidden states of positions `0 .. prompt_len + tokens.len() - 1`, flattened.
    pub hidden: Vec<f32>,
    /// Leaf hashes of the execution trace over the same positions.
    pub trace: TraceHashes,
}

/// The verifier's view of a (prompt, output) pair after one prefill.
#[derive(Debug, Clone)]
pub struct Scored {
    pub prompt_len: usize,
    /// Hidden states of positions `0 .. prompt_len + output_len - 1`.
    pub hidden: Vec<f32>,
    /// Logits that chose each output token: row `i` is the distribution for output `i`.
    pub logits: Vec<f32>,
}

pub struct ChatModel {
    llama: Llama,
    tokenizer: std::sync::Arc<TextTokenizer>,
    id: ContentId,
    name: String,
    system_default: Option<String>,
    stop: Vec<u32>,
    /// Whether generation hashes its execution trace (on unless a benchmark turns it off
    /// to measure what it costs).
    trace: bool,
    /// The grammar compiler over this tokenizer, built on first use.
    grammars: Option<std::sync::Arc<Grammars>>,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatModel({} {})", self.name, self.id.short())
    }
}

impl ChatModel {
    /// Loads a catalogue model after checking its files against the pinned hashes.
    pub fn load(spec: &ModelSpec, home: &Path) -> Result<Self, InferenceError> {
        if spec.kind != ModelKind::ChatGguf {
            return Err(InferenceError::InvalidRequest(format!(
                "{} is not a chat model",
                spec.name
            )));
        }
        // check_files has just hashed the weights against the pinned value; the id
        // follows from it without hashing 100 MB a second time.
        models::check_files(spec, home)?;
        let mut m = Self::open(&spec.path(home, 0), spec.id())?;
        m.name = spec.name.to_string();
        Ok(m)
    }

    /// Loads any llama GGUF file; its content id is computed from the file's bytes.
    pub fn load_gguf(path: &Path) -> Result<Self, InferenceError> {
        let hash = models::hash_file(path).map_err(|e| InferenceError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::open(path, models::model_id_from_file_hashes(&[hash]))
    }

    fn open(path: &Path, id: ContentId) -> Result<Self, InferenceError> {
        let mut f = std::fs::File::open(path).map_err(|e| InferenceError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let ct = gguf_file::Content::read(&mut f).map_err(|e| {
            InferenceError::Format(format!("{}: not a GGUF file ({e})", path.display()))
        })?;
        let tokenizer = std::sync::Arc::new(TextTokenizer::from_gguf(&ct)?);
        let llama = Llama::from_gguf(&ct, &mut f)?;
        let template = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        let system_default = template
            .split("<|im_start|>system\n")
            .nth(1)
            .and_then(|rest| rest.split("<|im_end|>").next().map(|s| s.to_string()));
        let mut stop = Vec::new();
        if let Some(eos) = ct
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
        {
            stop.push(eos);
        }
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.token_id(t) {
                if !stop.contains(&id) {
                    stop.push(id);
                }
            }
        }
        Ok(Self {
            llama,
            tokenizer,
            id,
            name: path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("gguf")
                .to_string(),
            system_default,
            stop,
            trace: true,
            grammars: None,
        })
    }

    pub fn id(&self) -> ContentId {
        self.id
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn tokenizer_id(&self) -> Hash32 {
        self.tokenizer.id()
    }
    pub fn context(&self) -> usize {
        self.llama.cfg.context
    }
    pub fn hidden_dim(&self) -> usize {
        self.llama.cfg.hidden
    }
    pub fn vocab(&self) -> usize {
        self.llama.cfg.vocab
    }
    /// Turns trace hashing during generation on or off. Off, generations carry no trace
    /// and their receipts cannot be spot-checked (re-execution still works).
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    pub fn is_stop(&self, t: u32) -> bool {
        self.stop.contains(&t)
    }

    /// The token that ends a constrained answer: the chat end token, else the first
    /// stop token.
    fn end_token(&self) -> u32 {
        self.tokenizer
            .token_id("<|im_end|>")
            .or_else(|| self.stop.first().copied())
            .unwrap_or(0)
    }

    /// The grammar compiler for this model (its token trie is built on the first call).
    pub fn grammars(&mut self) -> Result<std::sync::Arc<Grammars>, InferenceError> {
        if self.grammars.is_none() {
            let g = Grammars::new(self.tokenizer.clone(), self.vocab(), self.end_token())?;
            self.grammars = Some(std::sync::Arc::new(g));
        }
        Ok(self.grammars.clone().expect("just built"))
    }

    /// A fresh grammar state for `controls`' constraint, if it has one.
    pub fn guide(&mut self, controls: &Controls) -> Result<Option<Guide>, InferenceError> {
        match &controls.constraint {
            None => Ok(None),
            Some(c) => Ok(Some(self.grammars()?.compile(c)?)),
        }
    }

    /// ChatML rendering with the model's default system message when none is given,
    /// ending with the assistant turn opener.
    pub fn render_chat(&self, messages: &[Message]) -> String {
        render_chatml(messages, self.system_default.as_deref())
    }

    /// The system message the model's chat template adds when none is given.
    pub fn system_default(&self) -> Option<&str> {
        self.system_default.as_deref()
    }

    /// A shared handle on the tokenizer (to decode while the model is generating).
    pub fn tokenizer(&self) -> std::sync::Arc<TextTokenizer> {
        self.tokenizer.clone()
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        self.tokenizer.encode(text)
    }
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, InferenceError> {
        self.tokenizer.decode(ids)
    }

    fn validate(&self, r: &GenerateRequest) -> Result<(), InferenceError> {
        if r.prompt_ids.is_empty() {
            return Err(InferenceError::InvalidRequest("empty prompt".into()));
        }
        if r.sampling.max_tokens == 0 {
            return Err(InferenceError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let t = r.sampling.temperature;
        if !t.is_finite() || !(0.0..=100.0).contains(&t) {
            return Err(InferenceError::InvalidRequest(format!(
                "temperature {t} out of range 0..100"
            )));
        }
        let p = r.sampling.top_p;
        if !(p.is_finite() && p > 0.0 && p <= 1.0) {
            return Err(InferenceError::InvalidRequest(format!(
                "top_p {p} out of range (0, 1]"
            )));
        }
        for (what, x) in [
            ("presence_penalty", r.sampling.presence_penalty),
            ("frequency_penalty", r.sampling.frequency_penalty),
        ] {
            if !(x.is_finite() && x.abs() <= vouch_types::MAX_PENALTY) {
                return Err(InferenceError::InvalidRequest(format!(
                    "{what} {x} out of range [-{m}, {m}]",
                    m = vouch_types::MAX_PENALTY
                )));
            }
        }
        r.controls.check().map_err(InferenceError::InvalidRequest)?;
        let needed = r.prompt_ids.len() + r.sampling.max_tokens as usize;
        if needed > self.context() {
            return Err(InferenceError::ContextOverflow {
                needed,
                context: self.context(),
            });
        }
        if let Some(&bad) = r.prompt_ids.iter().find(|&&t| t as usize >= self.vocab()) {
            return Err(InferenceError::BadToken(bad));
        }
        Ok(())
    }

    /// Generates for every request in one ragged batch. `on_token(i, id)` streams each
    /// new token of request `i`. Without `kv_cache`, every step recomputes the whole
    /// sequence (slow; kept to show the fingerprint does not depend on caching).
    pub fn generate_batch(
        &mut self,
        reqs: &[GenerateRequest],
        kv_cache: bool,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<Generation>, InferenceError> {
        for r in reqs {
            self.validate(r)?;
        }
        let n_layer = self.llama.cfg.n_layer;
        let hd = self.hidden_dim();
        let mut caches: Vec<KvCache> = reqs.iter().map(|_| KvCache::new(n_layer)).collect();
        let mut out: Vec<Generation> = reqs
            .iter()
            .map(|r| Generation {
                tokens: Vec::new(),
                finish: FinishReason::Length,
                prompt_len: r.prompt_ids.len(),
                hidden: Vec::new(),
                trace: TraceHashes::new(n_layer),
            })
            .collect();
        let mut done = vec![false; reqs.len()];
        let mut history: Vec<sampling::History> =
            reqs.iter().map(|_| sampling::History::new()).collect();
        let mut guides: Vec<Option<Guide>> = reqs
            .iter()
            .map(|r| self.guide(&r.controls))
            .collect::<Result<_, _>>()?;
        loop {
            let active: Vec<usize> = (0..reqs.len()).filter(|&i| !done[i]).collect();
            if active.is_empty() {
                break;
            }
            // Inputs of this step for each active sequence.
            let inputs: Vec<Vec<u32>> = active
                .iter()
                .map(|&i| {
                    let g = &out[i];
                    if kv_cache && !g.tokens.is_empty() {
                        vec![*g.tokens.last().expect("non-empty")]
                    } else if kv_cache {
                        reqs[i].prompt_ids.clone()
                    } else {
                        let mut all = reqs[i].prompt_ids.clone();
                        all.extend_from_slice(&g.tokens);
                        all
                    }
                })
                .collect();
            if !kv_cache {
                for &i in &active {
                    caches[i] = KvCache::new(n_layer);
                }
            }
            let kv_dim = self.llama.cfg.kv_dim();
            let hidden = {
                let mut spans = Vec::with_capacity(active.len());
                let mut traces: Vec<&mut TraceHashes> = Vec::with_capacity(active.len());
                for (g, (i, inp)) in out
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| !done[*i])
                    .zip(active.iter().zip(&inputs))
                {
                    debug_assert_eq!(g.0, *i);
                    spans.push((caches[*i].len(), inp.len()));
                    traces.push(&mut g.1.trace);
                }
                let mut hasher = BatchHasher {
                    spans,
                    out: traces,
                    hidden: hd,
                    kv_dim,
                };
                let mut cache_refs: Vec<&mut KvCache> = Vec::with_capacity(active.len());
                let mut rest: &mut [KvCache] = &mut caches;
                let mut offset = 0;
                for &i in &active {
                    let (_, tail) = rest.split_at_mut(i - offset);
                    let (c, tail) = tail.split_at_mut(1);
                    cache_refs.push(&mut c[0]);
                    rest = tail;
                    offset = i + 1;
                }
                let mut steps: Vec<SeqStep<'_>> = cache_refs
                    .into_iter()
                    .zip(inputs.iter())
                    .map(|(cache, tokens)| SeqStep { cache, tokens })
                    .collect();
                if self.trace {
                    self.llama.forward_tapped(&mut steps, &mut hasher)?
                } else {
                    self.llama.forward(&mut steps)?
                }
            };
            // Last row of each active sequence -> logits, in one matmul.
            let mut last_rows = Vec::with_capacity(active.len() * hd);
            let mut row0 = 0;
            for (a, &i) in active.iter().enumerate() {
                let m = inputs[a].len();
                let rows = &hidden[row0 * hd..(row0 + m) * hd];
                if kv_cache {
                    out[i].hidden.extend_from_slice(rows);
                } else {
                    out[i].hidden = rows.to_vec();
                }
                last_rows.extend_from_slice(&rows[(m - 1) * hd..]);
                row0 += m;
            }
            let logits = self.llama.logits(&last_rows)?;
            let vocab = self.vocab();
            for (a, &i) in active.iter().enumerate() {
                let g = &mut out[i];
                let s = &reqs[i].sampling;
                let row = history[i].apply(&logits[a * vocab..(a + 1) * vocab], s);
                let tok = match &mut guides[i] {
                    None => sampling::sample(&row, s, g.tokens.len() as u32),
                    Some(guide) => {
                        let mut row = row.into_owned();
                        Guide::apply(&guide.mask()?, &mut row);
                        let tok = sampling::sample(&row, s, g.tokens.len() as u32);
                        guide.consume(tok)?;
                        tok
                    }
                };
                history[i].push(tok);
                g.tokens.push(tok);
                on_token(i, tok);
                // An end-of-sequence token, or a stop string completed by this token.
                let stops = &reqs[i].controls.stop;
                let string_stop = !stops.is_empty()
                    && vouch_types::stop::cut(&self.tokenizer.decode(&g.tokens)?, stops).is_some();
                if self.stop.contains(&tok) || string_stop {
                    g.finish = FinishReason::Stop;
                    done[i] = true;
                } else if g.tokens.len() >= s.max_tokens as usize {
                    g.finish = FinishReason::Length;
                    done[i] = true;
                }
            }
        }
        Ok(out)
    }

    /// Generates one sequence with the KV cache.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Generation, InferenceError> {
        let mut v =
            self.generate_batch(std::slice::from_ref(req), true, &mut |_, t| on_token(t))?;
        Ok(v.remove(0))
    }

    /// One batched prefill per (prompt, output) pair: recomputes the hidden states the
    /// provider committed to and the logits that chose every output token.
    pub fn score_batch(
        &mut self,
        seqs: &[(&[u32], &[u32])],
    ) -> Result<Vec<Scored>, InferenceError> {
        let hd = self.hidden_dim();
        let vocab = self.vocab();
        let mut inputs = Vec::with_capacity(seqs.len());
        for (prompt, output) in seqs {
            if prompt.is_empty() || output.is_empty() {
                return Err(InferenceError::InvalidRequest(
                    "empty prompt or output".into(),
                ));
            }
            let mut all = prompt.to_vec();
            all.extend_from_slice(&output[..output.len() - 1]);
            inputs.push(all);
        }
        let mut caches: Vec<KvCache> = seqs.iter().map(|_| self.llama.new_cache()).collect();
        let mut steps: Vec<SeqStep<'_>> = caches
            .iter_mut()
            .zip(inputs.iter())
            .map(|(cache, tokens)| SeqStep { cache, tokens })
            .collect();
        let hidden = self.llama.forward(&mut steps)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut row0 = 0;
        let mut picked = Vec::new();
        for ((prompt, _), inp) in seqs.iter().zip(&inputs) {
            let m = inp.len();
            let rows = hidden[row0 * hd..(row0 + m) * hd].to_vec();
            picked.extend_from_slice(&rows[(prompt.len() - 1) * hd..]);
            out.push(Scored {
                prompt_len: prompt.len(),
                hidden: rows,
                logits: Vec::new(),
            });
            row0 += m;
        }
        let logits = self.llama.logits(&picked)?;
        let mut l0 = 0;
        for (s, (_, output)) in out.iter_mut().zip(seqs) {
            let n = output.len();
            s.logits = logits[l0 * vocab..(l0 + n) * vocab].to_vec();
            l0 += n;
        }
        Ok(out)
    }

    /// The full execution trace of `prompt` followed by `output[..n-1]`, by one prefill:
    /// what a provider recomputes to open a challenged trace.
    pub fn trace_values(
        &mut self,
        prompt: &[u32],
        output: &[u32],
    ) -> Result<TraceValues, InferenceError> {
        if prompt.is_empty() || output.is_empty() {
            return Err(InferenceError::InvalidRequest(
                "empty prompt or output".into(),
            ));
        }
        let mut all = prompt.to_vec();
        all.extend_from_slice(&output[..output.len() - 1]);
        let cfg = &self.llama.cfg;
        let mut tv = TraceValues::new(cfg.n_layer, cfg.hidden, cfg.kv_dim());
        let mut cache = self.llama.new_cache();
        self.llama.forward_tapped(
            &mut [SeqStep {
                cache: &mut cache,
                tokens: &all,
            }],
            &mut tv,
        )?;
        Ok(tv)
    }

    /// Recomputes layer `layer` at single positions (see [`Llama::recompute_layer`]).
    pub fn recompute_layer(
        &mut self,
        layer: usize,
        items: &[crate::llama::LayerInput<'_>],
    ) -> Result<Vec<crate::llama::LayerOutput>, InferenceError> {
        self.llama.recompute_layer(layer, items)
    }

    /// Logits from residual rows leaving the last layer.
    pub fn head(&self, residual: &[f32]) -> Result<Vec<f32>, InferenceError> {
        self.llama.head(residual)
    }

    /// The residual entering layer 0 for `token`.
    pub fn embedding_row(&self, token: u32) -> Option<&[f32]> {
        self.llama.embedding(token)
    }

    pub fn n_layer(&self) -> usize {
        self.llama.cfg.n_layer
    }

    pub fn kv_dim(&self) -> usize {
        self.llama.cfg.kv_dim()
    }

    /// Benchmark helper: prefills `prompt` then decodes exactly `n` greedy tokens, never
    /// stopping early. Returns (seconds to first token, seconds for the other n-1 tokens).
    pub fn time_fixed_decode(
        &mut self,
        prompt: &[u32],
        n: usize,
    ) -> Result<(f64, f64), InferenceError> {
        let mut cache = self.llama.new_cache();
        let t0 = std::time::Instant::now();
        let hidden = self.llama.forward(&mut [SeqStep {
            cache: &mut cache,
            tokens: prompt,
        }])?;
        let hd = self.hidden_dim();
        let mut last = hidden[hidden.len() - hd..].to_vec();
        let greedy = Sampling::greedy(n as u32);
        let mut tok = sampling::sample(&self.llama.logits(&last)?, &greedy, 0);
        let ttft = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        for i in 1..n {
            last = self.llama.forward(&mut [SeqStep {
                cache: &mut cache,
                tokens: &[tok],
            }])?;
            tok = sampling::sample(&self.llama.logits(&last)?, &greedy, i as u32);
        }
        Ok((ttft, t1.elapsed().as_secs_f64()))
    }
}

/// ChatML rendering: `system_default` is added when the first message is not a system
/// message; the result ends with the assistant turn opener. Pure, so a client can compute
/// the exact prompt (and its hash) without the model.
pub fn render_chatml(messages: &[Message], system_default: Option<&str>) -> String {
    let mut s = String::new();
    if messages.first().is_none_or(|m| m.role != "system") {
        if let Some(sys) = system_default {
            s.push_str("<|im_start|>system\n");
            s.push_str(sys);
            s.push_str("<|im_end|>\n");
        }
    }
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(&m.role);
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}
