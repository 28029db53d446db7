//! The validator role: audits the jobs that chain randomness selected, by re-executing
//! them with the core verifier, and posts verdicts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vouch_crypto::SigningKey;
use vouch_inference::fingerprint::Tolerance;
use vouch_inference::ChatModel;
use vouch_state::Event;
use vouch_types::tx::Action;
use vouch_types::{Hash32, Receipt};

use crate::chain::Chain;

pub struct ValidatorRole {
    pub key: SigningKey,
    pub model: Arc<Mutex<ChatModel>>,
    pub embedder: Option<Arc<vouch_inference::Embedder>>,
}

/// The audit decision for one committed job, given the receipt the provider kept.
pub fn audit(
    chain: &Chain,
    job: &Hash32,
    receipt_id: &Hash32,
    receipt: Option<Receipt>,
    model: &mut ChatModel,
    embedder: Option<&vouch_inference::Embedder>,
) -> Result<(), String> {
    let r = receipt.ok_or("the provider did not produce the receipt")?;
    if r.id() != *receipt_id {
        return Err("the receipt the provider produced is not the one it committed".into());
    }
    let state = chain.state();
    let j = state.jobs.get(job).ok_or("job already settled")?;
    if r.input_hash != j.input_hash {
        return Err("receipt answers another input than the job's".into());
    }
    if r.model != j.model || r.provider != j.provider {
        return Err("receipt names another model or provider than the job".into());
    }
    if r.kind == vouch_types::ReceiptKind::Embedding {
        let e = embedder.ok_or("this validator has no embedding model")?;
        return vouch_verify::check_reexecute_embedding(&r, e)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if r.model != model.id() {
        return Err(format!(
            "this validator cannot re-execute model {}",
            r.model
        ));
    }
    vouch_verify::check_reexecute(&r, model, &Tolerance::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl ValidatorRole {
    /// Follows finalized blocks and audits selected jobs until the chain stops.
    pub async fn run(
        self: Arc<Self>,
        chain: Arc<Chain>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut rx = chain.subscribe();
        let mut done = *rx.borrow();
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = shutdown.changed() => if *shutdown.borrow() { return },
            }
            let head = *rx.borrow();
            for h in done + 1..=head {
                let events = match chain.store().events(h) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(height = h, error = %e, "cannot read events");
                        continue;
                    }
                };
                for e in events {
                    if let Event::JobCommitted {
                        job,
                        receipt,
                        audit_selected: true,
                        ..
                    } = e
                    {
                        let me = self.clone();
                        let chain = chain.clone();
                        tokio::spawn(async move { me.audit_job(chain, job, receipt).await });
                    }
                }
            }
            done = head;
        }
    }

    async fn audit_job(self: Arc<Self>, chain: Arc<Chain>, job: Hash32, rid: Hash32) {
        // The provider stores the receipt before committing it; on one node it is there
        // already, a remote provider gets a few seconds.
        let mut receipt = None;
        for _ in 0..20 {
            if let Ok(Some(bytes)) = chain.store().receipt(&rid) {
                receipt = serde_json::from_slice::<Receipt>(&bytes).ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let me = self.clone();
        let c = chain.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            let mut model = me.model.lock().unwrap_or_else(|p| p.into_inner());
            audit(&c, &job, &rid, receipt, &mut model, me.embedder.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let pass = verdict.is_ok();
        match &verdict {
            Ok(()) => tracing::info!(job = %job.short(), "audit passed"),
            Err(reason) => tracing::warn!(job = %job.short(), %reason, "audit FAILED"),
        }
        if let Err(e) = chain.submit_signed(&self.key, Action::AuditVerdict { job, pass }) {
            tracing::warn!(job = %job.short(), error = %e, "cannot post audit verdict");
        }
    }
}
