//! The provider role: runs escrowed jobs on the local model and commits their results.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vouch_crypto::SigningKey;
use vouch_inference::chat::{render_chatml, Message};
use vouch_types::tx::{Action, Tx};
use vouch_types::{Constraint, Controls, Hash32, Receipt, ReceiptKind, Sampling};
use vouch_verify::attest::Input;

use crate::chain::{Chain, SubmitError, TxStatus};
use crate::engine::ChatEngine;
use crate::error::ServeError;

/// How long a caller waits for its transaction to reach a block.
pub const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// What a job computes.
pub enum Work {
    /// Generate from the input with the sampling rule and the decoding controls (stop
    /// strings, output constraint).
    Generate(Input, Sampling, Controls),
    /// Embed the text (an embedding job: `max_tokens` 1 on the ledger, no tokens generated).
    Embed(String),
}

/// How a job's escrow is paid: a transaction the client signed, or a wallet the gateway
/// holds for an API key.
pub enum Escrow {
    Signed(Tx),
    Custodial(Arc<SigningKey>, Action),
    /// Already admitted to the mempool (or committed): the job id.
    Admitted(Hash32),
}

pub struct ProviderRole {
    pub key: SigningKey,
    /// The embedding model, if this provider serves one. Embedding jobs are jobs with
    /// `max_tokens` 1 whose input is the text and whose output is the vector.
    pub embedder: Option<Arc<vouch_inference::Embedder>>,
    /// The chat engine: the real model ([`crate::engine::ModelEngine`]) or a stand-in
    /// ([`crate::engine::HashEngine`] in tests). The fields below are its identity, read
    /// on every request.
    pub engine: Arc<dyn ChatEngine>,
    pub model_id: Hash32,
    pub model_name: String,
    pub system_default: Option<String>,
    pub context: usize,
    /// Jobs running or waiting for the model; beyond this, requests get 429.
    pub queue: Arc<tokio::sync::Semaphore>,
    pub queue_depth: usize,
    /// Requests turned away because the queue was full.
    pub queue_full: std::sync::atomic::AtomicU64,
}

/// A job as the client sends it: the signed `SubmitJob` transaction and the input whose
/// hash that transaction names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRequest {
    /// Hex of the encoded, signed `SubmitJob` transaction.
    pub tx: String,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Raw prompt text, tokenized as is (instead of `messages`).
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub temperature: f32,
    #[serde(default = "one")]
    pub top_p: f32,
    /// A decimal string on the wire (a number is read too).
    #[serde(default, with = "vouch_types::json_u64")]
    pub seed: u64,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The output constraint the receipt must carry (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    #[serde(default)]
    pub presence_penalty: f32,
    #[serde(default)]
    pub frequency_penalty: f32,
}

fn one() -> f32 {
    1.0
}

impl JobRequest {
    /// The sampling rule the request asks for (and its receipt must name).
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            max_tokens: self.max_tokens,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
        }
    }
    /// The stop strings and constraint the request asks for.
    pub fn controls(&self) -> Controls {
        Controls {
            stop: self.stop.clone(),
            constraint: self.constraint.clone(),
        }
    }
}

/// The exact prompt text and its kind for a request, as the provider will render it.
pub fn render(
    req_messages: Option<&[Message]>,
    prompt: Option<&str>,
    system_default: Option<&str>,
) -> Result<(ReceiptKind, String), String> {
    match (req_messages, prompt) {
        (Some(m), None) => {
            if m.is_empty() {
                return Err("messages must not be empty".into());
            }
            Ok((ReceiptKind::Chat, render_chatml(m, system_default)))
        }
        (None, Some(p)) => Ok((ReceiptKind::Completion, p.to_string())),
        _ => Err("give exactly one of `messages` and `prompt`".into()),
    }
}

/// A request parameter out of bounds: which one (by its OpenAI name) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    pub param: &'static str,
    pub message: String,
}

impl From<BadParam> for ServeError {
    fn from(e: BadParam) -> Self {
        ServeError::invalid(e.message)
    }
}

/// The bounds every generation request must keep: temperature in [0, 2], top_p in
/// (0, 1], penalties in [-2, 2], the stop list of [`vouch_types::stop::check`] and the
/// constraint's size. Whether the constraint compiles is the engine's check
/// ([`ChatEngine::check_controls`](crate::engine::ChatEngine::check_controls)).
pub fn check_sampling(s: &Sampling, controls: &Controls) -> Result<(), BadParam> {
    let bad = |param, message: String| Err(BadParam { param, message });
    if !(0.0..=2.0).contains(&s.temperature) {
        return bad("temperature", "temperature must be in [0, 2]".into());
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return bad("top_p", "top_p must be in (0, 1]".into());
    }
    let m = vouch_types::MAX_PENALTY;
    for (what, x) in [
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ] {
        if !(x.is_finite() && x.abs() <= m) {
            return bad(what, format!("{what} must be in [-{m}, {m}]"));
        }
    }
    if let Err(e) = vouch_types::stop::check(&controls.stop) {
        return bad("stop", e);
    }
    if let Some(c) = &controls.constraint {
        if let Err(e) = c.check() {
            return bad("response_format", e);
        }
    }
    Ok(())
}

pub fn submit_error(e: SubmitError) -> ServeError {
    match e {
        SubmitError::Invalid(vouch_state::TxError::InsufficientFunds { need, balance }) => {
            ServeError::payment(format!(
                "insufficient funds: need {need}, balance is {balance}"
            ))
        }
        SubmitError::Invalid(t @ vouch_state::TxError::ProviderBusy(_)) => {
            ServeError::overloaded(t.to_string())
        }
        SubmitError::Invalid(t) => ServeError::invalid(t.to_string()),
        SubmitError::Full(_) => ServeError::overloaded(e.to_string()),
        SubmitError::AlreadyCommitted(_) => ServeError::invalid(format!("replay: {e}")),
        SubmitError::Store(s) => ServeError::internal(s),
        SubmitError::Follower(_) => ServeError::unavailable(e.to_string()),
    }
}

async fn wait_committed(chain: &Chain, id: &Hash32, what: &str) -> Result<(u64, u32), ServeError> {
    match chain.wait_tx(id, COMMIT_WAIT).await {
        TxStatus::Committed { height, index } => Ok((height, index)),
        TxStatus::Rejected { reason } => {
            Err(ServeError::invalid(format!("{what} rejected: {reason}")))
        }
        other => Err(ServeError::unavailable(format!(
            "{what} not committed in time ({other:?})"
        ))),
    }
}

impl ProviderRole {
    /// A provider running `engine`, with a queue of `queue_depth` jobs (at least 1).
    pub fn new(
        key: SigningKey,
        engine: Arc<dyn ChatEngine>,
        embedder: Option<Arc<vouch_inference::Embedder>>,
        queue_depth: usize,
    ) -> Self {
        let depth = queue_depth.max(1);
        ProviderRole {
            key,
            embedder,
            model_id: engine.id(),
            model_name: engine.name().to_string(),
            system_default: engine.system_default().map(str::to_string),
            context: engine.context(),
            engine,
            queue: Arc::new(tokio::sync::Semaphore::new(depth)),
            queue_depth: depth,
            queue_full: Default::default(),
        }
    }

    /// The real model behind the engine (audits and trace openings need it); `None` for
    /// a stand-in engine, which is then never audited by this node.
    pub fn chat_model(&self) -> Option<Arc<Mutex<vouch_inference::ChatModel>>> {
        self.engine.chat_model()
    }

    /// Runs a client's job end to end: escrow, inference, result commit, inclusion proof.
    pub async fn run_job(
        self: &Arc<Self>,
        chain: &Arc<Chain>,
        req: JobRequest,
    ) -> Result<Receipt, ServeError> {
        let (tx, work, permit) = self.prepare(req).await?;
        let done = self
            .run_escrowed(chain, Escrow::Signed(tx), work, None)
            .await?;
        drop(permit);
        done.finalize(chain).await
    }

    /// Checks a job request against this provider (its escrow names this provider and
    /// model and the request's input, the sampling is valid, the prompt fits) and takes a
    /// place in the queue: what any job, local or sent by a peer's gateway, goes through
    /// before money moves.
    pub async fn prepare(
        &self,
        req: JobRequest,
    ) -> Result<(Tx, Work, tokio::sync::OwnedSemaphorePermit), ServeError> {
        let bytes = hex::decode(req.tx.trim()).map_err(|_| ServeError::invalid("tx is not hex"))?;
        let tx = Tx::decode(&bytes)
            .map_err(|e| ServeError::invalid(format!("malformed transaction: {e}")))?;
        let Action::SubmitJob {
            model,
            provider,
            input_hash,
            max_tokens,
            ..
        } = tx.action.clone()
        else {
            return Err(ServeError::invalid("tx must be a submit_job transaction"));
        };
        if provider != self.key.public() {
            return Err(ServeError::invalid(format!(
                "job names provider {provider}, this node is {}",
                self.key.public()
            )));
        }
        if model != self.model_id {
            return Err(ServeError::not_found(format!(
                "this provider serves {} ({}), not {model}",
                self.model_name, self.model_id
            )));
        }
        let (kind, prompt) = render(
            req.messages.as_deref(),
            req.prompt.as_deref(),
            self.system_default.as_deref(),
        )
        .map_err(ServeError::invalid)?;
        if Receipt::hash_input(kind, &prompt) != input_hash {
            return Err(ServeError::invalid(
                "the job's input_hash does not match the request's input",
            ));
        }
        if req.max_tokens == 0 || req.max_tokens > max_tokens {
            return Err(ServeError::invalid(format!(
                "max_tokens must be between 1 and the job's {max_tokens}"
            )));
        }
        let (sampling, controls) = (req.sampling(), req.controls());
        check_sampling(&sampling, &controls)?;
        self.check_controls(&controls).await?;
        // Check the prompt fits before any money moves.
        let permit = self.admit()?;
        {
            let n = self.count_tokens(&prompt).await?;
            if n + req.max_tokens as usize > self.context {
                return Err(ServeError::invalid(format!(
                    "prompt of {n} tokens plus max_tokens {} exceeds the context of {}",
                    req.max_tokens, self.context
                )));
            }
        }
        let input = match kind {
            ReceiptKind::Completion => Input::Completion(prompt),
            _ => Input::Chat(req.messages.unwrap_or_default()),
        };
        Ok((tx, Work::Generate(input, sampling, controls), permit))
    }

    /// The models this provider answers jobs for over the network.
    pub fn models(&self) -> Vec<Hash32> {
        vec![self.model_id]
    }

    /// The engine's check of a request's controls (the constraint compiles for this
    /// model), off the async threads.
    pub async fn check_controls(&self, controls: &Controls) -> Result<(), ServeError> {
        if controls.constraint.is_none() {
            return controls.check().map_err(ServeError::invalid);
        }
        let engine = self.engine.clone();
        let controls = controls.clone();
        tokio::task::spawn_blocking(move || engine.check_controls(&controls))
            .await
            .map_err(|e| ServeError::internal(e.to_string()))?
            .map_err(|e| ServeError::invalid(e.to_string()))
    }

    /// Tokens in `text` under the chat model's tokenizer, counted off the async threads
    /// and without the model (which may be busy generating).
    pub async fn count_tokens(&self, text: &str) -> Result<usize, ServeError> {
        let engine = self.engine.clone();
        let text = text.to_string();
        tokio::task::spawn_blocking(move || engine.count_tokens(&text))
            .await
            .map_err(|e| ServeError::internal(e.to_string()))?
            .map_err(|e| ServeError::invalid(e.to_string()))
    }

    /// Takes a place in this provider's job queue, or answers 429 when it is full: the
    /// queue bounds the memory and the wait of everything admitted.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ServeError> {
        self.queue.clone().try_acquire_owned().map_err(|_| {
            self.queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ServeError::overloaded(format!(
                "provider queue is full ({} jobs running or waiting); retry shortly",
                self.queue_depth
            ))
        })
    }

    /// Runs a job optimistically: the escrow is admitted to the mempool (checked against
    /// the current state), the model runs at once, and the result commit is queued behind
    /// the escrow, so both land in the same or consecutive blocks. The caller gets the
    /// receipt without waiting for a block; its inclusion proof is served by
    /// `/v1/receipts/{id}` once the commit is final (see [`Done::commit`]).
    ///
    /// The provider carries the risk that an admitted escrow is later rejected (the
    /// client's balance drained by another transaction in the same block); the gateway
    /// reserves each custodial wallet's pending spend so its own requests cannot do that.
    pub async fn run_escrowed(
        self: &Arc<Self>,
        chain: &Arc<Chain>,
        escrow: Escrow,
        work: Work,
        sink: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Done, ServeError> {
        let job = match escrow {
            Escrow::Signed(tx) => chain.submit_kept(tx).map_err(submit_error)?,
            Escrow::Custodial(key, action) => {
                chain.submit_signed(&key, action).map_err(submit_error)?
            }
            Escrow::Admitted(job) => job,
        };
        let created_at = crate::clock::now_ms() / 1000;
        let me = self.clone();
        let started = std::time::Instant::now();
        let receipt = match work {
            Work::Embed(text) => {
                let embedder = self.embedder.clone().ok_or_else(|| {
                    ServeError::not_found("this provider serves no embedding model")
                })?;
                tokio::task::spawn_blocking(move || {
                    vouch_verify::attest::embed(&embedder, &me.key, &text, created_at)
                })
                .await
                .map_err(|e| ServeError::internal(e.to_string()))?
                .map_err(|e| ServeError::internal(format!("embedding failed: {e}")))?
            }
            Work::Generate(input, sampling, controls) => tokio::task::spawn_blocking(move || {
                let engine = &me.engine;
                let stop = &controls.stop;
                let mut ids: Vec<u32> = Vec::new();
                let mut sent = 0usize;
                let mut on_token = |t: u32| {
                    let Some(sink) = &sink else { return };
                    // Decode the whole prefix so characters split across tokens arrive whole.
                    ids.push(t);
                    if let Ok(text) = engine.detokenize(&ids) {
                        // Never past a stop string, and not the bytes that may still
                        // become one: the rest follows from the receipt's output.
                        let end = match vouch_types::stop::cut(&text, stop) {
                            Some(k) => k,
                            None => text.len() - vouch_types::stop::pending(&text, stop),
                        };
                        if end > sent && text.is_char_boundary(sent) && text.is_char_boundary(end) {
                            let _ = sink.send(text[sent..end].to_string());
                            sent = end;
                        }
                    }
                };
                engine.generate(
                    &me.key,
                    &input,
                    sampling,
                    &controls,
                    created_at,
                    &mut on_token,
                )
            })
            .await
            .map_err(|e| ServeError::internal(e.to_string()))?
            .map_err(|e| ServeError::internal(format!("inference failed: {e}")))?,
        };
        let engine = started.elapsed();
        let commit = self.commit(chain, job, &receipt)?;
        tracing::info!(
            job = %job,
            receipt = %receipt.id(),
            kind = receipt.kind.as_str(),
            prompt_tokens = receipt.prompt_tokens,
            output_tokens = receipt.output_tokens.len(),
            engine_ms = engine.as_secs_f64() * 1e3,
            "job answered"
        );
        Ok(Done {
            job,
            receipt,
            commit,
            engine,
        })
    }

    /// Stores the receipt and queues the transaction that commits its hashes.
    fn commit(
        &self,
        chain: &Arc<Chain>,
        job: Hash32,
        receipt: &Receipt,
    ) -> Result<Hash32, ServeError> {
        let rid = receipt.id();
        chain.metrics().tokens(
            receipt.kind.as_str(),
            u64::from(receipt.prompt_tokens),
            receipt.output_tokens.len() as u64,
        );
        // Keep the receipt before committing: an auditor may ask for it as soon as the
        // commit is in a block.
        let json = serde_json::to_vec(receipt).map_err(|e| ServeError::internal(e.to_string()))?;
        chain
            .store()
            .put_receipt(&rid, &json)
            .map_err(|e| ServeError::internal(e.to_string()))?;
        let commit = Action::CommitResult {
            job,
            receipt: rid,
            output_hash: receipt.output_hash,
            fingerprint: receipt.fingerprint.hash(),
            prompt_tokens: receipt.prompt_tokens,
            output_tokens: receipt.output_tokens.len() as u32,
        };
        match chain.submit_signed(&self.key, commit) {
            // Before anyone gets the receipt: it, the result commit and the escrow (both
            // in the outbox, re-submitted at start) survive a crash (one fsync).
            Ok(id) => chain
                .sync()
                .map(|()| id)
                .map_err(|e| ServeError::internal(format!("cannot make the answer durable: {e}"))),
            // The escrow did not make it into a block while the model ran.
            Err(SubmitError::Invalid(vouch_state::TxError::UnknownJob(_))) => {
                Err(match chain.tx_status(&job) {
                    TxStatus::Rejected { reason } => {
                        ServeError::payment(format!("job escrow rejected: {reason}"))
                    }
                    other => ServeError::internal(format!("job escrow is not open ({other:?})")),
                })
            }
            Err(e) => Err(submit_error(e)),
        }
    }
}

/// A job the provider has answered.
#[derive(Debug)]
pub struct Done {
    pub job: Hash32,
    /// The signed receipt, without its inclusion proof (not final yet).
    pub receipt: Receipt,
    /// The `CommitResult` transaction; once it is committed, the receipt's inclusion proof
    /// is available.
    pub commit: Hash32,
    /// Time spent in the model.
    pub engine: Duration,
}

impl Done {
    /// Waits for the result commit and attaches the inclusion proof.
    pub async fn finalize(mut self, chain: &Chain) -> Result<Receipt, ServeError> {
        wait_committed(chain, &self.job, "job").await?;
        wait_committed(chain, &self.commit, "result").await?;
        self.receipt.inclusion = chain
            .inclusion(&self.receipt.id())
            .map_err(ServeError::internal)?;
        Ok(self.receipt)
    }
}

/// Whether weights whose content id is `id` may be served by `provider`: the id must be a
/// model registered on the ledger and, when the provider is registered, one it listed.
/// A provider whose file was altered, truncated or swapped gets another id and is refused
/// here, before it could sign a receipt naming weights that are not the registered ones.
pub fn check_weights(
    state: &vouch_state::State,
    provider: &Hash32,
    id: &Hash32,
    name: &str,
) -> Result<(), String> {
    let Some(m) = state.models.get(id) else {
        let same_name: Vec<String> = state
            .models
            .iter()
            .filter(|(_, m)| m.name == name)
            .map(|(k, m)| format!("{} (version {})", k, m.version))
            .collect();
        return Err(format!(
            "refusing to serve {name}: its weights hash to {id}, which is not a registered model{}",
            if same_name.is_empty() {
                String::new()
            } else {
                format!("; registered under that name: {}", same_name.join(", "))
            }
        ));
    };
    if let Some(p) = state.providers.get(provider) {
        if !p.models.contains(id) {
            return Err(format!(
                "refusing to serve {name} {id} ({} version {}): provider {provider} is not registered for it",
                m.name, m.version
            ));
        }
    }
    Ok(())
}
