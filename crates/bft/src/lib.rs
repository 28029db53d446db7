//! The vouch ledger under commonware simplex.
//!
//! Simplex orders 32-byte digests; here a digest is a vouch header id. This crate gives
//! the engine what it needs to order vouch blocks, and gives the ledger what simplex
//! decides:
//!
//! * [`App`] (simplex `Automaton` + `Relay`): `propose(ctx)` builds a block on the state
//!   after `ctx.parent` (which may be notarized but not yet final); `verify(ctx, d)` waits
//!   for the block's bytes, checks its parent link and clock skew, and re-applies it with
//!   every root compared; `broadcast` sends the proposed block's bytes to every peer.
//! * [`Fin`] (simplex `Reporter`): a finalization applies the block and any not-yet-final
//!   ancestors in height order and hands each to the [`Backend`] with a certificate the
//!   light check can verify offline (the engine's own finalize votes, or for an ancestor
//!   made final by its descendant, the notarize votes the engine reported for it).
//! * [`Ledger`]: the tree of verified blocks not yet final (each with its post-state),
//!   block bytes received from peers, and block fetch: a block that is needed and absent
//!   (lost broadcast, a node that was down) is asked for by id from every peer.
//!
//! Everything runtime-specific comes in as a parameter: the clock through the runtime
//! context, the network through the senders and receivers given to [`spawn_io`], and
//! the ledger itself through [`Backend`] (the node's durable chain, or the simulator's
//! in-memory one), so the same code runs in the node and in the deterministic simulator.

use commonware_actor::Feedback;
use commonware_codec::DecodeExt;
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
use commonware_cryptography::{ed25519, sha256::Digest, Sha256};
use commonware_p2p::{Blocker, Receiver, Recipients, Sender};
use commonware_runtime::{buffer::paged::CacheRef, Clock, Spawner, Supervisor};
use commonware_utils::{channel::oneshot, ordered::Set, NZDuration, NZUsize, TryCollect, NZU16};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};
use vouch_state::{Applied, State};
use vouch_types::tx::{Block, Certificate, SimplexRound, Tx, Vote, VoteKind};
use vouch_types::Hash32;

pub type Pk = ed25519::PublicKey;
pub type Scheme = simplex::scheme::ed25519::Scheme;
pub type Ctx = Context<Digest, Pk>;

/// p2p channels: the engine's three, then vouch blocks and vouch transactions.
pub const VOTE_CHANNEL: u64 = 0;
pub const CERT_CHANNEL: u64 = 1;
pub const RESOLVER_CHANNEL: u64 = 2;
pub const BLOCK_CHANNEL: u64 = 3;
pub const TX_CHANNEL: u64 = 4;
/// Job dispatch between gateways and providers (the node's own protocol).
pub const JOB_CHANNEL: u64 = 5;

/// Longest a block's time may run ahead of the verifier's clock.
pub const MAX_SKEW_MS: u64 = 5_000;
/// Finalized blocks kept in memory to answer peers without touching the store.
const RECENT_BLOCKS: usize = 1_024;
/// Polls (5 ms apart) a verifier waits for the parent's own verification.
const PARENT_WAIT_POLLS: usize = 200;
/// Retry ticks a node waits for a peer's certificate of an implicitly finalized block.
const CERT_WAIT_TICKS: u32 = 20;
/// Ancestors sent along with a requested block.
const CATCH_UP_BATCH: usize = 32;
/// Blocks from peers held before they are verified or finalized.
const MAX_RECEIVED: usize = 4_096;

fn digest(h: &Hash32) -> Digest {
    Digest(h.0)
}
fn hash(d: &Digest) -> Hash32 {
    Hash32(d.0)
}

/// The ledger the engine drives: durable on a node, in memory in the simulator.
pub trait Backend: Send + Sync + 'static {
    /// State after the last finalized block.
    fn last(&self) -> Arc<State>;
    /// Transactions to put in a block, in mempool order.
    fn candidates(&self) -> Vec<Tx>;
    /// Whether candidates had their signatures checked on admission.
    fn prechecked(&self) -> bool {
        false
    }
    /// Whether a block is worth proposing at `now` (ms): transactions or a timer due.
    fn has_work(&self, now: u64) -> bool;
    /// Makes a finalized block (certificate filled in) durable and current; `state` is
    /// the state after it. An error stops finalization here (the node stops).
    fn commit(&self, block: Block, state: State, applied: Applied) -> Result<(), String>;
    /// A finalized block by height, to serve peers that missed it.
    fn block_at(&self, height: u64) -> Option<Block>;
    /// A transaction a peer gossiped.
    fn receive_tx(&self, tx: Tx);
}

/// How a validator proposes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This validator's vouch address (the header's proposer).
    pub proposer: Hash32,
    /// Propose empty blocks when there is nothing to do (the simulator does, to make
    /// progress measurable); otherwise a leader waits for work up to `max_wait`.
    pub idle_blocks: bool,
    /// Least time between a block and its parent (ms), so a busy network batches.
    pub min_interval_ms: u64,
    /// How long a leader with nothing to propose holds its turn before declining.
    pub max_wait: Duration,
    /// Testing: propose blocks whose state root is false (a lying proposer).
    pub lie: bool,
    /// Testing: with each proposal, build a second, different valid block on the same
    /// parent and send it to this peer only (an equivocating leader; the vote channel
    /// wrapper in the simulator signs the conflicting vote, see [`Ledger::twin_of`]).
    pub equivocate_to: Option<Pk>,
}

/// What goes out on the block and transaction channels.
#[derive(Debug, Clone)]
pub enum Out {
    /// A proposed block, to every peer.
    Block(Vec<u8>),
    /// A block, to the peer that asked for it.
    BlockTo(Pk, Vec<u8>),
    /// Ask every peer for a block by id (with its height when known, else `u64::MAX`).
    Want(Digest, u64),
    /// A transaction admitted here, to every peer.
    Tx(Vec<u8>),
}

impl Out {
    pub fn wire(&self) -> Vec<u8> {
        match self {
            Out::Block(b) | Out::BlockTo(_, b) => [&[0u8][..], b].concat(),
            Out::Want(d, h) => [&[1u8][..], &d.0, &h.to_le_bytes()].concat(),
            Out::Tx(t) => [&[2u8][..], t].concat(),
        }
    }
    fn channel(&self) -> u64 {
        match self {
            Out::Tx(_) => TX_CHANNEL,
            _ => BLOCK_CHANNEL,
        }
    }
}

/// A verified block not yet final, with the state after it.
struct Verified {
    block: Block,
    state: State,
    applied: Applied,
}

struct Inner {
    tree: HashMap<Digest, Verified>,
    received: HashMap<Digest, Block>,
    waiting: HashMap<Digest, Vec<oneshot::Sender<Block>>>,
    /// Finalized payloads whose ancestry is not all applied yet, with their certificate.
    orphans: Vec<(Digest, Certificate)>,
    /// Notarize certificates by payload (for ancestors finalized implicitly).
    notarized: HashMap<Digest, Certificate>,
    recent: HashMap<Digest, Block>,
    recent_order: VecDeque<Digest>,
    /// Blocks from peers at or below the final height (answers to requests for blocks
    /// that turn out to be final here already, e.g. finalizations replayed after a
    /// restart), by id with their height.
    stale: HashMap<Digest, u64>,
    /// Blocks asked for since the last retry tick (each is asked once per tick).
    asked: HashSet<Digest>,
    /// Retry ticks spent waiting for a peer's certificate of a block (see below).
    cert_waits: HashMap<Digest, u32>,
    refused: u64,
    /// Set when the backend failed to store a block: nothing more is applied.
    failed: Option<String>,
    /// An equivocating leader's second block for each of its proposals.
    twins: HashMap<Digest, Digest>,
}

/// One validator's view of blocks in flight (cheap to clone).
pub struct Ledger<B> {
    inner: Arc<Mutex<Inner>>,
    backend: Arc<B>,
    /// Validator addresses in the engine's participant order.
    participants: Arc<Vec<Hash32>>,
    out: tokio::sync::mpsc::UnboundedSender<Out>,
}

impl<B> Clone for Ledger<B> {
    fn clone(&self) -> Self {
        Ledger {
            inner: self.inner.clone(),
            backend: self.backend.clone(),
            participants: self.participants.clone(),
            out: self.out.clone(),
        }
    }
}

/// The engine's key for a vouch validator key (the same ed25519 secret: a validator's
/// vouch address is its engine identity).
pub fn engine_key(secret: &[u8; 32]) -> ed25519::PrivateKey {
    ed25519::PrivateKey::decode(secret.to_vec()).expect("32 bytes")
}

/// The engine's public key for a vouch address.
pub fn engine_public(addr: &Hash32) -> Option<Pk> {
    Pk::decode(addr.as_bytes().to_vec()).ok()
}

/// The vouch address of an engine public key.
pub fn pk_address(pk: &Pk) -> Hash32 {
    let mut a = [0u8; 32];
    a.copy_from_slice(pk.as_ref());
    Hash32(a)
}

/// The validator set as the engine orders it.
pub fn participants(validators: &[Hash32]) -> Result<Set<Pk>, String> {
    validators
        .iter()
        .map(|v| engine_public(v).ok_or_else(|| format!("validator {v} is not an ed25519 key")))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .try_collect()
        .map_err(|_| "validator set has duplicates".to_string())
}

impl<B: Backend> Ledger<B> {
    /// A ledger over `backend`; what it sends to peers goes to the returned receiver
    /// (give it to [`spawn_io`]).
    pub fn new(
        backend: Arc<B>,
        participants: &Set<Pk>,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<Out>) {
        let (out, rx) = tokio::sync::mpsc::unbounded_channel();
        let order = participants
            .iter()
            .map(|p| {
                let mut a = [0u8; 32];
                a.copy_from_slice(p.as_ref());
                Hash32(a)
            })
            .collect();
        let l = Ledger {
            inner: Arc::new(Mutex::new(Inner {
                tree: HashMap::new(),
                received: HashMap::new(),
                waiting: HashMap::new(),
                orphans: Vec::new(),
                notarized: HashMap::new(),
                recent: HashMap::new(),
                recent_order: VecDeque::new(),
                stale: HashMap::new(),
                asked: HashSet::new(),
                cert_waits: HashMap::new(),
                refused: 0,
                failed: None,
                twins: HashMap::new(),
            })),
            backend,
            participants: Arc::new(order),
            out,
        };
        (l, rx)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Blocks this validator refused to vote for (or could not apply once final).
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// The conflicting block an equivocating leader built next to its proposal `d`.
    pub fn twin_of(&self, d: &Digest) -> Option<Digest> {
        self.lock().twins.get(d).copied()
    }

    /// Why finalization stopped, if the backend could not store a block.
    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Sends a transaction admitted here to every peer.
    pub fn gossip(&self, tx: &Tx) {
        let _ = self.out.send(Out::Tx(tx.encode()));
    }

    fn want(&self, inner: &mut Inner, d: Digest, height: u64) {
        if inner.asked.insert(d) {
            let _ = self.out.send(Out::Want(d, height));
        }
    }

    /// Handles a message from `peer` on the block or transaction channel.
    pub fn on_message(&self, peer: Pk, bytes: &[u8]) {
        match bytes.split_first() {
            Some((0, rest)) => {
                if let Ok(b) = Block::decode(rest) {
                    self.deliver(b);
                    self.finalize_pending();
                }
            }
            Some((1, rest)) if rest.len() == 40 => {
                let mut d = [0u8; 32];
                d.copy_from_slice(&rest[..32]);
                let mut h = [0u8; 8];
                h.copy_from_slice(&rest[32..]);
                self.serve(peer, Digest(d), u64::from_le_bytes(h));
            }
            Some((2, rest)) => {
                if let Ok(tx) = Tx::decode(rest) {
                    self.backend.receive_tx(tx);
                }
            }
            _ => tracing::debug!("malformed message from a peer"),
        }
    }

    /// A peer asks for a block: answer if we have it anywhere, followed by up to
    /// [`CATCH_UP_BATCH`] of its ancestors (a peer that asks is usually walking back a
    /// gap one parent at a time; this makes catching up one round trip per batch).
    fn serve(&self, peer: Pk, d: Digest, height: u64) {
        let lookup = |d: &Digest, height: u64| -> Option<Block> {
            let found = {
                let inner = self.lock();
                inner
                    .recent
                    .get(d)
                    .or_else(|| inner.tree.get(d).map(|v| &v.block))
                    .or_else(|| inner.received.get(d))
                    .cloned()
            };
            found.or_else(|| {
                (height != u64::MAX)
                    .then(|| self.backend.block_at(height))
                    .flatten()
                    .filter(|b| digest(&b.header.id()) == *d)
            })
        };
        let Some(mut b) = lookup(&d, height) else {
            return;
        };
        for _ in 0..=CATCH_UP_BATCH {
            let parent = digest(&b.header.parent);
            let h = b.header.height.saturating_sub(1);
            let _ = self.out.send(Out::BlockTo(peer.clone(), b.encode()));
            if h == 0 {
                break;
            }
            match lookup(&parent, h) {
                Some(p) => b = p,
                None => break,
            }
        }
    }

    /// Asks again for whatever finalized ancestry is still missing (called on a timer).
    pub fn retry(&self) {
        {
            let mut inner = self.lock();
            inner.asked.clear();
            let waiting: Vec<Digest> = inner.cert_waits.keys().copied().collect();
            for d in waiting {
                *inner.cert_waits.entry(d).or_default() += 1;
            }
        }
        self.finalize_pending();
    }

    fn state_at(&self, inner: &Inner, d: &Digest) -> Option<State> {
        let last = self.backend.last();
        if hash(d) == last.last_block {
            return Some((*last).clone());
        }
        inner.tree.get(d).map(|v| v.state.clone())
    }

    fn deliver(&self, block: Block) {
        let d = digest(&block.header.id());
        let mut inner = self.lock();
        if let Some(ws) = inner.waiting.remove(&d) {
            for w in ws {
                let _ = w.send(block.clone());
            }
        }
        if block.header.height > self.backend.last().height && inner.received.len() < MAX_RECEIVED {
            inner.received.insert(d, block);
        }
    }

    fn vouch_certificate(
        &self,
        signers: impl Iterator<Item = usize>,
        signatures: Vec<[u8; 64]>,
        round: SimplexRound,
    ) -> Certificate {
        let votes = signers
            .zip(signatures)
            .filter_map(|(i, signature)| {
                Some(Vote {
                    validator: *self.participants.get(i)?,
                    signature,
                })
            })
            .collect();
        Certificate {
            votes,
            simplex: Some(round),
        }
    }

    /// Applies `d` and its not-yet-final ancestors. A finalized block that was never
    /// verified here (its bytes were lost, or arrived late) is applied on its parent's
    /// state with every root checked; a missing one is requested from peers.
    fn finalize(&self, d: Digest, cert: Certificate) {
        {
            let mut inner = self.lock();
            if !inner.orphans.iter().any(|(o, _)| *o == d) {
                inner.orphans.push((d, cert));
            }
        }
        self.finalize_pending();
    }

    fn finalize_pending(&self) {
        let mut inner = self.lock();
        if inner.failed.is_some() {
            return;
        }
        let pending = std::mem::take(&mut inner.orphans);
        for (d, cert) in pending {
            let last = self.backend.last();
            if inner.recent.contains_key(&d) || hash(&d) == last.last_block {
                continue;
            }
            // A finalization of a block this node finalized long ago (replayed by the
            // engine after a restart): nothing to do.
            if let Some(h) = inner.stale.get(&d).copied() {
                if self
                    .backend
                    .block_at(h)
                    .is_some_and(|b| digest(&b.header.id()) == d)
                {
                    continue;
                }
            }
            // Walk back to the last final block through verified or received blocks.
            let mut chain = Vec::new();
            let mut cur = d;
            let mut missing = None;
            let mut child_height = u64::MAX;
            while hash(&cur) != last.last_block {
                let b = inner
                    .tree
                    .get(&cur)
                    .map(|v| &v.block)
                    .or_else(|| inner.received.get(&cur));
                match b {
                    Some(b) if b.header.height > last.height => {
                        chain.push(cur);
                        child_height = b.header.height;
                        cur = digest(&b.header.parent);
                    }
                    Some(_) => {
                        // Below our final height but not our block: a fork. Never
                        // expected with an honest quorum; refuse and stop here.
                        inner.refused += 1;
                        tracing::error!(block = %hash(&cur), "finalized ancestry conflicts with this node's chain");
                        missing = None;
                        chain.clear();
                        break;
                    }
                    None => {
                        missing = Some((cur, child_height.saturating_sub(1)));
                        break;
                    }
                }
            }
            if let Some((m, h)) = missing {
                let h = if h == u64::MAX - 1 { u64::MAX } else { h };
                self.want(&mut inner, m, h);
                inner.orphans.push((d, cert));
                continue;
            }
            // An ancestor finalized through its descendant, for which this node has no
            // certificate (it verified the block but missed the votes): ask a peer for
            // its certified copy, for up to CERT_WAIT_TICKS retry ticks, so receipts in
            // it can be checked offline; then go on without.
            let uncertified = chain.iter().rev().find(|c| {
                **c != d
                    && !inner.notarized.contains_key(*c)
                    && inner
                        .received
                        .get(*c)
                        .is_none_or(|b| b.certificate.votes.is_empty())
                    && inner
                        .tree
                        .get(*c)
                        .is_some_and(|v| v.block.certificate.votes.is_empty())
            });
            if let Some(c) = uncertified.copied() {
                let waited = *inner.cert_waits.entry(c).or_default();
                if waited < CERT_WAIT_TICKS {
                    let h = inner
                        .tree
                        .get(&c)
                        .map_or(u64::MAX, |v| v.block.header.height);
                    self.want(&mut inner, c, h);
                    inner.orphans.push((d, cert));
                    continue;
                }
                tracing::warn!(block = %hash(&c), "finalized without a certificate of its own");
            }
            for c in chain.into_iter().rev() {
                let v = match inner.tree.remove(&c) {
                    Some(v) => v,
                    None => {
                        let block = inner.received.remove(&c).expect("walked");
                        let mut state = (*self.backend.last()).clone();
                        match state.apply_block(&block, true) {
                            Ok(applied) => Verified {
                                block,
                                state,
                                applied,
                            },
                            Err(e) => {
                                // A certified block that does not apply: this node's
                                // state differs from the quorum's. Stop applying.
                                inner.refused += 1;
                                let msg = format!(
                                    "finalized block {} does not apply here: {e}",
                                    block.header.height
                                );
                                tracing::error!("{msg}");
                                inner.failed = Some(msg);
                                return;
                            }
                        }
                    }
                };
                let mut block = v.block;
                // Its own finalization; else the notarization the engine reported; else
                // the certificate a peer stored with it (a block fetched to catch up),
                // if it checks against the validator set.
                let mut carried = std::mem::take(&mut block.certificate);
                if carried.votes.is_empty() {
                    if let Some(b) = inner.received.get(&c) {
                        carried = b.certificate.clone();
                    }
                }
                block.certificate = if c == d {
                    cert.clone()
                } else if let Some(n) = inner.notarized.remove(&c) {
                    n
                } else if vouch_verify::inclusion::check_certificate(
                    &block.header,
                    &carried,
                    Some(&self.participants),
                )
                .is_ok()
                {
                    carried
                } else {
                    Certificate::default()
                };
                let stored = block.clone();
                if let Err(e) = self.backend.commit(block, v.state, v.applied) {
                    tracing::error!(error = %e, "cannot store a finalized block");
                    inner.failed = Some(e);
                    return;
                }
                inner.cert_waits.remove(&c);
                inner.recent.insert(c, stored);
                inner.recent_order.push_back(c);
                while inner.recent_order.len() > RECENT_BLOCKS {
                    if let Some(old) = inner.recent_order.pop_front() {
                        inner.recent.remove(&old);
                    }
                }
            }
            let h = self.backend.last().height;
            inner.stale.clear();
            inner.tree.retain(|_, v| v.block.header.height > h);
            inner.received.retain(|_, b| b.header.height > h);
            let keep: HashSet<Digest> = inner
                .tree
                .keys()
                .chain(inner.received.keys())
                .copied()
                .collect();
            if inner.notarized.len() > 256 {
                inner.notarized.retain(|d, _| keep.contains(d));
            }
        }
    }
}

/// Automaton + Relay for one validator.
pub struct App<E, B> {
    ctx: E,
    ledger: Ledger<B>,
    settings: Arc<Settings>,
}

impl<E: Supervisor, B> Clone for App<E, B> {
    fn clone(&self) -> Self {
        App {
            ctx: self.ctx.child("app"),
            ledger: self.ledger.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<E, B> App<E, B> {
    pub fn new(ctx: E, ledger: Ledger<B>, settings: Settings) -> Self {
        App {
            ctx,
            ledger,
            settings: Arc::new(settings),
        }
    }
}

fn now_ms<E: Clock>(ctx: &E) -> u64 {
    ctx.current()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<E, B> Automaton for App<E, B>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    B: Backend,
{
    type Context = Ctx;
    type Digest = Digest;

    async fn propose(&mut self, ctx: Ctx) -> oneshot::Receiver<Digest> {
        let (tx, rx) = oneshot::channel();
        let ledger = self.ledger.clone();
        let settings = self.settings.clone();
        self.ctx.child("propose").spawn(move |clock| async move {
            let start = clock.current();
            loop {
                if tx.is_closed() {
                    return; // the view moved on
                }
                let now = now_ms(&clock);
                let parent = {
                    let inner = ledger.lock();
                    ledger.state_at(&inner, &ctx.parent.1)
                };
                // The parent may still be in verification here (its notarization can
                // arrive before this node finished checking it): wait for it.
                let ready = parent.as_ref().is_some_and(|parent| {
                    now >= parent.time.saturating_add(settings.min_interval_ms)
                        && (settings.idle_blocks || ledger.backend.has_work(now))
                });
                if let (true, Some(parent)) = (ready, parent) {
                    let candidates = ledger.backend.candidates();
                    let mut p = parent.propose(
                        &candidates,
                        now,
                        settings.proposer,
                        ledger.backend.prechecked(),
                    );
                    if settings.lie {
                        p.block.header.state_root.0[0] ^= 1;
                    }
                    let d = digest(&p.block.header.id());
                    if let Some(victim) = &settings.equivocate_to {
                        // Same parent, a later time: a different block, valid on its own.
                        let b = parent.propose(&[], now + 1, settings.proposer, false);
                        let bd = digest(&b.block.header.id());
                        let _ = ledger
                            .out
                            .send(Out::BlockTo(victim.clone(), b.block.encode()));
                        let mut inner = ledger.lock();
                        inner.twins.insert(d, bd);
                        inner.tree.insert(
                            bd,
                            Verified {
                                block: b.block,
                                state: b.state,
                                applied: b.applied,
                            },
                        );
                    }
                    ledger.lock().tree.insert(
                        d,
                        Verified {
                            block: p.block,
                            state: p.state,
                            applied: p.applied,
                        },
                    );
                    let _ = tx.send(d);
                    return;
                }
                if clock.current().duration_since(start).unwrap_or_default() >= settings.max_wait {
                    return; // nothing to do: let the view time out
                }
                clock.sleep(Duration::from_millis(5)).await;
            }
        });
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
                    ledger.want(&mut inner, payload, u64::MAX);
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
            // The parent's state: its own verification may still be running here;
            // wait for it a little, then abstain and ask for its bytes.
            let mut parent = None;
            for _ in 0..PARENT_WAIT_POLLS {
                parent = {
                    let inner = ledger.lock();
                    ledger.state_at(&inner, &ctx.parent.1)
                };
                if parent.is_some() {
                    break;
                }
                clock.sleep(Duration::from_millis(5)).await;
            }
            let Some(mut state) = parent else {
                let mut inner = ledger.lock();
                ledger.want(
                    &mut inner,
                    ctx.parent.1,
                    block.header.height.saturating_sub(1),
                );
                return;
            };
            let ok = block.header.parent == hash(&ctx.parent.1)
                && block.header.time <= now_ms(&clock).saturating_add(MAX_SKEW_MS);
            let applied = if ok {
                state.apply_block(&block, true).ok()
            } else {
                None
            };
            match applied {
                Some(applied) => {
                    ledger.lock().tree.insert(
                        payload,
                        Verified {
                            block,
                            state,
                            applied,
                        },
                    );
                    let _ = tx.send(true);
                }
                None => {
                    ledger.lock().refused += 1;
                    let _ = tx.send(false);
                }
            }
        });
        rx
    }
}

impl<E, B> CertifiableAutomaton for App<E, B>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    B: Backend,
{
}

impl<E, B> Relay for App<E, B>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    B: Backend,
{
    type Digest = Digest;
    type PublicKey = Pk;
    type Plan = Plan<Pk>;
    fn broadcast(&mut self, payload: Digest, _plan: Plan<Pk>) -> Feedback {
        if let Some(v) = self.ledger.lock().tree.get(&payload) {
            let _ = self.ledger.out.send(Out::Block(v.block.encode()));
        }
        Feedback::Ok
    }
}

/// Applies finalizations to the ledger and keeps notarizations for their certificates.
pub struct Fin<B>(pub Ledger<B>);

impl<B> Clone for Fin<B> {
    fn clone(&self) -> Self {
        Fin(self.0.clone())
    }
}

fn signatures(
    c: &<Scheme as commonware_cryptography::certificate::Verifier>::Certificate,
) -> (Vec<usize>, Vec<[u8; 64]>) {
    let signers: Vec<usize> = c.signers.iter().map(usize::from).collect();
    let sigs = c
        .signatures
        .iter()
        .filter_map(|s| {
            let s = s.get()?;
            let mut a = [0u8; 64];
            a.copy_from_slice(s.as_ref());
            Some(a)
        })
        .collect();
    (signers, sigs)
}

impl<B: Backend> Reporter for Fin<B> {
    type Activity = Activity<Scheme, Digest>;
    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Activity::Notarization(n) => {
                let (signers, sigs) = signatures(&n.certificate);
                let round = SimplexRound {
                    epoch: n.proposal.round.epoch().get(),
                    view: n.proposal.round.view().get(),
                    parent: n.proposal.parent.get(),
                    kind: VoteKind::Notarize,
                };
                let cert = self.0.vouch_certificate(signers.into_iter(), sigs, round);
                self.0.lock().notarized.insert(n.proposal.payload, cert);
            }
            Activity::Finalization(f) => {
                let (signers, sigs) = signatures(&f.certificate);
                let round = SimplexRound {
                    epoch: f.proposal.round.epoch().get(),
                    view: f.proposal.round.view().get(),
                    parent: f.proposal.parent.get(),
                    kind: VoteKind::Finalize,
                };
                let cert = self.0.vouch_certificate(signers.into_iter(), sigs, round);
                self.0.finalize(f.proposal.payload, cert);
            }
            _ => {}
        }
        Feedback::Ok
    }
}

/// Timing of the engine.
#[derive(Debug, Clone)]
pub struct Timing {
    pub leader_timeout: Duration,
    pub certification_timeout: Duration,
    pub timeout_retry: Duration,
    pub fetch_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(1),
        }
    }
}

/// The engine's configuration for a validator of the vouch ledger.
pub type EngineConfig<E, B, K> = simplex::Config<
    Scheme,
    RoundRobin<Sha256>,
    K,
    Digest,
    App<E, B>,
    App<E, B>,
    Fin<B>,
    commonware_parallel::Sequential,
>;

/// The simplex configuration for one validator over `ledger`.
#[allow(clippy::too_many_arguments)]
pub fn engine_config<E, B, K>(
    ctx: &E,
    ledger: &Ledger<B>,
    settings: Settings,
    scheme: Scheme,
    blocker: K,
    partition: String,
    genesis_block: Hash32,
    timing: &Timing,
) -> EngineConfig<E, B, K>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    B: Backend,
    K: Blocker<PublicKey = Pk>,
{
    let app = App::new(ctx.child("app"), ledger.clone(), settings);
    simplex::Config {
        scheme,
        elector: RoundRobin::<Sha256>::default(),
        blocker,
        automaton: app.clone(),
        relay: app,
        reporter: Fin(ledger.clone()),
        track_historical_votes: false,
        strategy: commonware_parallel::Sequential,
        partition,
        mailbox_size: NZUsize!(1024),
        epoch: Epoch::zero(),
        floor: Floor::Genesis(digest(&genesis_block)),
        replay_buffer: NZUsize!(1 << 20),
        write_buffer: NZUsize!(1 << 20),
        page_cache: CacheRef::new(NZU16!(16_384), NZUsize!(1_000)),
        leader_timeout: timing.leader_timeout,
        certification_timeout: timing.certification_timeout,
        timeout_retry: timing.timeout_retry,
        view_retention: ViewDelta::new(10),
        skip: SkipPolicy::Disabled,
        fetch_timeout: NZDuration!(timing.fetch_timeout),
        fetch_retry_delay: Duration::from_millis(100),
        forward: ForwardPolicy::Disabled,
    }
}

/// The signing scheme of a validator with vouch secret `secret` over `participants`,
/// under the chain's namespace.
pub fn scheme(chain: &Hash32, participants: Set<Pk>, secret: &[u8; 32]) -> Option<Scheme> {
    Scheme::signer(
        &vouch_verify::inclusion::simplex_namespace(chain),
        participants,
        engine_key(secret),
    )
}

/// Runs the block and transaction channels: sends what the ledger puts out, hands what
/// peers send to the ledger, and retries missing ancestry every `retry`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_io<E, B, S1, R1, S2, R2>(
    ctx: &E,
    ledger: &Ledger<B>,
    mut out: tokio::sync::mpsc::UnboundedReceiver<Out>,
    (mut block_send, mut block_recv): (S1, R1),
    (mut tx_send, mut tx_recv): (S2, R2),
    retry: Duration,
) -> Vec<commonware_runtime::Handle<()>>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    B: Backend,
    S1: Sender<PublicKey = Pk>,
    R1: Receiver<PublicKey = Pk>,
    S2: Sender<PublicKey = Pk>,
    R2: Receiver<PublicKey = Pk>,
{
    let mut handles = Vec::new();
    handles.push(ctx.child("vouch_out").spawn(move |_| async move {
        while let Some(m) = out.recv().await {
            let to = match &m {
                Out::BlockTo(p, _) => Recipients::One(p.clone()),
                _ => Recipients::All,
            };
            let wire = m.wire();
            let _ = match m.channel() {
                TX_CHANNEL => tx_send.send(to, wire, false),
                _ => block_send.send(to, wire, false),
            };
        }
    }));
    let l = ledger.clone();
    handles.push(ctx.child("vouch_blocks_in").spawn(move |_| async move {
        while let Ok((peer, buf)) = block_recv.recv().await {
            l.on_message(peer, buf.as_ref());
        }
    }));
    let l = ledger.clone();
    handles.push(ctx.child("vouch_txs_in").spawn(move |_| async move {
        while let Ok((peer, buf)) = tx_recv.recv().await {
            l.on_message(peer, buf.as_ref());
        }
    }));
    let l = ledger.clone();
    handles.push(ctx.child("vouch_retry").spawn(move |clock| async move {
        loop {
            clock.sleep(retry).await;
            l.retry();
        }
    }));
    handles
}
