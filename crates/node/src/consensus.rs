//! The boundary between a consensus engine and the ledger.
//!
//! An engine orders blocks; the application proposes them, checks them, and applies the
//! finalized ones. [`SoloEngine`] is the single-validator engine `vouch up` uses: the one
//! validator proposes, signs and finalizes on its own (a quorum of one). A BFT engine
//! (commonware simplex) plugs into the same [`Application`] for many validators.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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
                let now = crate::clock::now_ms();
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
