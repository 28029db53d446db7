//! The deterministic simulator: N vouch validators running the node's consensus code
//! (`vouch-bft`: commonware simplex over the vouch ledger) in commonware's deterministic
//! runtime with simulated links, each over an in-memory ledger ([`Mem`]).
//!
//! [`simulate`] runs a [`SimPlan`] (seed, link quality, validators offline, crashed and
//! restarted, partitioned, lying) and returns what each validator finalized, for the
//! checkers here and in `tests/`. A seed reproduces a run exactly.

use commonware_p2p::simulated;
use commonware_runtime::{
    deterministic, Clock, Handle, Quota, Runner as _, Spawner as _, Supervisor,
};
use commonware_utils::{NZUsize, NZU32};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vouch_bft::{Backend, Ledger, Pk, Settings, Timing};
use vouch_state::{Applied, Event, Genesis, State};

pub mod equivocate;
pub mod jobs;
use vouch_types::tx::{Block, Tx};
use vouch_types::Hash32;

/// What a validator finalized: (height, block id, state root after it, tx count, proposer).
pub type Finalized = Vec<(u64, Hash32, Hash32, usize, Hash32)>;

struct MemInner {
    state: Arc<State>,
    mempool: Vec<Tx>,
    blocks: Vec<Block>,
    finalized: Finalized,
    /// Every event of every finalized block, in order.
    events: Vec<Event>,
}

/// An in-memory ledger: what a validator has finalized, and its mempool. Survives a
/// simulated crash (it stands for the node's durable store).
pub struct Mem(Mutex<MemInner>);

impl Mem {
    pub fn new(genesis: &Genesis) -> Self {
        Mem(Mutex::new(MemInner {
            state: Arc::new(genesis.state().expect("valid genesis")),
            mempool: Vec::new(),
            blocks: Vec::new(),
            finalized: Vec::new(),
            events: Vec::new(),
        }))
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn submit(&self, tx: Tx) {
        self.lock().mempool.push(tx);
    }
    pub fn finalized(&self) -> Finalized {
        self.lock().finalized.clone()
    }
    pub fn blocks(&self) -> Vec<Block> {
        self.lock().blocks.clone()
    }
    pub fn state(&self) -> State {
        (*self.lock().state).clone()
    }
    pub fn snapshot(&self) -> Arc<State> {
        self.lock().state.clone()
    }
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }
    /// Events after the first `cursor`, with the state they lead to.
    pub fn events_since(&self, cursor: usize) -> (Vec<Event>, Arc<State>) {
        let m = self.lock();
        (
            m.events.get(cursor..).unwrap_or_default().to_vec(),
            m.state.clone(),
        )
    }
    /// The final state and how many of `sender`'s waiting transactions would still apply
    /// (one that can no longer apply, about to be dropped, does not hold a nonce).
    pub fn nonce_view(&self, sender: &Hash32) -> (Arc<State>, u64) {
        let m = self.lock();
        let dry = m
            .state
            .propose(&m.mempool, m.state.time, Hash32::default(), false);
        let pending = dry.block.txs.iter().filter(|t| t.from == *sender).count() as u64;
        (m.state.clone(), pending)
    }
}

impl Backend for Mem {
    fn last(&self) -> Arc<State> {
        self.lock().state.clone()
    }
    fn candidates(&self) -> Vec<Tx> {
        self.lock().mempool.clone()
    }
    fn has_work(&self, _now: u64) -> bool {
        !self.lock().mempool.is_empty()
    }
    fn commit(&self, block: Block, state: State, applied: Applied) -> Result<(), String> {
        let mut m = self.lock();
        if block.header.parent != m.state.last_block {
            return Err(format!(
                "block {} does not extend the last final block",
                block.header.height
            ));
        }
        let chain = state.chain;
        let ids: HashSet<Hash32> = block.txs.iter().map(|t| t.id(&chain)).collect();
        m.mempool.retain(|t| !ids.contains(&t.id(&chain)));
        // Drop what can no longer apply (a verdict on a job already audited, a vote on a
        // dispute already decided) and what waits behind it, as a node's mempool does.
        let dry = state.propose(&m.mempool, state.time, Hash32::default(), false);
        let dead: HashSet<Hash32> = dry.rejected.iter().map(|(id, _)| *id).collect();
        m.mempool.retain(|t| !dead.contains(&t.id(&chain)));
        m.events.extend(applied.events);
        m.finalized.push((
            block.header.height,
            block.header.id(),
            state.root(),
            block.txs.len(),
            block.header.proposer,
        ));
        m.blocks.push(block);
        m.state = Arc::new(state);
        Ok(())
    }
    fn block_at(&self, height: u64) -> Option<Block> {
        let m = self.lock();
        height
            .checked_sub(1)
            .and_then(|i| m.blocks.get(i as usize))
            .cloned()
    }
    fn receive_tx(&self, tx: Tx) {
        self.submit(tx);
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
    /// Validators that, as leaders, sign two different blocks for one view.
    pub equivocators: Vec<usize>,
    /// (who, at, back): the validator's process dies at `at` (engine and ledger tasks
    /// stop, messages to it are lost) and restarts at `back` from its journal and store.
    pub crash: Option<(usize, Duration, Duration)>,
    /// (group, from, until): links between the group and the rest are cut in between.
    pub partition: Option<(Vec<usize>, Duration, Duration)>,
    pub latency: Duration,
    pub jitter: Duration,
    /// Probability that a message is delivered.
    pub success: f64,
    /// Signed transactions fed to every mempool at the start.
    pub txs: Vec<Tx>,
    /// Stop when every live validator finalized this height (or at `timeout`).
    pub target_height: u64,
    /// Providers answering jobs (honest or cheating) and validators lying in audits.
    pub providers: Vec<jobs::SimProvider>,
    pub lying_auditors: Vec<usize>,
    /// Jobs escrowed in `txs`: the run also waits until all of them are settled.
    pub jobs: usize,
    pub timeout: Duration,
}

/// What each validator finalized (None for offline ones) and its final state.
pub struct Outcome {
    pub finalized: Vec<Option<Finalized>>,
    pub blocks: Vec<Option<Vec<Block>>>,
    pub states: Vec<Option<State>>,
    pub events: Vec<Option<Vec<Event>>>,
    pub refused: Vec<u64>,
    /// Conflicting proposals the equivocators sent.
    pub equivocations: u64,
    /// With a crash: the crashed validator's height when it died and when it restarted,
    /// and the lowest height of the others at the restart.
    pub crash_heights: (u64, u64, u64),
    pub elapsed: Duration,
}

/// Vouch keys of the validators (their addresses go in the genesis; the same keys are
/// their engine identities).
pub fn vouch_key(i: usize) -> vouch_crypto::SigningKey {
    let mut b = [0u8; 32];
    b[0] = 0xb0;
    b[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    vouch_crypto::SigningKey::from_bytes(&b).expect("32 bytes")
}

type SimSender = simulated::Sender<Pk, deterministic::Context>;
type Slot = Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<commonware_p2p::Message<Pk>>>>>;

/// A validator's channels on the simulated network, registered once for the whole run.
/// A forwarding task hands what arrives to the validator's current instance; while it is
/// down (crashed), arrivals are lost, as they would be for a dead process.
struct Wires {
    senders: Vec<SimSender>,
    slots: Vec<Slot>,
    _forwarders: Vec<Handle<()>>,
}

/// The receiving end one validator instance gets.
#[derive(Debug)]
pub struct Relayed(tokio::sync::mpsc::UnboundedReceiver<commonware_p2p::Message<Pk>>);

impl commonware_p2p::Receiver for Relayed {
    type Error = std::io::Error;
    type PublicKey = Pk;
    async fn recv(&mut self) -> Result<commonware_p2p::Message<Pk>, std::io::Error> {
        self.0
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("validator stopped"))
    }
    fn capacity(&self) -> std::num::NonZeroUsize {
        NZUsize!(4096)
    }
}

const CHANNELS: [u64; 5] = [
    vouch_bft::VOTE_CHANNEL,
    vouch_bft::CERT_CHANNEL,
    vouch_bft::RESOLVER_CHANNEL,
    vouch_bft::BLOCK_CHANNEL,
    vouch_bft::TX_CHANNEL,
];

impl Wires {
    async fn register(
        context: &deterministic::Context,
        oracle: &simulated::Oracle<Pk, deterministic::Context>,
        pk: &Pk,
    ) -> Wires {
        let quota = Quota::per_second(NZU32!(100_000));
        let control = oracle.control(pk.clone());
        let (mut senders, mut slots, mut forwarders) = (Vec::new(), Vec::new(), Vec::new());
        for ch in CHANNELS {
            let (s, mut r) = control.register(ch, quota).await.expect("register");
            let slot: Slot = Arc::new(Mutex::new(None));
            let to = slot.clone();
            forwarders.push(context.child("wire").spawn(move |_| async move {
                use commonware_p2p::Receiver as _;
                while let Ok(m) = r.recv().await {
                    if let Some(tx) = to.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        let _ = tx.send(m);
                    }
                }
            }));
            senders.push(s);
            slots.push(slot);
        }
        Wires {
            senders,
            slots,
            _forwarders: forwarders,
        }
    }

    /// Fresh ends for a new instance of the validator.
    fn attach(&self) -> Vec<(SimSender, Relayed)> {
        self.senders
            .iter()
            .zip(&self.slots)
            .map(|(s, slot)| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
                (s.clone(), Relayed(rx))
            })
            .collect()
    }

    fn detach(&self) {
        for slot in &self.slots {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

struct Running {
    ledger: Ledger<Mem>,
    equivocations: Arc<std::sync::atomic::AtomicU64>,
    handles: Vec<Handle<()>>,
}

impl Running {
    /// Kills this instance: its engine and ledger tasks stop; its journal (in the
    /// runtime's storage) and its `Mem` (the durable store) stay.
    fn crash(self) {
        for h in self.handles {
            h.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_validator(
    context: &deterministic::Context,
    oracle: &simulated::Oracle<Pk, deterministic::Context>,
    wires: &Wires,
    genesis: &Genesis,
    participants: &commonware_utils::ordered::Set<Pk>,
    i: usize,
    mem: Arc<Mem>,
    lie: bool,
    equivocate: bool,
) -> Running {
    let key = vouch_key(i);
    let pk = vouch_bft::engine_public(&key.public()).expect("ed25519");
    let mut ends = wires.attach().into_iter();
    let mut next = || ends.next().expect("five channels");
    let (vote, cert, resolver, blocks, txs) = (next(), next(), next(), next(), next());
    let (ledger, out) = Ledger::new(mem, participants);
    let ctx = context.child("validator").with_attribute("index", i);
    let mut handles =
        vouch_bft::spawn_io(&ctx, &ledger, out, blocks, txs, Duration::from_millis(50));
    let g = genesis.state().expect("valid genesis");
    let scheme =
        vouch_bft::scheme(&g.chain, participants.clone(), &key.to_bytes()).expect("member");
    // An equivocator splits its proposals between the next validator and the rest.
    let victim = equivocate.then(|| {
        participants
            .iter()
            .cycle()
            .skip_while(|p| **p != pk)
            .nth(1)
            .cloned()
            .expect("more than one validator")
    });
    let settings = Settings {
        proposer: key.public(),
        idle_blocks: true,
        min_interval_ms: 0,
        max_wait: Duration::from_secs(10),
        lie,
        equivocate_to: victim.clone(),
    };
    let equivocations = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (vote_send, vote_recv) = vote;
    let vote_send = equivocate::Equivocating {
        inner: vote_send,
        ledger: ledger.clone(),
        scheme: scheme.clone(),
        victim: victim.unwrap_or_else(|| pk.clone()),
        sent: equivocations.clone(),
        active: equivocate,
    };
    let cfg = vouch_bft::engine_config(
        &ctx,
        &ledger,
        settings,
        scheme,
        oracle.control(pk.clone()),
        format!("validator-{i}"),
        g.last_block,
        &Timing::default(),
    );
    let engine = commonware_consensus::simplex::Engine::new(ctx.child("engine"), cfg);
    handles.push(engine.start((vote_send, vote_recv), cert, resolver));
    Running {
        ledger,
        equivocations,
        handles,
    }
}

pub fn simulate(genesis: &Genesis, plan: &SimPlan) -> Outcome {
    let cfg = deterministic::Config::new()
        .with_seed(plan.seed)
        .with_timeout(Some(plan.timeout + Duration::from_secs(60)));
    let runner = deterministic::Runner::new(cfg);
    let genesis = genesis.clone();
    let plan = plan.clone();
    runner.start(|context| async move {
        let addrs: Vec<Hash32> = (0..plan.validators)
            .map(|i| vouch_key(i).public())
            .collect();
        let pks: Vec<Pk> = addrs
            .iter()
            .map(|a| vouch_bft::engine_public(a).expect("ed25519"))
            .collect();
        let participants = vouch_bft::participants(&addrs).expect("distinct keys");
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
        let connect = |a: usize, b: usize| {
            let (oracle, link, pa, pb) =
                (oracle.clone(), link.clone(), pks[a].clone(), pks[b].clone());
            async move {
                let _ = oracle.add_link(pa, pb, link).await;
            }
        };
        for a in 0..plan.validators {
            for b in 0..plan.validators {
                if a != b {
                    connect(a, b).await;
                }
            }
        }
        let mems: Vec<Arc<Mem>> = (0..plan.validators)
            .map(|_| Arc::new(Mem::new(&genesis)))
            .collect();
        for m in &mems {
            for tx in &plan.txs {
                m.submit(tx.clone());
            }
        }
        let mut wires = Vec::new();
        for pk in &pks {
            wires.push(Wires::register(&context, &oracle, pk).await);
        }
        let start_one = |i: usize| {
            let (context, oracle, genesis, participants, wires, mem) = (
                &context,
                &oracle,
                &genesis,
                &participants,
                &wires[i],
                mems[i].clone(),
            );
            let (lie, equivocate) = (plan.liars.contains(&i), plan.equivocators.contains(&i));
            async move {
                start_validator(
                    context,
                    oracle,
                    wires,
                    genesis,
                    participants,
                    i,
                    mem,
                    lie,
                    equivocate,
                )
                .await
            }
        };
        let mut running: Vec<Option<Running>> = Vec::new();
        for i in 0..plan.validators {
            if plan.offline.contains(&i) {
                running.push(None);
                continue;
            }
            running.push(Some(start_one(i).await));
        }
        let mut alive: Vec<bool> = running.iter().map(Option::is_some).collect();
        let mut crashed = false;
        let mut restarted = false;
        let mut crash_heights = (0u64, 0u64, 0u64);
        let mut actors = (!plan.providers.is_empty()).then(|| {
            jobs::Actors::new(
                plan.providers.clone(),
                plan.lying_auditors.clone(),
                plan.validators,
            )
        });
        let start = context.current();
        let deadline = start + plan.timeout;
        let mut cut = false;
        let mut healed = false;
        loop {
            let t = context.current().duration_since(start).unwrap_or_default();
            if let Some((group, from, until)) = &plan.partition {
                if t >= *from && !cut {
                    cut = true;
                    for &a in group {
                        for b in (0..plan.validators).filter(|b| !group.contains(b)) {
                            let _ = oracle.remove_link(pks[a].clone(), pks[b].clone()).await;
                            let _ = oracle.remove_link(pks[b].clone(), pks[a].clone()).await;
                        }
                    }
                }
                if t >= *until && cut && !healed {
                    healed = true;
                    for &a in group {
                        for b in (0..plan.validators).filter(|b| !group.contains(b)) {
                            connect(a, b).await;
                            connect(b, a).await;
                        }
                    }
                }
            }
            if let Some((who, at, back)) = plan.crash {
                let height = |i: usize| mems[i].finalized().last().map_or(0, |f| f.0);
                if t >= at && !crashed {
                    crashed = true;
                    crash_heights.0 = height(who);
                    if let Some(r) = running[who].take() {
                        r.crash();
                    }
                    wires[who].detach();
                    alive[who] = false;
                }
                if t >= back && crashed && !restarted {
                    restarted = true;
                    crash_heights.1 = height(who);
                    crash_heights.2 = (0..plan.validators)
                        .filter(|i| *i != who && !plan.offline.contains(i))
                        .map(height)
                        .min()
                        .unwrap_or(0);
                    running[who] = Some(start_one(who).await);
                    alive[who] = true;
                }
            }
            if let Some(a) = actors.as_mut() {
                a.tick(&mems, &alive, t);
            }
            let pending_faults =
                (plan.partition.is_some() && !healed) || (plan.crash.is_some() && !restarted);
            let done = !pending_faults
                && (0..plan.validators)
                    .filter(|i| !plan.offline.contains(i))
                    .all(|i| {
                        let reached = mems[i].finalized().last().map(|f| f.0).unwrap_or(0)
                            >= plan.target_height;
                        let submitted = mems[i]
                            .events()
                            .iter()
                            .filter(|e| matches!(e, Event::JobSubmitted { .. }))
                            .count();
                        reached && submitted >= plan.jobs && mems[i].snapshot().jobs.is_empty()
                    });
            if done || context.current() >= deadline {
                break;
            }
            context.sleep(Duration::from_millis(50)).await;
        }
        let live = |i: usize| !plan.offline.contains(&i);
        Outcome {
            finalized: (0..plan.validators)
                .map(|i| live(i).then(|| mems[i].finalized()))
                .collect(),
            blocks: (0..plan.validators)
                .map(|i| live(i).then(|| mems[i].blocks()))
                .collect(),
            states: (0..plan.validators)
                .map(|i| live(i).then(|| mems[i].state()))
                .collect(),
            events: (0..plan.validators)
                .map(|i| live(i).then(|| mems[i].events()))
                .collect(),
            refused: running
                .iter()
                .map(|r| r.as_ref().map_or(0, |r| r.ledger.refused()))
                .collect(),
            crash_heights,
            equivocations: running
                .iter()
                .flatten()
                .map(|r| r.equivocations.load(std::sync::atomic::Ordering::Relaxed))
                .sum(),
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
