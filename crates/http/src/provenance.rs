//! Provenance reads over HTTP: model lineage (with the royalties each model's author has
//! been paid), datasets, and the first contributor of data items.

use std::collections::BTreeMap;

use axum::extract::{Path, State as AxState};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vouch_state::Event;
use vouch_types::tx::MAX_ITEMS_PER_TX;
use vouch_types::Hash32;

use crate::error::ApiError;
use crate::state::{parse_hash, AppState};

/// Royalties paid per model over the whole chain, from the settlement events. A scan of
/// every block's events: fine for the registry views of a dev or test network; an indexer
/// keeps these running totals for a long chain.
fn royalties(s: &AppState) -> BTreeMap<Hash32, (u64, u64)> {
    let height = s.chain.state().height;
    let mut out: BTreeMap<Hash32, (u64, u64)> = BTreeMap::new();
    for h in 1..=height {
        for e in s.chain.store().events(h).unwrap_or_default() {
            if let Event::JobSettled {
                royalty,
                model: Some(m),
                ..
            } = e
            {
                let t = out.entry(m).or_default();
                t.0 += royalty;
                t.1 += 1;
            }
        }
    }
    out
}

/// `GET /v1/registry/models/{id}/lineage`: ancestors and descendants with their authors,
/// licences, royalty rates, training datasets, and royalties paid so far.
pub async fn lineage(
    AxState(s): AxState<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&id, "model id")?;
    let l = s
        .chain
        .state()
        .lineage(&id)
        .ok_or_else(|| ApiError::not_found(format!("no model {id} is registered")))?;
    let paid = royalties(&s);
    let node = |n: &vouch_state::lineage::LineageNode| {
        let mut v = serde_json::to_value(n).unwrap_or_default();
        let (r, jobs) = paid.get(&n.id).copied().unwrap_or_default();
        v["royalties_paid"] = json!(r);
        v["jobs_settled"] = json!(jobs);
        v
    };
    Ok(Json(json!({
        "model": node(&l.model),
        "ancestors": l.ancestors.iter().map(node).collect::<Vec<_>>(),
        "descendants": l.descendants.iter().map(node).collect::<Vec<_>>(),
        "generated": l.generated,
        "height": s.chain.state().height,
    })))
}

/// `GET /v1/registry/models`: every registered model with its parents and datasets.
pub async fn models(AxState(s): AxState<AppState>) -> Json<Value> {
    let st = s.chain.state();
    let models: Vec<Value> = st
        .models
        .iter()
        .map(|(id, m)| {
            json!({"id": id, "name": m.name, "version": m.version, "parents": m.parents(),
                   "datasets": m.datasets, "licence": m.licence, "author": m.author,
                   "royalty_bps": m.royalty_bps, "registered_height": m.registered_height})
        })
        .collect();
    Json(json!({"models": models, "height": st.height}))
}

/// `GET /v1/datasets/{id}`: a registered dataset, its contributor and its credit counts.
pub async fn dataset(
    AxState(s): AxState<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&id, "dataset id")?;
    let st = s.chain.state();
    let d = st
        .data
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no dataset {id} is registered")))?;
    let used_by: Vec<Hash32> = st
        .models
        .iter()
        .filter(|(_, m)| m.datasets.contains(&id))
        .map(|(m, _)| *m)
        .collect();
    Ok(Json(json!({
        "id": id, "source": d.source, "licence": d.licence, "contributor": d.contributor,
        "registered_height": d.registered_height, "credited": d.credited,
        "duplicates": d.duplicates, "trained_models": used_by,
        "generated_by": d.generated_by,
    })))
}

#[derive(Deserialize)]
pub struct ItemsQuery {
    items: Vec<Hash32>,
}

/// `POST /v1/items/lookup {"items": [...]}`: for each content id already on the ledger,
/// the dataset and contributor it is credited to. At most 10,000 ids per request.
pub async fn items_lookup(
    AxState(s): AxState<AppState>,
    body: Result<Json<ItemsQuery>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(q) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let limit = 100 * MAX_ITEMS_PER_TX;
    if q.items.len() > limit {
        return Err(ApiError::bad_request(format!(
            "too many items: {} (the limit is {limit} per request)",
            q.items.len()
        )));
    }
    let st = s.chain.state();
    let known: BTreeMap<String, Value> = q
        .items
        .iter()
        .filter_map(|i| {
            st.items.get(i).map(|c| {
                (
                    i.to_string(),
                    json!({"dataset": c.dataset, "contributor": c.contributor, "height": c.height}),
                )
            })
        })
        .collect();
    Ok(Json(json!({"known": known, "height": st.height})))
}

/// `GET /v1/tasks/{id}`: an annotation task, who labelled it, and its consensus once
/// decided.
pub async fn task(
    AxState(s): AxState<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&id, "task id")?;
    let st = s.chain.state();
    let t = st
        .tasks
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no annotation task {id}")))?;
    let votes: Vec<Value> = t
        .votes
        .iter()
        .map(|(a, stake, labels)| json!({"annotator": a, "stake": stake, "labels": labels}))
        .collect();
    let decided = t.decided.as_ref().map(|d| {
        d.iter()
            .map(|l| t.labels[*l as usize].clone())
            .collect::<Vec<_>>()
    });
    Ok(Json(json!({
        "id": id, "creator": t.creator, "items": t.items, "labels": t.labels,
        "annotators": t.annotators, "escrow": t.escrow, "created_height": t.created_height,
        "votes": votes, "decided": decided, "height": st.height,
    })))
}
