//! Vouch data types: ids, sampling parameters, fingerprints, receipts, canonical encoding.
//!
//! Everything here is pure data. Hashing of ids uses BLAKE3 with a domain string so that
//! a hash of one kind of object can never be confused with a hash of another.

pub mod encoding;
pub mod ids;
pub mod json_u64;
pub mod receipt;
pub mod stand_in;
pub mod tx;

pub use encoding::{DecodeError, Decoder, Encoder};
pub use ids::{ContentId, Hash32, IdParseError};
pub use receipt::{stop, Binding, Inclusion, InclusionProof, MAX_PENALTY};
pub use receipt::{
    ChunkProof, EmbeddingOutput, Fingerprint, FinishReason, Receipt, ReceiptKind, Sampling,
    SignedBody, TraceCommitment, MIN_RECEIPT_VERSION, PLAIN_RECEIPT_VERSION, RECEIPT_VERSION,
};
pub use receipt::{Constraint, ConstraintKind, Controls, MAX_CONSTRAINT_BYTES};
pub use tx::{Action, Address, Block, Certificate, Header, Tx, Vote};
