//! `--follow-models`: pull new model versions descending from the models this node holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vouch_types::Hash32;

use crate::blob_store::BlobStore;
use crate::dispatch::Dispatch;
use crate::pull::{pull, PullEvent, PullOptions};

/// Pulls, one at a time, every registered model that descends from a model this node
/// holds and that some peer announces (`--follow-models`).
pub async fn follow(
    chain: Arc<vouch_node::Chain>,
    store: Arc<BlobStore>,
    dispatch: Arc<Dispatch>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut failed: HashMap<Hash32, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
        let st = store.clone();
        let local = tokio::task::spawn_blocking(move || st.local_models())
            .await
            .unwrap_or_default();
        let wanted: Vec<Hash32> = {
            let state = chain.state();
            state
                .models
                .keys()
                .filter(|id| !local.contains(id))
                .filter(|id| {
                    failed
                        .get(id)
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
                })
                .filter(|id| {
                    state
                        .lineage(id)
                        .is_some_and(|l| l.ancestors.iter().any(|a| local.contains(&a.id)))
                })
                .copied()
                .collect()
        };
        for id in wanted {
            let sources = dispatch.seeds_of(&id);
            if sources.is_empty() {
                continue;
            }
            let st = store.clone();
            let r = tokio::task::spawn_blocking(move || {
                pull(&st, &id, &sources, &PullOptions::default(), &mut |e| {
                    if let PullEvent::Dropped { peer, why } = e {
                        tracing::warn!(%peer, %why, "model peer dropped");
                    }
                })
            })
            .await;
            match r {
                Ok(Ok(rep)) => tracing::info!(
                    model = %id.short(), name = %rep.name, bytes = rep.bytes,
                    secs = format!("{:.2}", rep.secs), "followed a new model version"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(model = %id.short(), error = %e, "pulling a new model version failed");
                    failed.insert(id, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model pull task failed");
                    failed.insert(id, Instant::now());
                }
            }
        }
    }
}
