//! The explorer page (static files compiled into the binary) and the two API calls only
//! it needs: recent blocks and jobs, and server-side receipt verification.

use std::collections::HashSet;

use axum::extract::{Query, State as AxState};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vouch_state::Event;
use vouch_types::{Action, Hash32, Receipt};
use vouch_verify::verdict::{LedgerFacts, LedgerJob, Trust, Verdict};

use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &str = include_str!("../../../web/explorer/index.html");
const APP: &str = include_str!("../../../web/explorer/app.js");
const STYLE: &str = include_str!("../../../web/explorer/style.css");

pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}
pub async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP,
    )
}
pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

#[derive(Deserialize)]
pub struct Recent {
    #[serde(default)]
    limit: Option<u64>,
}

/// `GET /v1/explorer/recent`: the last blocks (newest first) and the jobs they touched.
pub async fn recent(
    AxState(s): AxState<AppState>,
    q: Result<Query<Recent>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let store = s.chain.store();
    let head = s.chain.state().height;
    let mut blocks = Vec::new();
    let mut jobs = Vec::new();
    let mut seen = HashSet::new();
    let internal = |e: vouch_storage::StoreError| ApiError::internal(e.to_string());
    for h in (head.saturating_sub(limit - 1).max(1)..=head).rev() {
        let Some(b) = store.block(h).map_err(internal)? else {
            continue;
        };
        let mut kinds: Vec<&str> = b.txs.iter().map(|t| t.action.name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let events = store.events(h).map_err(internal)?;
        if b.txs.is_empty() && !events.is_empty() {
            kinds.push("settlement");
        }
        blocks.push(json!({"height": h, "id": b.header.id(), "time": b.header.time, "tx_count": b.txs.len(), "kinds": kinds}));
        for e in &events {
            let job = match e {
                Event::JobSubmitted { job, .. }
                | Event::JobCommitted { job, .. }
                | Event::JobAudited { job, .. }
                | Event::JobSettled { job, .. }
                | Event::JobExpired { job, .. }
                | Event::JobDisputed { job }
                | Event::Slashed { job, .. } => *job,
                Event::Unbonded { .. }
                | Event::DataItemsAdded { .. }
                | Event::TaskDecided { .. } => continue,
            };
            if jobs.len() < limit as usize && seen.insert(job) {
                jobs.push(job);
            }
        }
    }
    let mut out = Vec::new();
    for job in jobs {
        let Some(hist) = store.job_history(&job).map_err(internal)? else {
            continue;
        };
        let (mut status, mut audit, mut charge, mut receipt) =
            ("submitted", Value::Null, Value::Null, Value::Null);
        for (_, e) in &hist.events {
            match e {
                Event::JobCommitted {
                    receipt: r,
                    charge: c,
                    ..
                } => {
                    status = "committed";
                    charge = json!(c);
                    receipt = json!(r);
                }
                Event::JobAudited { pass, .. } => audit = json!(pass),
                Event::JobDisputed { .. } => status = "disputed",
                Event::JobSettled { .. } => status = "settled",
                Event::JobExpired { .. } => status = "expired",
                Event::Slashed { .. } => status = "slashed",
                _ => {}
            }
        }
        out.push(json!({"job": job, "status": status, "audit": audit, "charge": charge, "receipt": receipt}));
    }
    Ok(Json(json!({"head": head, "blocks": blocks, "jobs": out})))
}

/// `POST /v1/verify`: the verdict on a receipt (`vouch_verify::assess`, the same function
/// `vouch verify` and the MCP tool use), with this chain pinned (its id and validators)
/// and the facts of this node's ledger: whether the signer is a registered provider, and
/// the job the inclusion names (its provider, model, input hash and committed receipt).
/// `valid` is true only when the status is `verified`.
pub async fn verify(
    AxState(s): AxState<AppState>,
    body: Result<Json<Receipt>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let verdict = match body {
        Ok(Json(r)) => {
            let st = s.chain.state();
            let trust = Trust {
                chain: Some(st.chain),
                validators: st.validators.iter().copied().collect(),
                ..Trust::default()
            };
            let facts = ledger_facts(&s, &st, &r).map_err(ApiError::internal)?;
            vouch_verify::assess(&r, &trust, Some(&facts))
        }
        Err(e) => Verdict::not_a_receipt(e.body_text()),
    };
    Ok(Json(
        serde_json::to_value(&verdict).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// What this node's ledger says about a receipt's signer, model and job.
fn ledger_facts(s: &AppState, st: &vouch_state::State, r: &Receipt) -> Result<LedgerFacts, String> {
    let store = s.chain.store();
    let e = |e: vouch_storage::StoreError| e.to_string();
    let inc = r.inclusion.as_ref();
    let block_at_height = match inc {
        Some(i) if i.header.height <= st.height => store
            .block(i.header.height)
            .map_err(e)?
            .map(|b| b.header.id()),
        _ => None,
    };
    let job = match inc {
        Some(i) => ledger_job(s, &i.job)?,
        None => None,
    };
    Ok(LedgerFacts {
        chain: st.chain,
        height: st.height,
        block_at_height,
        provider_registered: st.providers.contains_key(&r.provider),
        model_registered: st.models.contains_key(&r.model),
        job,
    })
}

/// A job as this ledger has it: what its `SubmitJob` named, and what became of it.
fn ledger_job(s: &AppState, job: &Hash32) -> Result<Option<LedgerJob>, String> {
    let store = s.chain.store();
    let e = |e: vouch_storage::StoreError| e.to_string();
    let Some((h, i)) = store.tx_location(job).map_err(e)? else {
        return Ok(None);
    };
    let Some(tx) = store
        .block(h)
        .map_err(e)?
        .and_then(|b| b.txs.get(i as usize).cloned())
    else {
        return Ok(None);
    };
    let Action::SubmitJob {
        model,
        provider,
        input_hash,
        ..
    } = tx.action
    else {
        return Ok(None);
    };
    let (mut status, mut audit, mut receipt) = ("submitted", None, None);
    if let Some(hist) = store.job_history(job).map_err(e)? {
        for (_, ev) in &hist.events {
            match ev {
                Event::JobCommitted { receipt: r, .. } => {
                    status = "committed";
                    receipt = Some(*r);
                }
                Event::JobAudited { pass, .. } => audit = Some(*pass),
                Event::JobDisputed { .. } => status = "disputed",
                Event::JobSettled { .. } => status = "settled",
                Event::JobExpired { .. } => status = "expired",
                Event::Slashed { .. } => status = "slashed",
                _ => {}
            }
        }
    }
    Ok(Some(LedgerJob {
        id: *job,
        provider,
        model,
        input_hash,
        receipt,
        status: status.to_string(),
        audit,
    }))
}
