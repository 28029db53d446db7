//! The provider key used by local (`--local`) inference.

use anyhow::Result;
use std::path::Path;
use vouch_crypto::SigningKey;

pub fn load_or_create(home: &Path) -> Result<SigningKey> {
    let (key, created) = vouch_node::keys::load_or_create(&home.join("keys"), "provider")?;
    if created {
        eprintln!(
            "created provider key {} in {}",
            key.public(),
            home.join("keys").display()
        );
    }
    Ok(key)
}
