//! Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2): mean pooling over the
//! tokens, then L2 normalization.

use crate::models::{self, ModelKind, ModelSpec};
use crate::tokenizer::TextTokenizer;
use crate::InferenceError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use vouch_types::{ContentId, Hash32};

/// Longest input in tokens (BERT's position table).
pub const MAX_TOKENS: usize = 512;

pub struct Embedder {
    model: BertModel,
    tokenizer: TextTokenizer,
    id: ContentId,
    name: &'static str,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embedder({}, dim {})", self.id.short(), self.dim)
    }
}

impl Embedder {
    /// Loads a catalogue model after checking its files against the pinned hashes.
    pub fn load(spec: &ModelSpec, home: &Path) -> Result<Self, InferenceError> {
        if spec.kind != ModelKind::BertEmbedding {
            return Err(InferenceError::InvalidRequest(format!(
                "{} is not an embedding model",
                spec.name
            )));
        }
        models::check_files(spec, home)?;
        let read = |i: usize| {
            let p = spec.path(home, i);
            std::fs::read(&p).map_err(|e| InferenceError::Io { path: p, source: e })
        };
        let tokenizer = TextTokenizer::from_json_bytes(&read(1)?)?;
        let config: Config = serde_json::from_slice(&read(2)?)
            .map_err(|e| InferenceError::Format(format!("config.json: {e}")))?;
        let weights = spec.path(home, 0);
        // Safety of mmap is not needed: the file is read fully into memory.
        let bytes = std::fs::read(&weights).map_err(|e| InferenceError::Io {
            path: weights.clone(),
            source: e,
        })?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)?;
        let model = BertModel::load(vb, &config)?;
        let hashes: Vec<Hash32> = spec
            .files
            .iter()
            .map(|f| f.blake3.parse().expect("pinned"))
            .collect();
        Ok(Self {
            model,
            tokenizer,
            id: models::model_id_from_file_hashes(&hashes),
            name: spec.name,
            dim: config.hidden_size,
        })
    }

    pub fn id(&self) -> ContentId {
        self.id
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn tokenizer_id(&self) -> Hash32 {
        self.tokenizer.id()
    }
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of tokens `text` takes, including [CLS] and [SEP].
    pub fn count_tokens(&self, text: &str) -> Result<usize, InferenceError> {
        Ok(self.tokenizer.encode_with_specials(text)?.len())
    }

    /// Unit-length embedding of `text`.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, InferenceError> {
        let ids = self.tokenizer.encode_with_specials(text)?;
        if ids.len() > MAX_TOKENS {
            return Err(InferenceError::InvalidRequest(format!(
                "input is {} tokens, the embedding model takes at most {MAX_TOKENS}",
                ids.len()
            )));
        }
        let n = ids.len();
        let input = Tensor::from_vec(ids, (1, n), &Device::Cpu)?;
        let types = input.zeros_like()?;
        let out = self.model.forward(&input, &types, None)?; // [1, n, dim]
        let pooled = (out.sum(1)? / n as f64)?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = pooled.broadcast_div(&norm)?;
        Ok(unit.squeeze(0)?.to_vec1::<f32>()?)
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
