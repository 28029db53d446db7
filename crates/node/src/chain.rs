//! The node's view of the ledger: current state, mempool, transaction statuses, and the
//! store. Consensus engines drive it through [`crate::consensus::Application`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vouch_crypto::SigningKey;
use vouch_state::{sign_tx, Genesis, State, TxError};
use vouch_storage::Store;
use vouch_types::tx::{Action, Block, Certificate, Tx, Vote, MAX_BLOCK_TXS};
use vouch_types::{Hash32, Inclusion, InclusionProof};

/// Most transactions waiting in the mempool.
pub const MEMPOOL_LIMIT: usize = 50_000;
/// Encoded transactions a block proposed to peers holds at most.
pub const MAX_BLOCK_BYTES: usize = 4 << 20;
/// Statuses of rejected transactions remembered for `tx status`.
const REJECTED_MEMORY: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    Pending,
    Committed { height: u64, index: u32 },
    Rejected { reason: String },
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(#[from] TxError),
    #[error("mempool is full ({0} transactions); retry shortly")]
    Full(usize),
    #[error("transaction {0} is already committed")]
    AlreadyCommitted(Hash32),
    #[error("storage: {0}")]
    Store(String),
    #[error("this node follows {0} and produces no blocks; send transactions there")]
    Follower(String),
}

/// Why a block from a peer was not applied.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("block {got} does not follow this node's height {have}")]
    Gap { have: u64, got: u64 },
    #[error("peer's block at height {height} ({theirs}) conflicts with this node's ({ours}): a fork, or a peer on another chain")]
    Conflict {
        height: u64,
        ours: Hash32,
        theirs: Hash32,
    },
    #[error("block {1} certificate: {0}")]
    Certificate(vouch_verify::inclusion::InclusionError, u64),
    #[error("block {1} is invalid: {0}")]
    Invalid(vouch_state::BlockError, u64),
    #[error("storing block: {0}")]
    Store(String),
}

/// Longest a proposed block's time may run ahead of this node's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5_000;

struct Inner {
    state: Arc<State>,
    pool: VecDeque<(Hash32, Tx)>,
    pool_ids: HashSet<Hash32>,
    pending_per_sender: HashMap<Hash32, u64>,
    rejected: HashMap<Hash32, String>,
    rejected_order: VecDeque<Hash32>,
}

pub struct Chain {
    /// The mempool and transaction statuses (and the state they were checked against).
    /// Never held across a disk write that waits for the block commit's fsync.
    inner: Mutex<Inner>,
    /// The current state, for readers: swapped in after a block is durable. Readers
    /// (`state()`, the API's status, accounts, jobs) never wait for the disk.
    current: RwLock<Arc<State>>,
    /// Transactions in the mempool (readable without the mempool lock).
    pool_len: AtomicUsize,
    /// Serializes block finalization with the engine's proposals: taken by `finalize`
    /// across the store commit, and by `has_work`/`propose`/`candidates`, so a proposal
    /// never builds on a state whose successor is being written.
    finalizing: Mutex<()>,
    store: Store,
    genesis: Genesis,
    key: SigningKey,
    heights: watch::Sender<u64>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Set on a follower: the node whose blocks it applies.
    upstream: std::sync::OnceLock<String>,
    /// Set under a multi-validator engine: transactions admitted here go to the peers.
    gossip: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Tx>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({:?})", self.store)
    }
}

impl Chain {
    /// Opens the chain from its store; `key` signs the blocks this node finalizes. The
    /// store's outbox (transactions kept before a crash) is re-submitted.
    pub fn new(
        store: Store,
        state: State,
        genesis: Genesis,
        key: SigningKey,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let (heights, _) = watch::channel(state.height);
        let state = Arc::new(state);
        let chain = Chain {
            current: RwLock::new(state.clone()),
            pool_len: AtomicUsize::new(0),
            finalizing: Mutex::new(()),
            inner: Mutex::new(Inner {
                state,
                pool: VecDeque::new(),
                pool_ids: HashSet::new(),
                pending_per_sender: HashMap::new(),
                rejected: HashMap::new(),
                rejected_order: VecDeque::new(),
            }),
            store,
            genesis,
            key,
            heights,
            metrics,
            upstream: std::sync::OnceLock::new(),
            gossip: std::sync::OnceLock::new(),
        };
        // What this node answered for before a crash goes back into the mempool first.
        chain.replay_outbox();
        chain
    }

    /// Sends every transaction admitted from this node's API to `tx` (for the peers).
    pub fn set_gossip(&self, tx: tokio::sync::mpsc::UnboundedSender<Tx>) {
        let _ = self.gossip.set(tx);
    }

    /// Admits a transaction a peer gossiped (not sent on again). Refusals are expected
    /// (a peer's view of nonces runs ahead or behind) and only logged.
    pub fn receive(&self, tx: Tx) {
        let mut inner = self.lock();
        if let Err(e) = self.admit_checked(&mut inner, tx) {
            tracing::debug!(error = %e, "gossiped transaction not admitted");
        }
    }

    /// Makes this chain a follower of `url`: it takes no transactions of its own.
    pub fn set_upstream(&self, url: &str) {
        let _ = self.upstream.set(url.to_string());
    }
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.get().map(String::as_str)
    }

    /// Checks a block another validator proposed on top of this node's state: header
    /// link, time (not before the parent, at most [`MAX_CLOCK_SKEW_MS`] after `now`),
    /// every transaction with its signature, and the transaction, receipt and state roots.
    /// What a validator checks before voting for it.
    pub fn verify_block(
        &self,
        block: &Block,
        now: u64,
    ) -> Result<vouch_state::Proposal, vouch_state::BlockError> {
        if block.header.time > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(vouch_state::BlockError::FromTheFuture {
                time: block.header.time,
                now,
            });
        }
        self.apply_copy(block)
    }

    fn apply_copy(&self, block: &Block) -> Result<vouch_state::Proposal, vouch_state::BlockError> {
        let mut next = (*self.state()).clone();
        let applied = next.apply_block(block, true)?;
        Ok(vouch_state::Proposal {
            block: block.clone(),
            state: next,
            applied,
            rejected: Vec::new(),
        })
    }

    /// Applies a finalized block from a peer: its certificate must carry signatures of
    /// more than two thirds of the current validator set, and the block must apply with
    /// every root matching. A block this node already has is accepted again only if it
    /// is the same block.
    pub fn accept(&self, block: Block) -> Result<u64, AcceptError> {
        let state = self.state();
        let height = block.header.height;
        if height <= state.height {
            let ours = self
                .store
                .block(height)
                .map_err(|e| AcceptError::Store(e.to_string()))?
                .map(|b| b.header.id())
                .unwrap_or_default();
            let theirs = block.header.id();
            if ours == theirs {
                return Ok(state.height);
            }
            return Err(AcceptError::Conflict {
                height,
                ours,
                theirs,
            });
        }
        if height != state.height + 1 {
            return Err(AcceptError::Gap {
                have: state.height,
                got: height,
            });
        }
        let validators: Vec<Hash32> = state.validators.iter().copied().collect();
        vouch_verify::inclusion::check_certificate(
            &block.header,
            &block.certificate,
            Some(&validators),
        )
        .map_err(|e| AcceptError::Certificate(e, height))?;
        let certificate = block.certificate.clone();
        let p = self
            .apply_copy(&block)
            .map_err(|e| AcceptError::Invalid(e, height))?;
        self.finalize(p, certificate)
            .map_err(|e| AcceptError::Store(e.to_string()))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finalizing(&self) -> MutexGuard<'_, ()> {
        self.finalizing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (of the last durable block). Never waits for the disk.
    pub fn state(&self) -> Arc<State> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    pub fn chain_id(&self) -> Hash32 {
        self.state().chain
    }
    pub fn validator(&self) -> Hash32 {
        self.key.public()
    }
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.heights.subscribe()
    }
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
    pub fn mempool_len(&self) -> usize {
        self.pool_len.load(Ordering::Relaxed)
    }

    /// Admits a signed transaction to the mempool, or says why not.
    pub fn submit(&self, tx: Tx) -> Result<Hash32, SubmitError> {
        let mut inner = self.lock();
        self.admit(&mut inner, tx)
    }

    /// Like [`Chain::submit`], and keeps the transaction in the store's outbox until a
    /// block commits it: an escrow this node answers for is re-submitted after a crash.
    pub fn submit_kept(&self, tx: Tx) -> Result<Hash32, SubmitError> {
        let mut inner = self.lock();
        let id = self.admit(&mut inner, tx.clone())?;
        self.keep(&id, &tx);
        Ok(id)
    }

    /// Appends to the outbox; called under the mempool lock, so the outbox is in
    /// admission order (see [`vouch_storage::Store::outbox_push`]).
    fn keep(&self, id: &Hash32, tx: &Tx) {
        if let Err(e) = self.store.outbox_push(id, &tx.encode()) {
            tracing::warn!(tx = %id, error = %e, "transaction not kept in the outbox");
        }
    }

    /// Makes every answer handed out so far durable: its receipt, its escrow and result
    /// commit in the outbox, and the spend recorded for it (one fsync).
    pub fn sync(&self) -> Result<(), String> {
        self.store.sync().map_err(|e| e.to_string())
    }

    /// Re-submits, in order, the outbox transactions no block has committed (at start,
    /// after a crash emptied the mempool); drops those committed or refused for good.
    /// Returns how many went back into the mempool.
    pub fn replay_outbox(&self) -> usize {
        let entries = match self.store.outbox() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return 0;
            }
        };
        let mut done = Vec::new();
        let mut resubmitted = 0;
        {
            let mut inner = self.lock();
            for (k, id, bytes) in entries {
                let tx = match Tx::decode(&bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(tx = %id, error = %e, "outbox entry does not decode");
                        done.push(k);
                        continue;
                    }
                };
                match self.admit_checked(&mut inner, tx) {
                    Ok(_) => resubmitted += 1,
                    Err(SubmitError::AlreadyCommitted(_)) => done.push(k),
                    Err(e) => {
                        tracing::warn!(tx = %id, error = %e, "outbox transaction no longer applies");
                        inner.rejected.insert(id, format!("after restart: {e}"));
                        inner.rejected_order.push_back(id);
                        done.push(k);
                    }
                }
            }
        }
        if let Err(e) = self.store.outbox_remove(&done) {
            tracing::warn!(error = %e, "outbox not pruned");
        }
        if resubmitted > 0 {
            tracing::info!(
                resubmitted,
                "transactions from the outbox back in the mempool"
            );
        }
        resubmitted
    }

    /// Transactions from `from` waiting in the mempool, in order.
    pub fn pending_from(&self, from: &Hash32) -> Vec<(Hash32, Tx)> {
        self.lock()
            .pool
            .iter()
            .filter(|(_, t)| &t.from == from)
            .cloned()
            .collect()
    }

    fn admit(&self, inner: &mut Inner, tx: Tx) -> Result<Hash32, SubmitError> {
        if let Some(up) = self.upstream() {
            return Err(SubmitError::Follower(up.to_string()));
        }
        let fresh = !inner.pool_ids.contains(&tx.id(&inner.state.chain));
        let gossip = fresh
            .then(|| self.gossip.get())
            .flatten()
            .map(|g| (g, tx.clone()));
        let id = self.admit_checked(inner, tx)?;
        if let Some((g, tx)) = gossip {
            let _ = g.send(tx);
        }
        Ok(id)
    }

    fn admit_checked(&self, inner: &mut Inner, tx: Tx) -> Result<Hash32, SubmitError> {
        let state = inner.state.clone();
        let id = tx.id(&state.chain);
        if inner.pool_ids.contains(&id) {
            return Ok(id);
        }
        if self
            .store
            .tx_location(&id)
            .map_err(|e| SubmitError::Store(e.to_string()))?
            .is_some()
        {
            return Err(SubmitError::AlreadyCommitted(id));
        }
        if inner.pool.len() >= MEMPOOL_LIMIT {
            return Err(SubmitError::Full(MEMPOOL_LIMIT));
        }
        state.check_signature(&tx)?;
        let base = state.account(&tx.from).nonce;
        let pending = inner.pending_per_sender.get(&tx.from).copied().unwrap_or(0);
        if tx.nonce < base {
            return Err(TxError::Replay {
                expected: base + pending,
                got: tx.nonce,
            }
            .into());
        }
        if tx.nonce != base + pending {
            return Err(TxError::BadNonce {
                expected: base + pending,
                got: tx.nonce,
            }
            .into());
        }
        if pending == 0 {
            // Full check against the current state; later ones in a sender's sequence
            // are checked when the block is built, and a rejection is recorded.
            let ctx = vouch_state::Ctx {
                time: state.time,
                proposer: self.key.public(),
                seed: state.seed(),
            };
            match state.check_tx(&tx, &ctx) {
                Ok(()) => {}
                // A result for a job whose escrow is itself still waiting here: the block
                // builder applies them in arrival order, so the escrow lands first (and if
                // it is rejected, so is the result). This lets a provider answer at once.
                Err(TxError::UnknownJob(job))
                    if matches!(tx.action, Action::CommitResult { .. })
                        && inner.pool_ids.contains(&job) => {}
                Err(e) => return Err(e.into()),
            }
        }
        *inner.pending_per_sender.entry(tx.from).or_insert(0) += 1;
        inner.pool_ids.insert(id);
        inner.rejected.remove(&id);
        inner.pool.push_back((id, tx));
        self.pool_len.store(inner.pool.len(), Ordering::Relaxed);
        Ok(id)
    }

    /// Builds, signs and submits a transaction from `key` with the next free nonce.
    pub fn submit_signed(&self, key: &SigningKey, action: Action) -> Result<Hash32, SubmitError> {
        self.submit_signed_tx(key, action).map(|(id, _)| id)
    }

    /// Like [`Chain::submit_signed`], and gives back the transaction (to send it on).
    pub fn submit_signed_tx(
        &self,
        key: &SigningKey,
        action: Action,
    ) -> Result<(Hash32, Tx), SubmitError> {
        let mut inner = self.lock();
        let state = inner.state.clone();
        let nonce = state.account(&key.public()).nonce
            + inner
                .pending_per_sender
                .get(&key.public())
                .copied()
                .unwrap_or(0);
        let tx = sign_tx(key, &state.chain, nonce, state.params.min_tx_fee, action);
        let id = self.admit(&mut inner, tx.clone())?;
        // Every transaction a key held by this node signs is kept: custodial escrows and
        // transfers, result commits, verdicts. The outbox then has every such nonce, so
        // re-submitting it after a crash leaves no gap in a sender's sequence.
        self.keep(&id, &tx);
        Ok((id, tx))
    }

    pub fn tx_status(&self, id: &Hash32) -> TxStatus {
        {
            let inner = self.lock();
            if inner.pool_ids.contains(id) {
                return TxStatus::Pending;
            }
            if let Some(r) = inner.rejected.get(id) {
                return TxStatus::Rejected { reason: r.clone() };
            }
        }
        match self.store.tx_location(id) {
            Ok(Some((height, index))) => TxStatus::Committed { height, index },
            _ => TxStatus::Unknown,
        }
    }

    /// Waits until `id` is committed or rejected, up to `timeout`.
    pub async fn wait_tx(&self, id: &Hash32, timeout: Duration) -> TxStatus {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.tx_status(id);
            if !matches!(s, TxStatus::Pending) {
                return s;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.tx_status(id),
            }
        }
    }

    /// Whether a block is worth producing at `now`: transactions waiting, or a timer due.
    pub fn has_work(&self, now: u64) -> bool {
        let _f = self.finalizing();
        let inner = self.lock();
        if !inner.pool.is_empty() {
            return true;
        }
        let s = &inner.state;
        let due = |t: Option<u64>| t.is_some_and(|t| t <= now);
        due(s.job_timers.first().map(|x| x.0)) || due(s.unbond_timers.first().map(|x| x.0))
    }

    /// Builds the next block from the mempool at time `now` (ms). The block is not yet
    /// final: the consensus engine certifies it and calls [`Chain::finalize`].
    pub fn propose(&self, now: u64) -> vouch_state::Proposal {
        let _f = self.finalizing();
        let inner = self.lock();
        let candidates: Vec<Tx> = inner
            .pool
            .iter()
            .take(MAX_BLOCK_TXS)
            .map(|(_, t)| t.clone())
            .collect();
        let state = inner.state.clone();
        drop(inner);
        // Signatures were checked on admission.
        state.propose(&candidates, now, self.key.public(), true)
    }

    /// Mempool transactions for a block built by another engine: in order, at most
    /// [`MAX_BLOCK_TXS`] and about [`MAX_BLOCK_BYTES`] of encoded transactions.
    pub fn candidates(&self) -> Vec<Tx> {
        let _f = self.finalizing();
        let inner = self.lock();
        let mut bytes = 0;
        inner
            .pool
            .iter()
            .take(MAX_BLOCK_TXS)
            .take_while(|(_, t)| {
                bytes += t.encode().len();
                bytes <= MAX_BLOCK_BYTES
            })
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// This node's vote on a header.
    pub fn vote(&self, block: &Block) -> Vote {
        let msg = vouch_verify::inclusion::header_vote_message(&block.header);
        Vote {
            validator: self.key.public(),
            signature: self
                .key
                .sign(vouch_types::tx::domain::HEADER_SIGNATURE, &msg),
        }
    }

    /// Persists a certified block and makes its state current. Returns once the block is
    /// durable on disk: only then are its transactions reported committed.
    pub fn finalize(
        &self,
        mut p: vouch_state::Proposal,
        certificate: Certificate,
    ) -> Result<u64, SubmitError> {
        p.block.certificate = certificate;
        // The block is written and synced without the mempool lock: readers and new
        // transactions go on meanwhile (against the state before this block; what the
        // block commits is found committed in the store, and the pool is re-checked
        // against the new state below). Only other finalizers and proposals wait.
        let _f = self.finalizing();
        if p.block.header.parent != self.state().last_block {
            return Err(SubmitError::Store("proposal is stale".into()));
        }
        self.store
            .commit(&p.block, &p.applied, &p.state)
            .map_err(|e| SubmitError::Store(e.to_string()))?;
        let mut inner = self.lock();
        let chain = p.state.chain;
        let height = p.block.header.height;
        self.metrics.record_events(&p.applied.events);
        self.metrics.block(p.block.txs.len() as u64);
        let mut done: HashSet<Hash32> = p.block.txs.iter().map(|t| t.id(&chain)).collect();
        for (id, err) in &p.rejected {
            done.insert(*id);
            inner.rejected.insert(*id, err.to_string());
            inner.rejected_order.push_back(*id);
        }
        while inner.rejected_order.len() > REJECTED_MEMORY {
            if let Some(old) = inner.rejected_order.pop_front() {
                inner.rejected.remove(&old);
            }
        }
        // What stays in the pool: not in this block, and still applicable in order per
        // sender (a transaction another validator's block made stale, or that failed
        // when a block was built, goes with the reason, and so does anything queued
        // behind it from the same sender).
        let state = &p.state;
        let ctx = vouch_state::Ctx {
            time: state.time,
            proposer: self.key.public(),
            seed: state.seed(),
        };
        let mut remaining = VecDeque::new();
        let mut pending: HashMap<Hash32, u64> = HashMap::new();
        let mut dropped: HashMap<Hash32, String> = HashMap::new();
        let ids_left: HashSet<Hash32> = inner
            .pool
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !done.contains(id))
            .collect();
        let mut newly_rejected: Vec<(Hash32, String)> = Vec::new();
        let mut dropped_ids: Vec<Hash32> = Vec::new();
        let pool = std::mem::take(&mut inner.pool);
        for (id, tx) in pool {
            if done.contains(&id) {
                continue;
            }
            if let Some(why) = dropped.get(&tx.from) {
                newly_rejected.push((id, why.clone()));
                continue;
            }
            let n = pending.get(&tx.from).copied().unwrap_or(0);
            let expected = state.account(&tx.from).nonce + n;
            let verdict = if tx.nonce != expected {
                Err(format!(
                    "nonce {} no longer applies (expected {expected})",
                    tx.nonce
                ))
            } else if n == 0 {
                match state.check_tx(&tx, &ctx) {
                    Ok(()) => Ok(()),
                    Err(TxError::UnknownJob(job))
                        if matches!(tx.action, Action::CommitResult { .. })
                            && ids_left.contains(&job) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => {
                    *pending.entry(tx.from).or_insert(0) += 1;
                    remaining.push_back((id, tx));
                }
                Err(why) => {
                    dropped_ids.push(id);
                    dropped.insert(tx.from, format!("dropped from the mempool: {why}"));
                    inner
                        .rejected
                        .insert(id, format!("dropped from the mempool: {why}"));
                    inner.rejected_order.push_back(id);
                }
            }
        }
        // Transactions that will never commit leave the outbox too (not revived at start).
        let gone: HashSet<Hash32> = p
            .rejected
            .iter()
            .map(|(id, _)| *id)
            .chain(newly_rejected.iter().map(|(id, _)| *id))
            .chain(dropped_ids)
            .collect();
        inner.pool_ids = remaining.iter().map(|(id, _)| *id).collect();
        inner.pool = remaining;
        inner.pending_per_sender = pending;
        inner.state = Arc::new(p.state);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = inner.state.clone();
        self.pool_len.store(inner.pool.len(), Ordering::Relaxed);
        drop(inner);
        if !gone.is_empty() {
            if let Err(e) = self.store.outbox_forget(&gone) {
                tracing::warn!(error = %e, "outbox not pruned");
            }
        }
        self.heights.send_replace(height);
        Ok(height)
    }

    /// Writes a state snapshot (clean shutdown).
    pub fn snapshot(&self) -> Result<(), String> {
        let s = self.state();
        self.store.snapshot(&s).map_err(|e| e.to_string())
    }

    /// The inclusion proof for a committed receipt.
    pub fn inclusion(&self, receipt: &Hash32) -> Result<Option<Inclusion>, String> {
        let Some((height, index)) = self
            .store
            .receipt_location(receipt)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let block = self
            .store
            .block(height)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("block {height} missing"))?;
        let events = self.store.events(height).map_err(|e| e.to_string())?;
        let mut leaves = Vec::new();
        let mut job = Hash32::default();
        for e in &events {
            if let vouch_state::Event::JobCommitted {
                job: j, receipt: r, ..
            } = e
            {
                if leaves.len() == index as usize {
                    job = *j;
                }
                leaves.push(*r);
            }
        }
        let proof = vouch_crypto::merkle::prove(&leaves, index as usize)
            .ok_or_else(|| "receipt index outside its block".to_string())?;
        let binding = self.binding(&block, &job, receipt)?;
        Ok(Some(Inclusion {
            job,
            header: block.header,
            proof: InclusionProof {
                index: proof.index,
                leaves: proof.leaves,
                path: proof.path,
            },
            certificate: block.certificate,
            binding,
        }))
    }

    /// What binds a committed receipt to its job and signer: the block's `CommitResult`
    /// transaction for (`job`, `receipt`) with its path to the transaction root, and the
    /// job's `SubmitJob` transaction (see `vouch_verify::inclusion::check_binding`).
    fn binding(
        &self,
        block: &vouch_types::Block,
        job: &Hash32,
        receipt: &Hash32,
    ) -> Result<Option<vouch_types::Binding>, String> {
        let Some(commit_index) = block.txs.iter().position(|t| {
            matches!(&t.action, Action::CommitResult { job: j, receipt: r, .. } if j == job && r == receipt)
        }) else {
            return Ok(None);
        };
        let Some((h, i)) = self.store.tx_location(job).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let opened = if h == block.header.height {
            block.txs.get(i as usize).cloned()
        } else {
            self.store
                .block(h)
                .map_err(|e| e.to_string())?
                .and_then(|b| b.txs.get(i as usize).cloned())
        };
        Ok(opened.and_then(|tx| {
            vouch_verify::inclusion::bind(&block.header, &block.txs, commit_index, &tx)
        }))
    }
}
