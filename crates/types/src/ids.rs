//! 32-byte hashes and content ids, written as lowercase hex.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

/// The content id of a model, tokenizer or data item: a domain-separated BLAKE3 hash.
pub type ContentId = Hash32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdParseError {
    #[error("expected 64 hex characters, got {0}")]
    Length(usize),
    #[error("not hexadecimal: {0}")]
    Hex(String),
}

impl Hash32 {
    /// Domain-separated hash: `BLAKE3(derive_key(domain), parts...)` with each part
    /// length-prefixed, so that concatenation ambiguity is impossible.
    pub fn digest(domain: &str, parts: &[&[u8]]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(domain);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Hash32(*h.finalize().as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.short())
    }
}

impl FromStr for Hash32 {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(IdParseError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| IdParseError::Hex(e.to_string()))?;
        Ok(Hash32(out))
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash32::digest("test", &[b"a", b"b"]);
        assert_eq!(h.to_hex().parse::<Hash32>().unwrap(), h);
        assert_eq!("ab".parse::<Hash32>(), Err(IdParseError::Length(2)));
        assert!(matches!(
            "z".repeat(64).parse::<Hash32>(),
            Err(IdParseError::Hex(_))
        ));
    }

    #[test]
    fn digest_is_domain_separated_and_unambiguous() {
        assert_ne!(Hash32::digest("a", &[b"x"]), Hash32::digest("b", &[b"x"]));
        assert_ne!(
            Hash32::digest("a", &[b"ab", b"c"]),
            Hash32::digest("a", &[b"a", b"bc"])
        );
    }
}
