//! Pulling a model by content id from peers, every group checked before it is written.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use vouch_blob::{verified_groups, Outboard, GROUP_LEN};
use vouch_inference::models;
use vouch_types::Hash32;

use crate::blob_store::{blake, BlobStore, Manifest};

/// Groups asked for in one range request (4 MiB).
const BATCH_GROUPS: u64 = 16;
/// Consecutive transport failures after which a peer is dropped.
const MAX_PEER_FAILURES: u32 = 3;

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
