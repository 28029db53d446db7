//! Model weights between peers: every node serves the model files it holds, by BLAKE3
//! hash, over its HTTP API; a puller fetches a model by content id from any set of peers,
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

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as AxPath, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vouch_blob::{verified_groups, Outboard, GROUP_LEN};
use vouch_inference::models::{self, ModelSpec, CATALOGUE};
use vouch_types::Hash32;

use crate::api::{parse_hash, AppState};
use crate::error::ApiError;

/// Groups asked for in one range request (4 MiB).
const BATCH_GROUPS: u64 = 16;
/// Consecutive transport failures after which a peer is dropped.
const MAX_PEER_FAILURES: u32 = 3;

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

fn blake(h: &Hash32) -> blake3::Hash {
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

    fn write_manifest(&self, m: &Manifest) -> std::io::Result<()> {
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

// ------------------------------------------------------------------ serving

fn store(s: &AppState) -> Result<&Arc<BlobStore>, ApiError> {
    s.blobs
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this node serves no model files"))
}

/// `GET /v1/p2p/models/{id}/manifest`: the model's files, if this node has all of them.
pub async fn manifest(
    AxState(s): AxState<AppState>,
    AxPath(id): AxPath<String>,
) -> Result<Json<Manifest>, ApiError> {
    let id = parse_hash(&id, "model id")?;
    let st = store(&s)?.clone();
    tokio::task::spawn_blocking(move || st.manifest(&id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("this node does not have model {id}")))
}

/// `GET /v1/p2p/models/{id}/sources`: API addresses of the nodes that announced the model
/// (this node first, when it has it).
pub async fn sources(
    AxState(s): AxState<AppState>,
    AxPath(id): AxPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_hash(&id, "model id")?;
    let mut urls = Vec::new();
    if let (Some(st), Some(me)) = (&s.blobs, &s.public_api) {
        let st = st.clone();
        if tokio::task::spawn_blocking(move || st.manifest(&id).is_some())
            .await
            .unwrap_or(false)
        {
            urls.push(me.to_string());
        }
    }
    if let Some(d) = &s.dispatch {
        urls.extend(d.seeds_of(&id));
    }
    Ok(Json(json!({"model": id, "sources": urls})))
}

/// `GET /v1/p2p/blobs/{hash}/outboard`: the file's group hashes ([`Outboard::encode`]).
pub async fn outboard(
    AxState(s): AxState<AppState>,
    AxPath(hash): AxPath<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash, "file hash")?;
    let st = store(&s)?.clone();
    let ob = tokio::task::spawn_blocking(move || st.outboard(&hash))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("this node does not have file {hash}")))?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        ob.encode(),
    )
        .into_response())
}

/// Parses a single `bytes=a-b` / `bytes=a-` range against a file of `len` bytes.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => len,
        b => b.parse::<u64>().ok()?.checked_add(1)?.min(len),
    };
    (start < end).then_some((start, end))
}

/// `GET /v1/p2p/blobs/{hash}`: the file's bytes, whole or one `Range`, streamed from disk.
pub async fn blob(
    AxState(s): AxState<AppState>,
    AxPath(hash): AxPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash, "file hash")?;
    let st = store(&s)?;
    let path = st
        .path_of(&hash)
        .ok_or_else(|| ApiError::not_found(format!("this node does not have file {hash}")))?;
    let file = File::open(&path).map_err(|e| ApiError::internal(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len();
    let (status, start, end) = match headers.get(header::RANGE) {
        None => (StatusCode::OK, 0, len),
        Some(v) => {
            let Some((a, b)) = v.to_str().ok().and_then(|v| parse_range(v, len)) else {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                )
                    .into_response());
            };
            (StatusCode::PARTIAL_CONTENT, a, b)
        }
    };
    // A blocking reader feeds the response 256 KiB at a time.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        let mut at = start;
        while at < end {
            let n = (end - at).min(GROUP_LEN) as usize;
            let mut buf = vec![0u8; n];
            let r = file.read_exact_at(&mut buf, at).map(|_| buf);
            let failed = r.is_err();
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
            at += n as u64;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    h.insert(header::CONTENT_LENGTH, (end - start).into());
    h.insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", start, end - 1)
                .parse()
                .unwrap(),
        );
    }
    Ok(resp)
}

// ------------------------------------------------------------------ pulling

/// How a pull runs.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Concurrent range requests (spread over the live peers).
    pub workers: usize,
    /// Cap on the transfer rate, bytes per second.
    pub max_rate: Option<u64>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            workers: 4,
            max_rate: None,
        }
    }
}

/// What a pull reports as it goes.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// A file starts: `resumed` bytes of it were already on disk and verified.
    File {
        name: String,
        bytes: u64,
        resumed: u64,
    },
    /// Verified bytes of the current file so far, and its size.
    Progress { done: u64, total: u64 },
    /// A peer was dropped (bad data or unreachable).
    Dropped { peer: String, why: String },
}

/// The outcome of a pull.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub model: Hash32,
    pub name: String,
    pub files: Vec<PathBuf>,
    /// Bytes of the model.
    pub bytes: u64,
    /// Bytes fetched from peers (verified).
    pub fetched: u64,
    /// Bytes that were already here (a whole file, or a partial file's verified groups).
    pub reused: u64,
    pub secs: f64,
    /// Verified bytes fetched from each peer.
    pub from: Vec<(String, u64)>,
    pub dropped: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no peer has model {model}{}", list_peers(.tried))]
    NoSource {
        model: Hash32,
        tried: Vec<(String, String)>,
    },
    #[error("{missing} of {groups} groups of {file} still missing: every peer was dropped{}; run the pull again to resume", list_peers(.dropped))]
    Incomplete {
        file: String,
        missing: u64,
        groups: u64,
        dropped: Vec<(String, String)>,
    },
    #[error("another pull is writing {0}; wait for it, or stop it and pull again")]
    Busy(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn list_peers(t: &[(String, String)]) -> String {
    if t.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = t.iter().map(|(p, w)| format!("{p}: {w}")).collect();
    format!(" ({})", parts.join("; "))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_body(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

fn get_bytes(agent: &ureq::Agent, url: &str, limit: u64) -> Result<Vec<u8>, String> {
    let mut r = agent.get(url).call().map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("HTTP {}", r.status()));
    }
    r.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| e.to_string())
}

/// Asks each peer for the model's sources and returns `peers` plus what they name, in
/// order, without duplicates.
pub fn discover(peers: &[String], id: &Hash32) -> Vec<String> {
    let agent = agent();
    let mut out: Vec<String> = Vec::new();
    for p in peers {
        let p = p.trim_end_matches('/').to_string();
        let named = get_bytes(&agent, &format!("{p}/v1/p2p/models/{id}/sources"), 1 << 20)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["sources"].as_array().cloned())
            .unwrap_or_default();
        for u in std::iter::once(p.clone()).chain(
            named
                .iter()
                .filter_map(|u| u.as_str().map(|s| s.trim_end_matches('/').to_string())),
        ) {
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

struct Peer {
    url: String,
    failures: u32,
    dropped: bool,
    fetched: u64,
}

/// State shared by the workers of one file's transfer.
struct Transfer<'a> {
    hash: Hash32,
    ob: &'a Outboard,
    file: &'a File,
    peers: &'a Mutex<Vec<Peer>>,
    queue: Mutex<VecDeque<(u64, u64)>>,
    remaining: AtomicU64,
    limiter: Limiter,
}

struct Limiter {
    rate: Option<u64>,
    start: Instant,
    bytes: Mutex<u64>,
}

impl Limiter {
    fn take(&self, n: u64) {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let due = {
            let mut b = self.bytes.lock().expect("limiter");
            *b += n;
            self.start + Duration::from_secs_f64(*b as f64 / rate as f64)
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

enum Msg {
    Verified { peer: usize, bytes: u64 },
    Dropped { peer: String, why: String },
    Fatal(std::io::Error),
}

enum Fault {
    /// The peer sent bytes that do not hash right: dropped at once.
    Corrupt(String),
    /// The peer could not be reached or broke off.
    Transport(String),
    /// This machine could not write.
    Local(std::io::Error),
}

impl Transfer<'_> {
    /// A live peer for worker `w`, spreading workers over the peers.
    fn pick(&self, w: usize) -> Option<(usize, String)> {
        let peers = self.peers.lock().expect("peers");
        let live: Vec<usize> = (0..peers.len()).filter(|&i| !peers[i].dropped).collect();
        if live.is_empty() {
            return None;
        }
        let i = live[w % live.len()];
        Some((i, peers[i].url.clone()))
    }

    /// Fetches groups `a..b` from `url`, verifying and writing each; on a fault, the
    /// groups not yet written are returned with it.
    fn fetch(
        &self,
        agent: &ureq::Agent,
        url: &str,
        peer: usize,
        (a, b): (u64, u64),
        tx: &std::sync::mpsc::Sender<Msg>,
    ) -> Result<(), ((u64, u64), Fault)> {
        let start = self.ob.range(a).start;
        let end = self.ob.range(b - 1).end;
        let transport = |e: String| ((a, b), Fault::Transport(e));
        let mut r = agent
            .get(&format!("{url}/v1/p2p/blobs/{}", self.hash))
            .header("range", &format!("bytes={start}-{}", end - 1))
            .call()
            .map_err(|e| transport(e.to_string()))?;
        match r.status().as_u16() {
            206 => {}
            200 if start == 0 && end == self.ob.len() => {}
            404 => return Err(((a, b), Fault::Corrupt("does not have the file".into()))),
            s => return Err(transport(format!("HTTP {s}"))),
        }
        let mut body = r.body_mut().with_config().limit(end - start).reader();
        let mut buf = vec![0u8; GROUP_LEN as usize];
        for g in a..b {
            let range = self.ob.range(g);
            let n = (range.end - range.start) as usize;
            if let Err(e) = body.read_exact(&mut buf[..n]) {
                return Err(((g, b), Fault::Transport(format!("group {g}: {e}"))));
            }
            if let Err(e) = self.ob.check_group(g, &buf[..n]) {
                return Err(((g, b), Fault::Corrupt(e.to_string())));
            }
            if let Err(e) = self.file.write_all_at(&buf[..n], range.start) {
                return Err(((g, b), Fault::Local(e)));
            }
            self.remaining.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(Msg::Verified {
                peer,
                bytes: n as u64,
            });
            self.limiter.take(n as u64);
        }
        Ok(())
    }

    fn worker(&self, w: usize, tx: std::sync::mpsc::Sender<Msg>) {
        let agent = agent();
        while self.remaining.load(Ordering::SeqCst) > 0 {
            let Some((peer, url)) = self.pick(w) else {
                return;
            };
            let Some(batch) = self.queue.lock().expect("queue").pop_front() else {
                // Others hold the last batches; one may come back if its peer fails.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let Err((rest, fault)) = self.fetch(&agent, &url, peer, batch, &tx) else {
                let mut peers = self.peers.lock().expect("peers");
                peers[peer].failures = 0;
                continue;
            };
            if rest.0 < rest.1 {
                self.queue.lock().expect("queue").push_back(rest);
            }
            let mut peers = self.peers.lock().expect("peers");
            let p = &mut peers[peer];
            let why = match fault {
                Fault::Local(e) => {
                    let _ = tx.send(Msg::Fatal(e));
                    return;
                }
                Fault::Corrupt(why) => Some(why),
                Fault::Transport(why) => {
                    p.failures += 1;
                    (p.failures >= MAX_PEER_FAILURES).then_some(why)
                }
            };
            if let Some(why) = why {
                if !p.dropped {
                    p.dropped = true;
                    let _ = tx.send(Msg::Dropped {
                        peer: p.url.clone(),
                        why,
                    });
                }
            }
        }
    }
}

fn drop_peer(
    peers: &Mutex<Vec<Peer>>,
    i: usize,
    why: String,
    on: &mut dyn FnMut(&PullEvent),
    dropped: &mut Vec<(String, String)>,
) {
    let mut ps = peers.lock().expect("peers");
    if !ps[i].dropped {
        ps[i].dropped = true;
        on(&PullEvent::Dropped {
            peer: ps[i].url.clone(),
            why: why.clone(),
        });
        dropped.push((ps[i].url.clone(), why));
    }
}

/// Pulls model `id` into `store` from `sources` (peer API base URLs).
pub fn pull(
    store: &BlobStore,
    id: &Hash32,
    sources: &[String],
    opts: &PullOptions,
    on: &mut dyn FnMut(&PullEvent),
) -> Result<PullReport, PullError> {
    let t0 = Instant::now();
    let agent = agent();
    let peers: Mutex<Vec<Peer>> = Mutex::new(
        sources
            .iter()
            .map(|u| Peer {
                url: u.trim_end_matches('/').to_string(),
                failures: 0,
                dropped: false,
                fetched: 0,
            })
            .collect(),
    );
    let mut dropped: Vec<(String, String)> = Vec::new();

    // The manifest: every peer is asked; one that does not have the model is left out,
    // one whose manifest does not hash to the id is dropped.
    let n_peers = peers.lock().expect("peers").len();
    let mut manifest = store.manifest(id);
    let mut tried = Vec::new();
    for i in 0..n_peers {
        let url = peers.lock().expect("peers")[i].url.clone();
        // Unreachable, or does not have it: left out. A manifest that lies: dropped.
        let body = match get_bytes(
            &agent,
            &format!("{url}/v1/p2p/models/{id}/manifest"),
            1 << 20,
        ) {
            Ok(b) => b,
            Err(e) => {
                tried.push((url, e));
                peers.lock().expect("peers")[i].dropped = true;
                continue;
            }
        };
        let m = serde_json::from_slice::<Manifest>(&body)
            .map_err(|e| e.to_string())
            .and_then(|m| m.check(id).map(|_| m));
        match m {
            Ok(m) => {
                manifest.get_or_insert(m);
            }
            Err(e) => {
                tried.push((url, e.clone()));
                drop_peer(&peers, i, format!("manifest: {e}"), on, &mut dropped);
            }
        }
    }
    let Some(manifest) = manifest else {
        return Err(PullError::NoSource { model: *id, tried });
    };

    let mut report = PullReport {
        model: *id,
        name: manifest.name.clone(),
        files: Vec::new(),
        bytes: manifest.files.iter().map(|f| f.bytes).sum(),
        fetched: 0,
        reused: 0,
        secs: 0.0,
        from: Vec::new(),
        dropped: Vec::new(),
    };
    for (fi, mf) in manifest.files.iter().enumerate() {
        let dest = store.file_path(&manifest, fi);
        report.files.push(dest.clone());
        if dest.is_file() && models::hash_file(&dest)? == mf.hash {
            on(&PullEvent::File {
                name: mf.name.clone(),
                bytes: mf.bytes,
                resumed: mf.bytes,
            });
            report.reused += mf.bytes;
            continue;
        }
        std::fs::create_dir_all(dest.parent().expect("file dir"))?;

        // The outboard: from the first live peer whose outboard merges to the file's hash
        // and whose last group verifies (which pins the length).
        let mut ob = None;
        for i in 0..n_peers {
            let url = {
                let ps = peers.lock().expect("peers");
                if ps[i].dropped {
                    continue;
                }
                ps[i].url.clone()
            };
            let got = get_bytes(
                &agent,
                &format!("{url}/v1/p2p/blobs/{}/outboard", mf.hash),
                16 + 32 * vouch_blob::group_count(mf.bytes) + 64,
            )
            .and_then(|b| Outboard::decode(&b, &blake(&mf.hash)).map_err(|e| e.to_string()))
            .and_then(|o| {
                let last = o.groups() - 1;
                let r = o.range(last);
                let mut req = agent.get(&format!("{url}/v1/p2p/blobs/{}", mf.hash));
                if r.end > r.start {
                    req = req.header("range", &format!("bytes={}-{}", r.start, r.end - 1));
                }
                let mut resp = req.call().map_err(|e| e.to_string())?;
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(GROUP_LEN)
                    .read_to_vec()
                    .map_err(|e| e.to_string())?;
                o.check_group(last, &bytes).map_err(|e| e.to_string())?;
                Ok(o)
            });
            match got {
                Ok(o) => {
                    ob = Some(o);
                    break;
                }
                Err(e) => drop_peer(&peers, i, format!("outboard: {e}"), on, &mut dropped),
            }
        }
        let Some(ob) = ob else {
            return Err(PullError::Incomplete {
                file: mf.name.clone(),
                missing: vouch_blob::group_count(mf.bytes),
                groups: vouch_blob::group_count(mf.bytes),
                dropped,
            });
        };

        // Resume: keep the groups of a partial file that verify.
        let part = dest.with_file_name(format!(
            "{}.part",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("blob")
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)?;
        // One pull per file at a time (a second `model pull`, or the follower): the lock
        // goes with the process, so a killed pull never leaves it held.
        if let Err(e) = file.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => PullError::Busy(part.clone()),
                std::fs::TryLockError::Error(e) => e.into(),
            });
        }
        if file.metadata()?.len() > ob.len() {
            file.set_len(ob.len())?;
        }
        let have = verified_groups(&file, &ob)?;
        file.set_len(ob.len())?;
        let resumed: u64 = (0..ob.groups())
            .filter(|&g| have[g as usize])
            .map(|g| ob.range(g).end - ob.range(g).start)
            .sum();
        report.reused += resumed;
        on(&PullEvent::File {
            name: mf.name.clone(),
            bytes: ob.len(),
            resumed,
        });
        let mut queue = VecDeque::new();
        let mut g = 0;
        while g < ob.groups() {
            if have[g as usize] {
                g += 1;
                continue;
            }
            let start = g;
            while g < ob.groups() && !have[g as usize] && g - start < BATCH_GROUPS {
                g += 1;
            }
            queue.push_back((start, g));
        }
        let missing = have.iter().filter(|h| !**h).count() as u64;
        let t = Transfer {
            hash: mf.hash,
            ob: &ob,
            file: &file,
            peers: &peers,
            queue: Mutex::new(queue),
            remaining: AtomicU64::new(missing),
            limiter: Limiter {
                rate: opts.max_rate,
                start: Instant::now(),
                bytes: Mutex::new(0),
            },
        };
        let mut done = resumed;
        let mut fatal = None;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let workers = opts.workers.clamp(1, 16).min(missing.max(1) as usize);
            for w in 0..workers {
                let tx = tx.clone();
                let t = &t;
                s.spawn(move || t.worker(w, tx));
            }
            drop(tx);
            let mut last = Instant::now();
            for m in rx {
                match m {
                    Msg::Verified { peer, bytes } => {
                        done += bytes;
                        report.fetched += bytes;
                        peers.lock().expect("peers")[peer].fetched += bytes;
                        if last.elapsed() >= Duration::from_millis(100) || done == ob.len() {
                            last = Instant::now();
                            on(&PullEvent::Progress {
                                done,
                                total: ob.len(),
                            });
                        }
                    }
                    Msg::Dropped { peer, why } => {
                        on(&PullEvent::Dropped {
                            peer: peer.clone(),
                            why: why.clone(),
                        });
                        dropped.push((peer, why));
                    }
                    Msg::Fatal(e) => {
                        fatal.get_or_insert(e);
                        // Stop the others: nothing more can be written.
                        t.queue.lock().expect("queue").clear();
                        t.remaining.store(0, Ordering::SeqCst);
                    }
                }
            }
        });
        if let Some(e) = fatal {
            return Err(e.into());
        }
        let left = t.remaining.load(Ordering::SeqCst);
        if left > 0 {
            file.sync_data()?;
            return Err(PullError::Incomplete {
                file: mf.name.clone(),
                missing: left,
                groups: ob.groups(),
                dropped,
            });
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&part, &dest)?;
        if let Some(dir) = dest.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    store.write_manifest(&manifest)?;
    report.secs = t0.elapsed().as_secs_f64();
    report.from = peers
        .lock()
        .expect("peers")
        .iter()
        .filter(|p| p.fetched > 0)
        .map(|p| (p.url.clone(), p.fetched))
        .collect();
    report.dropped = dropped;
    Ok(report)
}

// ------------------------------------------------------------------ following

/// Pulls, one at a time, every registered model that descends from a model this node
/// holds and that some peer announces (`--follow-models`).
pub async fn follow(
    chain: Arc<crate::Chain>,
    store: Arc<BlobStore>,
    dispatch: Arc<crate::dispatch::Dispatch>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut failed: HashMap<Hash32, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
        let st = store.clone();
        let local = tokio::task::spawn_blocking(move || st.local_models())
            .await
            .unwrap_or_default();
        let wanted: Vec<Hash32> = {
            let state = chain.state();
            state
                .models
                .keys()
                .filter(|id| !local.contains(id))
                .filter(|id| {
                    failed
                        .get(id)
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
                })
                .filter(|id| {
                    state
                        .lineage(id)
                        .is_some_and(|l| l.ancestors.iter().any(|a| local.contains(&a.id)))
                })
                .copied()
                .collect()
        };
        for id in wanted {
            let sources = dispatch.seeds_of(&id);
            if sources.is_empty() {
                continue;
            }
            let st = store.clone();
            let r = tokio::task::spawn_blocking(move || {
                pull(&st, &id, &sources, &PullOptions::default(), &mut |e| {
                    if let PullEvent::Dropped { peer, why } = e {
                        tracing::warn!(%peer, %why, "model peer dropped");
                    }
                })
            })
            .await;
            match r {
                Ok(Ok(rep)) => tracing::info!(
                    model = %id.short(), name = %rep.name, bytes = rep.bytes,
                    secs = format!("{:.2}", rep.secs), "followed a new model version"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(model = %id.short(), error = %e, "pulling a new model version failed");
                    failed.insert(id, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model pull task failed");
                    failed.insert(id, Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=900-5000", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-4", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }

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
