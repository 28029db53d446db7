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
use vouch_types::Receipt;

use crate::api::AppState;
use crate::error::ApiError;

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
    Query(q): Query<Recent>,
) -> Result<Json<Value>, ApiError> {
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

/// `POST /v1/verify`: the offline checks of a receipt, run by the node, with this chain's
/// validators as the trusted set.
pub async fn verify(
    AxState(s): AxState<AppState>,
    body: Result<Json<Receipt>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let r = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return Ok(Json(
                json!({"valid": false, "reason": format!("not a receipt: {}", e.body_text())}),
            ))
        }
    };
    if let Err(e) = vouch_verify::check_fast(&r) {
        return Ok(Json(
            json!({"valid": false, "reason": e.to_string(), "receipt": r.id()}),
        ));
    }
    let validators: Vec<_> = s.chain.state().validators.iter().copied().collect();
    let inclusion = match &r.inclusion {
        None => Value::Null,
        Some(_) => match vouch_verify::check_inclusion(&r, Some(&validators)) {
            Ok(rep) => {
                json!({"height": rep.height, "block": rep.block, "chain": rep.chain, "signers": rep.signers,
                              "trusted": true, "job": rep.job})
            }
            Err(e) => {
                return Ok(Json(
                    json!({"valid": false, "reason": e.to_string(), "receipt": r.id()}),
                ))
            }
        },
    };
    Ok(Json(json!({
        "valid": true, "receipt": r.id(), "model": r.model, "model_name": r.model_name,
        "provider": r.provider, "kind": r.kind, "inclusion": inclusion,
    })))
}
