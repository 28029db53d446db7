//! The boundary between a consensus engine and the ledger.
//!
//! An engine orders blocks; the application proposes them, checks them, and applies the
//! finalized ones. [`SoloEngine`] is the single-validator engine `vouch up` uses: the one
//! validator proposes, signs and finalizes on its own (a quorum of one). A BFT engine
//! (commonware simplex) plugs into the same [`Application`] for many validators.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use vouch_types::tx::Certificate;

use crate::chain::Chain;

/// What a consensus engine needs from the ledger.
pub trait Application: Send + Sync + 'static {
    /// Whether there is anything to put in a block at `now` (ms).
    fn has_work(&self, now: u64) -> bool;
    /// Builds the next block.
    fn propose(&self, now: u64) -> vouch_state::Proposal;
    /// This validator's vote on a proposal.
    fn vote(&self, p: &vouch_state::Proposal) -> vouch_types::Vote;
    /// Applies a finalized block durably.
    fn finalize(&self, p: vouch_state::Proposal, c: Certificate) -> anyhow::Result<u64>;
    /// Height of the last applied block.
    fn height(&self) -> u64;
    /// Applies a finalized, certified block from a peer (catch-up and followers).
    fn accept(&self, block: vouch_types::tx::Block) -> Result<u64, crate::chain::AcceptError>;

    // What a multi-validator engine needs besides (see `crate::bft`).

    /// State after the last finalized block.
    fn last_state(&self) -> Arc<vouch_state::State>;
    /// Id of the genesis (height 0) block.
    fn genesis_block(&self) -> vouch_types::Hash32;
    /// Mempool transactions for a block, in order.
    fn candidates(&self) -> Vec<vouch_types::tx::Tx>;
    /// Stores a block the engine finalized (certificate filled in); `state` follows it.
    fn commit_block(
        &self,
        block: vouch_types::tx::Block,
        state: vouch_state::State,
        applied: vouch_state::Applied,
    ) -> Result<(), String>;
    /// A finalized block by height.
    fn block_at(&self, height: u64) -> Option<vouch_types::tx::Block>;
    /// A transaction a peer gossiped.
    fn receive_tx(&self, tx: vouch_types::tx::Tx);
    /// Where transactions admitted from this node's API go (to the peers).
    fn set_gossip(&self, tx: tokio::sync::mpsc::UnboundedSender<vouch_types::tx::Tx>);
}

impl Application for Chain {
    fn has_work(&self, now: u64) -> bool {
        Chain::has_work(self, now)
    }
    fn propose(&self, now: u64) -> vouch_state::Proposal {
        Chain::propose(self, now)
    }
    fn vote(&self, p: &vouch_state::Proposal) -> vouch_types::Vote {
        Chain::vote(self, &p.block)
    }
    fn finalize(&self, p: vouch_state::Proposal, c: Certificate) -> anyhow::Result<u64> {
        Ok(Chain::finalize(self, p, c)?)
    }
    fn height(&self) -> u64 {
        self.state().height
    }
    fn accept(&self, block: vouch_types::tx::Block) -> Result<u64, crate::chain::AcceptError> {
        Chain::accept(self, block)
    }
    fn last_state(&self) -> Arc<vouch_state::State> {
        self.state()
    }
    fn genesis_block(&self) -> vouch_types::Hash32 {
        self.genesis()
            .state()
            .map(|s| s.last_block)
            .unwrap_or_default()
    }
    fn candidates(&self) -> Vec<vouch_types::tx::Tx> {
        Chain::candidates(self)
    }
    fn commit_block(
        &self,
        block: vouch_types::tx::Block,
        state: vouch_state::State,
        applied: vouch_state::Applied,
    ) -> Result<(), String> {
        let certificate = block.certificate.clone();
        let p = vouch_state::Proposal {
            block,
            state,
            applied,
            rejected: Vec::new(),
        };
        Chain::finalize(self, p, certificate)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn block_at(&self, height: u64) -> Option<vouch_types::tx::Block> {
        self.store().block(height).ok().flatten()
    }
    fn receive_tx(&self, tx: vouch_types::tx::Tx) {
        Chain::receive(self, tx)
    }
    fn set_gossip(&self, tx: tokio::sync::mpsc::UnboundedSender<vouch_types::tx::Tx>) {
        Chain::set_gossip(self, tx)
    }
}

pub type EngineFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A consensus engine: runs until `shutdown` turns true.
pub trait Engine: Send + 'static {
    fn run(
        self: Box<Self>,
        app: Arc<dyn Application>,
        shutdown: watch::Receiver<bool>,
    ) -> EngineFuture;
}

/// Milliseconds since the Unix epoch (the engine is where the clock enters).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Single-validator block production: every `interval`, if there is work, propose, vote,
/// and finalize with a certificate of one signature.
#[derive(Debug, Clone)]
pub struct SoloEngine {
    pub interval: Duration,
}

impl Engine for SoloEngine {
    fn run(
        self: Box<Self>,
        app: Arc<dyn Application>,
        mut shutdown: watch::Receiver<bool>,
    ) -> EngineFuture {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => {
                        if *shutdown.borrow() { return Ok(()); }
                    }
                }
                let now = now_ms();
                if !app.has_work(now) {
                    continue;
                }
                let app = app.clone();
                let r = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
                    let p = app.propose(now);
                    let vote = app.vote(&p);
                    app.finalize(
                        p,
                        Certificate {
                            votes: vec![vote],
                            simplex: None,
                        },
                    )
                })
                .await?;
                match r {
                    Ok(h) => tracing::debug!(height = h, "block finalized"),
                    Err(e) => {
                        // A block that cannot be stored stops the node: continuing would
                        // report transactions that are not durable.
                        tracing::error!(error = %e, "cannot finalize block; stopping");
                        return Err(e);
                    }
                }
            }
        })
    }
}

/// A node that produces no blocks: it fetches finalized blocks from a peer's HTTP API
/// (`/v1/status`, `/v1/blocks/{h}/raw`) and applies each one only after checking its
/// certificate against the validator set of its own state and every root (a follower
/// trusts its genesis file, not the peer). After a restart it resumes from its own
/// height. A block that conflicts with one it already has stops it (a fork is not
/// something to paper over).
#[derive(Debug, Clone)]
pub struct FollowEngine {
    pub peer: String,
    /// Pause between polls once caught up (and after a failed fetch).
    pub poll: Duration,
}

impl FollowEngine {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent()
    }

    /// The peer's height.
    fn peer_height(agent: &ureq::Agent, peer: &str) -> anyhow::Result<u64> {
        let v: serde_json::Value = agent
            .get(&format!("{peer}/v1/status"))
            .call()?
            .body_mut()
            .read_json()?;
        v["height"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("peer status has no height"))
    }

    fn fetch(agent: &ureq::Agent, peer: &str, h: u64) -> anyhow::Result<vouch_types::tx::Block> {
        let bytes = agent
            .get(&format!("{peer}/v1/blocks/{h}/raw"))
            .call()?
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()?;
        Ok(vouch_types::tx::Block::decode(&bytes)?)
    }

    /// Fetches and applies blocks up to the peer's height; returns how many were applied.
    fn catch_up(
        app: &Arc<dyn Application>,
        agent: &ureq::Agent,
        peer: &str,
    ) -> anyhow::Result<u64> {
        let target = Self::peer_height(agent, peer)?;
        let mut applied = 0;
        while app.height() < target {
            let h = app.height() + 1;
            let block = Self::fetch(agent, peer, h)?;
            match app.accept(block) {
                Ok(_) => applied += 1,
                Err(
                    e @ (crate::chain::AcceptError::Conflict { .. }
                    | crate::chain::AcceptError::Invalid(
                        vouch_state::BlockError::WrongChain { .. },
                        _,
                    )),
                ) => return Err(Fatal(e).into()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(applied)
    }
}

/// An error after which a follower stops rather than retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(crate::chain::AcceptError);

impl Engine for FollowEngine {
    fn run(
        self: Box<Self>,
        app: Arc<dyn Application>,
        mut shutdown: watch::Receiver<bool>,
    ) -> EngineFuture {
        Box::pin(async move {
            let agent = Self::agent();
            let peer = self.peer.trim_end_matches('/').to_string();
            loop {
                let (a, ag, p) = (app.clone(), agent.clone(), peer.clone());
                let r = tokio::task::spawn_blocking(move || Self::catch_up(&a, &ag, &p)).await?;
                match r {
                    Ok(n) if n > 0 => {
                        tracing::debug!(applied = n, height = app.height(), "caught up")
                    }
                    Ok(_) => {}
                    Err(e) if e.is::<Fatal>() => {
                        tracing::error!(error = %e, "stopping: the peer's chain is not ours");
                        return Err(e);
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), peer = %peer, "sync"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = shutdown.changed() => {
                        if *shutdown.borrow() { return Ok(()); }
                    }
                }
            }
        })
    }
}
