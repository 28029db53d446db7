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
                    app.finalize(p, Certificate { votes: vec![vote] })
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
