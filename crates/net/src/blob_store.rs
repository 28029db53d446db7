//! The model files a node holds, by BLAKE3 hash. Model weights between peers: every node
//! serves them over its HTTP API (`vouch-http`'s `blobs`); a puller ([`crate::pull`]) fetches a model by content id from any set of peers,
//! checks every 256 KiB group against the file's hash before writing it (see
//! [`vouch_blob`]), drops a peer the moment it sends a bad group, resumes from whatever
//! already verified on disk, and installs the file by rename only once all of it checked.
//!
//! Discovery rides on the authenticated p2p links: every node announces its API address
//! and the models it holds (see [`crate::dispatch::Wire::Seeds`]), so any node can name
//! the peers that have a model. Transfer is plain HTTP range requests between nodes (bulk
//! bytes stay off the consensus links, and need no trust: the hashes do the checking).
//!
//! A node started with `--follow-models` pulls every newly published model that descends
//! from one it holds, from the peers that announce it: new versions reach the providers
//! that opted in without anyone copying files.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vouch_blob::Outboard;
use vouch_inference::models::{self, ModelSpec, CATALOGUE};
use vouch_types::Hash32;

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub hash: Hash32,
    pub bytes: u64,
}

/// What a model's content id is made of: its files, weights first. Self-certifying: the
/// id is the hash of the files' hashes, so a manifest from anyone can be checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: Hash32,
    pub name: String,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// Checks that the files hash to `id` and that their names are plain file names.
    pub fn check(&self, id: &Hash32) -> Result<(), String> {
        if self.files.is_empty() || self.files.len() > 16 {
            return Err(format!("{} files (1 to 16 expected)", self.files.len()));
        }
        for f in &self.files {
            let n = &f.name;
            if n.is_empty()
                || n.len() > 128
                || n.starts_with('.')
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!("file name {n:?} is not a plain file name"));
            }
        }
        let hashes: Vec<Hash32> = self.files.iter().map(|f| f.hash).collect();
        let got = models::model_id_from_file_hashes(&hashes);
        if &got != id || &self.id != id {
            return Err(format!("files hash to model {got}, not {id}"));
        }
        Ok(())
    }

    fn of_spec(spec: &ModelSpec) -> Manifest {
        Manifest {
            id: spec.id(),
            name: spec.name.to_string(),
            files: spec
                .files
                .iter()
                .map(|f| ManifestFile {
                    name: f.name.to_string(),
                    hash: f.blake3.parse().expect("pinned hash is valid hex"),
                    bytes: f.bytes,
                })
                .collect(),
        }
    }
}

pub(crate) fn blake(h: &Hash32) -> blake3::Hash {
    blake3::Hash::from_bytes(h.0)
}

/// The model files under one Vouch home: catalogue models in `models/<name>/`, any other
/// published model's files in `blobs/<hash>` with its manifest in `blobs/models/<id>.json`.
pub struct BlobStore {
    home: PathBuf,
    outboards: Mutex<HashMap<Hash32, Arc<Outboard>>>,
}

impl BlobStore {
    pub fn new(home: &Path) -> BlobStore {
        BlobStore {
            home: home.to_path_buf(),
            outboards: Mutex::new(HashMap::new()),
        }
    }

    fn blob_dir(&self) -> PathBuf {
        self.home.join("blobs")
    }

    fn manifest_path(&self, id: &Hash32) -> PathBuf {
        self.blob_dir().join("models").join(format!("{id}.json"))
    }

    /// Where file `i` of a model lives (or will, once pulled).
    pub fn file_path(&self, m: &Manifest, i: usize) -> PathBuf {
        match models::find_by_id(&m.id) {
            Some(spec) => spec.path(&self.home, i),
            None => self.blob_dir().join(m.files[i].hash.to_hex()),
        }
    }

    /// The manifest of a model whose files are all here (present with the right sizes;
    /// their contents are checked by whoever reads them).
    pub fn manifest(&self, id: &Hash32) -> Option<Manifest> {
        let m = match models::find_by_id(id) {
            Some(spec) => Manifest::of_spec(spec),
            None => {
                let bytes = std::fs::read(self.manifest_path(id)).ok()?;
                let m: Manifest = serde_json::from_slice(&bytes).ok()?;
                m.check(id).ok()?;
                m
            }
        };
        let complete = (0..m.files.len()).all(|i| {
            std::fs::metadata(self.file_path(&m, i)).is_ok_and(|md| md.len() == m.files[i].bytes)
        });
        complete.then_some(m)
    }

    /// Models whose files are all here.
    pub fn local_models(&self) -> Vec<Hash32> {
        let mut out: Vec<Hash32> = CATALOGUE
            .iter()
            .map(ModelSpec::id)
            .filter(|id| self.manifest(id).is_some())
            .collect();
        if let Ok(rd) = std::fs::read_dir(self.blob_dir().join("models")) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<Hash32>().ok())
                else {
                    continue;
                };
                if self.manifest(&id).is_some() {
                    out.push(id);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The path of a file held here by its hash.
    pub fn path_of(&self, hash: &Hash32) -> Option<PathBuf> {
        for spec in CATALOGUE {
            for (i, f) in spec.files.iter().enumerate() {
                if f.blake3 == hash.to_hex() {
                    let p = spec.path(&self.home, i);
                    return p.is_file().then_some(p);
                }
            }
        }
        let p = self.blob_dir().join(hash.to_hex());
        p.is_file().then_some(p)
    }

    /// The outboard of a file held here, computed once; `None` if the file is not here.
    /// A local copy that does not hash to its name is an error, never served.
    pub fn outboard(&self, hash: &Hash32) -> std::io::Result<Option<Arc<Outboard>>> {
        if let Some(ob) = self.outboards.lock().expect("outboards").get(hash) {
            return Ok(Some(ob.clone()));
        }
        let Some(path) = self.path_of(hash) else {
            return Ok(None);
        };
        let f = File::open(&path)?;
        let len = f.metadata()?.len();
        let ob = Outboard::read(std::io::BufReader::with_capacity(1 << 20, f), len)?;
        if ob.root() != blake(hash) {
            return Err(std::io::Error::other(format!(
                "{} does not hash to {hash}: the local copy is corrupt",
                path.display()
            )));
        }
        let ob = Arc::new(ob);
        self.outboards
            .lock()
            .expect("outboards")
            .insert(*hash, ob.clone());
        Ok(Some(ob))
    }

    /// Adds a weights file to the store (hard link, or copy across file systems) and
    /// records a one-file manifest, so this home's node serves it to peers.
    pub fn seed(&self, src: &Path, name: &str, file_name: &str) -> std::io::Result<Manifest> {
        let hash = models::hash_file(src)?;
        let bytes = std::fs::metadata(src)?.len();
        let id = models::model_id_from_file_hashes(&[hash]);
        let m = Manifest {
            id,
            name: name.to_string(),
            files: vec![ManifestFile {
                name: file_name.to_string(),
                hash,
                bytes,
            }],
        };
        let dest = self.file_path(&m, 0);
        if !dest.is_file() {
            std::fs::create_dir_all(dest.parent().expect("blob dir"))?;
            let tmp = dest.with_extension("seeding");
            let _ = std::fs::remove_file(&tmp);
            if std::fs::hard_link(src, &tmp).is_err() {
                std::fs::copy(src, &tmp)?;
            }
            std::fs::rename(&tmp, &dest)?;
        }
        self.write_manifest(&m)?;
        Ok(m)
    }

    pub(crate) fn write_manifest(&self, m: &Manifest) -> std::io::Result<()> {
        if models::find_by_id(&m.id).is_some() {
            return Ok(());
        }
        let path = self.manifest_path(&m.id);
        std::fs::create_dir_all(path.parent().expect("manifest dir"))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(m).expect("manifest json"))?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_must_hash_to_the_id_and_name_plain_files() {
        let m = Manifest::of_spec(&models::MINILM_L6);
        let id = models::MINILM_L6.id();
        assert_eq!(m.check(&id), Ok(()));
        assert!(m.check(&models::SMOLLM2_135M.id()).is_err());
        let mut swapped = m.clone();
        swapped.files.swap(0, 1);
        assert!(swapped.check(&id).is_err());
        let mut evil = m.clone();
        evil.files[1].name = "../../.bashrc".into();
        assert!(evil.check(&id).unwrap_err().contains("plain file name"));
    }
}
