//! Tokenizers: a byte-level BPE rebuilt from GGUF metadata, and HF `tokenizer.json` files.

use crate::InferenceError;
use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};
use vouch_types::Hash32;

/// GGUF token type for control tokens (`<|im_start|>` and friends).
const TOKEN_TYPE_CONTROL: i32 = 3;

/// A tokenizer plus its content id.
pub struct TextTokenizer {
    inner: Tokenizer,
    id: Hash32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer({})", self.id.short())
    }
}

fn md_strings(ct: &gguf_file::Content, key: &str) -> Result<Vec<String>, InferenceError> {
    let v = ct
        .metadata
        .get(key)
        .ok_or_else(|| InferenceError::Format(format!("GGUF metadata has no {key}")))?;
    let arr = v
        .to_vec()
        .map_err(|e| InferenceError::Format(format!("{key}: {e}")))?;
    arr.iter()
        .map(|x| {
            x.to_string()
                .cloned()
                .map_err(|e| InferenceError::Format(format!("{key}: {e}")))
        })
        .collect()
}

impl TextTokenizer {
    /// Rebuilds the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`).
    /// Supports the byte-level BPE (`gpt2` model) with the `smollm` pre-tokenizer:
    /// digits split one by one, then GPT-2's byte-level regex.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, InferenceError> {
        let model = ct
            .metadata
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        if model != "gpt2" {
            return Err(InferenceError::Unsupported(format!(
                "GGUF tokenizer model {model:?} (only byte-level BPE \"gpt2\" is supported)"
            )));
        }
        let pre = ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        let tokens = md_strings(ct, "tokenizer.ggml.tokens")?;
        let merges_raw = md_strings(ct, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| InferenceError::Format(e.to_string()))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merges = Vec::with_capacity(merges_raw.len());
        for m in &merges_raw {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| InferenceError::Format(format!("bad merge {m:?}")))?;
            merges.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| InferenceError::Format(format!("BPE: {e}")))?;
        let mut tok = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tok: PreTokenizerWrapper = match pre.as_str() {
            "smollm" => Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(byte_level),
            ])
            .into(),
            "gpt2" | "" => byte_level.into(),
            other => {
                return Err(InferenceError::Unsupported(format!(
                    "GGUF pre-tokenizer {other:?}"
                )))
            }
        };
        tok.with_pre_tokenizer(Some(pre_tok));
        tok.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter())
            .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tok.add_special_tokens(&specials);

        // Content id: every input that decides tokenization.
        let mut h = blake3::Hasher::new_derive_key("vouch 2026 tokenizer gguf v1");
        h.update(model.as_bytes());
        h.update(&[0]);
        h.update(pre.as_bytes());
        for (t, ty) in tokens.iter().zip(types.iter()) {
            h.update(&(t.len() as u32).to_le_bytes());
            h.update(t.as_bytes());
            h.update(&ty.to_le_bytes());
        }
        for m in &merges_raw {
            h.update(&(m.len() as u32).to_le_bytes());
            h.update(m.as_bytes());
        }
        Ok(Self {
            inner: tok,
            id: Hash32(*h.finalize().as_bytes()),
        })
    }

    /// Loads a HF `tokenizer.json`, with padding and truncation disabled.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, InferenceError> {
        let mut inner = Tokenizer::from_bytes(bytes)
            .map_err(|e| InferenceError::Format(format!("tokenizer.json: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| InferenceError::Format(e.to_string()))?;
        Ok(Self {
            inner,
            id: Hash32::digest("vouch 2026 tokenizer json v1", &[bytes]),
        })
    }

    pub fn id(&self) -> Hash32 {
        self.id
    }

    /// Token ids for `text`. Special tokens written in the text (such as `<|im_start|>`)
    /// become their ids; no BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encoding with the tokenizer's own post-processing (BERT adds [CLS]/[SEP]).
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text for `ids`, keeping special tokens out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, InferenceError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer in Hugging Face's `tokenizer.json` form.
    pub fn to_json(&self) -> String {
        self.inner.to_string(false).unwrap_or_default()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
