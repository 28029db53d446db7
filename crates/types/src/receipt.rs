//! The receipt: what a provider hands back with every answer, and what anyone can check.
//!
//! The JSON form is documented in `docs/receipt.md`. The part that is signed is not the
//! JSON but the canonical binary encoding from [`Receipt::signed_body`], so whitespace,
//! key order or number formatting in the JSON can never change what was signed.

use crate::encoding::Encoder;
use crate::ids::{ContentId, Hash32};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version new receipts are written with. Version 2 writes `sampling.seed` as a
/// decimal string in JSON (a JavaScript reader rounds numbers above 2^53); the signed body
/// is encoded as in version 1 (with its version number in it), so version 1 receipts keep
/// their ids and signatures and still verify.
pub const RECEIPT_VERSION: u32 = 3;
/// The version written when a receipt uses none of version 3's decoding controls (stop
/// strings, presence and frequency penalties, an output constraint): such receipts are
/// encoded exactly as in
/// version 2, so verifiers of version 2 still read them.
pub const PLAIN_RECEIPT_VERSION: u32 = 2;
/// The oldest version a verifier accepts.
pub const MIN_RECEIPT_VERSION: u32 = 1;

/// Domain strings. Changing one is a format change.
pub mod domain {
    pub const INPUT: &str = "vouch 2026 input v1";
    pub const OUTPUT: &str = "vouch 2026 output v1";
    pub const EMBEDDING: &str = "vouch 2026 embedding v1";
    pub const FINGERPRINT: &str = "vouch 2026 fingerprint v1";
    pub const RECEIPT_SIGNATURE: &str = "vouch 2026 receipt signature v1";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// Chat completion: `prompt` is the chat template rendered around the messages.
    Chat,
    /// Raw text completion: `prompt` is fed to the tokenizer as is.
    Completion,
    /// Sentence embedding: `prompt` is the input text, `embedding` the output.
    Embedding,
}

impl ReceiptKind {
    /// Lowercase name, as in the JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Chat => "chat",
            ReceiptKind::Completion => "completion",
            ReceiptKind::Embedding => "embedding",
        }
    }

    fn tag(self) -> u8 {
        match self {
            ReceiptKind::Chat => 1,
            ReceiptKind::Completion => 2,
            ReceiptKind::Embedding => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token (included in `output_tokens`).
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// Not a generation (embeddings).
    None,
}

impl FinishReason {
    fn tag(self) -> u8 {
        match self {
            FinishReason::Stop => 1,
            FinishReason::Length => 2,
            FinishReason::None => 3,
        }
    }
}

/// How tokens were chosen. `temperature == 0` means greedy (the seed is then irrelevant but
/// still signed).
///
/// The penalties (version 3) lower the logit of every token already generated before the
/// rule picks: by `presence_penalty` once it has appeared and by `frequency_penalty` per
/// appearance (OpenAI's definition, over the output only). Zero, they are absent from the
/// JSON and from the signed body.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    /// A decimal string in JSON (read from a number too, as version 1 wrote it).
    #[serde(with = "crate::json_u64")]
    pub seed: u64,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub presence_penalty: f32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frequency_penalty: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// Largest absolute penalty (as OpenAI's API).
pub const MAX_PENALTY: f32 = 2.0;

impl Sampling {
    pub fn greedy(max_tokens: u32) -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            max_tokens,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
    /// Whether a penalty changes the logits.
    pub fn has_penalties(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}

/// Stop strings (version 3): generation ends at the first output token after which the
/// decoded output contains one of them; the output text is cut before it. See
/// [`stop_cut`].
pub mod stop {
    /// Most stop strings per request (as OpenAI's API).
    pub const MAX_STOPS: usize = 4;
    /// Longest stop string, bytes.
    pub const MAX_STOP_BYTES: usize = 64;

    /// Where the output text ends under `stops`: the byte offset of the earliest
    /// occurrence of any stop string in `text`, or `None` if none occurs.
    pub fn cut(text: &str, stops: &[String]) -> Option<usize> {
        stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// How many bytes at the end of `text` may still become the start of a stop string:
    /// a stream must hold them back until the next token decides.
    pub fn pending(text: &str, stops: &[String]) -> usize {
        let mut held = 0;
        for s in stops {
            for k in (1..s.len()).rev() {
                if k <= text.len()
                    && text.is_char_boundary(text.len() - k)
                    && s.is_char_boundary(k)
                    && text.ends_with(&s[..k])
                {
                    held = held.max(k);
                    break;
                }
            }
        }
        held
    }

    /// Checks a request's stop list: at most [`MAX_STOPS`] non-empty strings of at most
    /// [`MAX_STOP_BYTES`] bytes.
    pub fn check(stops: &[String]) -> Result<(), String> {
        if stops.len() > MAX_STOPS {
            return Err(format!("at most {MAX_STOPS} stop strings"));
        }
        if stops
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return Err(format!(
                "each stop string must be 1 to {MAX_STOP_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// An output constraint (version 3): a grammar every output token must fit. At each
/// position the sampling rule picks only among the tokens the grammar allows after the
/// output so far (the token mask), and the chat end token only where the grammar may end.
/// The mask is computed by `llguidance` (pinned version, see `docs/receipt.md`) from
/// `source` and the tokenizer, so a verifier recomputes it from the receipt alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub kind: ConstraintKind,
    /// The grammar: a JSON Schema document (`json_schema`) or a Lark grammar (`lark`),
    /// exactly as compiled (signed byte for byte).
    pub source: String,
}

/// How [`Constraint::source`] is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintKind {
    /// A JSON Schema document: the output is one JSON value it accepts (OpenAI's
    /// `response_format` `json_object` is the schema `{"type": "object"}`).
    JsonSchema,
    /// A Lark grammar in llguidance's dialect (tool calls: the call syntax with each
    /// tool's argument schema inside).
    Lark,
}

impl ConstraintKind {
    pub fn tag(self) -> u8 {
        match self {
            ConstraintKind::JsonSchema => 1,
            ConstraintKind::Lark => 2,
        }
    }
}

/// Longest constraint source, bytes.
pub const MAX_CONSTRAINT_BYTES: usize = 32 * 1024;

impl Constraint {
    pub fn json_schema(source: impl Into<String>) -> Self {
        Self {
            kind: ConstraintKind::JsonSchema,
            source: source.into(),
        }
    }
    /// OpenAI's JSON mode: any JSON object.
    pub fn json_object() -> Self {
        Self::json_schema(r#"{"type":"object"}"#)
    }
    pub fn lark(source: impl Into<String>) -> Self {
        Self {
            kind: ConstraintKind::Lark,
            source: source.into(),
        }
    }
    /// Bounds a verifier checks without compiling: non-empty and at most
    /// [`MAX_CONSTRAINT_BYTES`] (whether it compiles is the engine's check).
    pub fn check(&self) -> Result<(), String> {
        if self.source.is_empty() || self.source.len() > MAX_CONSTRAINT_BYTES {
            return Err(format!(
                "a constraint must be 1 to {MAX_CONSTRAINT_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// What a request asks of decoding beyond the sampling numbers: stop strings and an
/// output constraint (both signed into version 3 receipts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    pub stop: Vec<String>,
    pub constraint: Option<Constraint>,
}

impl Controls {
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.constraint.is_none()
    }
    /// Stop list and constraint bounds.
    pub fn check(&self) -> Result<(), String> {
        stop::check(&self.stop)?;
        if let Some(c) = &self.constraint {
            c.check()?;
        }
        Ok(())
    }
}

/// One chunk of the activation fingerprint: an injective modulus and the Newton
/// coefficients of a polynomial over GF(65497) through the top-k hidden-state values.
/// Serialized as one hex string: 2 bytes modulus + 2 bytes per coefficient (LE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProof {
    pub modulus: u16,
    pub coeffs: Vec<u16>,
}

impl ChunkProof {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + 2 * self.coeffs.len());
        v.extend_from_slice(&self.modulus.to_le_bytes());
        for c in &self.coeffs {
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < 2 || !b.len().is_multiple_of(2) {
            return None;
        }
        let words: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(Self {
            modulus: words[0],
            coeffs: words[1..].to_vec(),
        })
    }
}

impl Serialize for ChunkProof {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for ChunkProof {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let b = hex::decode(&s).map_err(serde::de::Error::custom)?;
        ChunkProof::from_bytes(&b)
            .ok_or_else(|| serde::de::Error::custom("chunk proof must be an even number of bytes"))
    }
}

/// Commitment to the final hidden states. `chunks[0]` covers the prompt positions; each
/// further chunk covers `chunk_tokens` generated positions. See `docs/verification.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub scheme: String,
    pub top_k: u32,
    pub chunk_tokens: u32,
    pub chunks: Vec<ChunkProof>,
}

impl Fingerprint {
    pub fn empty(scheme: &str) -> Self {
        Self {
            scheme: scheme.to_string(),
            top_k: 0,
            chunk_tokens: 0,
            chunks: Vec::new(),
        }
    }
    pub fn hash(&self) -> Hash32 {
        let mut e = Encoder::new();
        e.str(&self.scheme).u32(self.top_k).u32(self.chunk_tokens);
        e.u32(self.chunks.len() as u32);
        for c in &self.chunks {
            e.bytes(&c.to_bytes());
        }
        Hash32::digest(domain::FINGERPRINT, &[e.as_slice()])
    }
    /// Bytes of proof material (what TOPLOC's 258 B per 32 tokens compares to).
    pub fn proof_bytes(&self) -> usize {
        self.chunks.iter().map(|c| 2 + 2 * c.coeffs.len()).sum()
    }
}

/// Commitment to a generation's execution trace (residual stream and key/value rows per
/// layer and position), which spot-check audits open at random points. See
/// `docs/verification.md` ("Spot checks").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceCommitment {
    pub scheme: String,
    /// Decoder layers of the model.
    pub layers: u32,
    /// Positions covered: the prompt and every output token but the last.
    pub positions: u32,
    pub root: Hash32,
}

/// An embedding result carried in a receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingOutput {
    pub dim: u32,
    pub values: Vec<f32>,
}

/// A provider's signed statement that `model` produced `output` from `prompt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u32,
    pub kind: ReceiptKind,
    /// Content id of the model (weights, tokenizer and config hashed in).
    pub model: ContentId,
    /// Human name the provider served it under (signed, not trusted for identity).
    pub model_name: String,
    /// Content id of the tokenizer.
    pub tokenizer: ContentId,
    /// Engine and version that produced the answer (informational, signed).
    pub engine: String,
    /// Exact text given to the tokenizer.
    pub prompt: String,
    pub input_hash: Hash32,
    pub prompt_tokens: u32,
    /// Generated text (empty for embeddings). With stop strings, the decoding of
    /// `output_tokens` cut before the first stop string.
    pub output: String,
    pub output_tokens: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingOutput>,
    pub output_hash: Hash32,
    pub finish_reason: FinishReason,
    pub sampling: Sampling,
    /// Stop strings the request named (version 3; absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The grammar the output was constrained to (version 3; absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    pub fingerprint: Fingerprint,
    /// Present when the provider committed to its execution trace: the receipt can then
    /// be audited by spot checks as well as by re-execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceCommitment>,
    /// Unix seconds, supplied by the caller's clock.
    pub created_at: u64,
    /// Provider's ed25519 public key, hex.
    pub provider: Hash32,
    /// ed25519 signature over [`Receipt::signed_body`], hex (64 bytes).
    pub signature: String,
    /// Where the ledger committed this receipt (not signed by the provider: it is checked
    /// against the block header and the header's finality certificate instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<Inclusion>,
}

/// A Merkle path from a receipt id to a block's receipt root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub leaves: u64,
    pub path: Vec<Hash32>,
}

/// Proof that a receipt was committed on the ledger: the job it answered, the block
/// header, the Merkle path to the header's receipt root, the header's certificate, and
/// (from nodes of this version on) the transactions that bind the receipt to its job and
/// signer. See `docs/receipt.md` ("What a verdict proves").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    /// The job, as the node that built the proof names it. Covered by nothing but
    /// [`Inclusion::binding`]: without a binding it is a claim, not a fact.
    pub job: Hash32,
    pub header: crate::tx::Header,
    pub proof: InclusionProof,
    pub certificate: crate::tx::Certificate,
    /// Absent in proofs made before binding existed; such a receipt verifies as
    /// "unbound" (committed, but signer and job not proven), never as verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// What ties a committed receipt id to the job it answered and to the key that signed it,
/// using only roots the certified header already has.
///
/// - `commit_tx`: the `CommitResult` transaction that committed the receipt (canonical
///   encoding, hex) and `commit_proof`, the Merkle path from its id to the header's
///   `tx_root` (the tree's leaf count must be the header's `tx_count`). The ledger accepts
///   a `CommitResult` only from the job's provider, so its sender is the provider of the
///   job it names.
/// - `job_tx`: the `SubmitJob` transaction that opened the job (hex). A job id is the id
///   of the transaction that opened it (hash of the chain id and the transaction body),
///   so no path is needed: the id fixes the body, and the body names the model, the
///   provider and the input hash the ledger checked when it escrowed the fee (the model
///   registered, the provider registered and serving it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub commit_tx: String,
    pub commit_proof: InclusionProof,
    pub job_tx: String,
}

/// The canonical bytes a provider signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBody(pub Vec<u8>);

impl Receipt {
    /// Hash of the exact prompt text.
    pub fn hash_input(kind: ReceiptKind, prompt: &str) -> Hash32 {
        Hash32::digest(domain::INPUT, &[&[kind.tag()], prompt.as_bytes()])
    }

    /// Hash of the generated text together with its token ids.
    pub fn hash_output(text: &str, tokens: &[u32]) -> Hash32 {
        let ids: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        Hash32::digest(domain::OUTPUT, &[text.as_bytes(), &ids])
    }

    /// Hash of an embedding by the exact bits of its values.
    pub fn hash_embedding(values: &[f32]) -> Hash32 {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        Hash32::digest(domain::EMBEDDING, &[&bytes])
    }

    /// The canonical encoding of every field except the signature. The prompt and output
    /// themselves are not in it, only their hashes: a ledger can store the signed body
    /// without the private text.
    pub fn signed_body(&self) -> SignedBody {
        let mut e = Encoder::new();
        e.u32(self.version)
            .u8(self.kind.tag())
            .fixed(self.model.as_bytes())
            .str(&self.model_name)
            .fixed(self.tokenizer.as_bytes())
            .str(&self.engine)
            .fixed(self.input_hash.as_bytes())
            .u32(self.prompt_tokens)
            .fixed(self.output_hash.as_bytes())
            .u32(self.output_tokens.len() as u32)
            .u8(self.finish_reason.tag())
            .f32(self.sampling.temperature)
            .f32(self.sampling.top_p)
            .u64(self.sampling.seed)
            .u32(self.sampling.max_tokens)
            .fixed(self.fingerprint.hash().as_bytes())
            .u64(self.created_at)
            .fixed(self.provider.as_bytes());
        // Appended only when present, so receipts without a trace keep their ids.
        if let Some(t) = &self.trace {
            e.u8(1)
                .str(&t.scheme)
                .u32(t.layers)
                .u32(t.positions)
                .fixed(t.root.as_bytes());
        }
        // Version 3's decoding controls, appended only when used (so version 2 receipts
        // and plain version 3 ones encode as before).
        if self.uses_decoding_controls() {
            e.u8(2)
                .f32(self.sampling.presence_penalty)
                .f32(self.sampling.frequency_penalty)
                .u32(self.stop.len() as u32);
            for s in &self.stop {
                e.str(s);
            }
            match &self.constraint {
                None => {
                    e.u8(0);
                }
                Some(c) => {
                    e.u8(c.kind.tag()).str(&c.source);
                }
            }
        }
        SignedBody(e.finish())
    }

    /// Whether the receipt uses a decoding control of version 3 (stop strings,
    /// penalties, a constraint); such a receipt must say version 3 or later.
    pub fn uses_decoding_controls(&self) -> bool {
        !self.stop.is_empty() || self.constraint.is_some() || self.sampling.has_penalties()
    }

    /// The stop strings and constraint, as a request names them.
    pub fn controls(&self) -> Controls {
        Controls {
            stop: self.stop.clone(),
            constraint: self.constraint.clone(),
        }
    }

    /// The version a new receipt with these fields is written with.
    pub fn version_for(controls: &Controls, sampling: &Sampling) -> u32 {
        if controls.is_empty() && !sampling.has_penalties() {
            PLAIN_RECEIPT_VERSION
        } else {
            RECEIPT_VERSION
        }
    }

    /// The receipt's id: the hash of its signed body.
    pub fn id(&self) -> Hash32 {
        Hash32::digest("vouch 2026 receipt id v1", &[&self.signed_body().0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_proof_round_trips_through_json() {
        let c = ChunkProof {
            modulus: 65497,
            coeffs: vec![1, 2, 65000],
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ChunkProof>(&s).unwrap(), c);
        assert!(serde_json::from_str::<ChunkProof>("\"abc\"").is_err());
    }

    #[test]
    fn seeds_above_2_pow_53_are_strings_in_json_and_numbers_still_read() {
        let s = Sampling {
            temperature: 0.7,
            top_p: 0.9,
            seed: u64::MAX - 1,
            max_tokens: 8,
            ..Sampling::greedy(8)
        };
        let j = serde_json::to_value(s).unwrap();
        assert_eq!(j["seed"], "18446744073709551614");
        assert_eq!(serde_json::from_value::<Sampling>(j).unwrap(), s);
        // Version 1 wrote a number; serde reads it exactly.
        let old = r#"{"temperature":0.7,"top_p":0.9,"seed":18446744073709551614,"max_tokens":8}"#;
        assert_eq!(serde_json::from_str::<Sampling>(old).unwrap(), s);
    }

    #[test]
    fn stop_strings_cut_at_the_earliest_and_hold_back_partial_matches() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(stop::cut("abc\n\nxEND", &stops), Some(3));
        assert_eq!(stop::cut("abcEND\n\n", &stops), Some(3));
        assert_eq!(stop::cut("abc", &stops), None);
        assert_eq!(stop::pending("abcEN", &stops), 2);
        assert_eq!(stop::pending("abc\n", &stops), 1);
        assert_eq!(stop::pending("abc", &stops), 0);
        // Multi-byte text and stops never split a character.
        let s = vec!["é!".to_string()];
        assert_eq!(stop::pending("caf\u{e9}", &s), 2);
        assert!(stop::check(&vec!["a".to_string(); 5]).is_err());
        assert!(stop::check(&["".into()]).is_err());
        assert!(stop::check(&["x".repeat(65)]).is_err());
        assert!(stop::check(&["x".repeat(64)]).is_ok());
    }

    #[test]
    fn penalties_are_absent_from_json_when_zero_and_read_when_missing() {
        let g = Sampling::greedy(4);
        let j = serde_json::to_value(g).unwrap();
        assert!(j.get("presence_penalty").is_none());
        let p = Sampling {
            presence_penalty: 0.5,
            ..g
        };
        let j = serde_json::to_value(p).unwrap();
        assert_eq!(j["presence_penalty"], 0.5);
        assert_eq!(serde_json::from_value::<Sampling>(j).unwrap(), p);
    }

    #[test]
    fn output_hash_binds_text_and_tokens() {
        let a = Receipt::hash_output("hi", &[1, 2]);
        assert_ne!(a, Receipt::hash_output("hi", &[1, 3]));
        assert_ne!(a, Receipt::hash_output("ho", &[1, 2]));
    }
}
