//! The provider key: created on first use, stored with 0600 permissions.

use anyhow::{Context, Result};
use std::path::Path;
use vouch_crypto::SigningKey;

pub fn load_or_create(home: &Path) -> Result<SigningKey> {
    let dir = home.join("keys");
    let path = dir.join("provider.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let hex_str = String::from_utf8_lossy(&bytes);
            let raw = hex::decode(hex_str.trim())
                .with_context(|| format!("{} is not a hex-encoded key", path.display()))?;
            SigningKey::from_bytes(&raw).with_context(|| format!("{} is corrupt", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            write_private(&path, hex::encode(key.to_bytes()).as_bytes())?;
            eprintln!(
                "created provider key {} in {}",
                key.public(),
                path.display()
            );
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
