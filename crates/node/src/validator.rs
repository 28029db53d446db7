//! The validator role: audits the jobs that chain randomness selected and posts verdicts.
//!
//! Two audit modes (docs/verification.md): **spot checks** (the default for receipts that
//! commit to an execution trace): challenges derived from the block that committed the
//! job, the provider opens its trace at those points, a handful of single-layer steps are
//! recomputed (about 1% of the generation's cost); and **re-execution**: one prefill over
//! the whole answer (receipts without a trace, embeddings, or `--audit-mode reexec`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vouch_crypto::SigningKey;
use vouch_inference::fingerprint::Tolerance;
use vouch_inference::ChatModel;
use vouch_state::Event;
use vouch_types::tx::Action;
use vouch_types::{Hash32, Receipt};
use vouch_verify::spot;

use crate::chain::Chain;

/// How a validator audits generation receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// Spot checks over the committed trace when the receipt has one, else re-execution.
    #[default]
    Spot,
    /// Always re-execute the whole answer.
    Reexec,
}

impl std::str::FromStr for AuditMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spot" => Ok(AuditMode::Spot),
            "reexec" => Ok(AuditMode::Reexec),
            _ => Err(format!("audit mode must be spot or reexec, got {s:?}")),
        }
    }
}

/// Challenge randomness for a committed receipt: the id of the block that committed it
/// (fixed only after the provider's trace commitment was signed and included).
pub fn spot_seed(chain: &Chain, receipt: &Hash32) -> Option<Hash32> {
    let (height, _) = chain.store().receipt_location(receipt).ok()??;
    Some(chain.store().block(height).ok()??.header.id())
}

/// The spot-check challenges every honest party derives for a committed receipt.
pub fn spot_challenges(chain: &Chain, r: &Receipt) -> Result<Vec<spot::Check>, String> {
    let seed = spot_seed(chain, &r.id()).ok_or("the block that committed the job is unknown")?;
    spot::challenges(r, &seed, spot::recommended_checks(r.output_tokens.len()))
        .map_err(|e| e.to_string())
}

/// What the auditor holds for a spot check: the provider's opening, or why there is none.
pub type OpeningResult = Result<spot::Opening, String>;

pub struct ValidatorRole {
    pub key: SigningKey,
    pub model: Arc<Mutex<ChatModel>>,
    pub embedder: Option<Arc<vouch_inference::Embedder>>,
    /// Reaches other nodes for receipts to audit (multi-node networks).
    pub dispatch: Option<Arc<crate::dispatch::Dispatch>>,
    /// This node's provider key: it disputes a failed audit that it re-checks as honest.
    pub provider: Option<SigningKey>,
    pub mode: AuditMode,
}

/// How an audit was run, for the `vouch_audit_runs_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditRun {
    Spot,
    Reexec,
    /// A spot check was due but the provider's opening never came (its node is down or
    /// slow, or it refused): the auditor re-executed instead.
    Fallback,
}

impl AuditRun {
    pub fn label(self) -> &'static str {
        match self {
            AuditRun::Spot => "spot",
            AuditRun::Reexec => "reexec",
            AuditRun::Fallback => "fallback",
        }
    }
}

/// The audit decision for one committed job, given the receipt the provider kept and, for
/// a spot check, the provider's opening of its trace.
///
/// A missing opening is not a verdict: a provider whose node is down, or that will not
/// open, cannot hide anything by it, because the auditor then re-executes the whole
/// answer (the stronger check; it costs the auditor a prefill instead of ~1% of one).
pub fn audit(
    chain: &Chain,
    job: &Hash32,
    receipt_id: &Hash32,
    receipt: Option<Receipt>,
    opening: Option<OpeningResult>,
    model: &mut ChatModel,
    embedder: Option<&vouch_inference::Embedder>,
) -> (AuditRun, Result<(), String>) {
    let mut run = AuditRun::Reexec;
    let verdict = audit_with(
        chain, job, receipt_id, receipt, opening, model, embedder, &mut run,
    );
    (run, verdict)
}

#[allow(clippy::too_many_arguments)]
fn audit_with(
    chain: &Chain,
    job: &Hash32,
    receipt_id: &Hash32,
    receipt: Option<Receipt>,
    opening: Option<OpeningResult>,
    model: &mut ChatModel,
    embedder: Option<&vouch_inference::Embedder>,
    run: &mut AuditRun,
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
    match opening {
        Some(Err(e)) => {
            tracing::warn!(job = %job.short(), reason = %e, "no trace opening: re-executing instead");
            *run = AuditRun::Fallback;
        }
        Some(Ok(opening)) => {
            *run = AuditRun::Spot;
            let checks = spot_challenges(chain, &r)?;
            return spot::check_spot(&r, model, &checks, &opening)
                .map(|rep| {
                    tracing::info!(
                        job = %job.short(),
                        layer_checks = rep.layer_checks,
                        sample_checks = rep.sample_checks,
                        opening_bytes = rep.opening_bytes,
                        ms = rep.seconds * 1e3,
                        "spot check passed"
                    )
                })
                .map_err(|e| e.to_string());
        }
        None => {}
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

    /// Audits `job` and returns the verdict (`Err` = the provider cheated).
    async fn check(
        self: &Arc<Self>,
        chain: &Arc<Chain>,
        job: Hash32,
        rid: Hash32,
    ) -> Result<(), String> {
        let receipt = self.find_receipt(chain, &job, &rid).await;
        let spot = self.mode == AuditMode::Spot
            && receipt
                .as_ref()
                .is_some_and(|r| r.trace.is_some() && r.id() == rid);
        let provider = chain.state().jobs.get(&job).map(|j| j.provider);
        let local = provider.is_some() && self.provider.as_ref().map(|k| k.public()) == provider;
        // A remote provider opens its trace over the p2p link; this node's own provider
        // opens it here, with the same code, before the audit runs.
        // The wait is bounded so that a re-execution still fits in the challenge window
        // when the opening never comes.
        let wait = Duration::from_millis(chain.state().params.challenge_window_ms / 4)
            .min(crate::dispatch::OPENING_WAIT);
        let remote_opening = match (spot, local, &self.dispatch, provider) {
            (true, false, Some(d), Some(p)) => Some(
                d.fetch_opening(&p, &job, wait)
                    .await
                    .and_then(|b| spot::Opening::from_bytes(&b).map_err(|e| e.to_string())),
            ),
            (true, false, _, _) => Some(Err("no route to the provider".to_string())),
            _ => None,
        };
        let me = self.clone();
        let c = chain.clone();
        let (run, verdict) = tokio::task::spawn_blocking(move || {
            let mut model = me.model.lock().unwrap_or_else(|p| p.into_inner());
            let opening = match (spot, local, receipt.as_ref()) {
                (true, true, Some(r)) => Some(spot_challenges(&c, r).and_then(|checks| {
                    spot::open(&mut model, r, &checks).map_err(|e| e.to_string())
                })),
                _ => remote_opening,
            };
            audit(
                &c,
                &job,
                &rid,
                receipt,
                opening,
                &mut model,
                me.embedder.as_deref(),
            )
        })
        .await
        .unwrap_or_else(|e| (AuditRun::Reexec, Err(e.to_string())));
        let result = if verdict.is_ok() { "pass" } else { "fail" };
        chain.metrics().inc(
            "vouch_audit_runs_total",
            &format!("mode=\"{}\",result=\"{result}\"", run.label()),
            1,
        );
        verdict
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
