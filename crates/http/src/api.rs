//! The node's HTTP API (ledger, jobs, receipts, dev faucet).

use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vouch_types::tx::{Action, Tx, MAX_TX_BYTES};
use vouch_types::Receipt;

use crate::error::ApiError;
use crate::state::{parse_hash, AppState};
use vouch_node::chain::TxStatus;
use vouch_node::provider::{submit_error, JobRequest, COMMIT_WAIT};

/// Largest request body, bytes; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// Largest faucet payout per request.
pub const FAUCET_MAX: u64 = 1_000_000_000;

pub fn router(s: AppState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/txs", post(submit_tx))
        .route("/v1/txs/{id}", get(tx_status))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/blocks/{height}/raw", get(block_raw))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/jobs", post(run_job))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/providers", get(providers))
        .route("/v1/receipts/{id}", get(receipt))
        .route("/v1/faucet", post(faucet))
        .route("/v1/registry/models", get(crate::provenance::models))
        .route(
            "/v1/registry/models/{id}/lineage",
            get(crate::provenance::lineage),
        )
        .route("/v1/datasets/{id}", get(crate::provenance::dataset))
        .route("/v1/items/lookup", post(crate::provenance::items_lookup))
        .route("/v1/tasks/{id}", get(crate::provenance::task))
        .route("/v1/p2p/models/{id}/manifest", get(crate::blobs::manifest))
        .route("/v1/p2p/models/{id}/sources", get(crate::blobs::sources))
        .route("/v1/p2p/blobs/{hash}", get(crate::blobs::blob))
        .route("/v1/p2p/blobs/{hash}/outboard", get(crate::blobs::outboard))
        .route("/v1/models", get(crate::gateway::models))
        .route("/v1/models/{id}", get(crate::gateway::model))
        .route(
            "/v1/chat/completions",
            post(crate::gateway::chat_completions),
        )
        .route("/v1/completions", post(crate::gateway::completions))
        .route("/v1/responses", post(crate::responses::responses))
        .route("/v1/embeddings", post(crate::gateway::embeddings))
        .route("/v1/wallet", get(crate::gateway::wallet))
        .route("/v1/wallet/transfer", post(crate::gateway::pay))
        .route(
            "/admin/keys",
            post(crate::gateway::create_key).get(crate::gateway::list_keys),
        )
        .route("/admin/keys/{id}/revoke", post(crate::gateway::revoke_key))
        .route("/metrics", get(crate::observe::metrics))
        .nest_service("/mcp", crate::mcp::service(s.clone()))
        .route("/", get(crate::explorer::index))
        .route("/explorer/app.js", get(crate::explorer::app_js))
        .route("/explorer/style.css", get(crate::explorer::style))
        .route("/v1/explorer/recent", get(crate::explorer::recent))
        .route("/v1/verify", post(crate::explorer::verify))
        .fallback(crate::error::no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            s.clone(),
            crate::observe::track,
        ))
        .layer(axum::middleware::from_fn(body_limit))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(s)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let mut e = ApiError::bad_request(format!("{} {} is not allowed", method, uri.path()));
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e
}

/// Middleware: every response carries `x-request-id`: the client's own (if it sent a
/// short printable one) or a fresh random one, so a client and the node's log can name
/// the same request.
async fn request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let given = req
        .headers()
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned();
    let id = given.unwrap_or_else(|| {
        axum::http::HeaderValue::from_str(&format!("req_{:032x}", rand::random::<u128>()))
            .expect("hex is a valid header value")
    });
    let mut resp = next.run(req).await;
    resp.headers_mut().insert("x-request-id", id);
    resp
}

/// Which browser origins may call the API (CORS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Pages served from this machine: `http(s)://localhost`, `127.0.0.1` or `[::1]`,
    /// any port.
    #[default]
    Localhost,
    /// Any origin (`*`): fine for a public gateway, since calls need an API key sent as
    /// a bearer header (never a cookie).
    Any,
    /// Exactly these origins (`scheme://host[:port]`).
    List(Vec<String>),
}

impl CorsOrigins {
    /// From `--cors-origin` values: none means localhost, `*` any, `localhost` the
    /// localhost set, else exact origins (`none` alone: no origin at all).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        match values {
            [] => Ok(Self::Localhost),
            [one] if one == "*" => Ok(Self::Any),
            [one] if one == "localhost" => Ok(Self::Localhost),
            [one] if one == "none" => Ok(Self::List(Vec::new())),
            many => {
                for o in many {
                    let ok = (o.starts_with("http://") || o.starts_with("https://"))
                        && !o.ends_with('/')
                        && o.split("://")
                            .nth(1)
                            .is_some_and(|h| !h.is_empty() && !h.contains('/'));
                    if !ok {
                        return Err(format!(
                            "CORS origin {o:?} must be scheme://host[:port] (or *, localhost, none alone)"
                        ));
                    }
                }
                Ok(Self::List(many.to_vec()))
            }
        }
    }

    /// Whether a browser page at `origin` may call the API.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(l) => l.iter().any(|o| o == origin),
            Self::Localhost => {
                let Some(rest) = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
                else {
                    return false;
                };
                let (host, port) = match rest.strip_prefix('[') {
                    Some(v6) => match v6.split_once(']') {
                        Some((h, p)) => (h, p),
                        None => return false,
                    },
                    None => match rest.find(':') {
                        Some(i) => (&rest[..i], &rest[i..]),
                        None => (rest, ""),
                    },
                };
                let port_ok = port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok());
                matches!(host, "localhost" | "127.0.0.1" | "::1") && port_ok
            }
        }
    }
}

/// The CORS layer for `origins`: preflights answered, the API's own headers (receipt id,
/// request id, timing, retry-after) readable by the page.
pub fn cors(origins: CorsOrigins) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        o => AllowOrigin::predicate(move |origin, _| origin.to_str().is_ok_and(|s| o.allows(s))),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            axum::http::HeaderName::from_static("x-vouch-receipt"),
            axum::http::HeaderName::from_static("x-request-id"),
            axum::http::HeaderName::from_static("server-timing"),
            axum::http::HeaderName::from_static("retry-after"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Middleware: a body over [`MAX_BODY_BYTES`] gets 413 with the limit named, whether its
/// length is declared (refused before reading) or not (read up to the limit).
async fn body_limit(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let too_large = |n: Option<u64>| {
        ApiError::too_large(format!(
            "request body is {}; the limit is {MAX_BODY_BYTES} bytes",
            n.map_or("larger than that".to_string(), |n| format!("{n} bytes"))
        ))
        .into_response()
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY_BYTES as u64 => too_large(Some(n)),
        Some(_) => next.run(req).await,
        None if matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        ) =>
        {
            next.run(req).await
        }
        None => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
                Ok(b) => {
                    next.run(axum::extract::Request::from_parts(parts, b.into()))
                        .await
                }
                Err(_) => too_large(None),
            }
        }
    }
}

async fn status(AxState(s): AxState<AppState>) -> Json<Value> {
    let st = s.chain.state();
    let head = s.chain.store().head().ok().flatten();
    let providers: Vec<Value> = st
        .providers
        .iter()
        .map(|(a, p)| {
            json!({"address": a, "models": p.models, "price_per_token": p.price_per_token,
                   "capacity": p.capacity, "in_flight": p.in_flight, "endpoint": p.endpoint,
                   "stake": st.account(a).stake, "jobs_settled": p.jobs_settled,
                   "jobs_failed": p.jobs_failed, "jobs_expired": p.jobs_expired})
        })
        .collect();
    let models: Vec<Value> = st
        .models
        .iter()
        .map(|(id, m)| json!({"id": id, "name": m.name, "version": m.version, "parent": m.parent,
                              "licence": m.licence, "author": m.author, "royalty_bps": m.royalty_bps}))
        .collect();
    Json(json!({
        "chain": st.chain,
        "chain_name": s.chain.genesis().chain_name,
        "height": st.height,
        "time": st.time,
        "head": head.as_ref().map(|h| h.id()),
        "state_root": head.as_ref().map(|h| h.state_root),
        "validators": st.validators,
        "this_validator": s.chain.validator(),
        "provider": s.provider.as_ref().map(|p| p.key.public()),
        "faucet": s.faucet.as_ref().map(|k| k.public()),
        "providers": providers,
        "models": models,
        "mempool": s.chain.mempool_len(),
        "open_jobs": st.jobs.len(),
        "supply": st.supply,
        "params": st.params,
    }))
}

#[derive(Deserialize)]
struct SubmitBody {
    tx: String,
    #[serde(default)]
    wait: bool,
}

async fn submit_tx(
    AxState(s): AxState<AppState>,
    body: Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    if body.tx.len() > 2 * MAX_TX_BYTES {
        return Err(ApiError::bad_request(format!(
            "oversized: transaction is {} bytes, the limit is {MAX_TX_BYTES}",
            body.tx.len() / 2
        )));
    }
    let bytes = hex::decode(body.tx.trim())
        .map_err(|_| ApiError::bad_request("malformed: tx is not hex"))?;
    let tx = Tx::decode(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed transaction: {e}")))?;
    let id = s.chain.submit(tx).map_err(submit_error)?;
    let status = if body.wait {
        s.chain.wait_tx(&id, COMMIT_WAIT).await
    } else {
        s.chain.tx_status(&id)
    };
    Ok(Json(json!({"id": id, "result": status})))
}

async fn tx_status(
    AxState(s): AxState<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&id, "transaction id")?;
    let st = s.chain.tx_status(&id);
    let tx = match &st {
        TxStatus::Committed { height, index } => s
            .chain
            .store()
            .block(*height)
            .ok()
            .flatten()
            .and_then(|b| b.txs.get(*index as usize).cloned()),
        _ => None,
    };
    Ok(Json(json!({"id": id, "result": st, "tx": tx})))
}

async fn block(
    AxState(s): AxState<AppState>,
    Path(h): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let height = if h == "latest" {
        s.chain.state().height
    } else {
        h.parse::<u64>()
            .map_err(|_| ApiError::bad_request("height must be a number or `latest`"))?
    };
    let store = s.chain.store();
    let b = store
        .block(height)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
    let chain = b.header.chain;
    let txs: Vec<Value> = b
        .txs
        .iter()
        .map(|t| json!({"id": t.id(&chain), "type": t.action.name(), "tx": t}))
        .collect();
    let events = store
        .events(height)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({
        "id": b.header.id(), "header": b.header, "certificate": b.certificate,
        "txs": txs, "events": events,
    })))
}

/// The block's canonical encoding (header, transactions, certificate), for peers.
async fn block_raw(
    AxState(s): AxState<AppState>,
    Path(h): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let height = h
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("height must be a number"))?;
    let b = s
        .chain
        .store()
        .block(height)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        b.encode(),
    )
        .into_response())
}

async fn account(
    AxState(s): AxState<AppState>,
    Path(a): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let addr = parse_hash(&a, "address")?;
    let st = s.chain.state();
    let acct = st.account(&addr);
    Ok(Json(json!({
        "address": addr, "balance": acct.balance, "nonce": acct.nonce, "stake": acct.stake,
        "unbonding": acct.unbonding, "height": st.height,
        "validator": st.validators.contains(&addr),
        "provider": st.providers.get(&addr),
    })))
}

async fn run_job(
    AxState(s): AxState<AppState>,
    body: Result<Json<JobRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Receipt>, ApiError> {
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let p = s
        .provider
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this node does not run a provider"))?;
    Ok(Json(p.run_job(&s.chain, req).await?))
}

async fn job(
    AxState(s): AxState<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&id, "job id")?;
    let open = s.chain.state().jobs.get(&id).cloned();
    let history = s
        .chain
        .store()
        .job_history(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if open.is_none() && history.is_none() {
        return Err(ApiError::not_found(format!("unknown job {id}")));
    }
    Ok(Json(
        json!({"id": id, "open": open, "history": history.map(|h| h.events)}),
    ))
}

#[derive(Deserialize)]
struct ProvidersQuery {
    /// Model name or id [default: this node's chat model].
    model: Option<String>,
}

/// `GET /v1/providers`: the providers serving a model as this gateway ranks them (price,
/// load, speed, record on the ledger); best first. Without dispatch (one node), this
/// node's own provider only.
async fn providers(
    AxState(s): AxState<AppState>,
    q: Result<axum::extract::Query<ProvidersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let st = s.chain.state();
    let model = match q.model {
        Some(m) => st
            .models
            .iter()
            .find(|(_, x)| x.name == m)
            .map(|(id, _)| *id)
            .or_else(|| m.parse().ok().filter(|h| st.models.contains_key(h)))
            .ok_or_else(|| ApiError::not_found(format!("unknown model {m:?}")))?,
        None => s
            .provider
            .as_ref()
            .map(|p| p.model_id)
            .ok_or_else(|| ApiError::bad_request("name a model: ?model=..."))?,
    };
    let list = match &s.dispatch {
        Some(d) => serde_json::to_value(d.candidates(&model))
            .map_err(|e| ApiError::internal(e.to_string()))?,
        None => json!(s
            .provider
            .iter()
            .filter(|p| p.model_id == model)
            .map(|p| json!({"provider": p.key.public(), "peer": null,
                             "available": p.queue.available_permits() > 0}))
            .collect::<Vec<_>>()),
    };
    Ok(Json(
        json!({"model": model, "dispatch": s.dispatch.is_some(), "providers": list}),
    ))
}

#[derive(Deserialize)]
struct ReceiptQuery {
    /// How long to wait for the receipt's commit to become final, if it is not yet
    /// (answers are returned before their block; the proof follows within a block or two).
    #[serde(default = "default_receipt_wait")]
    wait_ms: u64,
}

fn default_receipt_wait() -> u64 {
    3_000
}

/// Longest wait a caller may ask for.
const MAX_RECEIPT_WAIT_MS: u64 = 30_000;

async fn receipt(
    AxState(s): AxState<AppState>,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<ReceiptQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&id, "receipt id")?;
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let bytes = s
        .chain
        .store()
        .receipt(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no receipt {id} on this node")))?;
    let mut r: Receipt =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    if r.inclusion.is_none() {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(q.wait_ms.min(MAX_RECEIPT_WAIT_MS));
        let mut heights = s.chain.subscribe();
        loop {
            r.inclusion = s.chain.inclusion(&id).map_err(ApiError::internal)?;
            if r.inclusion.is_some() {
                break;
            }
            match tokio::time::timeout_at(deadline, heights.changed()).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
    }
    Ok(Json(
        serde_json::to_value(r).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

#[derive(Deserialize)]
struct FaucetBody {
    address: String,
    #[serde(default)]
    amount: Option<u64>,
}

async fn faucet(
    AxState(s): AxState<AppState>,
    body: Result<Json<FaucetBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let key = s
        .faucet
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this node has no faucet (not a dev network)"))?;
    let to = parse_hash(&body.address, "address")?;
    let amount = body.amount.unwrap_or(100_000_000);
    if amount == 0 || amount > FAUCET_MAX {
        return Err(ApiError::bad_request(format!(
            "amount must be between 1 and {FAUCET_MAX}"
        )));
    }
    let id = s
        .chain
        .submit_signed(key, Action::Transfer { to, amount })
        .map_err(submit_error)?;
    let st = s.chain.wait_tx(&id, COMMIT_WAIT).await;
    Ok(Json(json!({"id": id, "amount": amount, "result": st})))
}
