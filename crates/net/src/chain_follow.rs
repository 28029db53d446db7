//! Following a chain over HTTP: a node that produces no blocks and applies a peer's
//! finalized blocks after checking each one itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vouch_node::chain::AcceptError;
use vouch_node::consensus::{Application, Engine, EngineFuture};

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
                    e @ (AcceptError::Conflict { .. }
                    | AcceptError::Invalid(vouch_state::BlockError::WrongChain { .. }, _)),
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
struct Fatal(AcceptError);

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
