//! Encryption at rest of the custodial agent-wallet secrets the gateway holds.
//!
//! The key is a separate file, `<node data>/keystore.key` (32 random bytes in hex, mode
//! 0600, created on first start), never stored in the ledger database: a copy of
//! `ledger.redb` alone (a backup, a support bundle, a stolen disk image without the key
//! file) reveals no wallet. Each secret is sealed with XChaCha20-Poly1305 under a random
//! nonce, with the wallet's address as associated data, so a sealed secret moved onto
//! another key record does not open. Records written before encryption (plain hex) are
//! sealed when the node starts ([`Keystore::migrate`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use vouch_crypto::SigningKey;
use vouch_types::Hash32;

/// Prefix of a sealed secret: `xc1:<nonce hex>:<ciphertext hex>`.
const SEALED: &str = "xc1:";
const AAD_DOMAIN: &[u8] = b"vouch 2026 agent wallet secret v1";

pub struct Keystore {
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keystore({})", self.path.display())
    }
}

fn aad(wallet: &Hash32) -> Vec<u8> {
    [AAD_DOMAIN, wallet.as_bytes()].concat()
}

impl Keystore {
    /// Reads `<dir>/keystore.key`, creating it (0600) with a fresh random key if absent.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join("keystore.key");
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .with_context(|| format!("{}: not hex", path.display()))?;
                if bytes.len() != 32 {
                    bail!(
                        "{}: expected 32 bytes, found {}",
                        path.display(),
                        bytes.len()
                    );
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "keystore key is readable by others: setting 0600");
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                    }
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                let mut f = o
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                f.write_all(hex::encode(key).as_bytes())?;
                f.sync_all()?;
                key.to_vec()
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("keystore key has the wrong length"))?;
        Ok(Keystore { cipher, path })
    }

    /// Seals the secret of `wallet`.
    pub fn seal(&self, wallet: &Hash32, secret: &[u8; 32]) -> String {
        let mut nonce = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: &aad(wallet),
                },
            )
            .expect("encrypting 32 bytes cannot fail");
        format!("{SEALED}{}:{}", hex::encode(nonce), hex::encode(ct))
    }

    /// Whether a stored secret is sealed (not legacy plain hex).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED)
    }

    /// Opens a sealed secret and checks it is the key of `wallet`.
    pub fn open(&self, wallet: &Hash32, stored: &str) -> Result<SigningKey, String> {
        let rest = stored
            .strip_prefix(SEALED)
            .ok_or("stored wallet key is not sealed")?;
        let (n, ct) = rest
            .split_once(':')
            .ok_or("sealed wallet key is malformed")?;
        let n: [u8; 24] = hex::decode(n)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("sealed wallet key: bad nonce")?;
        let ct = hex::decode(ct).map_err(|_| "sealed wallet key: bad ciphertext")?;
        let pt = self
            .cipher
            .decrypt(
                &XNonce::from(n),
                Payload {
                    msg: &ct,
                    aad: &aad(wallet),
                },
            )
            .map_err(|_| "wallet key does not open with this node's keystore key")?;
        let key = SigningKey::from_bytes(&pt).map_err(|e| e.to_string())?;
        if key.public() != *wallet {
            return Err("sealed wallet key is not the key of its wallet".into());
        }
        Ok(key)
    }

    /// Seals every plain-hex `wallet_secret` in the gateway's key records; returns how
    /// many were sealed.
    pub fn migrate(&self, store: &vouch_storage::Store) -> Result<usize> {
        let mut n = 0;
        for (h, bytes) in store.api_keys().map_err(|e| anyhow::anyhow!("{e}"))? {
            let mut rec: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let Some(secret) = rec["wallet_secret"].as_str().map(str::to_string) else {
                continue;
            };
            if Self::is_sealed(&secret) {
                continue;
            }
            let raw: [u8; 32] = hex::decode(&secret)
                .ok()
                .and_then(|v| v.try_into().ok())
                .with_context(|| format!("key record {h}: wallet secret is not 32 hex bytes"))?;
            let key = SigningKey::from_bytes(&raw).map_err(|e| anyhow::anyhow!("{e}"))?;
            rec["wallet_secret"] = self.seal(&key.public(), &raw).into();
            let out = serde_json::to_vec(&rec)?;
            store
                .put_api_key(&h, &out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            n += 1;
        }
        Ok(n)
    }
}

/// Compares two secrets in time independent of where they differ (BLAKE3 hashes compared
/// in constant time), so a token cannot be guessed byte by byte from response times.
pub fn token_eq(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row 11 (issue 18): secrets are sealed under a key kept outside the database, the
    /// key file is 0600, legacy plain-hex records are sealed at start.
    #[test]
    fn seal_open_migrate_and_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keystore.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let w = SigningKey::generate(&mut rand::rngs::OsRng);
        let secret = w.to_bytes();
        let sealed = ks.seal(&w.public(), &secret);
        assert!(Keystore::is_sealed(&sealed));
        assert!(!sealed.contains(&hex::encode(secret)));
        assert_eq!(ks.open(&w.public(), &sealed).unwrap().public(), w.public());
        // Bound to its wallet, and to this node's key.
        let other = SigningKey::generate(&mut rand::rngs::OsRng).public();
        assert!(ks.open(&other, &sealed).is_err());
        let dir2 = tempfile::tempdir().unwrap();
        let ks2 = Keystore::load_or_create(dir2.path()).unwrap();
        assert!(ks2.open(&w.public(), &sealed).is_err());
        // The same file gives the same key.
        let again = Keystore::load_or_create(dir.path()).unwrap();
        assert!(again.open(&w.public(), &sealed).is_ok());
        // Plain hex is refused by open.
        assert!(ks.open(&w.public(), &hex::encode(secret)).is_err());

        // Migration of a record written before encryption.
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let g = vouch_state::Genesis {
            chain_name: "t".into(),
            time: 0,
            params: crate::dev_params(),
            accounts: vec![],
            validators: vec![key.public()],
            models: vec![],
            providers: vec![],
        };
        let (store, _) = vouch_storage::Store::open(&dir.path().join("l.redb"), &g).unwrap();
        let h = Hash32::digest("t", &[b"k"]);
        let legacy = serde_json::json!({"name": "a", "wallet_secret": hex::encode(secret),
                                         "wallet": w.public(), "limit": 0});
        store
            .put_api_key(&h, &serde_json::to_vec(&legacy).unwrap())
            .unwrap();
        assert_eq!(ks.migrate(&store).unwrap(), 1);
        assert_eq!(ks.migrate(&store).unwrap(), 0);
        let raw = store.api_key(&h).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains(&hex::encode(secret)));
        let rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let k = ks
            .open(&w.public(), rec["wallet_secret"].as_str().unwrap())
            .unwrap();
        assert_eq!(k.public(), w.public());
        assert_eq!(rec["name"], "a");
    }

    #[test]
    fn token_comparison() {
        assert!(token_eq("abc", "abc"));
        assert!(!token_eq("abc", "abd"));
        assert!(!token_eq("abc", "ab"));
    }
}
