//! Key files: 32-byte ed25519 secrets in hex, created on first use with 0600 permissions.

use anyhow::{Context, Result};
use std::path::Path;
use vouch_crypto::SigningKey;

/// Reads `dir/<name>.key`, or creates it. Returns the key and whether it was created.
pub fn load_or_create(dir: &Path, name: &str) -> Result<(SigningKey, bool)> {
    let path = dir.join(format!("{name}.key"));
    match load(&path)? {
        Some(k) => Ok((k, false)),
        None => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            write_private(&path, hex::encode(key.to_bytes()).as_bytes())?;
            Ok((key, true))
        }
    }
}

/// Reads a key file; `None` if it does not exist.
pub fn load(path: &Path) -> Result<Option<SigningKey>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let hex_str = String::from_utf8_lossy(&bytes);
            let raw = hex::decode(hex_str.trim())
                .with_context(|| format!("{} is not a hex-encoded key", path.display()))?;
            let k = SigningKey::from_bytes(&raw)
                .with_context(|| format!("{} is corrupt", path.display()))?;
            Ok(Some(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a new key file; fails if it exists.
pub fn create(path: &Path, key: &SigningKey) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(path, hex::encode(key.to_bytes()).as_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("creating {}", path.display()))
}
