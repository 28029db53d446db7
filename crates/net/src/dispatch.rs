//! Job dispatch between nodes: a gateway sends a job to a provider on another node over
//! the validators' authenticated, encrypted p2p links, the provider streams the answer
//! back, and a provider that goes quiet or fails is replaced by another one.
//!
//! The protocol is one p2p channel of JSON messages ([`Wire`]):
//!
//! - every node that serves jobs announces itself once a second (`hello`: its provider
//!   address, proven by a signature of the provider key over the node's p2p identity, the
//!   models it serves and how full its queue is);
//! - a gateway admits the client's escrow (`SubmitJob`) to its own mempool, which gossips
//!   it, then sends `ask` with the signed escrow and the input; the provider checks it like
//!   any job request, answers `chunk`s as tokens come, a `beat` every second while it
//!   works, then `done` with the signed receipt (or `fail`);
//! - validators ask a job's provider for the receipt body (`get_receipt`) to audit it,
//!   and, for a spot check, for the opening of its trace at the challenges the chain fixed
//!   (`get_opening`, answered in `opening` parts of at most [`OPENING_PART`] bytes).
//!
//! The escrow is on its way to a block before any provider is asked, so a provider that
//! dies leaves an escrow that expires and is refunded (`job_timeout_ms`), and its capacity
//! on the ledger is freed with it; the retry is a new job on another provider. The client
//! gets one answer and one receipt: the gateway forwards only the first successful
//! answer, and in a stream it checks that the new provider's text extends what the
//! client already saw (it does when sampling is seeded, as the gateway always does).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use vouch_crypto::SigningKey;
use vouch_types::tx::Tx;
use vouch_types::{Hash32, Receipt};

use vouch_node::chain::{Chain, SubmitError};
use vouch_node::error::{ErrorKind, ServeError};
use vouch_node::provider::{Done, Escrow, JobRequest, ProviderRole};
use vouch_node::validator::PeerFuture;

/// How often a provider announces itself.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);
/// A provider not heard from for this long is offered no work.
pub const STALE: Duration = Duration::from_secs(4);
/// A job whose provider says nothing (no chunk, no beat) for this long is retried elsewhere.
pub const SILENCE: Duration = Duration::from_secs(3);
/// A provider that failed a job is passed over for this long.
pub const BACKOFF: Duration = Duration::from_secs(30);
/// Providers tried for one request before giving up.
pub const MAX_ATTEMPTS: usize = 3;
/// Largest message this protocol sends (the p2p limit is larger).
const MAX_WIRE: usize = 4 << 20;
/// Bytes of a trace opening per `opening` message (hex doubles them).
pub const OPENING_PART: usize = 1 << 20;
/// How long an auditor waits for a trace opening (the provider recomputes its trace).
pub use vouch_node::validator::OPENING_WAIT;
/// Most parts an opening may come in (256 MiB).
const MAX_OPENING_PARTS: usize = 256;
const HELLO_DOMAIN: &str = "vouch 2026 provider hello v1";

/// One message of the dispatch protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    Hello {
        provider: Hash32,
        /// Hex signature by `provider` over (chain, the sending node's p2p identity).
        proof: String,
        models: Vec<Hash32>,
        running: u32,
        depth: u32,
    },
    /// Every node, every [`HELLO_EVERY`]: the API address it serves model files at and
    /// the models it holds whole (see [`crate::blobs`]).
    Seeds {
        api: String,
        models: Vec<Hash32>,
    },
    Ask {
        id: u64,
        job: JobRequest,
    },
    Chunk {
        id: u64,
        text: String,
    },
    Beat {
        id: u64,
    },
    Done {
        id: u64,
        job: Hash32,
        receipt: Box<Receipt>,
        commit: Hash32,
        engine_ms: f64,
    },
    Fail {
        id: u64,
        /// The refusal's [`ErrorKind`] as its stable wire code ([`ErrorKind::code`]).
        status: u16,
        message: String,
    },
    GetReceipt {
        id: Hash32,
    },
    Receipt {
        id: Hash32,
        receipt: Option<Box<Receipt>>,
    },
    /// An auditor asks the provider of `job` to open its trace at the job's challenges.
    GetOpening {
        job: Hash32,
    },
    /// Part `part` of `parts` of the opening (hex), or why there is none.
    Opening {
        job: Hash32,
        part: u32,
        parts: u32,
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// A message for the p2p layer: to one peer (`Some`) or all, and whether it went out.
pub struct Outbound {
    pub to: Option<Hash32>,
    pub bytes: Vec<u8>,
    pub sent: Option<oneshot::Sender<bool>>,
}

/// The engine's end of the dispatch channel (see [`crate::SimplexEngine::jobs`]).
pub struct NetIo {
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    pub inbound: mpsc::UnboundedSender<(Hash32, Vec<u8>)>,
}

impl std::fmt::Debug for NetIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetIo")
    }
}

/// The node's end, taken by [`Dispatch::start`].
pub struct NetPort {
    outbound: mpsc::UnboundedSender<Outbound>,
    inbound: mpsc::UnboundedReceiver<(Hash32, Vec<u8>)>,
}

/// A connected pair of ends.
pub fn channel() -> (NetPort, NetIo) {
    let (otx, orx) = mpsc::unbounded_channel();
    let (itx, irx) = mpsc::unbounded_channel();
    (
        NetPort {
            outbound: otx,
            inbound: irx,
        },
        NetIo {
            outbound: orx,
            inbound: itx,
        },
    )
}

/// What a gateway knows of one remote provider.
#[derive(Debug, Clone)]
struct Remote {
    peer: Hash32,
    models: Vec<Hash32>,
    running: u32,
    depth: u32,
    seen: Instant,
    /// Jobs this gateway sent that are not answered yet.
    in_flight: u32,
    /// Smoothed time to a complete answer, per generated token (ms).
    ms_per_token: Option<f64>,
    failures: u64,
    answered: u64,
    avoid_until: Option<Instant>,
}

/// Where a job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    Remote { provider: Hash32, peer: Hash32 },
}

/// A provider as the scheduler ranks it.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub provider: Hash32,
    pub peer: Option<Hash32>,
    pub price_per_token: u64,
    /// Jobs running or queued there, as last reported plus this gateway's own since.
    pub load: f64,
    pub ms_per_token: Option<f64>,
    /// Its jobs that failed an audit, and that expired unanswered, on the ledger.
    pub failed_on_ledger: u64,
    pub expired_on_ledger: u64,
    /// Jobs open on the ledger against its registered capacity.
    pub ledger_in_flight: u32,
    pub capacity: u32,
    pub recent_failures: u64,
    pub answered: u64,
    pub available: bool,
    /// Lower is better.
    pub score: f64,
}

/// Why a remote attempt ended without an answer.
pub enum AttemptError {
    /// The provider failed (busy, silent, gone, bad answer): try another one.
    Provider(String),
    /// The request itself is at fault: the same error comes back from any provider.
    Client(ServeError),
}

struct Inner {
    remotes: HashMap<Hash32, Remote>,
    pending: HashMap<u64, mpsc::UnboundedSender<Wire>>,
    receipts: HashMap<Hash32, Vec<oneshot::Sender<Option<Receipt>>>>,
    /// Trace openings being received, by job.
    openings: HashMap<Hash32, mpsc::UnboundedSender<Wire>>,
    /// Local provider: smoothed ms per token (for ranking it against remotes).
    local_ms_per_token: Option<f64>,
    /// Peers' model-file announcements: API address, models, when last heard.
    seeds: HashMap<Hash32, (String, Vec<Hash32>, Instant)>,
}

/// The dispatch service of one node.
pub struct Dispatch {
    chain: Arc<Chain>,
    provider: Option<Arc<ProviderRole>>,
    /// This node's p2p identity (its validator address).
    me: Hash32,
    out: mpsc::UnboundedSender<Outbound>,
    next: AtomicU64,
    inner: Mutex<Inner>,
}

impl Dispatch {
    /// Starts the service on `port`: answers peers' asks with the local provider (if any)
    /// and announces it every [`HELLO_EVERY`].
    pub fn start(
        chain: Arc<Chain>,
        provider: Option<Arc<ProviderRole>>,
        me: &SigningKey,
        port: NetPort,
        seeds: Option<(String, Arc<crate::blob_store::BlobStore>)>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Self> {
        let d = Arc::new(Dispatch {
            chain,
            provider,
            me: me.public(),
            out: port.outbound,
            next: AtomicU64::new(1),
            inner: Mutex::new(Inner {
                remotes: HashMap::new(),
                pending: HashMap::new(),
                receipts: HashMap::new(),
                openings: HashMap::new(),
                local_ms_per_token: None,
                seeds: HashMap::new(),
            }),
        });
        let hello = d.provider.as_ref().map(|p| {
            let chain = d.chain.chain_id();
            let sig = p
                .key
                .sign(HELLO_DOMAIN, &hello_body(&chain, &d.me, &p.key.public()));
            hex::encode(sig)
        });
        let me = d.clone();
        let mut inbound = port.inbound;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HELLO_EVERY);
            loop {
                tokio::select! {
                    m = inbound.recv() => match m {
                        Some((peer, bytes)) => me.on_message(peer, &bytes),
                        None => return,
                    },
                    _ = tick.tick() => {
                        if let Some((api, store)) = &seeds {
                            let st = store.clone();
                            let models = tokio::task::spawn_blocking(move || st.local_models())
                                .await
                                .unwrap_or_default();
                            me.send(None, &Wire::Seeds { api: api.clone(), models });
                        }
                        if let (Some(p), Some(proof)) = (&me.provider, &hello) {
                            let running = (p.queue_depth - p.queue.available_permits()) as u32;
                            me.send(None, &Wire::Hello {
                                provider: p.key.public(),
                                proof: proof.clone(),
                                models: p.models(),
                                running,
                                depth: p.queue_depth as u32,
                            });
                        }
                    }
                    _ = shutdown.changed() => if *shutdown.borrow() { return },
                }
            }
        });
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `m` for `to` (all peers when `None`); the receiver says whether it went out.
    fn send(&self, to: Option<Hash32>, m: &Wire) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let bytes = serde_json::to_vec(m).unwrap_or_default();
        if bytes.len() > MAX_WIRE {
            tracing::warn!(len = bytes.len(), "dispatch message too large; dropped");
            let _ = tx.send(false);
            return rx;
        }
        let _ = self.out.send(Outbound {
            to,
            bytes,
            sent: Some(tx),
        });
        rx
    }

    fn on_message(self: &Arc<Self>, peer: Hash32, bytes: &[u8]) {
        let m: Wire = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = %peer.short(), error = %e, "malformed dispatch message");
                return;
            }
        };
        match m {
            Wire::Hello {
                provider,
                proof,
                models,
                running,
                depth,
            } => self.on_hello(peer, provider, &proof, models, running, depth),
            Wire::Seeds { api, models } => {
                // The p2p layer authenticated `peer`; only http(s) addresses are kept.
                if (api.starts_with("http://") || api.starts_with("https://"))
                    && api.len() <= 256
                    && models.len() <= 1024
                {
                    self.lock()
                        .seeds
                        .insert(peer, (api, models, Instant::now()));
                }
            }
            Wire::Ask { id, job } => {
                let me = self.clone();
                tokio::spawn(async move { me.serve(peer, id, job).await });
            }
            Wire::GetReceipt { id } => {
                let receipt = self
                    .chain
                    .store()
                    .receipt(&id)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<Receipt>(&b).ok())
                    .map(Box::new);
                self.send(Some(peer), &Wire::Receipt { id, receipt });
            }
            Wire::Receipt { id, receipt } => {
                let waiters = self.lock().receipts.remove(&id).unwrap_or_default();
                let receipt = receipt.map(|b| *b).filter(|r| r.id() == id);
                for w in waiters {
                    let _ = w.send(receipt.clone());
                }
            }
            Wire::GetOpening { job } => {
                let me = self.clone();
                tokio::spawn(async move { me.serve_opening(peer, job).await });
            }
            Wire::Opening { job, .. } => {
                let tx = self.lock().openings.get(&job).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(m);
                }
            }
            Wire::Chunk { id, .. }
            | Wire::Beat { id }
            | Wire::Done { id, .. }
            | Wire::Fail { id, .. } => {
                // Only the peer a job was sent to can answer it (the pending entry is keyed
                // by id; a wrong peer's answer would fail the receipt checks anyway).
                let tx = self.lock().pending.get(&id).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(m);
                }
            }
        }
    }

    fn on_hello(
        &self,
        peer: Hash32,
        provider: Hash32,
        proof: &str,
        models: Vec<Hash32>,
        running: u32,
        depth: u32,
    ) {
        let mut inner = self.lock();
        let known = inner.remotes.get(&provider).is_some_and(|r| r.peer == peer);
        if !known {
            // A node may speak for a provider only with that provider's signature.
            let mut sig = [0u8; 64];
            let body = hello_body(&self.chain.chain_id(), &peer, &provider);
            let ok = hex::decode_to_slice(proof, &mut sig).is_ok()
                && vouch_crypto::verify(&provider, HELLO_DOMAIN, &body, &sig).is_ok();
            if !ok {
                tracing::warn!(peer = %peer.short(), provider = %provider.short(), "hello with a bad provider proof");
                return;
            }
            tracing::info!(peer = %peer.short(), provider = %provider.short(), "provider reachable");
        }
        let r = inner.remotes.entry(provider).or_insert(Remote {
            peer,
            models: Vec::new(),
            running: 0,
            depth: 1,
            seen: Instant::now(),
            in_flight: 0,
            ms_per_token: None,
            failures: 0,
            answered: 0,
            avoid_until: None,
        });
        r.peer = peer;
        r.models = models;
        r.running = running;
        r.depth = depth.max(1);
        r.seen = Instant::now();
    }

    /// API addresses of the peers that announced `model` recently.
    pub fn seeds_of(&self, model: &Hash32) -> Vec<String> {
        let inner = self.lock();
        let mut out: Vec<String> = inner
            .seeds
            .values()
            .filter(|(_, models, seen)| seen.elapsed() < HELLO_EVERY * 10 && models.contains(model))
            .map(|(api, _, _)| api.clone())
            .collect();
        out.sort();
        out
    }

    /// Ranks every provider that serves `model` (this node's own included), best first.
    /// The score is the price per token scaled by how busy the provider is, how slow it has
    /// been for this gateway, and its record: slashes on the ledger and recent failures.
    pub fn candidates(&self, model: &Hash32) -> Vec<Candidate> {
        let state = self.chain.state();
        let inner = self.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        if let Some(p) = &self.provider {
            if p.models().contains(model) {
                let addr = p.key.public();
                let running = (p.queue_depth - p.queue.available_permits()) as f64;
                if let Some(info) = state.providers.get(&addr) {
                    out.push(Candidate {
                        provider: addr,
                        peer: None,
                        price_per_token: info.price_per_token,
                        load: running / p.queue_depth as f64,
                        ms_per_token: inner.local_ms_per_token,
                        failed_on_ledger: info.jobs_failed,
                        expired_on_ledger: info.jobs_expired,
                        ledger_in_flight: info.in_flight,
                        capacity: info.capacity,
                        recent_failures: 0,
                        answered: 0,
                        available: p.queue.available_permits() > 0
                            && info.in_flight < info.capacity,
                        score: 0.0,
                    });
                }
            }
        }
        for (addr, r) in &inner.remotes {
            if !r.models.contains(model) {
                continue;
            }
            let Some(info) = state.providers.get(addr) else {
                continue;
            };
            let running = r.running + r.in_flight;
            out.push(Candidate {
                provider: *addr,
                peer: Some(r.peer),
                price_per_token: info.price_per_token,
                load: f64::from(running) / f64::from(r.depth),
                ms_per_token: r.ms_per_token,
                failed_on_ledger: info.jobs_failed,
                expired_on_ledger: info.jobs_expired,
                ledger_in_flight: info.in_flight,
                capacity: info.capacity,
                recent_failures: r.failures,
                answered: r.answered,
                available: now.duration_since(r.seen) < STALE
                    && running < r.depth
                    && info.in_flight < info.capacity
                    && r.avoid_until.is_none_or(|t| now >= t),
                score: 0.0,
            });
        }
        let fastest = out
            .iter()
            .filter_map(|c| c.ms_per_token)
            .fold(f64::INFINITY, f64::min);
        for c in &mut out {
            let speed = match c.ms_per_token {
                Some(ms) if fastest.is_finite() && fastest > 0.0 => ms / fastest,
                _ => 1.0,
            };
            // A network hop costs a little: equal otherwise, the local provider wins.
            let hop = if c.peer.is_some() { 1.05 } else { 1.0 };
            // Record: every failed audit doubles the score; jobs left to expire count half.
            let record =
                (1.0 + c.failed_on_ledger as f64) * (1.0 + 0.5 * c.expired_on_ledger as f64);
            c.score = (c.price_per_token.max(1) as f64)
                * (1.0 + 2.0 * c.load)
                * speed
                * hop
                * record
                * (1.0 + 0.5 * c.recent_failures.min(4) as f64);
        }
        out.sort_by(|a, b| {
            b.available
                .cmp(&a.available)
                .then(a.score.total_cmp(&b.score))
                .then(a.provider.cmp(&b.provider))
        });
        out
    }

    /// The best available provider for `model` not in `tried`, preferring `prefer` if it is
    /// available.
    pub fn pick(
        &self,
        model: &Hash32,
        tried: &HashSet<Hash32>,
        prefer: Option<&Hash32>,
    ) -> Option<(Target, u64)> {
        let all = self.candidates(model);
        let fresh: Vec<&Candidate> = all
            .iter()
            .filter(|c| c.available && !tried.contains(&c.provider))
            .collect();
        let c = prefer
            .and_then(|p| fresh.iter().find(|c| &c.provider == p))
            .or_else(|| fresh.first())?;
        let target = match c.peer {
            None => Target::Local,
            Some(peer) => Target::Remote {
                provider: c.provider,
                peer,
            },
        };
        Some((target, c.price_per_token))
    }

    /// The p2p identity of the node serving `provider`, if known.
    pub fn host_of(&self, provider: &Hash32) -> Option<Hash32> {
        if self
            .provider
            .as_ref()
            .is_some_and(|p| p.key.public() == *provider)
        {
            return Some(self.me);
        }
        self.lock().remotes.get(provider).map(|r| r.peer)
    }

    /// Records how long the local provider took, for ranking.
    pub fn observe_local(&self, tokens: usize, took: Duration) {
        let ms = took.as_secs_f64() * 1e3 / tokens.max(1) as f64;
        let mut inner = self.lock();
        inner.local_ms_per_token = Some(smooth(inner.local_ms_per_token, ms));
    }

    /// Sends a job to a remote provider and waits for its answer, forwarding the text to
    /// `sink` as it comes. The escrow (`req.tx`) must already be admitted here.
    pub async fn run_remote(
        &self,
        provider: Hash32,
        peer: Hash32,
        req: JobRequest,
        sink: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Done, AttemptError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.lock().pending.insert(id, tx);
        self.with_remote(&provider, |r| r.in_flight += 1);
        let started = Instant::now();
        let expect = hex::decode(&req.tx)
            .ok()
            .and_then(|b| Tx::decode(&b).ok())
            .and_then(|t| match t.action {
                vouch_types::tx::Action::SubmitJob { input_hash, .. } => {
                    Some((t.id(&self.chain.chain_id()), input_hash))
                }
                _ => None,
            });
        // What the receipt must say it did: the sampling and the controls asked for.
        let (want_sampling, want_controls) = (req.sampling(), req.controls());
        let r = async {
            let Some((job, input_hash)) = expect else {
                return Err(AttemptError::Client(ServeError::internal(
                    "dispatch: the escrow is not a submit_job transaction",
                )));
            };
            let sent = self.send(Some(peer), &Wire::Ask { id, job: req });
            if !sent.await.unwrap_or(false) {
                return Err(AttemptError::Provider("not connected".into()));
            }
            loop {
                let m = match tokio::time::timeout(SILENCE, rx.recv()).await {
                    Err(_) => {
                        return Err(AttemptError::Provider(format!(
                            "no word for {} s",
                            SILENCE.as_secs()
                        )))
                    }
                    Ok(None) => return Err(AttemptError::Provider("channel closed".into())),
                    Ok(Some(m)) => m,
                };
                match m {
                    Wire::Beat { .. } => {}
                    Wire::Chunk { text, .. } => {
                        if let Some(s) = &sink {
                            let _ = s.send(text);
                        }
                    }
                    Wire::Fail {
                        status, message, ..
                    } => {
                        let kind = ErrorKind::from_code(status);
                        return Err(if kind.provider_fault() {
                            AttemptError::Provider(message)
                        } else {
                            AttemptError::Client(ServeError::new(kind, message))
                        });
                    }
                    Wire::Done {
                        job: j,
                        receipt,
                        commit,
                        engine_ms,
                        ..
                    } => {
                        let receipt = *receipt;
                        // The answer counts only if it is the provider's signed receipt
                        // for this very job's input.
                        if j != job {
                            return Err(AttemptError::Provider("answered another job".into()));
                        }
                        if let Err(e) = vouch_verify::check_fast(&receipt) {
                            return Err(AttemptError::Provider(format!("bad receipt: {e}")));
                        }
                        if receipt.provider != provider || receipt.input_hash != input_hash {
                            return Err(AttemptError::Provider(
                                "receipt names another provider or input".into(),
                            ));
                        }
                        if receipt.sampling != want_sampling || receipt.controls() != want_controls
                        {
                            return Err(AttemptError::Provider(
                                "receipt names other sampling, stop strings or constraint than asked"
                                    .into(),
                            ));
                        }
                        if let Ok(json) = serde_json::to_vec(&receipt) {
                            let _ = self.chain.store().put_receipt(&receipt.id(), &json);
                        }
                        return Ok(Done {
                            job,
                            receipt,
                            commit,
                            engine: Duration::from_secs_f64(engine_ms.max(0.0) / 1e3),
                        });
                    }
                    _ => {}
                }
            }
        }
        .await;
        self.lock().pending.remove(&id);
        let took = started.elapsed();
        self.with_remote(&provider, |rm| {
            rm.in_flight = rm.in_flight.saturating_sub(1);
            match &r {
                Ok(d) => {
                    rm.answered += 1;
                    rm.failures = 0;
                    let ms = took.as_secs_f64() * 1e3 / d.receipt.output_tokens.len().max(1) as f64;
                    rm.ms_per_token = Some(smooth(rm.ms_per_token, ms));
                }
                Err(AttemptError::Provider(_)) => {
                    rm.failures += 1;
                    rm.avoid_until = Some(Instant::now() + BACKOFF);
                }
                Err(AttemptError::Client(_)) => {}
            }
        });
        r
    }

    fn with_remote(&self, provider: &Hash32, f: impl FnOnce(&mut Remote)) {
        if let Some(r) = self.lock().remotes.get_mut(provider) {
            f(r);
        }
    }

    /// Asks the node serving `provider` for a receipt body (for an audit).
    pub async fn fetch_receipt(&self, provider: &Hash32, id: &Hash32) -> Option<Receipt> {
        let peer = self.lock().remotes.get(provider).map(|r| r.peer)?;
        let (tx, rx) = oneshot::channel();
        self.lock().receipts.entry(*id).or_default().push(tx);
        self.send(Some(peer), &Wire::GetReceipt { id: *id });
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// Asks the node serving `provider` to open its trace for `job` (a spot-check audit);
    /// returns the opening's bytes.
    /// Waits at most `wait` (never more than [`OPENING_WAIT`]).
    pub async fn fetch_opening(
        &self,
        provider: &Hash32,
        job: &Hash32,
        wait: Duration,
    ) -> Result<Vec<u8>, String> {
        let peer = self
            .lock()
            .remotes
            .get(provider)
            .map(|r| r.peer)
            .ok_or("the provider's node is not connected")?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.lock().openings.insert(*job, tx);
        self.send(Some(peer), &Wire::GetOpening { job: *job });
        let collect = async {
            let mut parts: Vec<Option<Vec<u8>>> = Vec::new();
            while let Some(m) = rx.recv().await {
                let Wire::Opening {
                    part,
                    parts: n,
                    data,
                    error,
                    ..
                } = m
                else {
                    continue;
                };
                if let Some(e) = error {
                    return Err(e);
                }
                let n = n as usize;
                if n == 0 || n > MAX_OPENING_PARTS || (part as usize) >= n {
                    return Err("malformed opening part".to_string());
                }
                if parts.is_empty() {
                    parts = vec![None; n];
                } else if parts.len() != n {
                    return Err("opening parts disagree on their count".to_string());
                }
                parts[part as usize] =
                    Some(hex::decode(&data).map_err(|_| "opening part is not hex".to_string())?);
                if parts.iter().all(Option::is_some) {
                    return Ok(parts.into_iter().flatten().flatten().collect());
                }
            }
            Err("the provider's node went away".to_string())
        };
        let out = tokio::time::timeout(wait.min(OPENING_WAIT), collect)
            .await
            .unwrap_or_else(|_| Err("the provider did not open its trace in time".to_string()));
        self.lock().openings.remove(job);
        out
    }

    /// Opens this node's provider's trace for `job` at the challenges the chain fixed for
    /// it, if the job is under audit or dispute; otherwise says why not.
    async fn serve_opening(self: Arc<Self>, peer: Hash32, job: Hash32) {
        let reply = |part: u32, parts: u32, data: String, error: Option<String>| Wire::Opening {
            job,
            part,
            parts,
            data,
            error,
        };
        let result = self.open_for(&job).await;
        match result {
            Ok(bytes) => {
                let parts = bytes.len().div_ceil(OPENING_PART).max(1);
                for (i, chunk) in bytes.chunks(OPENING_PART).enumerate() {
                    self.send(
                        Some(peer),
                        &reply(i as u32, parts as u32, hex::encode(chunk), None),
                    );
                }
            }
            Err(e) => {
                self.send(Some(peer), &reply(0, 0, String::new(), Some(e)));
            }
        }
    }

    async fn open_for(&self, job: &Hash32) -> Result<Vec<u8>, String> {
        let p = self.provider.clone().ok_or("this node serves no jobs")?;
        let (rid, under_audit) = {
            let st = self.chain.state();
            let j = st.jobs.get(job).ok_or("no such job in flight")?;
            if j.provider != p.key.public() {
                return Err("the job is not this node's provider's".into());
            }
            let rid = j
                .result
                .as_ref()
                .map(|r| r.receipt)
                .ok_or("job not committed")?;
            (
                rid,
                j.audit_selected || j.status == vouch_state::JobStatus::Disputed,
            )
        };
        if !under_audit {
            return Err("the job was not selected for audit".into());
        }
        let bytes = self
            .chain
            .store()
            .receipt(&rid)
            .map_err(|e| e.to_string())?
            .ok_or("receipt not kept")?;
        let r: Receipt = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let checks = vouch_node::validator::spot_challenges(&self.chain, &r)?;
        // One opening at a time: it is a prefill on the model that also serves jobs.
        let _permit = p.queue.acquire().await.map_err(|e| e.to_string())?;
        let model = p
            .chat_model()
            .ok_or("this provider's engine has no model to open a trace on")?;
        tokio::task::spawn_blocking(move || {
            let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
            vouch_verify::spot::open(&mut m, &r, &checks)
                .map(|o| o.to_bytes())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Serves a peer's job with the local provider.
    async fn serve(self: Arc<Self>, peer: Hash32, id: u64, req: JobRequest) {
        let fail = |e: ServeError| Wire::Fail {
            id,
            status: e.kind.code(),
            message: e.message,
        };
        let Some(p) = self.provider.clone() else {
            self.send(
                Some(peer),
                &fail(ServeError::not_found("this node serves no jobs")),
            );
            return;
        };
        let (tx, work, permit) = match p.prepare(req).await {
            Ok(x) => x,
            Err(e) => {
                self.send(Some(peer), &fail(e));
                return;
            }
        };
        let job = tx.id(&self.chain.chain_id());
        // The escrow also reaches this node by gossip; the sender's earlier transactions
        // may still be on their way, so a nonce ahead of ours is retried briefly.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            // Kept in the outbox: this node answers for it (its commit follows it there).
            match self.chain.submit_kept(tx.clone()) {
                Ok(_) | Err(SubmitError::AlreadyCommitted(_)) => break,
                Err(SubmitError::Invalid(vouch_state::TxError::BadNonce { .. }))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    self.send(Some(peer), &fail(vouch_node::provider::submit_error(e)));
                    return;
                }
            }
        }
        let beat = {
            let me = self.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(1));
                loop {
                    t.tick().await;
                    me.send(Some(peer), &Wire::Beat { id });
                }
            })
        };
        let (ttx, mut trx) = mpsc::unbounded_channel::<String>();
        let fwd = {
            let me = self.clone();
            tokio::spawn(async move {
                while let Some(text) = trx.recv().await {
                    me.send(Some(peer), &Wire::Chunk { id, text });
                }
            })
        };
        let r = p
            .run_escrowed(&self.chain, Escrow::Admitted(job), work, Some(ttx))
            .await;
        drop(permit);
        let _ = fwd.await;
        beat.abort();
        let m = match r {
            Ok(d) => Wire::Done {
                id,
                job: d.job,
                commit: d.commit,
                engine_ms: d.engine.as_secs_f64() * 1e3,
                receipt: Box::new(d.receipt),
            },
            Err(e) => fail(e),
        };
        self.send(Some(peer), &m);
    }
}

fn hello_body(chain: &Hash32, peer: &Hash32, provider: &Hash32) -> Vec<u8> {
    [
        &chain.as_bytes()[..],
        &peer.as_bytes()[..],
        &provider.as_bytes()[..],
    ]
    .concat()
}

fn smooth(prev: Option<f64>, x: f64) -> f64 {
    match prev {
        Some(p) => 0.7 * p + 0.3 * x,
        None => x,
    }
}

/// The auditor's view of the other nodes.
impl vouch_node::validator::Peers for Dispatch {
    fn host_of(&self, provider: &Hash32) -> Option<Hash32> {
        Dispatch::host_of(self, provider)
    }
    fn fetch_receipt<'a>(
        &'a self,
        provider: &'a Hash32,
        id: &'a Hash32,
    ) -> PeerFuture<'a, Option<Receipt>> {
        Box::pin(Dispatch::fetch_receipt(self, provider, id))
    }
    fn fetch_opening<'a>(
        &'a self,
        provider: &'a Hash32,
        job: &'a Hash32,
        wait: Duration,
    ) -> PeerFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(Dispatch::fetch_opening(self, provider, job, wait))
    }
}
