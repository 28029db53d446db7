//! Single-validator commonware simplex, embedded as a library.
//!
//! * [`App`]      – Automaton + CertifiableAutomaton + Relay (propose/verify/broadcast)
//! * [`Fin`]      – Reporter forwarding finalizations / nullifications on a tokio mpsc
//! * null p2p     – [`NullSender`] / [`NullReceiver`] / [`NoBlocker`]; n = 1 needs no network
//! * [`start_engine`] – wires `simplex::Engine` for any commonware runtime context
//! * [`spawn_node_thread`] – runs a `commonware_runtime::tokio::Runner` on its own std::thread
//!   and bridges to the caller's (possibly different) tokio runtime with tokio channels.

use commonware_actor::{Feedback, Unreliable};
use commonware_consensus::{
    Automaton, CertifiableAutomaton, Relay, Reporter, Viewable,
    simplex::{
        self, Floor, ForwardPolicy, Plan, SkipPolicy,
        elector::RoundRobin,
        types::{Activity, Context},
    },
    types::{Epoch, ViewDelta},
};
use commonware_cryptography::{Hasher, PublicKey, Sha256, Signer, ed25519, sha256::Digest};
use commonware_p2p::{BlockedSubscription, Blocker, CheckedSender, LimitedSender, Receiver, Recipients};
use commonware_runtime::{
    Clock, Handle, IoBuf, IoBufs, Metrics, Runner as _, Spawner, Storage, Supervisor,
    buffer::paged::CacheRef,
};
use commonware_utils::{NZDuration, NZU16, NZUsize, TryCollect, channel::oneshot, ordered::Set};
use std::{
    collections::{HashMap, VecDeque},
    io::{Read as _, Write as _},
    marker::PhantomData,
    num::NonZeroUsize,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::sync::mpsc;

pub type Pk = ed25519::PublicKey;
pub type Scheme = simplex::scheme::ed25519::Scheme;
pub type Ctx = Context<Digest, Pk>;

const NAMESPACE: &[u8] = b"simplex-solo";

pub fn genesis() -> Digest {
    Sha256::hash(&[b"simplex-solo-genesis"])
}

// ---------------------------------------------------------------------------------------------
// Application (Automaton + Relay)
// ---------------------------------------------------------------------------------------------

/// How `propose` behaves when there is no pending work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Always propose (empty blocks allowed).
    Always,
    /// Keep the oneshot sender; complete it when work arrives.
    PendUntilWork,
    /// Drop the oneshot sender immediately (decline to propose).
    DeclineWithoutWork,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub height: u64,
    pub parent: Digest,
    pub items: Vec<Vec<u8>>,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub proposed: u64,
    pub pended: u64,
    pub declined: u64,
}

struct State {
    mode: Mode,
    blocks: HashMap<Digest, Block>,
    work: VecDeque<Vec<u8>>,
    pending: Option<(Ctx, oneshot::Sender<Digest>)>,
    /// Append-only log of (digest, height): simplex stores only votes/certificates, so the
    /// application must persist its own digest -> block mapping to resume after restart.
    log: Option<std::fs::File>,
    stats: Stats,
}

impl State {
    fn build(&mut self, ctx: &Ctx) -> Digest {
        let parent = ctx.parent.1;
        let height = self
            .blocks
            .get(&parent)
            .unwrap_or_else(|| panic!("unknown parent {parent}"))
            .height
            + 1;
        let items: Vec<Vec<u8>> = self.work.drain(..).collect();
        let view = ctx.round.view().get();
        let mut parts: Vec<&[u8]> = Vec::new();
        let hb = height.to_be_bytes();
        let vb = view.to_be_bytes();
        parts.push(&hb);
        parts.push(&vb);
        parts.push(parent.as_ref());
        for i in &items {
            parts.push(i);
        }
        let digest = Sha256::hash(&parts);
        if let Some(f) = self.log.as_mut() {
            // Blocking write inside an async fn: fine for a prototype, use a real store later.
            let mut rec = [0u8; 40];
            rec[..32].copy_from_slice(digest.as_ref());
            rec[32..].copy_from_slice(&height.to_be_bytes());
            f.write_all(&rec).and_then(|_| f.sync_data()).expect("persist block");
        }
        self.blocks.insert(digest, Block { height, parent, items });
        self.stats.proposed += 1;
        digest
    }
}

/// Cheap-to-clone handle; implements Automaton, CertifiableAutomaton and Relay.
#[derive(Clone)]
pub struct App(Arc<Mutex<State>>);

impl App {
    /// `persist`: optional file holding the digest -> height log (loaded if present).
    pub fn new(mode: Mode, persist: Option<PathBuf>) -> Self {
        let mut blocks = HashMap::new();
        blocks.insert(genesis(), Block { height: 0, parent: genesis(), items: vec![] });
        let log = persist.map(|p| {
            if let Ok(mut f) = std::fs::File::open(&p) {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).unwrap();
                for rec in buf.chunks_exact(40) {
                    let d = Digest(rec[..32].try_into().unwrap());
                    let h = u64::from_be_bytes(rec[32..].try_into().unwrap());
                    // parent/items are not persisted in this prototype
                    blocks.insert(d, Block { height: h, parent: genesis(), items: vec![] });
                }
            }
            std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap()
        });
        Self(Arc::new(Mutex::new(State {
            mode,
            blocks,
            work: VecDeque::new(),
            pending: None,
            log,
            stats: Stats::default(),
        })))
    }

    pub fn set_mode(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }

    pub fn stats(&self) -> Stats {
        self.0.lock().unwrap().stats
    }

    pub fn block(&self, d: &Digest) -> Option<Block> {
        self.0.lock().unwrap().blocks.get(d).cloned()
    }

    /// Queue work; if consensus is waiting on a pending proposal, complete it now.
    pub fn submit(&self, item: Vec<u8>) {
        let mut s = self.0.lock().unwrap();
        s.work.push_back(item);
        if let Some((ctx, tx)) = s.pending.take() {
            if !tx.is_closed() {
                let d = s.build(&ctx);
                let _ = tx.send(d);
            }
        }
    }
}

impl Automaton for App {
    type Context = Ctx;
    type Digest = Digest;

    async fn propose(&mut self, ctx: Ctx) -> oneshot::Receiver<Digest> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.0.lock().unwrap();
        if s.mode == Mode::Always || !s.work.is_empty() {
            let d = s.build(&ctx);
            let _ = tx.send(d);
        } else if s.mode == Mode::PendUntilWork {
            s.stats.pended += 1;
            s.pending = Some((ctx, tx)); // replaces (drops) any older pending request
        } else {
            s.stats.declined += 1;
            drop(tx);
        }
        rx
    }

    async fn verify(&mut self, _ctx: Ctx, _payload: Digest) -> oneshot::Receiver<bool> {
        // n = 1: we only ever see our own proposals (e.g. replayed after restart).
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(true);
        rx
    }
}

// prepare() -> Handoff::Wait and certify() -> true defaults are fine.
impl CertifiableAutomaton for App {}

impl Relay for App {
    type Digest = Digest;
    type PublicKey = Pk;
    type Plan = Plan<Pk>;
    fn broadcast(&mut self, _payload: Digest, _plan: Plan<Pk>) -> Feedback {
        Feedback::Ok // nobody to send the block to
    }
}

// ---------------------------------------------------------------------------------------------
// Reporter
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Event {
    Finalized { view: u64, parent_view: u64, digest: Digest, height: Option<u64>, items: Vec<Vec<u8>> },
    Nullified { view: u64 },
}

#[derive(Clone)]
pub struct Fin {
    app: App,
    tx: mpsc::UnboundedSender<Event>,
}

impl Reporter for Fin {
    type Activity = Activity<Scheme, Digest>;
    fn report(&mut self, activity: Self::Activity) -> Feedback {
        let ev = match activity {
            Activity::Finalization(f) => {
                let block = self.app.block(&f.proposal.payload);
                Event::Finalized {
                    view: f.proposal.round.view().get(),
                    parent_view: f.proposal.parent.get(),
                    digest: f.proposal.payload,
                    height: block.as_ref().map(|b| b.height),
                    items: block.map(|b| b.items).unwrap_or_default(),
                }
            }
            Activity::Nullification(n) => Event::Nullified { view: n.view().get() },
            _ => return Feedback::Ok,
        };
        let _ = self.tx.send(ev);
        Feedback::Ok
    }
}

// ---------------------------------------------------------------------------------------------
// Null network (n = 1: own votes go straight to the batcher, nothing needs the wire)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct NullSender<P>(PhantomData<P>);
pub struct NullChecked<P>(PhantomData<P>);

impl<P: PublicKey> CheckedSender for NullChecked<P> {
    type PublicKey = P;
    fn recipients(&self) -> Vec<P> {
        Vec::new()
    }
    fn send(self, _m: impl Into<IoBufs> + Send, _prio: bool) -> Unreliable<Feedback> {
        Unreliable::new(Feedback::Ok)
    }
}

impl<P: PublicKey> LimitedSender for NullSender<P> {
    type PublicKey = P;
    type Checked<'a> = NullChecked<P> where Self: 'a;
    fn check(&mut self, _r: Recipients<P>) -> Result<NullChecked<P>, SystemTime> {
        Ok(NullChecked(PhantomData))
    }
}

/// Must pend forever: batcher/resolver loops exit if a receiver returns Err.
#[derive(Debug)]
pub struct NullReceiver<P>(PhantomData<P>);

impl<P: PublicKey> Receiver for NullReceiver<P> {
    type Error = std::convert::Infallible;
    type PublicKey = P;
    async fn recv(&mut self) -> Result<(P, IoBuf), Self::Error> {
        std::future::pending().await
    }
    fn capacity(&self) -> NonZeroUsize {
        NonZeroUsize::MIN
    }
}

#[derive(Clone)]
pub struct NoBlocker<P>(PhantomData<P>);

impl<P: PublicKey> Blocker for NoBlocker<P> {
    type PublicKey = P;
    fn block(&mut self, _: P) -> Feedback {
        Feedback::Ok
    }
    fn blocked(&mut self) -> BlockedSubscription<P> {
        commonware_utils::channel::ring::channel(NonZeroUsize::MIN).1
    }
}

fn null_channel() -> (NullSender<Pk>, NullReceiver<Pk>) {
    (NullSender(PhantomData), NullReceiver(PhantomData))
}

// ---------------------------------------------------------------------------------------------
// Engine wiring
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub key_seed: u64,
    pub partition: String,
    pub leader_timeout: Duration,
    pub certification_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            key_seed: 0,
            partition: "simplex-solo-simplex".into(),
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
        }
    }
}

/// Start a single-validator simplex engine on any commonware runtime context.
pub fn start_engine<E>(ctx: E, cfg: &NodeConfig, app: App, events: mpsc::UnboundedSender<Event>) -> Handle<()>
where
    E: Clock + rand_core::CryptoRng + Spawner + Storage + Metrics,
{
    let key = ed25519::PrivateKey::from_seed(cfg.key_seed);
    let participants: Set<Pk> = [key.public_key()].into_iter().try_collect().expect("unique");
    let scheme = Scheme::signer(NAMESPACE, participants, key).expect("we are a participant");
    let reporter = Fin { app: app.clone(), tx: events };
    let engine = simplex::Engine::new(
        ctx,
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker: NoBlocker::<Pk>(PhantomData),
            automaton: app.clone(),
            relay: app,
            reporter,
            track_historical_votes: false,
            strategy: commonware_parallel::Sequential,
            partition: cfg.partition.clone(),
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: Floor::Genesis(genesis()),
            replay_buffer: NZUsize!(1 << 20),
            write_buffer: NZUsize!(1 << 20),
            page_cache: CacheRef::new(NZU16!(16_384), NZUsize!(1_000)),
            leader_timeout: cfg.leader_timeout,
            certification_timeout: cfg.certification_timeout,
            timeout_retry: Duration::from_secs(10),
            view_retention: ViewDelta::new(10),
            skip: SkipPolicy::Disabled,
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
        },
    );
    engine.start(null_channel(), null_channel(), null_channel())
}

// ---------------------------------------------------------------------------------------------
// Bridge: commonware tokio Runner on a dedicated std::thread
// ---------------------------------------------------------------------------------------------

pub enum Command {
    Work(Vec<u8>),
    SetMode(Mode),
    Stats(tokio::sync::oneshot::Sender<Stats>),
}

pub struct NodeHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<Event>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeHandle {
    /// Stop the consensus runtime and join its thread (blocking; call via spawn_blocking
    /// from async code, or after the outer runtime is done). Returns the event receiver so
    /// events reported right before the stop can still be drained.
    pub fn shutdown(mut self) -> mpsc::UnboundedReceiver<Event> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("consensus thread panicked");
        }
        self.events
    }
}

/// Run the engine inside its own `commonware_runtime::tokio::Runner` on a new OS thread.
/// All interaction goes through tokio channels, which work across runtimes.
pub fn spawn_node_thread(storage_dir: PathBuf, cfg: NodeConfig, mode: Mode) -> NodeHandle {
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("consensus".into())
        .spawn(move || {
            let rt_cfg = commonware_runtime::tokio::Config::new()
                .with_storage_directory(storage_dir.clone())
                .with_worker_threads(2);
            commonware_runtime::tokio::Runner::new(rt_cfg).start(|ctx| async move {
                let app = App::new(mode, Some(storage_dir.join("blocks.bin")));
                let _engine = start_engine(ctx.child("engine"), &cfg, app.clone(), ev_tx);
                loop {
                    tokio::select! {
                        cmd = cmd_rx.recv() => match cmd {
                            Some(Command::Work(w)) => app.submit(w),
                            Some(Command::SetMode(m)) => app.set_mode(m),
                            Some(Command::Stats(tx)) => { let _ = tx.send(app.stats()); }
                            None => break,
                        },
                        _ = &mut stop_rx => break,
                    }
                }
                // Returning from the root future aborts all tasks (engine included).
                // The voter journal is synced before each local vote is exported, so
                // everything we already reported is durable.
            });
        })
        .expect("spawn consensus thread");
    NodeHandle { commands: cmd_tx, events: ev_rx, shutdown: Some(stop_tx), thread: Some(thread) }
}

// ---------------------------------------------------------------------------------------------
// Test A: deterministic runtime
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_runtime::deterministic;

    #[test]
    fn single_validator_finalizes_deterministic() {
        let runner = deterministic::Runner::timed(Duration::from_secs(60));
        let (finals, elapsed) = runner.start(|ctx| async move {
            let app = App::new(Mode::Always, None);
            let (tx, mut rx) = mpsc::unbounded_channel();
            let start = ctx.current();
            let _h = start_engine(ctx.child("engine"), &NodeConfig::default(), app, tx);
            let mut finals = Vec::new();
            while let Some(ev) = rx.recv().await {
                if let Event::Finalized { view, height, digest, .. } = ev {
                    finals.push((view, height.expect("own block"), digest));
                    if view >= 20 {
                        break;
                    }
                }
            }
            (finals, ctx.current().duration_since(start).unwrap())
        });
        println!("finalized {} blocks, simulated time {:?}", finals.len(), elapsed);
        assert!(finals.last().unwrap().0 >= 20);
        for w in finals.windows(2) {
            assert!(w[1].0 > w[0].0, "views increase");
            assert_eq!(w[1].1, w[0].1 + 1, "heights consecutive");
        }
        assert_eq!(finals[0].1, 1);
    }
}
