//! The vouch ledger replicated by commonware simplex (prototype for the many-nodes work).
//!
//! Each validator runs a [`Ledger`]: the last finalized `vouch_state::State`, a tree of
//! verified-but-not-final blocks (each with the state after it), blocks received from
//! peers, and a mempool. Simplex orders block ids (the payload digest is the vouch header
//! id); the block bytes travel on a fourth p2p channel ([`App`]'s `Relay::broadcast`).
//!
//! * `propose(ctx)`: build on `ctx.parent`'s state with the mempool (`State::propose`).
//! * `verify(ctx, d)`: wait for the block bytes, check the parent link and clock skew,
//!   re-apply the block on the parent's state with every root compared.
//! * finalization: apply the finalized block and its not-yet-final ancestors in height
//!   order; prune the tree; drop included transactions from the mempool.
//!
//! [`simulate`] runs N validators in commonware's deterministic runtime over simulated
//! links, feeds the same signed transactions to every mempool (gossip), and returns what
//! each validator finalized, for the checkers in `tests/`.

use commonware_actor::Feedback;
use commonware_consensus::{
    simplex::{
        self,
        elector::RoundRobin,
        types::{Activity, Context},
        Floor, ForwardPolicy, Plan, SkipPolicy,
    },
    types::{Epoch, ViewDelta},
    Automaton, CertifiableAutomaton, Relay, Reporter,
};
use commonware_cryptography::{ed25519, sha256::Digest, Sha256, Signer};
use commonware_p2p::{simulated, Receiver as _, Recipients, Sender as _};
use commonware_runtime::{
    buffer::paged::CacheRef, deterministic, Clock, Quota, Runner as _, Spawner, Supervisor,
};
use commonware_utils::{
    channel::oneshot, ordered::Set, NZDuration, NZUsize, TryCollect, NZU16, NZU32,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use vouch_state::{Genesis, State};
use vouch_types::tx::{Block, Tx};
use vouch_types::Hash32;

pub type Pk = ed25519::PublicKey;
pub type Scheme = simplex::scheme::ed25519::Scheme;
pub type Ctx = Context<Digest, Pk>;

const NAMESPACE: &[u8] = b"vouch-bft-sim";
/// Longest a block's time may run ahead of the verifier's clock.
pub const MAX_SKEW_MS: u64 = 5_000;
const BLOCKS_CHANNEL: u64 = 3;

fn digest(h: &Hash32) -> Digest {
    Digest(h.0)
}
fn hash(d: &Digest) -> Hash32 {
    Hash32(d.0)
}

/// What a validator finalized: (height, block id, state root after it, tx count, proposer).
pub type Finalized = Vec<(u64, Hash32, Hash32, usize, Hash32)>;

struct Inner {
    final_state: State,
    final_digest: Digest,
    finalized: Finalized,
    /// Verified blocks not yet final, with the state after each.
    tree: HashMap<Digest, (Block, State)>,
    /// Block bytes from peers, not yet verified.
    received: HashMap<Digest, Block>,
    waiting: HashMap<Digest, Vec<oneshot::Sender<Block>>>,
    mempool: Vec<Tx>,
    /// Finalized payloads whose ancestry is not all known yet.
    orphans: Vec<Digest>,
    refused: u64,
    /// Finalized blocks, served to peers that missed them.
    archive: HashMap<Digest, Block>,
    out: Option<tokio::sync::mpsc::UnboundedSender<Out>>,
}

/// What a validator sends on the blocks channel.
#[derive(Debug, Clone)]
pub enum Out {
    /// A block, to every peer (a proposal) ...
    Block(Vec<u8>),
    /// ... or to the peer that asked for it.
    BlockTo(Pk, Vec<u8>),
    /// Ask every peer for a block by id.
    Want(Digest),
}

impl Out {
    pub fn wire(&self) -> Vec<u8> {
        match self {
            Out::Block(b) | Out::BlockTo(_, b) => {
                let mut v = vec![0u8];
                v.extend_from_slice(b);
                v
            }
            Out::Want(d) => {
                let mut v = vec![1u8];
                v.extend_from_slice(&d.0);
                v
            }
        }
    }
}

/// One validator's ledger (cheap to clone).
#[derive(Clone)]
pub struct Ledger(Arc<Mutex<Inner>>);

impl Ledger {
    pub fn new(genesis: &Genesis) -> Self {
        let state = genesis.state().expect("valid genesis");
        let d = digest(&state.last_block);
        Ledger(Arc::new(Mutex::new(Inner {
            final_state: state,
            final_digest: d,
            finalized: Vec::new(),
            tree: HashMap::new(),
            received: HashMap::new(),
            waiting: HashMap::new(),
            mempool: Vec::new(),
            orphans: Vec::new(),
            refused: 0,
            archive: HashMap::new(),
            out: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn genesis_digest(genesis: &Genesis) -> Digest {
        digest(&genesis.state().expect("valid genesis").last_block)
    }

    pub fn set_out(&self, out: tokio::sync::mpsc::UnboundedSender<Out>) {
        self.lock().out = Some(out);
    }

    fn want(inner: &Inner, d: Digest) {
        if let Some(o) = &inner.out {
            let _ = o.send(Out::Want(d));
        }
    }

    /// A peer asks for a block: answer if we have it anywhere.
    pub fn serve(&self, peer: Pk, d: Digest) {
        let inner = self.lock();
        let b = inner
            .archive
            .get(&d)
            .or_else(|| inner.tree.get(&d).map(|(b, _)| b))
            .or_else(|| inner.received.get(&d));
        if let (Some(b), Some(o)) = (b, &inner.out) {
            let _ = o.send(Out::BlockTo(peer, b.encode()));
        }
    }

    /// Asks again for whatever finalized ancestry is still missing.
    pub fn retry(&self) {
        self.finalize_pending();
    }

    pub fn submit(&self, tx: Tx) {
        self.lock().mempool.push(tx);
    }

    pub fn finalized(&self) -> Finalized {
        self.lock().finalized.clone()
    }

    pub fn state(&self) -> State {
        self.lock().final_state.clone()
    }

    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    fn state_at(inner: &Inner, d: &Digest) -> Option<State> {
        if *d == inner.final_digest {
            return Some(inner.final_state.clone());
        }
        inner.tree.get(d).map(|(_, s)| s.clone())
    }

    fn deliver(&self, block: Block) {
        let d = digest(&block.header.id());
        let mut inner = self.lock();
        if let Some(ws) = inner.waiting.remove(&d) {
            for w in ws {
                let _ = w.send(block.clone());
            }
        }
        if inner.received.len() < 4096 {
            inner.received.insert(d, block);
        }
    }

    /// Applies `d` and its not-yet-final ancestors. A finalized block that was never
    /// verified here (its bytes were lost, or arrived late) is applied on its parent's
    /// state with every root checked; a missing one is requested from peers.
    fn finalize(&self, d: Digest) {
        self.lock().orphans.push(d);
        self.finalize_pending();
    }

    fn finalize_pending(&self) {
        let mut inner = self.lock();
        let pending = std::mem::take(&mut inner.orphans);
        for d in pending {
            if inner.archive.contains_key(&d) {
                continue;
            }
            // Walk back to the last final block through verified or received blocks.
            let mut chain = Vec::new();
            let mut cur = d;
            let mut missing = None;
            while cur != inner.final_digest {
                let b = inner
                    .tree
                    .get(&cur)
                    .map(|(b, _)| b)
                    .or_else(|| inner.received.get(&cur));
                match b {
                    Some(b) if b.header.height > inner.final_state.height => {
                        chain.push(cur);
                        cur = digest(&b.header.parent);
                    }
                    _ => {
                        missing = Some(cur);
                        break;
                    }
                }
            }
            if let Some(m) = missing {
                Ledger::want(&inner, m);
                inner.orphans.push(d);
                continue;
            }
            for c in chain.into_iter().rev() {
                let (block, state) = match inner.tree.remove(&c) {
                    Some(x) => x,
                    None => {
                        let block = inner.received.remove(&c).expect("walked");
                        let mut st = inner.final_state.clone();
                        if st.apply_block(&block, true).is_err() {
                            // A certified block that does not apply: this node's state
                            // differs from the quorum's. Stop applying; a checker will
                            // see this validator fall behind.
                            inner.refused += 1;
                            return;
                        }
                        (block, st)
                    }
                };
                let chain_id = state.chain;
                let ids: HashSet<Hash32> = block.txs.iter().map(|t| t.id(&chain_id)).collect();
                inner.mempool.retain(|t| !ids.contains(&t.id(&chain_id)));
                inner.finalized.push((
                    block.header.height,
                    block.header.id(),
                    state.root(),
                    block.txs.len(),
                    block.header.proposer,
                ));
                inner.archive.insert(c, block);
                inner.final_state = state;
                inner.final_digest = c;
            }
            let h = inner.final_state.height;
            inner.tree.retain(|_, (b, _)| b.header.height > h);
            inner.received.retain(|_, b| b.header.height > h);
        }
    }
}

/// Automaton + Relay for one validator.
pub struct App<E> {
    ctx: E,
    ledger: Ledger,
    proposer: Hash32,
    out: tokio::sync::mpsc::UnboundedSender<Out>,
    /// A lying proposer: its blocks claim a state root the transactions do not produce.
    lie: bool,
}

impl<E: Supervisor> Clone for App<E> {
    fn clone(&self) -> Self {
        App {
            ctx: self.ctx.child("app"),
            ledger: self.ledger.clone(),
            proposer: self.proposer,
            out: self.out.clone(),
            lie: self.lie,
        }
    }
}

fn now_ms<E: Clock>(ctx: &E) -> u64 {
    ctx.current()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<E: Clock + Spawner + Supervisor + Send + Sync + 'static> Automaton for App<E> {
    type Context = Ctx;
    type Digest = Digest;

    async fn propose(&mut self, ctx: Ctx) -> oneshot::Receiver<Digest> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.ledger.lock();
        let Some(parent) = Ledger::state_at(&inner, &ctx.parent.1) else {
            return rx; // unknown parent: decline
        };
        let mut p = parent.propose(&inner.mempool, now_ms(&self.ctx), self.proposer, false);
        if self.lie {
            p.block.header.state_root.0[0] ^= 1;
        }
        let d = digest(&p.block.header.id());
        inner.tree.insert(d, (p.block, p.state));
        let _ = tx.send(d);
        rx
    }

    async fn verify(&mut self, ctx: Ctx, payload: Digest) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let ledger = self.ledger.clone();
        // Our own proposal (or one already verified).
        if ledger.lock().tree.contains_key(&payload) {
            let _ = tx.send(true);
            return rx;
        }
        let block_rx = {
            let mut inner = ledger.lock();
            let (btx, brx) = oneshot::channel();
            match inner.received.get(&payload).cloned() {
                Some(b) => {
                    let _ = btx.send(b);
                }
                None => {
                    inner.waiting.entry(payload).or_default().push(btx);
                    Ledger::want(&inner, payload);
                }
            }
            brx
        };
        self.ctx.child("verify").spawn(move |clock| async move {
            let Ok(block) = block_rx.await else {
                return;
            };
            // The parent's state: unknown if its bytes never arrived here; then this
            // validator abstains (no vote either way) and asks for it.
            let Some(mut state) = Ledger::state_at(&ledger.lock(), &ctx.parent.1) else {
                let inner = ledger.lock();
                Ledger::want(&inner, ctx.parent.1);
                return;
            };
            let ok = block.header.parent == hash(&ctx.parent.1)
                && block.header.time <= now_ms(&clock).saturating_add(MAX_SKEW_MS)
                && state.apply_block(&block, true).is_ok();
            if ok {
                ledger.lock().tree.insert(payload, (block, state));
            } else {
                ledger.lock().refused += 1;
            }
            let _ = tx.send(ok);
        });
        rx
    }
}

impl<E: Clock + Spawner + Supervisor + Send + Sync + 'static> CertifiableAutomaton for App<E> {}

impl<E: Clock + Spawner + Supervisor + Send + Sync + 'static> Relay for App<E> {
    type Digest = Digest;
    type PublicKey = Pk;
    type Plan = Plan<Pk>;
    fn broadcast(&mut self, payload: Digest, _plan: Plan<Pk>) -> Feedback {
        if let Some((b, _)) = self.ledger.lock().tree.get(&payload) {
            let _ = self.out.send(Out::Block(b.encode()));
        }
        Feedback::Ok
    }
}

/// Applies finalizations to the ledger.
#[derive(Clone)]
pub struct Fin(Ledger);

impl Reporter for Fin {
    type Activity = Activity<Scheme, Digest>;
    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Activity::Finalization(f) = activity {
            self.0.finalize(f.proposal.payload);
        }
        Feedback::Ok
    }
}

/// A simulation: validators, link quality, faults, and when to stop.
#[derive(Clone, Debug)]
pub struct SimPlan {
    pub seed: u64,
    pub validators: usize,
    /// Validators never started (crashed from the beginning).
    pub offline: Vec<usize>,
    /// Validators that propose blocks with a false state root.
    pub liars: Vec<usize>,
    pub latency: Duration,
    pub jitter: Duration,
    /// Probability that a message is delivered.
    pub success: f64,
    /// Signed transactions fed to every mempool at the start.
    pub txs: Vec<Tx>,
    /// Stop when every live validator finalized this height (or at `timeout`).
    pub target_height: u64,
    pub timeout: Duration,
}

/// What each validator finalized (None for offline ones) and its final state.
pub struct Outcome {
    pub finalized: Vec<Option<Finalized>>,
    pub states: Vec<Option<State>>,
    pub refused: Vec<u64>,
    pub elapsed: Duration,
}

/// Vouch keys of the validators (their addresses go in the genesis).
pub fn vouch_key(i: usize) -> vouch_crypto::SigningKey {
    let mut b = [0u8; 32];
    b[0] = 0xb0;
    b[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    vouch_crypto::SigningKey::from_bytes(&b).expect("32 bytes")
}

pub fn simulate(genesis: &Genesis, plan: &SimPlan) -> Outcome {
    let cfg = deterministic::Config::new()
        .with_seed(plan.seed)
        .with_timeout(Some(plan.timeout + Duration::from_secs(60)));
    let runner = deterministic::Runner::new(cfg);
    let genesis = genesis.clone();
    let plan = plan.clone();
    runner.start(|context| async move {
        let keys: Vec<ed25519::PrivateKey> = (0..plan.validators)
            .map(|i| ed25519::PrivateKey::from_seed(i as u64))
            .collect();
        let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
        let participants: Set<Pk> = pks.iter().cloned().try_collect().expect("unique");
        let (network, oracle) = simulated::Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size: 1 << 22,
                max_peers_per_set: NZUsize!(plan.validators + 1),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
            pks.clone(),
        )
        .await;
        network.start();
        let link = simulated::Link {
            latency: plan.latency,
            jitter: plan.jitter,
            success_rate: commonware_utils::Probability::from_f64(plan.success)
                .expect("probability in [0, 1]"),
        };
        for a in &pks {
            for b in &pks {
                if a != b {
                    oracle
                        .add_link(a.clone(), b.clone(), link.clone())
                        .await
                        .unwrap();
                }
            }
        }
        let quota = Quota::per_second(NZU32!(100_000));
        let mut ledgers: Vec<Option<Ledger>> = Vec::new();
        let start = context.current();
        for (i, key) in keys.into_iter().enumerate() {
            if plan.offline.contains(&i) {
                ledgers.push(None);
                continue;
            }
            let control = oracle.control(pks[i].clone());
            let vote = control.register(0, quota).await.unwrap();
            let cert = control.register(1, quota).await.unwrap();
            let resolver = control.register(2, quota).await.unwrap();
            let (mut bsend, mut brecv) = control.register(BLOCKS_CHANNEL, quota).await.unwrap();
            let ledger = Ledger::new(&genesis);
            for tx in &plan.txs {
                ledger.submit(tx.clone());
            }
            let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Out>();
            ledger.set_out(out_tx.clone());
            let ctx = context.child("validator").with_attribute("index", i);
            ctx.child("block_out").spawn(move |_| async move {
                while let Some(m) = out_rx.recv().await {
                    let to = match &m {
                        Out::BlockTo(p, _) => Recipients::One(p.clone()),
                        _ => Recipients::All,
                    };
                    let _ = bsend.send(to, m.wire(), false);
                }
            });
            let l = ledger.clone();
            ctx.child("block_in").spawn(move |_| async move {
                while let Ok((peer, buf)) = brecv.recv().await {
                    let bytes: &[u8] = buf.as_ref();
                    match bytes.split_first() {
                        Some((0, rest)) => {
                            if let Ok(b) = Block::decode(rest) {
                                l.deliver(b);
                                l.retry();
                            }
                        }
                        Some((1, rest)) if rest.len() == 32 => {
                            let mut d = [0u8; 32];
                            d.copy_from_slice(rest);
                            l.serve(peer, Digest(d));
                        }
                        _ => {}
                    }
                }
            });
            let app = App {
                ctx: ctx.child("app"),
                ledger: ledger.clone(),
                proposer: vouch_key(i).public(),
                out: out_tx,
                lie: plan.liars.contains(&i),
            };
            let scheme = Scheme::signer(NAMESPACE, participants.clone(), key).expect("member");
            let engine = simplex::Engine::new(
                ctx.child("engine"),
                simplex::Config {
                    scheme,
                    elector: RoundRobin::<Sha256>::default(),
                    blocker: oracle.control(pks[i].clone()),
                    automaton: app.clone(),
                    relay: app,
                    reporter: Fin(ledger.clone()),
                    track_historical_votes: false,
                    strategy: commonware_parallel::Sequential,
                    partition: format!("validator-{i}"),
                    mailbox_size: NZUsize!(1024),
                    epoch: Epoch::zero(),
                    floor: Floor::Genesis(Ledger::genesis_digest(&genesis)),
                    replay_buffer: NZUsize!(1 << 20),
                    write_buffer: NZUsize!(1 << 20),
                    page_cache: CacheRef::new(NZU16!(16_384), NZUsize!(1_000)),
                    leader_timeout: Duration::from_secs(1),
                    certification_timeout: Duration::from_secs(2),
                    timeout_retry: Duration::from_secs(10),
                    view_retention: ViewDelta::new(10),
                    skip: SkipPolicy::Disabled,
                    fetch_timeout: NZDuration!(Duration::from_secs(1)),
                    fetch_retry_delay: Duration::from_millis(100),
                    forward: ForwardPolicy::Disabled,
                },
            );
            engine.start(vote, cert, resolver);
            ledgers.push(Some(ledger));
        }
        let deadline = start + plan.timeout;
        loop {
            let done = ledgers
                .iter()
                .flatten()
                .all(|l| l.finalized().last().map(|f| f.0).unwrap_or(0) >= plan.target_height);
            if done || context.current() >= deadline {
                break;
            }
            for l in ledgers.iter().flatten() {
                l.retry();
            }
            context.sleep(Duration::from_millis(50)).await;
        }
        Outcome {
            finalized: ledgers
                .iter()
                .map(|l| l.as_ref().map(Ledger::finalized))
                .collect(),
            states: ledgers
                .iter()
                .map(|l| l.as_ref().map(Ledger::state))
                .collect(),
            refused: ledgers
                .iter()
                .map(|l| l.as_ref().map_or(0, Ledger::refused))
                .collect(),
            elapsed: context.current().duration_since(start).unwrap_or_default(),
        }
    })
}

/// The longest common prefix check: every pair of validators agrees at every height both
/// finalized (no fork).
pub fn check_no_fork(out: &Outcome) -> Result<(), String> {
    let mut by_height: BTreeMap<u64, (Hash32, Hash32)> = BTreeMap::new();
    for (i, f) in out.finalized.iter().enumerate() {
        let Some(f) = f else { continue };
        for (k, (h, id, root, _, _)) in f.iter().enumerate() {
            if *h != k as u64 + 1 {
                return Err(format!("validator {i}: height {h} at position {k}"));
            }
            match by_height.get(h) {
                Some((id2, root2)) if id2 != id || root2 != root => {
                    return Err(format!("fork at height {h}: validator {i} has {id}"));
                }
                _ => {
                    by_height.insert(*h, (*id, *root));
                }
            }
        }
    }
    Ok(())
}
