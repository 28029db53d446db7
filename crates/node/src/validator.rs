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

/// The longest an auditor waits for a remote provider's trace opening.
pub const OPENING_WAIT: Duration = Duration::from_secs(60);

/// A boxed future, for the object-safe [`Peers`].
pub type PeerFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What an auditor asks of the other nodes: implemented by the p2p job dispatch of
/// `vouch-net`, so this role knows nothing of the transport.
pub trait Peers: Send + Sync {
    /// The node (validator key) hosting `provider`, if known.
    fn host_of(&self, provider: &Hash32) -> Option<Hash32>;
    /// The receipt `id` from the node of `provider`.
    fn fetch_receipt<'a>(
        &'a self,
        provider: &'a Hash32,
        id: &'a Hash32,
    ) -> PeerFuture<'a, Option<Receipt>>;
    /// The trace opening of `job` from the node of `provider`, waiting at most `wait`.
    fn fetch_opening<'a>(
        &'a self,
        provider: &'a Hash32,
        job: &'a Hash32,
        wait: Duration,
    ) -> PeerFuture<'a, Result<Vec<u8>, String>>;
}

pub struct ValidatorRole {
    pub key: SigningKey,
    pub model: Arc<Mutex<ChatModel>>,
    pub embedder: Option<Arc<vouch_inference::Embedder>>,
    /// Reaches other nodes for receipts to audit (multi-node networks).
    pub dispatch: Option<Arc<dyn Peers>>,
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

/// What an audit found. Only `Pass` and `Fail` are verdicts; an auditor that cannot check
/// a job says so and posts nothing, so its own gap never reads as the provider's fault
/// (and it is never slashed in a dispute for a model it does not hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The provider's work is wrong; the reason is the evidence.
    Fail(String),
    /// This auditor cannot check the job (a model it does not hold, a receipt or block it
    /// cannot get, the job already gone): no verdict; another validator audits it (they
    /// step in when none came within half the challenge window).
    CannotAudit(String),
}

impl Verdict {
    /// The `result` label of `vouch_audit_runs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::CannotAudit(_) => "cannot_audit",
        }
    }

    /// The audit transaction this verdict posts: none for cannot-audit.
    pub fn audit_action(&self, job: Hash32) -> Option<Action> {
        match self {
            Verdict::Pass => Some(Action::AuditVerdict { job, pass: true }),
            Verdict::Fail(_) => Some(Action::AuditVerdict { job, pass: false }),
            Verdict::CannotAudit(_) => None,
        }
    }

    /// The dispute vote this verdict casts: none (abstain) for cannot-audit.
    pub fn dispute_vote(&self, job: Hash32) -> Option<Action> {
        match self {
            Verdict::Pass => Some(Action::ResolveDispute { job, guilty: false }),
            Verdict::Fail(_) => Some(Action::ResolveDispute { job, guilty: true }),
            Verdict::CannotAudit(_) => None,
        }
    }

    fn from_check<E: std::fmt::Display>(r: Result<(), E>) -> Verdict {
        match r {
            Ok(()) => Verdict::Pass,
            Err(e) => Verdict::Fail(e.to_string()),
        }
    }
}

/// What a receipt claims, as far as the checks before any model runs need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub id: Hash32,
    pub embedding: bool,
    pub model: Hash32,
    pub provider: Hash32,
    pub input_hash: Hash32,
}

impl Claim {
    pub fn of(r: &Receipt) -> Claim {
        Claim {
            id: r.id(),
            embedding: r.kind == vouch_types::ReceiptKind::Embedding,
            model: r.model,
            provider: r.provider,
            input_hash: r.input_hash,
        }
    }
}

/// The checks before any model runs: whether the receipt is the job's (else `Fail`), and
/// whether this auditor can check it at all (else `CannotAudit`). `job` is the open job's
/// (model, provider, input hash); `chat_model` the model this auditor holds.
pub fn precheck(
    committed: &Hash32,
    claim: Option<&Claim>,
    job: Option<(Hash32, Hash32, Hash32)>,
    chat_model: Hash32,
    has_embedder: bool,
) -> Result<(), Verdict> {
    let cannot = |m: &str| Err(Verdict::CannotAudit(m.to_string()));
    // The auditor's own store or link missed it; the provider may still have it.
    let Some(c) = claim else {
        return cannot("the receipt could not be obtained");
    };
    if c.id != *committed {
        return Err(Verdict::Fail(
            "the receipt the provider produced is not the one it committed".into(),
        ));
    }
    let Some((model, provider, input_hash)) = job else {
        return cannot("job already settled");
    };
    if c.input_hash != input_hash {
        return Err(Verdict::Fail(
            "receipt answers another input than the job's".into(),
        ));
    }
    if c.model != model || c.provider != provider {
        return Err(Verdict::Fail(
            "receipt names another model or provider than the job".into(),
        ));
    }
    if c.embedding {
        if !has_embedder {
            return cannot("this validator has no embedding model");
        }
    } else if c.model != chat_model {
        return Err(Verdict::CannotAudit(format!(
            "this validator cannot re-execute model {}",
            c.model
        )));
    }
    Ok(())
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
) -> (AuditRun, Verdict) {
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
) -> Verdict {
    let terms = chain
        .state()
        .jobs
        .get(job)
        .map(|j| (j.model, j.provider, j.input_hash));
    let claim = receipt.as_ref().map(Claim::of);
    if let Err(v) = precheck(
        receipt_id,
        claim.as_ref(),
        terms,
        model.id(),
        embedder.is_some(),
    ) {
        return v;
    }
    let Some(r) = receipt else {
        return Verdict::CannotAudit("the receipt could not be obtained".into());
    };
    if r.kind == vouch_types::ReceiptKind::Embedding {
        let Some(e) = embedder else {
            return Verdict::CannotAudit("this validator has no embedding model".into());
        };
        return Verdict::from_check(vouch_verify::check_reexecute_embedding(&r, e).map(|_| ()));
    }
    match opening {
        Some(Err(e)) => {
            tracing::warn!(job = %job.short(), reason = %e, "no trace opening: re-executing instead");
            *run = AuditRun::Fallback;
        }
        Some(Ok(opening)) => {
            *run = AuditRun::Spot;
            let checks = match spot_challenges(chain, &r) {
                Ok(c) => c,
                // The block is unknown to this node: its gap, not the provider's.
                Err(e) => return Verdict::CannotAudit(e),
            };
            return Verdict::from_check(spot::check_spot(&r, model, &checks, &opening).map(
                |rep| {
                    tracing::info!(
                        job = %job.short(),
                        layer_checks = rep.layer_checks,
                        sample_checks = rep.sample_checks,
                        opening_bytes = rep.opening_bytes,
                        ms = rep.seconds * 1e3,
                        "spot check passed"
                    )
                },
            ));
        }
        None => {}
    }
    Verdict::from_check(vouch_verify::check_reexecute(&r, model, &Tolerance::default()).map(|_| ()))
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

    /// Audits `job` and returns the verdict.
    async fn check(self: &Arc<Self>, chain: &Arc<Chain>, job: Hash32, rid: Hash32) -> Verdict {
        let receipt = self.find_receipt(chain, &job, &rid).await;
        let provider = chain.state().jobs.get(&job).map(|j| j.provider);
        let local = provider.is_some() && self.provider.as_ref().map(|k| k.public()) == provider;
        // Committing a receipt obliges its provider to hand it to auditors: one it was asked
        // for over the p2p link and never produced is withheld, which is the provider's
        // fault (a withholder would otherwise be paid for answers nobody can check). Only a
        // receipt this node cannot look for at all is its own gap.
        if receipt.is_none() && !local && self.dispatch.is_some() && provider.is_some() {
            let v = Verdict::Fail(
                "the provider did not produce the receipt it committed (withheld)".into(),
            );
            chain
                .metrics()
                .audit_run(AuditRun::Reexec.label(), v.label());
            return v;
        }
        let spot = self.mode == AuditMode::Spot
            && receipt
                .as_ref()
                .is_some_and(|r| r.trace.is_some() && r.id() == rid);
        // A remote provider opens its trace over the p2p link; this node's own provider
        // opens it here, with the same code, before the audit runs.
        // The wait is bounded so that a re-execution still fits in the challenge window
        // when the opening never comes.
        let wait =
            Duration::from_millis(chain.state().params.challenge_window_ms / 4).min(OPENING_WAIT);
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
        .unwrap_or_else(|e| {
            (
                AuditRun::Reexec,
                Verdict::CannotAudit(format!("audit task failed: {e}")),
            )
        });
        chain.metrics().audit_run(run.label(), verdict.label());
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
        match &verdict {
            Verdict::Pass => tracing::info!(job = %job.short(), "audit passed"),
            Verdict::Fail(reason) => tracing::warn!(job = %job.short(), %reason, "audit FAILED"),
            Verdict::CannotAudit(reason) => {
                tracing::warn!(job = %job.short(), %reason, "cannot audit this job: no verdict posted, left to other validators")
            }
        }
        if let Some(action) = verdict.audit_action(job) {
            if let Err(e) = chain.submit_signed(&self.key, action) {
                tracing::debug!(job = %job.short(), error = %e, "audit verdict not posted");
            }
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
            Verdict::Pass => {
                tracing::warn!(job = %job.short(), "our job failed its audit but re-checks as honest: disputing");
                if let Err(e) = chain.submit_signed(pk, Action::Dispute { job }) {
                    tracing::warn!(job = %job.short(), error = %e, "cannot post dispute");
                }
            }
            Verdict::Fail(reason) => {
                tracing::error!(job = %job.short(), %reason, "our job failed its audit and re-checks as wrong");
            }
            Verdict::CannotAudit(reason) => {
                tracing::warn!(job = %job.short(), %reason, "our job failed its audit and cannot be re-checked here: no dispute");
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
        let verdict = self.check(&chain, job, rid).await;
        let Some(vote) = verdict.dispute_vote(job) else {
            tracing::info!(job = %job.short(), reason = ?verdict, "cannot check the disputed job: abstaining");
            return;
        };
        tracing::info!(job = %job.short(), verdict = verdict.label(), "dispute vote");
        if let Err(e) = chain.submit_signed(&self.key, vote) {
            tracing::debug!(job = %job.short(), error = %e, "dispute vote not posted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash32 {
        Hash32::digest("test", &[s.as_bytes()])
    }

    /// Row 10 (issue 18): the auditor's own gaps are not verdicts. Before, every one of
    /// these cases was `Err(..)`, posted as `audit_verdict{pass:false}` (and the auditor
    /// slashed when the provider disputed); now they post nothing.
    #[test]
    fn own_gaps_are_cannot_audit_and_post_nothing() {
        let (model, other_model, provider) = (h("m"), h("m2"), h("p"));
        let chat = Claim {
            id: h("r"),
            embedding: false,
            model,
            provider,
            input_hash: h("in"),
        };
        let terms = Some((model, provider, h("in")));
        let job = h("job");
        let gap = |v: Result<(), Verdict>| match v {
            Err(v @ Verdict::CannotAudit(_)) => {
                assert_eq!(v.audit_action(job), None);
                assert_eq!(v.dispute_vote(job), None);
                assert_eq!(v.label(), "cannot_audit");
            }
            other => panic!("expected cannot-audit, got {other:?}"),
        };
        // Another model than the one this auditor holds.
        gap(precheck(&chat.id, Some(&chat), terms, other_model, true));
        // An embedding and no embedder.
        let emb = Claim {
            embedding: true,
            ..chat
        };
        gap(precheck(&emb.id, Some(&emb), terms, model, false));
        // The receipt could not be fetched (store miss, link down).
        gap(precheck(&chat.id, None, terms, model, true));
        // The job is gone from the state.
        gap(precheck(&chat.id, Some(&chat), None, model, true));

        // What the provider did wrong stays a failing verdict, with the reason.
        let fail = |v: Result<(), Verdict>| match v {
            Err(v @ Verdict::Fail(_)) => {
                assert_eq!(
                    v.audit_action(job),
                    Some(Action::AuditVerdict { job, pass: false })
                );
                assert_eq!(
                    v.dispute_vote(job),
                    Some(Action::ResolveDispute { job, guilty: true })
                );
            }
            other => panic!("expected fail, got {other:?}"),
        };
        fail(precheck(
            &h("other receipt"),
            Some(&chat),
            terms,
            model,
            true,
        ));
        fail(precheck(
            &chat.id,
            Some(&chat),
            Some((model, provider, h("another input"))),
            model,
            true,
        ));
        fail(precheck(
            &chat.id,
            Some(&chat),
            Some((model, h("someone else"), h("in"))),
            model,
            true,
        ));
        assert_eq!(precheck(&chat.id, Some(&chat), terms, model, false), Ok(()));
        assert_eq!(
            precheck(&emb.id, Some(&emb), terms, other_model, true),
            Ok(())
        );
        assert_eq!(
            Verdict::Pass.audit_action(job),
            Some(Action::AuditVerdict { job, pass: true })
        );
    }
}
