//! The provider side: run a model and hand back a signed receipt.

use vouch_crypto::SigningKey;
use vouch_inference::chat::Message;
use vouch_inference::{
    fingerprint, ChatModel, Embedder, GenerateRequest, Generation, InferenceError,
};
use vouch_types::{
    Controls, EmbeddingOutput, Fingerprint, FinishReason, Hash32, Receipt, ReceiptKind, Sampling,
    PLAIN_RECEIPT_VERSION,
};

/// What to generate.
#[derive(Debug, Clone)]
pub enum Input {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Raw text, tokenized as is.
    Completion(String),
}

/// A generation job ready to run: the exact prompt text and its token ids.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: ReceiptKind,
    pub prompt: String,
    pub request: GenerateRequest,
}

/// Renders and tokenizes the input; checks the prompt fits the context.
pub fn prepare(
    model: &ChatModel,
    input: &Input,
    sampling: Sampling,
    controls: &Controls,
) -> Result<Job, InferenceError> {
    let (kind, prompt) = match input {
        Input::Chat(msgs) => (ReceiptKind::Chat, model.render_chat(msgs)),
        Input::Completion(text) => (ReceiptKind::Completion, text.clone()),
    };
    let prompt_ids = model.tokenize(&prompt)?;
    Ok(Job {
        kind,
        prompt,
        request: GenerateRequest {
            prompt_ids,
            sampling,
            controls: controls.clone(),
        },
    })
}

/// Builds and signs the receipt for a finished generation.
pub fn receipt_for(
    model: &ChatModel,
    key: &SigningKey,
    job: &Job,
    g: &Generation,
    created_at: u64,
) -> Result<Receipt, InferenceError> {
    let controls = &job.request.controls;
    let output = output_text(model.detokenize(&g.tokens)?, &controls.stop);
    let chunks = fingerprint::commit(&g.hidden, model.hidden_dim());
    let mut r = Receipt {
        version: Receipt::version_for(controls, &job.request.sampling),
        kind: job.kind,
        model: model.id(),
        model_name: model.name().to_string(),
        tokenizer: model.tokenizer_id(),
        engine: vouch_inference::ENGINE_NAME.to_string(),
        input_hash: Receipt::hash_input(job.kind, &job.prompt),
        prompt: job.prompt.clone(),
        prompt_tokens: job.request.prompt_ids.len() as u32,
        output_hash: Receipt::hash_output(&output, &g.tokens),
        output,
        output_tokens: g.tokens.clone(),
        embedding: None,
        finish_reason: g.finish,
        sampling: job.request.sampling,
        stop: controls.stop.clone(),
        constraint: controls.constraint.clone(),
        fingerprint: Fingerprint {
            scheme: fingerprint::SCHEME.to_string(),
            top_k: fingerprint::TOP_K as u32,
            chunk_tokens: fingerprint::CHUNK_TOKENS as u32,
            chunks,
        },
        trace: (g.trace.positions() > 0).then(|| crate::spot::commitment(&g.trace)),
        created_at,
        provider: Hash32::default(),
        signature: String::new(),
        inclusion: None,
    };
    vouch_crypto::sign_receipt(key, &mut r);
    Ok(r)
}

/// The receipt's output text: the decoded tokens, cut before the first stop string.
pub fn output_text(mut decoded: String, stop: &[String]) -> String {
    if let Some(k) = vouch_types::stop::cut(&decoded, stop) {
        decoded.truncate(k);
    }
    decoded
}

/// Runs one generation with streaming and returns its signed receipt.
pub fn generate(
    model: &mut ChatModel,
    key: &SigningKey,
    input: &Input,
    sampling: Sampling,
    controls: &Controls,
    created_at: u64,
    on_token: &mut dyn FnMut(u32),
) -> Result<Receipt, InferenceError> {
    let job = prepare(model, input, sampling, controls)?;
    let g = model.generate(&job.request, on_token)?;
    receipt_for(model, key, &job, &g, created_at)
}

/// Runs several generations in one batch.
pub fn generate_batch(
    model: &mut ChatModel,
    key: &SigningKey,
    jobs: &[Job],
    kv_cache: bool,
    created_at: u64,
) -> Result<Vec<Receipt>, InferenceError> {
    let reqs: Vec<GenerateRequest> = jobs.iter().map(|j| j.request.clone()).collect();
    let gens = model.generate_batch(&reqs, kv_cache, &mut |_, _| {})?;
    jobs.iter()
        .zip(&gens)
        .map(|(j, g)| receipt_for(model, key, j, g, created_at))
        .collect()
}

/// Embeds `text` and returns the signed receipt carrying the vector.
pub fn embed(
    model: &Embedder,
    key: &SigningKey,
    text: &str,
    created_at: u64,
) -> Result<Receipt, InferenceError> {
    let values = model.embed(text)?;
    let mut r = Receipt {
        version: PLAIN_RECEIPT_VERSION,
        kind: ReceiptKind::Embedding,
        model: model.id(),
        model_name: model.name().to_string(),
        tokenizer: model.tokenizer_id(),
        engine: vouch_inference::ENGINE_NAME.to_string(),
        input_hash: Receipt::hash_input(ReceiptKind::Embedding, text),
        prompt: text.to_string(),
        prompt_tokens: model.count_tokens(text)? as u32,
        output: String::new(),
        output_tokens: Vec::new(),
        output_hash: Receipt::hash_embedding(&values),
        embedding: Some(EmbeddingOutput {
            dim: values.len() as u32,
            values,
        }),
        finish_reason: FinishReason::None,
        sampling: Sampling::greedy(0),
        stop: Vec::new(),
        constraint: None,
        fingerprint: Fingerprint::empty("none"),
        trace: None,
        created_at,
        provider: Hash32::default(),
        signature: String::new(),
        inclusion: None,
    };
    vouch_crypto::sign_receipt(key, &mut r);
    Ok(r)
}
