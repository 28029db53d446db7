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
    /// Reaches other nodes for receipts to audit (multi-node networks).
    pub dispatch: Option<Arc<crate::dispatch::Dispatch>>,
    /// This node's provider key: it disputes a failed audit that it re-checks as honest.
    pub provider: Option<SigningKey>,
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
    /// Follows finalized blocks until the chain stops: audits the jobs chain randomness
    /// selected (each is assigned to one validator; the others step in if no verdict came
    /// within half the challenge window), disputes a failed audit of this node's own
    /// provider that it re-checks as honest, and votes on other providers' disputes.
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
                    let me = self.clone();
                    let chain = chain.clone();
                    match e {
                        Event::JobCommitted {
                            job,
                            receipt,
                            audit_selected: true,
                            ..
                        } => {
                            let delay = if self.assigned(&chain, &job) {
                                Duration::ZERO
                            } else {
                                Duration::from_millis(chain.state().params.challenge_window_ms / 2)
                            };
                            tokio::spawn(
                                async move { me.audit_job(chain, job, receipt, delay).await },
                            );
                        }
                        Event::JobAudited {
                            job, pass: false, ..
                        } => {
                            tokio::spawn(async move { me.maybe_dispute(chain, job).await });
                        }
                        Event::JobDisputed { job } => {
                            tokio::spawn(async move { me.vote(chain, job).await });
                        }
                        _ => {}
                    }
                }
            }
            done = head;
        }
    }

    /// Whether this validator is the one to audit `job` first: validators take turns by
    /// the job id, skipping the one on the node that served the job.
    fn assigned(&self, chain: &Chain, job: &Hash32) -> bool {
        let state = chain.state();
        let validators: Vec<Hash32> = state.validators.iter().copied().collect();
        if validators.len() <= 1 {
            return true;
        }
        let provider = state.jobs.get(job).map(|j| j.provider);
        let host = match (&self.dispatch, provider) {
            (Some(d), Some(p)) => d.host_of(&p),
            _ => None,
        };
        let d = Hash32::digest("vouch 2026 audit assignment v1", &[job.as_bytes()]);
        let start = u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes")) as usize;
        (0..validators.len())
            .map(|i| validators[(start + i) % validators.len()])
            .find(|v| Some(*v) != host)
            .is_some_and(|v| v == self.key.public())
    }

    /// The receipt a job committed: from this node's store, or from the provider's node.
    async fn find_receipt(&self, chain: &Chain, job: &Hash32, rid: &Hash32) -> Option<Receipt> {
        let provider = chain.state().jobs.get(job).map(|j| j.provider);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(bytes)) = chain.store().receipt(rid) {
                return serde_json::from_slice::<Receipt>(&bytes).ok();
            }
            if let (Some(d), Some(p)) = (&self.dispatch, &provider) {
                if let Some(r) = d.fetch_receipt(p, rid).await {
                    if let Ok(json) = serde_json::to_vec(&r) {
                        let _ = chain.store().put_receipt(rid, &json);
                    }
                    return Some(r);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Re-executes `job` and returns the verdict (`Err` = the provider cheated).
    async fn check(
        self: &Arc<Self>,
        chain: &Arc<Chain>,
        job: Hash32,
        rid: Hash32,
    ) -> Result<(), String> {
        let receipt = self.find_receipt(chain, &job, &rid).await;
        let me = self.clone();
        let c = chain.clone();
        tokio::task::spawn_blocking(move || {
            let mut model = me.model.lock().unwrap_or_else(|p| p.into_inner());
            audit(&c, &job, &rid, receipt, &mut model, me.embedder.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    }

    fn status(chain: &Chain, job: &Hash32) -> Option<(vouch_state::JobStatus, Hash32)> {
        let st = chain.state();
        let j = st.jobs.get(job)?;
        Some((j.status, j.result.as_ref()?.receipt))
    }

    async fn audit_job(
        self: Arc<Self>,
        chain: Arc<Chain>,
        job: Hash32,
        rid: Hash32,
        delay: Duration,
    ) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            // The assigned validator has probably posted its verdict already.
            if !matches!(
                Self::status(&chain, &job),
                Some((vouch_state::JobStatus::Committed, _))
            ) {
                return;
            }
        }
        let verdict = self.check(&chain, job, rid).await;
        let pass = verdict.is_ok();
        match &verdict {
            Ok(()) => tracing::info!(job = %job.short(), "audit passed"),
            Err(reason) => tracing::warn!(job = %job.short(), %reason, "audit FAILED"),
        }
        if let Err(e) = chain.submit_signed(&self.key, Action::AuditVerdict { job, pass }) {
            tracing::debug!(job = %job.short(), error = %e, "audit verdict not posted");
        }
    }

    /// A failed audit of this node's provider: re-check its own receipt, and dispute if
    /// it holds.
    async fn maybe_dispute(self: Arc<Self>, chain: Arc<Chain>, job: Hash32) {
        let Some(pk) = &self.provider else { return };
        let Some(j) = chain.state().jobs.get(&job).cloned() else {
            return;
        };
        if j.provider != pk.public() {
            return;
        }
        let Some(rid) = j.result.as_ref().map(|r| r.receipt) else {
            return;
        };
        match self.check(&chain, job, rid).await {
            Ok(()) => {
                tracing::warn!(job = %job.short(), "our job failed its audit but re-checks as honest: disputing");
                if let Err(e) = chain.submit_signed(pk, Action::Dispute { job }) {
                    tracing::warn!(job = %job.short(), error = %e, "cannot post dispute");
                }
            }
            Err(reason) => {
                tracing::error!(job = %job.short(), %reason, "our job failed its audit and re-checks as wrong");
            }
        }
    }

    /// A disputed job: re-execute and vote, unless this validator audited it or this
    /// node's provider served it.
    async fn vote(self: Arc<Self>, chain: Arc<Chain>, job: Hash32) {
        let Some(j) = chain.state().jobs.get(&job).cloned() else {
            return;
        };
        let mine = self
            .provider
            .as_ref()
            .is_some_and(|p| p.public() == j.provider);
        if j.auditor == Some(self.key.public()) || mine {
            return;
        }
        let Some(rid) = j.result.as_ref().map(|r| r.receipt) else {
            return;
        };
        let guilty = self.check(&chain, job, rid).await.is_err();
        tracing::info!(job = %job.short(), guilty, "dispute vote");
        if let Err(e) = chain.submit_signed(&self.key, Action::ResolveDispute { job, guilty }) {
            tracing::debug!(job = %job.short(), error = %e, "dispute vote not posted");
        }
    }
}
