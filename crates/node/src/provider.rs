//! The provider role: runs escrowed jobs on the local model and commits their results.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vouch_crypto::SigningKey;
use vouch_inference::chat::{render_chatml, Message};
use vouch_inference::ChatModel;
use vouch_state::JobStatus;
use vouch_types::tx::{Action, Tx};
use vouch_types::{Hash32, Receipt, ReceiptKind, Sampling};
use vouch_verify::attest::{self, Input};

use crate::chain::{Chain, SubmitError, TxStatus};
use crate::error::ApiError;

/// How long a caller waits for its transaction to reach a block.
pub const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// What a job computes.
pub enum Work {
    Generate(Input, Sampling),
    /// Embed the text (an embedding job: `max_tokens` 1 on the ledger, no tokens generated).
    Embed(String),
}

/// How a job's escrow is paid: a transaction the client signed, or a wallet the gateway
/// holds for an API key.
pub enum Escrow {
    Signed(Tx),
    Custodial(Arc<SigningKey>, Action),
}

pub struct ProviderRole {
    pub key: SigningKey,
    /// The embedding model, if this provider serves one. Embedding jobs are jobs with
    /// `max_tokens` 1 whose input is the text and whose output is the vector.
    pub embedder: Option<Arc<vouch_inference::Embedder>>,
    pub model: Arc<Mutex<ChatModel>>,
    pub model_id: Hash32,
    pub model_name: String,
    pub system_default: Option<String>,
    pub context: usize,
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
    #[serde(default)]
    pub seed: u64,
    pub max_tokens: u32,
}

fn one() -> f32 {
    1.0
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

pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Invalid(vouch_state::TxError::InsufficientFunds { need, balance }) => {
            ApiError::payment(format!(
                "insufficient funds: need {need}, balance is {balance}"
            ))
        }
        SubmitError::Invalid(t) => ApiError::bad_request(t.to_string()),
        SubmitError::Full(_) => ApiError::overloaded(e.to_string()),
        SubmitError::AlreadyCommitted(_) => ApiError::bad_request(format!("replay: {e}")),
        SubmitError::Store(s) => ApiError::internal(s),
    }
}

async fn wait_committed(chain: &Chain, id: &Hash32, what: &str) -> Result<(u64, u32), ApiError> {
    match chain.wait_tx(id, COMMIT_WAIT).await {
        TxStatus::Committed { height, index } => Ok((height, index)),
        TxStatus::Rejected { reason } => {
            Err(ApiError::bad_request(format!("{what} rejected: {reason}")))
        }
        other => Err(ApiError::unavailable(format!(
            "{what} not committed in time ({other:?})"
        ))),
    }
}

impl ProviderRole {
    /// Runs a client's job end to end: escrow, inference, result commit, inclusion proof.
    pub async fn run_job(
        self: &Arc<Self>,
        chain: &Arc<Chain>,
        req: JobRequest,
    ) -> Result<Receipt, ApiError> {
        let bytes =
            hex::decode(req.tx.trim()).map_err(|_| ApiError::bad_request("tx is not hex"))?;
        let tx = Tx::decode(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed transaction: {e}")))?;
        let Action::SubmitJob {
            model,
            provider,
            input_hash,
            max_tokens,
            ..
        } = tx.action.clone()
        else {
            return Err(ApiError::bad_request("tx must be a submit_job transaction"));
        };
        if provider != self.key.public() {
            return Err(ApiError::bad_request(format!(
                "job names provider {provider}, this node is {}",
                self.key.public()
            )));
        }
        if model != self.model_id {
            return Err(ApiError::not_found(format!(
                "this provider serves {} ({}), not {model}",
                self.model_name, self.model_id
            )));
        }
        let (kind, prompt) = render(
            req.messages.as_deref(),
            req.prompt.as_deref(),
            self.system_default.as_deref(),
        )
        .map_err(ApiError::bad_request)?;
        if Receipt::hash_input(kind, &prompt) != input_hash {
            return Err(ApiError::bad_request(
                "the job's input_hash does not match the request's input",
            ));
        }
        if req.max_tokens == 0 || req.max_tokens > max_tokens {
            return Err(ApiError::bad_request(format!(
                "max_tokens must be between 1 and the job's {max_tokens}"
            )));
        }
        let sampling = Sampling {
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            max_tokens: req.max_tokens,
        };
        let temperature_ok = (0.0..=2.0).contains(&sampling.temperature);
        let top_p_ok = sampling.top_p > 0.0 && sampling.top_p <= 1.0;
        if !temperature_ok || !top_p_ok {
            return Err(ApiError::bad_request(
                "temperature must be in [0, 2] and top_p in (0, 1]",
            ));
        }
        // Check the prompt fits before any money moves.
        {
            let model = self.model.lock().unwrap_or_else(|p| p.into_inner());
            let n = model
                .tokenize(&prompt)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .len();
            if n + req.max_tokens as usize > self.context {
                return Err(ApiError::bad_request(format!(
                    "prompt of {n} tokens plus max_tokens {} exceeds the context of {}",
                    req.max_tokens, self.context
                )));
            }
        }
        let input = match kind {
            ReceiptKind::Completion => Input::Completion(prompt),
            _ => Input::Chat(req.messages.unwrap_or_default()),
        };
        self.run_escrowed(
            chain,
            Escrow::Signed(tx),
            Work::Generate(input, sampling),
            None,
        )
        .await
    }

    /// Submits the escrow transaction, runs the job once it is committed (streaming text
    /// deltas to `sink` if given), commits the result, and returns the receipt with its
    /// inclusion proof.
    pub async fn run_escrowed(
        self: &Arc<Self>,
        chain: &Arc<Chain>,
        escrow: Escrow,
        work: Work,
        sink: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Receipt, ApiError> {
        let job = match escrow {
            Escrow::Signed(tx) => chain.submit(tx).map_err(submit_error)?,
            Escrow::Custodial(key, action) => {
                chain.submit_signed(&key, action).map_err(submit_error)?
            }
        };
        wait_committed(chain, &job, "job").await?;
        let state = chain.state();
        match state.jobs.get(&job) {
            Some(j) if j.status == JobStatus::Submitted => {}
            _ => {
                return Err(ApiError::internal(
                    "job is not open after its escrow committed",
                ))
            }
        }
        let me = self.clone();
        let created_at = crate::consensus::now_ms() / 1000;
        let (input, sampling) = match work {
            Work::Generate(input, sampling) => (input, sampling),
            Work::Embed(text) => {
                let embedder = self.embedder.clone().ok_or_else(|| {
                    ApiError::not_found("this provider serves no embedding model")
                })?;
                let text = text.clone();
                let key = SigningKey::from_bytes(&self.key.to_bytes())
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let receipt = tokio::task::spawn_blocking(move || {
                    vouch_verify::attest::embed(&embedder, &key, &text, created_at)
                })
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(format!("embedding failed: {e}")))?;
                return self.commit(chain, job, receipt).await;
            }
        };
        let receipt = tokio::task::spawn_blocking(move || {
            let mut model = me.model.lock().unwrap_or_else(|p| p.into_inner());
            let tokenizer = model.tokenizer();
            let mut ids: Vec<u32> = Vec::new();
            let mut sent = 0usize;
            let mut on_token = |t: u32| {
                let Some(sink) = &sink else { return };
                // Decode the whole prefix so characters split across tokens arrive whole.
                ids.push(t);
                if let Ok(text) = tokenizer.decode(&ids) {
                    if text.len() > sent && text.is_char_boundary(sent) {
                        let _ = sink.send(text[sent..].to_string());
                        sent = text.len();
                    }
                }
            };
            attest::generate(
                &mut model,
                &me.key,
                &input,
                sampling,
                created_at,
                &mut on_token,
            )
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("inference failed: {e}")))?;
        self.commit(chain, job, receipt).await
    }

    /// Stores the receipt, commits its hashes, and attaches the inclusion proof.
    async fn commit(
        &self,
        chain: &Arc<Chain>,
        job: Hash32,
        mut receipt: Receipt,
    ) -> Result<Receipt, ApiError> {
        receipt.inclusion = None;
        let rid = receipt.id();
        let kind = format!("kind=\"{}\"", receipt.kind.as_str());
        chain.metrics().inc(
            "vouch_prompt_tokens_total",
            &kind,
            u64::from(receipt.prompt_tokens),
        );
        chain.metrics().inc(
            "vouch_generated_tokens_total",
            &kind,
            receipt.output_tokens.len() as u64,
        );
        // Keep the receipt before committing: an auditor may ask for it as soon as the
        // commit is in a block.
        let json = serde_json::to_vec(&receipt).map_err(|e| ApiError::internal(e.to_string()))?;
        chain
            .store()
            .put_receipt(&rid, &json)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let commit = Action::CommitResult {
            job,
            receipt: rid,
            output_hash: receipt.output_hash,
            fingerprint: receipt.fingerprint.hash(),
            prompt_tokens: receipt.prompt_tokens,
            output_tokens: receipt.output_tokens.len() as u32,
        };
        let cid = chain
            .submit_signed(&self.key, commit)
            .map_err(submit_error)?;
        wait_committed(chain, &cid, "result").await?;
        receipt.inclusion = chain.inclusion(&rid).map_err(ApiError::internal)?;
        let json = serde_json::to_vec(&receipt).map_err(|e| ApiError::internal(e.to_string()))?;
        chain
            .store()
            .put_receipt(&rid, &json)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(receipt)
    }
}
