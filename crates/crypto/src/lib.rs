//! Vouch cryptography: ed25519 keys, domain-separated signing, BLAKE3 hashing, Merkle trees.
//!
//! Pure: randomness for key generation comes in as a parameter.

use ed25519_dalek::Signer;
use rand_core::{CryptoRng, RngCore};
use vouch_types::{Hash32, Receipt};

pub mod merkle;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("public key is not a valid ed25519 point")]
    BadPublicKey,
    #[error("signature is not 64 bytes of hex")]
    MalformedSignature,
    #[error("signature does not match the signed data and public key")]
    BadSignature,
    #[error("secret key file must hold 32 bytes, found {0}")]
    BadSecretKey(usize),
}

/// A provider's (or any account's) signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public={})", self.public().short())
    }
}

impl SigningKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(ed25519_dalek::SigningKey::generate(rng))
    }
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| CryptoError::BadSecretKey(b.len()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&arr)))
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn public(&self) -> Hash32 {
        Hash32(self.0.verifying_key().to_bytes())
    }
    /// Signs `msg` under `domain`. The domain is hashed in front of the message so a
    /// signature made for one purpose can never be replayed for another.
    pub fn sign(&self, domain: &str, msg: &[u8]) -> [u8; 64] {
        self.0.sign(&prehash(domain, msg)).to_bytes()
    }
}

fn prehash(domain: &str, msg: &[u8]) -> [u8; 32] {
    *Hash32::digest(domain, &[msg]).as_bytes()
}

/// Verifies a domain-separated signature made by [`SigningKey::sign`].
pub fn verify(
    public: &Hash32,
    domain: &str,
    msg: &[u8],
    sig: &[u8; 64],
) -> Result<(), CryptoError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public.as_bytes())
        .map_err(|_| CryptoError::BadPublicKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    key.verify_strict(&prehash(domain, msg), &sig)
        .map_err(|_| CryptoError::BadSignature)
}

/// Verifies a plain ed25519 signature over `msg` (no domain prehash): the BFT engine's
/// votes, which carry their own namespace inside the message.
pub fn verify_raw(public: &Hash32, msg: &[u8], sig: &[u8; 64]) -> Result<(), CryptoError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public.as_bytes())
        .map_err(|_| CryptoError::BadPublicKey)?;
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .map_err(|_| CryptoError::BadSignature)
}

/// Fills in `receipt.provider` and `receipt.signature`.
pub fn sign_receipt(key: &SigningKey, receipt: &mut Receipt) {
    receipt.provider = key.public();
    let body = receipt.signed_body();
    let sig = key.sign(vouch_types::receipt::domain::RECEIPT_SIGNATURE, &body.0);
    receipt.signature = hex::encode(sig);
}

/// Checks the provider's signature on a receipt.
pub fn verify_receipt_signature(receipt: &Receipt) -> Result<(), CryptoError> {
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&receipt.signature, &mut sig)
        .map_err(|_| CryptoError::MalformedSignature)?;
    verify(
        &receipt.provider,
        vouch_types::receipt::domain::RECEIPT_SIGNATURE,
        &receipt.signed_body().0,
        &sig,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn sign_verify_and_domain_separation() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let k = SigningKey::generate(&mut rng);
        let sig = k.sign("a", b"msg");
        assert_eq!(verify(&k.public(), "a", b"msg", &sig), Ok(()));
        assert_eq!(
            verify(&k.public(), "b", b"msg", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            verify(&k.public(), "a", b"msh", &sig),
            Err(CryptoError::BadSignature)
        );
        let other = SigningKey::generate(&mut rng);
        assert_eq!(
            verify(&other.public(), "a", b"msg", &sig),
            Err(CryptoError::BadSignature)
        );
        let restored = SigningKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(restored.public(), k.public());
        assert_eq!(
            SigningKey::from_bytes(&[0u8; 5]).unwrap_err(),
            CryptoError::BadSecretKey(5)
        );
    }
}
