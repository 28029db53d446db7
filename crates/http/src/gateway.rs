//! OpenAI-compatible gateway: `/v1/models`, `/v1/chat/completions` (with SSE streaming),
//! `/v1/completions`, paid from wallets bound to API keys.
//!
//! Each API key is bound to exactly one wallet, which the gateway holds for it (a custodial
//! agent wallet): a key can only ever spend from its own wallet, within its spend limit per
//! period. Keys are stored by their BLAKE3 hash; the key itself is shown once, at creation.
//! Key management (`/admin/keys`) needs the node's admin token
//! (`<node data>/admin.token`, 0600).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vouch_crypto::SigningKey;
use vouch_inference::chat::Message;
use vouch_types::tx::Action;
use vouch_types::{Constraint, Controls, FinishReason, Hash32, Receipt, ReceiptKind, Sampling};
use vouch_verify::attest::Input;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tools;
use vouch_net::dispatch::{self, AttemptError, Target};
use vouch_node::error::ServeError;
use vouch_node::provider::{render, submit_error, Escrow, JobRequest, ProviderRole, Work};

/// Largest prompt accepted by the gateway, in bytes (before tokenizing).
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// Default and largest `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
pub const MAX_TOKENS: u32 = 2048;

/// What the gateway stores per API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    /// The custodial wallet's secret key, sealed with the node's keystore key
    /// (`crate::keystore`; never plain in the database).
    pub wallet_secret: String,
    pub wallet: Hash32,
    /// Spend limit per period, base units (0 = no limit).
    pub limit: u64,
    pub period_ms: u64,
    pub period_start: u64,
    pub spent: u64,
    pub revoked: bool,
    pub created_at: u64,
    /// What requests in flight and recent answers account for (crash recovery).
    #[serde(default)]
    pub inflight: InFlight,
}

/// The parts of a key's `spent` that are not yet final, kept in the key record so a
/// restart can tell what the ledger will charge from what it never will
/// ([`reconcile`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InFlight {
    /// Reservations of requests in flight: hold id -> amount counted in `spent`. Written
    /// before the request's escrow is admitted (and so before it can be durable).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holds: BTreeMap<u64, u64>,
    /// Answered jobs, their charge in `spent`, while still open on the ledger.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub answered: BTreeSet<Hash32>,
    /// Jobs of this wallet found open at a restart that no recorded answer covers:
    /// counted at their escrow until they end on the ledger, then at their charge.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recovering: BTreeMap<Hash32, u64>,
}

impl KeyRecord {
    /// Remaining budget at `now`, after rolling the period forward.
    pub(crate) fn roll(&mut self, now: u64) {
        if self.period_ms > 0 && now >= self.period_start.saturating_add(self.period_ms) {
            let periods = (now - self.period_start) / self.period_ms;
            self.period_start += periods * self.period_ms;
            self.spent = 0;
            self.inflight.holds.clear();
            self.inflight.recovering.clear();
        }
    }
    pub(crate) fn remaining(&self) -> u64 {
        if self.limit == 0 {
            u64::MAX
        } else {
            self.limit.saturating_sub(self.spent)
        }
    }
}

pub fn key_hash(api_key: &str) -> Hash32 {
    Hash32::digest("vouch 2026 api key v1", &[api_key.as_bytes()])
}

/// A request's hold on its key's spend limit and its wallet's balance. Dropped without
/// [`Reservation::settle`] (any error path), it charges nothing.
pub(crate) struct Reservation {
    s: AppState,
    key_id: Hash32,
    wallet: Hash32,
    /// The hold in the key record, counted against its limit until settled.
    hold: u64,
    /// Held on the wallet's balance (cost plus transaction fees).
    held: u64,
    done: bool,
}

/// Reserves up to `cost` of the key's limit and `cost + fees` of its wallet's balance, or
/// answers 402 saying which is short (401 if the key was revoked meanwhile).
///
/// One atomic check-and-commit per key: the record is read afresh from the store under
/// the budget lock (never the copy the caller loaded before awaiting anything), checked,
/// and written back with the hold before the lock is released, so concurrent requests on
/// one key cannot together spend past its limit. `rec` is updated to what was written.
pub(crate) fn reserve(
    s: &AppState,
    key_id: Hash32,
    rec: &mut KeyRecord,
    cost: u64,
    fees: u64,
) -> Result<Reservation, ApiError> {
    let mut held = s.budgets.0.lock().unwrap_or_else(|p| p.into_inner());
    *rec = fresh(s, &key_id)?;
    if rec.revoked {
        return Err(unauthorized("this API key was revoked"));
    }
    rec.roll(vouch_node::clock::now_ms());
    resolve(s, rec);
    if cost > rec.remaining() {
        return Err(ApiError::payment(format!(
            "spend limit: this request may cost up to {cost}, {} left in this period",
            rec.remaining()
        )));
    }
    let need = cost.saturating_add(fees);
    let pending = held.get(&rec.wallet).copied().unwrap_or(0);
    let balance = s.chain.state().account(&rec.wallet).balance;
    if balance.saturating_sub(pending) < need {
        return Err(ApiError::payment(format!(
            "insufficient balance in wallet {}: need {need}, have {balance}{}",
            rec.wallet,
            if pending > 0 {
                format!(" of which {pending} is held by requests in flight")
            } else {
                String::new()
            }
        )));
    }
    let hold = loop {
        let h: u64 = rand::random();
        if !rec.inflight.holds.contains_key(&h) {
            break h;
        }
    };
    rec.spent = rec.spent.saturating_add(cost);
    rec.inflight.holds.insert(hold, cost);
    save_spend(s, &key_id, rec)?;
    *held.entry(rec.wallet).or_insert(0) += need;
    Ok(Reservation {
        s: s.clone(),
        key_id,
        wallet: rec.wallet,
        hold,
        held: need,
        done: false,
    })
}

/// The key record now, with the ledger's decisions since it was written applied.
fn current(s: &AppState, key_id: &Hash32) -> Result<KeyRecord, ApiError> {
    let _g = s.budgets.0.lock().unwrap_or_else(|p| p.into_inner());
    let mut rec = fresh(s, key_id)?;
    rec.roll(vouch_node::clock::now_ms());
    if resolve(s, &mut rec) {
        save_spend(s, key_id, &rec)?;
    }
    Ok(rec)
}

/// The key record as stored now.
fn fresh(s: &AppState, key_id: &Hash32) -> Result<KeyRecord, ApiError> {
    let bytes = s
        .chain
        .store()
        .api_key(key_id)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| unauthorized("invalid API key"))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))
}

/// Settles what the ledger has decided since: a recovering job that ended counts at its
/// charge (0 if it expired, was refunded or never landed); answered jobs that left the
/// ledger's open set are forgotten. Returns whether `rec` changed.
fn resolve(s: &AppState, rec: &mut KeyRecord) -> bool {
    let st = s.chain.state();
    let open = |job: &Hash32| {
        st.jobs.contains_key(job)
            || matches!(s.chain.tx_status(job), vouch_node::chain::TxStatus::Pending)
    };
    let mut changed = false;
    let ended: Vec<(Hash32, u64)> = rec
        .inflight
        .recovering
        .iter()
        .filter(|(j, _)| !open(j))
        .map(|(j, e)| (*j, *e))
        .collect();
    for (job, escrow) in ended {
        let charge = ledger_charge(s, &job);
        rec.spent = rec.spent.saturating_sub(escrow).saturating_add(charge);
        rec.inflight.recovering.remove(&job);
        changed = true;
    }
    let before = rec.inflight.answered.len();
    rec.inflight.answered.retain(|j| open(j));
    changed | (rec.inflight.answered.len() != before)
}

/// What the ledger charged the client for a job that left the open set.
fn ledger_charge(s: &AppState, job: &Hash32) -> u64 {
    let Ok(Some(h)) = s.chain.store().job_history(job) else {
        return 0;
    };
    let escrow = h.events.iter().find_map(|(_, e)| match e {
        vouch_state::Event::JobSubmitted { escrow, .. } => Some(*escrow),
        _ => None,
    });
    let refund = h.events.iter().find_map(|(_, e)| match e {
        vouch_state::Event::JobSettled { refund, .. } => Some(*refund),
        _ => None,
    });
    match (escrow, refund) {
        (Some(e), Some(r)) => e.saturating_sub(r),
        _ => 0,
    }
}

/// At start, before any request: the holds in key records belong to requests a crash
/// ended. Each is taken out of `spent`; every job of the key's wallet still open on the
/// ledger (or back in the mempool from the outbox) that no recorded answer covers is
/// counted at its escrow and, once it ends, at what the ledger charged ([`resolve`]);
/// a transfer back in the mempool counts at its amount. So after a crash `spent` is what
/// the ledger charges, never a reservation nobody will pay.
pub fn reconcile(chain: &vouch_node::chain::Chain) {
    let Ok(keys) = chain.store().api_keys() else {
        return;
    };
    let st = chain.state();
    for (h, bytes) in keys {
        let Ok(mut rec) = serde_json::from_slice::<KeyRecord>(&bytes) else {
            continue;
        };
        if rec.inflight.holds.is_empty() {
            continue;
        }
        let stale: u64 = rec.inflight.holds.values().sum();
        rec.spent = rec.spent.saturating_sub(stale);
        rec.inflight.holds.clear();
        let mut found = 0;
        for (job, j) in st.jobs.iter().filter(|(_, j)| j.client == rec.wallet) {
            if !rec.inflight.answered.contains(job) && !rec.inflight.recovering.contains_key(job) {
                rec.inflight.recovering.insert(*job, j.escrow);
                rec.spent = rec.spent.saturating_add(j.escrow);
                found += 1;
            }
        }
        for (id, tx) in chain.pending_from(&rec.wallet) {
            match tx.action {
                Action::SubmitJob { max_fee, .. }
                    if !rec.inflight.answered.contains(&id)
                        && !rec.inflight.recovering.contains_key(&id) =>
                {
                    rec.inflight.recovering.insert(id, max_fee);
                    rec.spent = rec.spent.saturating_add(max_fee);
                    found += 1;
                }
                Action::Transfer { to, amount } if to != rec.wallet => {
                    rec.spent = rec.spent.saturating_add(amount);
                }
                _ => {}
            }
        }
        tracing::info!(key = %h.short(), released = stale, jobs = found, spent = rec.spent,
                       "reconciled the spend of requests a restart interrupted");
        if let Ok(b) = serde_json::to_vec(&rec) {
            let _ = chain.store().put_api_key(&h, &b);
        }
    }
}

impl Reservation {
    /// Replaces the reserved cost with the actual `charge` on the key's limit, records
    /// the answered `jobs`, and releases the balance hold once the last of them (or the
    /// transaction `escrow`) is final on the ledger.
    pub(crate) fn settle(mut self, charge: u64, jobs: &[Hash32], escrow: Option<Hash32>) {
        self.done = true;
        self.adjust(charge, jobs);
        let (s, wallet, held) = (self.s.clone(), self.wallet, self.held);
        match escrow.or_else(|| jobs.last().copied()) {
            Some(tx) => {
                tokio::spawn(async move {
                    s.chain
                        .wait_tx(&tx, vouch_node::provider::COMMIT_WAIT)
                        .await;
                    release(&s, &wallet, held);
                });
            }
            None => release(&s, &wallet, held),
        }
    }

    fn adjust(&self, charge: u64, jobs: &[Hash32]) {
        let _g = self.s.budgets.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(mut r) = fresh(&self.s, &self.key_id) {
            // A hold gone from the record was reset with the period: nothing to take out.
            if let Some(cost) = r.inflight.holds.remove(&self.hold) {
                r.spent = r.spent.saturating_sub(cost);
            }
            r.spent = r.spent.saturating_add(charge);
            r.inflight.answered.extend(jobs.iter().copied());
            resolve(&self.s, &mut r);
            let _ = save_spend(&self.s, &self.key_id, &r);
        }
    }
}

fn release(s: &AppState, wallet: &Hash32, amount: u64) {
    let mut held = s.budgets.0.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = held.get_mut(wallet) {
        *h = h.saturating_sub(amount);
        if *h == 0 {
            held.remove(wallet);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.adjust(0, &[]);
            release(&self.s, &self.wallet, self.held);
        }
    }
}

fn wallet_key(s: &AppState, rec: &KeyRecord) -> Result<Arc<SigningKey>, ApiError> {
    s.keystore
        .open(&rec.wallet, &rec.wallet_secret)
        .map(Arc::new)
        .map_err(ApiError::internal)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn unauthorized(m: &str) -> ApiError {
    ApiError::unauthorized(m)
}

pub(crate) fn load_key(s: &AppState, headers: &HeaderMap) -> Result<(Hash32, KeyRecord), ApiError> {
    let key = bearer(headers)
        .ok_or_else(|| unauthorized("missing API key (Authorization: Bearer <key>)"))?;
    let h = key_hash(key);
    let bytes = s
        .chain
        .store()
        .api_key(&h)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| unauthorized("invalid API key"))?;
    let rec: KeyRecord =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    if rec.revoked {
        return Err(unauthorized("this API key was revoked"));
    }
    Ok((h, rec))
}

fn save_key(s: &AppState, h: &Hash32, rec: &KeyRecord) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(rec).map_err(|e| ApiError::internal(e.to_string()))?;
    s.chain
        .store()
        .put_api_key(h, &bytes)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A spend update: durable with the next block, before any escrow it pays for can be.
fn save_spend(s: &AppState, h: &Hash32, rec: &KeyRecord) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(rec).map_err(|e| ApiError::internal(e.to_string()))?;
    s.chain
        .store()
        .put_api_key_deferred(h, &bytes)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn check_admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.admin_token else {
        return Err(ApiError::not_found(
            "key management is not enabled on this node",
        ));
    };
    match bearer(headers) {
        Some(t) if vouch_node::keystore::token_eq(t, token) => Ok(()),
        _ => Err(unauthorized("admin token required")),
    }
}

#[derive(Deserialize)]
pub struct NewKey {
    name: String,
    #[serde(default)]
    limit: u64,
    #[serde(default)]
    period_secs: u64,
}

/// `POST /admin/keys`: a new API key bound to a new wallet.
pub async fn create_key(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    // Who asks comes before what they sent: no token, 401, whatever the body.
    check_admin(&s, &headers)?;
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    if body.name.is_empty() || body.name.len() > 64 {
        return Err(ApiError::bad_request("name must be 1 to 64 characters"));
    }
    let wallet = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let api_key = format!("vk-{}", hex::encode(secret));
    let now = vouch_node::clock::now_ms();
    let rec = KeyRecord {
        name: body.name.clone(),
        wallet_secret: s.keystore.seal(&wallet.public(), &wallet.to_bytes()),
        wallet: wallet.public(),
        limit: body.limit,
        period_ms: body.period_secs.saturating_mul(1000),
        period_start: now,
        spent: 0,
        revoked: false,
        created_at: now,
        inflight: InFlight::default(),
    };
    let h = key_hash(&api_key);
    save_key(&s, &h, &rec)?;
    Ok(Json(json!({
        "api_key": api_key, "id": h, "name": rec.name, "wallet": rec.wallet,
        "limit": rec.limit, "period_secs": body.period_secs,
    })))
}

pub async fn list_keys(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&s, &headers)?;
    let keys = s
        .chain
        .store()
        .api_keys()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let st = s.chain.state();
    let out: Vec<Value> = keys
        .into_iter()
        .filter_map(|(h, b)| serde_json::from_slice::<KeyRecord>(&b).ok().map(|r| (h, r)))
        .map(|(h, r)| (h, current(&s, &h).unwrap_or(r)))
        .map(|(h, r)| {
            let pending = r.inflight.holds.values().chain(r.inflight.recovering.values())
                .fold(0u64, |a, b| a.saturating_add(*b));
            json!({"id": h, "name": r.name, "wallet": r.wallet, "balance": st.account(&r.wallet).balance,
                   "limit": r.limit, "period_secs": r.period_ms / 1000, "spent": r.spent, "revoked": r.revoked,
                   "pending": pending})
        })
        .collect();
    Ok(Json(json!({"keys": out})))
}

pub async fn revoke_key(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&s, &headers)?;
    let h: Hash32 = id
        .parse()
        .map_err(|_| ApiError::bad_request("key id must be 64 hex characters"))?;
    // Under the budget lock: a spend written meanwhile is not overwritten.
    let _g = s.budgets.0.lock().unwrap_or_else(|p| p.into_inner());
    let bytes = s
        .chain
        .store()
        .api_key(&h)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found("unknown key id"))?;
    let mut rec: KeyRecord =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    rec.revoked = true;
    save_key(&s, &h, &rec)?;
    Ok(Json(json!({"id": h, "revoked": true})))
}

/// `GET /v1/models`: the models providers on this network serve.
pub async fn models(AxState(s): AxState<AppState>) -> Json<Value> {
    let st = s.chain.state();
    let data: Vec<Value> = st
        .models
        .iter()
        .filter(|(id, _)| st.providers.values().any(|p| p.models.contains(id)))
        .map(|(id, m)| {
            json!({"id": m.name, "object": "model", "created": st.time / 1000, "owned_by": m.author,
                   "vouch_model_id": id, "version": m.version, "licence": m.licence})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`: one model by name or id, if a provider serves it.
pub async fn model(
    AxState(s): AxState<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Json(list) = models(AxState(s)).await;
    list["data"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|m| m["id"] == name.as_str() || m["vouch_model_id"] == name.as_str())
        })
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no provider here serves model {name:?}; GET /v1/models lists them"
            ))
            .with_code("model_not_found")
            .with_param("model")
        })
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Option<Vec<InMessage>>,
    /// `/v1/completions` only.
    #[serde(default)]
    prompt: Option<PromptIn>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    /// A number or a decimal string (JavaScript clients cannot send exact numbers above
    /// 2^53).
    #[serde(default, with = "vouch_types::json_u64::option")]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<StopIn>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    // Accepted only where they change nothing; otherwise a clear 400 (never ignored).
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<i64>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    logit_bias: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    best_of: Option<i64>,
    #[serde(default)]
    suffix: Option<String>,
    /// Vouch extension: the provider (address) to try first; others serve if it fails.
    #[serde(default)]
    provider: Option<String>,
}

/// A chat message as clients send it: `content` a string, a list of content parts, or
/// null (an assistant turn).
#[derive(Debug, Deserialize)]
pub struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<ContentIn>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    /// `name`, `refusal` and the like change nothing in the prompt.
    #[serde(flatten)]
    _rest: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentIn {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopIn {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<Value>),
}

/// Most alternatives `top_logprobs` may ask for (as OpenAI's API).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Most choices one request may ask for (`n` times the prompts of a completions list).
pub const MAX_CHOICES: usize = 16;

/// The messages as the chat template renders them: `developer` is read as `system`, text
/// parts are joined by newlines, a null content is empty. Parts other than text and
/// assistant tool calls are refused with the field named.
pub fn to_messages(ms: Vec<InMessage>) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::with_capacity(ms.len());
    for (i, m) in ms.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "developer" => "system".to_string(),
            "system" | "user" | "assistant" | "tool" => m.role,
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role {other:?} is not system, developer, user, assistant or tool"
                ))
                .with_param(format!("messages[{i}].role")))
            }
        };
        let content = match m.content {
            None if role == "assistant" => String::new(),
            None => {
                return Err(
                    ApiError::bad_request(format!("messages[{i}].content is required"))
                        .with_param(format!("messages[{i}].content")),
                )
            }
            Some(ContentIn::Text(t)) => t,
            Some(ContentIn::Parts(parts)) if parts.is_empty() && role == "assistant" => {
                String::new()
            }
            Some(ContentIn::Parts(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => texts.push(t),
                        ("text", None) => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content[{j}] is a text part without text"
                            ))
                            .with_param(format!("messages[{i}].content[{j}].text")))
                        }
                        (other, _) => {
                            return Err(ApiError::unsupported(
                                &format!("messages[{i}].content[{j}].type"),
                                format!("content part type {other:?}: this model reads text only"),
                            ))
                        }
                    }
                }
                texts.join("\n")
            }
        };
        // Earlier calls and tool results, as the model reads them (see crate::tools).
        let mut content = content;
        let mut role = role;
        for (j, c) in m.tool_calls.unwrap_or_default().iter().enumerate() {
            if role != "assistant" {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].tool_calls: only assistant messages carry tool calls"
                ))
                .with_param(format!("messages[{i}].tool_calls")));
            }
            let f = c.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
            let args = f.and_then(|f| f.get("arguments")).and_then(Value::as_str);
            let (Some(name), Some(args)) = (name, args) else {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].tool_calls[{j}] needs function.name and function.arguments"
                ))
                .with_param(format!("messages[{i}].tool_calls[{j}]")));
            };
            let args: Value = serde_json::from_str(args).map_err(|e| {
                ApiError::bad_request(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments is not JSON: {e}"
                ))
                .with_param(format!("messages[{i}].tool_calls[{j}].function.arguments"))
            })?;
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&crate::tools::call_text(name, &args));
        }
        if role == "tool" {
            role = "user".into();
            content = crate::tools::response_text(&content);
        }
        out.push(Message { role, content });
    }
    Ok(out)
}

/// The output constraint `response_format` asks for: none for `text`, any JSON object
/// for `json_object`, the schema for `json_schema` (signed into the receipt as sent, key
/// order kept: it decides the order the model writes the keys in).
pub fn response_constraint(f: Option<&Value>) -> Result<Option<Constraint>, ApiError> {
    let Some(f) = f else { return Ok(None) };
    let bad = |m: &str| ApiError::bad_request(m.to_string()).with_param("response_format");
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::json_object())),
        Some("json_schema") => {
            let schema = f
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| bad("response_format.json_schema.schema is required"))?;
            if !(schema.is_object() || schema.is_boolean()) {
                return Err(bad(
                    "response_format.json_schema.schema must be a JSON schema object",
                ));
            }
            let source = serde_json::to_string(schema).map_err(|e| bad(&e.to_string()))?;
            if source.len() > vouch_types::MAX_CONSTRAINT_BYTES {
                return Err(bad(&format!(
                    "the schema is {} bytes, the limit is {}",
                    source.len(),
                    vouch_types::MAX_CONSTRAINT_BYTES
                )));
            }
            Ok(Some(Constraint::json_schema(source)))
        }
        _ => Err(bad(
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// Refuses the parameters this node cannot honour yet, naming each, instead of
/// answering as if they had been applied.
fn refuse_unsupported(req: &ChatRequest) -> Result<(), ApiError> {
    if req.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::unsupported(
            "logit_bias",
            "logit_bias is not supported by this node",
        ));
    }
    if req.echo == Some(true) {
        return Err(ApiError::unsupported(
            "echo",
            "echo is not supported by this node",
        ));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::unsupported(
            "best_of",
            "best_of is not supported by this node",
        ));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported(
            "suffix",
            "suffix is not supported by this node",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

pub async fn chat_completions(
    s: AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    complete(s, headers, body, true).await
}

pub async fn completions(
    s: AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    complete(s, headers, body, false).await
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// A model by name or id, registered on the ledger.
pub(crate) fn find_model(st: &vouch_state::State, name: &str) -> Option<Hash32> {
    st.models
        .iter()
        .find(|(_, m)| m.name == name)
        .map(|(id, _)| *id)
        .or_else(|| {
            name.parse::<Hash32>()
                .ok()
                .filter(|h| st.models.contains_key(h))
        })
}

/// The assistant message for a receipt, with the calls read from it when tools were
/// offered (`finish_reason` is then `tool_calls`).
pub(crate) fn assistant_message(r: &Receipt, offered: &[tools::Tool]) -> (Value, &'static str) {
    if !offered.is_empty() {
        let (content, calls) = tools::read_calls(&r.output, offered);
        if !calls.is_empty() {
            return (
                json!({"role": "assistant", "content": content, "refusal": null,
                       "tool_calls": tools::tool_calls_json(&r.id(), &calls)}),
                "tool_calls",
            );
        }
    }
    (
        json!({"role": "assistant", "content": r.output, "refusal": null}),
        finish_str(r.finish_reason),
    )
}

/// A fresh id for a streamed response (128 random bits: two streams never share one).
pub(crate) fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

/// A request checked, priced and reserved against its key, with one plan per choice:
/// what chat completions, completions and responses share.
pub(crate) struct Prepared {
    pub(crate) plans: Vec<Plan>,
    pub(crate) budget: Reservation,
    /// The tools offered to the model (empty when none, or `tool_choice` is `none`).
    pub(crate) offered: Vec<tools::Tool>,
    pub(crate) model_name: String,
    pub(crate) created: u64,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// `Some(top)` when the request asked for logprobs (with `top` alternatives).
    pub(crate) logprobs: Option<usize>,
    pub(crate) provider: Arc<ProviderRole>,
}

async fn complete(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
    chat: bool,
) -> Result<Response, ApiError> {
    let (key_id, rec) = load_key(&s, &headers)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let Prepared {
        plans,
        budget,
        offered,
        model_name,
        created,
        stream,
        include_usage,
        logprobs,
        provider,
    } = prepare(&s, key_id, rec, req, chat).await?;
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let stream_tools = offered.clone();
    let choice_body = move |i: usize, r: &Receipt| {
        if chat {
            let (message, finish) = assistant_message(r, &offered);
            json!({"index": i, "message": message,
                   "finish_reason": finish, "logprobs": null, "receipt": r.id()})
        } else {
            json!({"index": i, "text": r.output, "finish_reason": finish_str(r.finish_reason),
                   "logprobs": null, "receipt": r.id()})
        }
    };
    if !stream {
        let mut answers: Vec<Answer> = Vec::with_capacity(plans.len());
        let mut charged = 0u64;
        for plan in plans {
            match plan.execute(None).await {
                Ok(a) => {
                    charged = charged.saturating_add(charge(a.price, &a.done.receipt));
                    answers.push(a);
                }
                Err(e) => {
                    // Choices answered before the failure were committed and are paid.
                    let jobs: Vec<Hash32> = answers.iter().map(|a| a.done.job).collect();
                    budget.settle(charged, &jobs, None);
                    return Err(e);
                }
            }
        }
        let jobs: Vec<Hash32> = answers.iter().map(|a| a.done.job).collect();
        budget.settle(charged, &jobs, None);
        let mut choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| choice_body(i, &a.done.receipt))
            .collect();
        if let Some(top) = logprobs {
            for (c, a) in choices.iter_mut().zip(&answers) {
                c["logprobs"] = logprobs_json(&provider, &a.done.receipt, top).await?;
            }
        }
        let receipts: Vec<Receipt> = answers.iter().map(|a| a.done.receipt.clone()).collect();
        let first = &answers[0];
        let mut body = json!({
            "id": format!("job-{}", first.done.job), "object": object, "created": created, "model": model_name,
            "choices": choices, "usage": usage(&receipts),
            "receipt": first.done.receipt.id(), "receipt_url": format!("/v1/receipts/{}", first.done.receipt.id()),
            "vouch": vouch_info(&first.done, &first.failover),
        });
        if chat {
            body["system_fingerprint"] = json!(vouch_inference::ENGINE_NAME);
        }
        if answers.len() > 1 {
            body["receipts"] = json!(receipts.iter().map(Receipt::id).collect::<Vec<_>>());
        }
        let mut resp = Json(body).into_response();
        receipt_headers(&mut resp, &first.done);
        return Ok(resp);
    }

    // Streaming: for each choice in turn, text deltas as they are generated, then its
    // finish chunk with its receipt; the usage chunk if asked for; [DONE].
    let (tx_ev, rx_ev) =
        tokio::sync::mpsc::unbounded_channel::<Result<SseEvent, std::convert::Infallible>>();
    let id = response_id(if chat { "chatcmpl" } else { "cmpl" });
    let chunk_object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let mk = {
        let (id, model_name) = (id.clone(), model_name.clone());
        move |index: usize, delta: Value, finish: Value, extra: Option<(&str, Value)>| {
            let lp = match extra {
                Some(("logprobs", ref v)) => v.clone(),
                _ => Value::Null,
            };
            let extra = extra.filter(|e| e.0 != "logprobs");
            let choice = if chat {
                json!({"index": index, "delta": delta, "finish_reason": finish, "logprobs": lp})
            } else {
                json!({"index": index, "text": delta.get("content").cloned().unwrap_or(json!("")), "finish_reason": finish, "logprobs": null})
            };
            let mut v = json!({"id": id, "object": chunk_object, "created": created, "model": model_name, "choices": [choice]});
            if let Some((k, x)) = extra {
                v[k] = x;
            }
            SseEvent::default().data(v.to_string())
        }
    };
    tokio::spawn(async move {
        let mut done_receipts: Vec<Receipt> = Vec::new();
        let mut jobs = Vec::new();
        let mut charged = 0u64;
        let mut failed = None;
        for (index, plan) in plans.into_iter().enumerate() {
            let (tx_text, mut rx_text) = tokio::sync::mpsc::unbounded_channel::<String>();
            let _ = tx_ev.send(Ok(mk(
                index,
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
                None,
            )));
            // With tools offered, the text is held until the answer is whole: whether it
            // is a call is known only then.
            let hold = !stream_tools.is_empty();
            let forward = {
                let (tx_ev, mk) = (tx_ev.clone(), mk.clone());
                tokio::spawn(async move {
                    while let Some(t) = rx_text.recv().await {
                        if !hold {
                            let _ =
                                tx_ev.send(Ok(mk(index, json!({"content": t}), Value::Null, None)));
                        }
                    }
                })
            };
            let r = plan.execute(Some(tx_text)).await;
            let _ = forward.await;
            match r {
                Ok(Answer {
                    done,
                    price,
                    failover,
                }) => {
                    let r = &done.receipt;
                    charged = charged.saturating_add(charge(price, r));
                    jobs.push(done.job);
                    let mut finish = finish_str(r.finish_reason);
                    if hold {
                        let (message, f) = assistant_message(r, &stream_tools);
                        finish = f;
                        let mut delta = json!({"content": message["content"]});
                        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                            let calls: Vec<Value> = calls
                                .iter()
                                .enumerate()
                                .map(|(k, c)| {
                                    let mut c = c.clone();
                                    c["index"] = json!(k);
                                    c
                                })
                                .collect();
                            delta["tool_calls"] = json!(calls);
                        }
                        let _ = tx_ev.send(Ok(mk(index, delta, Value::Null, None)));
                    }
                    if let Some(top) = logprobs {
                        // The whole answer's logprobs, recomputed from its receipt, in one
                        // chunk before the finish chunk.
                        match logprobs_json(&provider, r, top).await {
                            Ok(lp) => {
                                let _ = tx_ev.send(Ok(mk(
                                    index,
                                    json!({}),
                                    Value::Null,
                                    Some(("logprobs", lp)),
                                )));
                            }
                            Err(e) => {
                                failed = Some(e);
                                done_receipts.push(done.receipt.clone());
                                break;
                            }
                        }
                    }
                    let _ = tx_ev.send(Ok(mk(
                        index,
                        json!({}),
                        json!(finish),
                        Some(("vouch", vouch_info(&done, &failover))),
                    )));
                    done_receipts.push(done.receipt);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        budget.settle(charged, &jobs, None);
        match failed {
            None => {
                if include_usage {
                    let v = json!({"id": id, "object": chunk_object, "created": created, "model": model_name,
                                   "choices": [], "usage": usage(&done_receipts)});
                    let _ = tx_ev.send(Ok(SseEvent::default().data(v.to_string())));
                }
            }
            Some(e) => {
                let v = json!({"error": e.body()});
                let _ = tx_ev.send(Ok(SseEvent::default().data(v.to_string())));
            }
        }
        let _ = tx_ev.send(Ok(SseEvent::default().data("[DONE]")));
    });
    let stream =
        futures_util::stream::unfold(
            rx_ev,
            |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
        );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

/// Checks a completion request, renders and prices its prompts, reserves its cost on the
/// key, and plans one job per choice.
pub(crate) async fn prepare(
    s: &AppState,
    key_id: Hash32,
    mut rec: KeyRecord,
    req: ChatRequest,
    chat: bool,
) -> Result<Prepared, ApiError> {
    let s = s.clone();
    refuse_unsupported(&req)?;
    let top = req.top_logprobs.unwrap_or(0);
    if !(0..=MAX_TOP_LOGPROBS as i64).contains(&top) {
        return Err(ApiError::bad_request(format!(
            "top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"
        ))
        .with_param("top_logprobs"));
    }
    if top > 0 && req.logprobs != Some(true) {
        return Err(
            ApiError::bad_request("top_logprobs needs logprobs: true").with_param("logprobs")
        );
    }
    let logprobs = (req.logprobs == Some(true)).then_some(top as usize);
    if logprobs.is_some() && !chat {
        return Err(ApiError::unsupported(
            "logprobs",
            "logprobs are served on chat completions only",
        ));
    }
    if logprobs.is_some()
        && s.provider
            .as_ref()
            .is_some_and(|p| p.engine.chat_model().is_none())
    {
        return Err(ApiError::unsupported(
            "logprobs",
            "logprobs need the real model on this node (it recomputes them from the receipt)",
        ));
    }
    let provider = s
        .provider
        .clone()
        .ok_or_else(|| ApiError::unavailable("this node does not run a provider"))?;
    let st = s.chain.state();
    let model_id = find_model(&st, &req.model).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown model {:?}; GET /v1/models lists them",
            req.model
        ))
        .with_code("model_not_found")
        .with_param("model")
    })?;
    if model_id != provider.model_id {
        return Err(ApiError::not_found(format!(
            "no provider on this gateway serves {}",
            req.model
        ))
        .with_code("model_not_found")
        .with_param("model"));
    }
    let n = req.n.unwrap_or(1);
    // The prompts: one chat, or one or more completion prompts.
    let (messages, raws) = if chat {
        if req.prompt.is_some() {
            return Err(
                ApiError::bad_request("chat completions take messages, not prompt")
                    .with_param("prompt"),
            );
        }
        let m = req
            .messages
            .ok_or_else(|| ApiError::bad_request("messages is required").with_param("messages"))?;
        (Some(to_messages(m)?), vec![None])
    } else {
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad_request("tools are for chat completions").with_param("tools"));
        }
        let p = match req.prompt {
            None => {
                return Err(
                    ApiError::bad_request("prompt is required").with_param("prompt")
                )
            }
            Some(PromptIn::One(p)) => vec![p],
            Some(PromptIn::Many(v)) if !v.is_empty() => v,
            Some(PromptIn::Many(_)) => {
                return Err(ApiError::bad_request("prompt must not be an empty list")
                    .with_param("prompt"))
            }
            Some(PromptIn::Tokens(_)) => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "prompt as token ids is not supported: send the text (a receipt commits to the exact text)",
                ))
            }
        };
        (None, p.into_iter().map(Some).collect())
    };
    if n < 1 || (n as usize).saturating_mul(raws.len()) > MAX_CHOICES {
        return Err(ApiError::bad_request(format!(
            "n times the number of prompts must be between 1 and {MAX_CHOICES}"
        ))
        .with_param("n"));
    }
    let n = n as usize;
    let stop = match req.stop {
        None => Vec::new(),
        Some(StopIn::One(s)) => vec![s],
        Some(StopIn::Many(v)) => v,
    };
    let temperature = req.temperature.unwrap_or(0.0);
    let top_p = req.top_p.unwrap_or(1.0);
    let base = Sampling {
        temperature,
        top_p,
        seed: req.seed.unwrap_or_else(rand::random),
        max_tokens: 1,
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
    };
    // Tools: offered in the system turn; a forced choice constrains the answer.
    let (tools, tool_choice) = tools::parse(req.tools.as_deref(), req.tool_choice.as_ref())?;
    let mut messages = messages;
    if tool_choice != tools::Choice::None {
        if let Some(m) = messages.as_mut() {
            tools::offer(m, &tools, provider.system_default.as_deref());
        }
    }
    let tool_grammar = tools::grammar(&tools, &tool_choice);
    let format = response_constraint(req.response_format.as_ref())?;
    let constraint_param = if tool_grammar.is_some() {
        "tool_choice"
    } else {
        "response_format"
    };
    if tool_grammar.is_some() && format.is_some() {
        return Err(ApiError::bad_request(
            "a forced tool_choice and a JSON response_format cannot both constrain the answer",
        )
        .with_param("response_format"));
    }
    let controls = Controls {
        stop,
        constraint: tool_grammar.or(format),
    };
    vouch_node::provider::check_sampling(&base, &controls).map_err(|e| {
        let param = e.param;
        ApiError::from(ServeError::from(e)).with_param(param)
    })?;
    provider
        .check_controls(&controls)
        .await
        .map_err(|e| ApiError::from(e).with_param(constraint_param))?;
    let requested = req.max_completion_tokens.or(req.max_tokens);
    if let Some(m) = requested {
        if m < 1 || m > provider.context as i64 {
            return Err(ApiError::bad_request(format!(
                "max_tokens must be between 1 and the model's context of {}",
                provider.context
            ))
            .with_param("max_tokens"));
        }
    }
    // Each prompt rendered and counted; max_tokens defaults to the room left.
    let mut prompts = Vec::with_capacity(raws.len());
    let permit = match (provider.admit(), &s.dispatch) {
        (Ok(p), _) => Some(p),
        (Err(e), None) => return Err(e.into()),
        (Err(_), Some(_)) => None,
    };
    for raw in &raws {
        let (kind, prompt) = render(
            messages.as_deref(),
            raw.as_deref(),
            provider.system_default.as_deref(),
        )
        .map_err(|m| {
            ApiError::bad_request(m).with_param(if chat { "messages" } else { "prompt" })
        })?;
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(ApiError::bad_request(format!(
                "prompt is {} bytes, the limit is {MAX_PROMPT_BYTES}",
                prompt.len()
            ))
            .with_param(if chat { "messages" } else { "prompt" }));
        }
        let prompt_tokens = provider.count_tokens(&prompt).await?;
        let room = provider.context.saturating_sub(prompt_tokens);
        let max_tokens = match requested {
            Some(m) => m as usize,
            None => room,
        };
        if max_tokens == 0 || prompt_tokens + max_tokens > provider.context {
            // OpenAI's wording, which client libraries match to raise their context
            // window errors (LiteLLM's fallbacks, LangChain's ContextOverflowError).
            let c = provider.context;
            let message = match requested {
                Some(m) => format!(
                    "This model's maximum context length is {c} tokens. However, you requested {} tokens ({prompt_tokens} in the prompt, {m} in the completion): the prompt of {prompt_tokens} tokens plus max_tokens {m} exceeds the model's context of {c}. Please reduce the length of the messages or completion.",
                    prompt_tokens + m as usize
                ),
                None => format!(
                    "This model's maximum context length is {c} tokens. However, your prompt is {prompt_tokens} tokens: the prompt of {prompt_tokens} tokens leaves no room in the model's context of {c}. Please reduce the length of the messages."
                ),
            };
            return Err(ApiError::bad_request(message)
                .with_code("context_length_exceeded")
                .with_param(if chat { "messages" } else { "prompt" }));
        }
        prompts.push((kind, prompt, raw.clone(), prompt_tokens, max_tokens as u32));
    }
    let prefer = req
        .provider
        .as_deref()
        .map(|p| {
            p.parse::<Hash32>()
                .map_err(|e| ApiError::bad_request(format!("provider: {e}")).with_param("provider"))
        })
        .transpose()?;
    let local_price = st
        .providers
        .get(&provider.key.public())
        .map_or(0, |p| p.price_per_token);
    // The budget holds what the dearest provider serving the model would charge, before
    // any money moves; the charge is the answering provider's price.
    let top_price = s.dispatch.as_ref().map_or(local_price, |d| {
        d.candidates(&model_id)
            .iter()
            .map(|c| c.price_per_token)
            .fold(local_price, u64::max)
    });
    let all_tokens: u64 = prompts
        .iter()
        .map(|p| (p.3 as u64 + u64::from(p.4)) * n as u64)
        .sum();
    let budget = reserve(
        &s,
        key_id,
        &mut rec,
        top_price.saturating_mul(all_tokens),
        st.params
            .min_tx_fee
            .saturating_mul((prompts.len() * n) as u64),
    )?;
    let wallet = wallet_key(&s, &rec)?;
    // One plan per choice: prompt p, sample j, seed + j (each its own job and receipt).
    let mut permit = permit;
    let mut plans = Vec::with_capacity(prompts.len() * n);
    for (kind, prompt, raw, prompt_tokens, max_tokens) in prompts {
        for j in 0..n {
            let input = match kind {
                ReceiptKind::Completion => Input::Completion(prompt.clone()),
                _ => Input::Chat(messages.clone().unwrap_or_default()),
            };
            plans.push(Plan {
                s: s.clone(),
                local: provider.clone(),
                permit: permit.take(),
                model: model_id,
                input_hash: Receipt::hash_input(kind, &prompt),
                input,
                sampling: Sampling {
                    seed: base.seed.wrapping_add(j as u64),
                    max_tokens,
                    ..base
                },
                controls: controls.clone(),
                messages: messages.clone(),
                raw: raw.clone(),
                tokens: prompt_tokens as u64 + u64::from(max_tokens),
                local_price,
                wallet: wallet.clone(),
                prefer,
            });
        }
    }
    let offered = if tool_choice == tools::Choice::None {
        Vec::new()
    } else {
        tools
    };
    Ok(Prepared {
        plans,
        budget,
        offered,
        model_name: req.model.clone(),
        created: vouch_node::clock::now_ms() / 1000,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        logprobs,
        provider,
    })
}

/// Chat `logprobs` for an answer, recomputed from its receipt by this node's model
/// (`vouch_verify::logprobs`: what any verifier with the weights gets), never taken from
/// the provider that answered.
pub(crate) async fn logprobs_json(
    provider: &Arc<ProviderRole>,
    r: &Receipt,
    top: usize,
) -> Result<Value, ApiError> {
    let model = provider.engine.chat_model().ok_or_else(|| {
        ApiError::unsupported("logprobs", "logprobs need the real model on this node")
    })?;
    let r = r.clone();
    tokio::task::spawn_blocking(move || {
        let mut m = model.lock().unwrap_or_else(|p| p.into_inner());
        let lp = vouch_verify::logprobs(&r, &mut m, top)?;
        let entry = |t: u32, l: f64| {
            let text = m.detokenize(&[t]).unwrap_or_default();
            json!({"token": text, "logprob": l, "bytes": text.as_bytes()})
        };
        let content: Vec<Value> = lp
            .iter()
            .map(|x| {
                let mut e = entry(x.token, x.logprob);
                e["top_logprobs"] = json!(x
                    .top
                    .iter()
                    .filter(|(_, l)| l.is_finite())
                    .map(|&(t, l)| entry(t, l))
                    .collect::<Vec<_>>());
                e
            })
            .collect();
        Ok::<_, vouch_verify::VerifyError>(json!({"content": content, "refusal": null}))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(format!("logprobs: {e}")))
}

/// What a job costs at `price` per token: prompt plus generated tokens.
pub(crate) fn charge(price: u64, r: &Receipt) -> u64 {
    price.saturating_mul(u64::from(r.prompt_tokens) + r.output_tokens.len() as u64)
}

/// The ledger side of an answer: the job, the provider, and the pending result commit
/// (the receipt's inclusion proof is at `receipt_url` once that is final).
pub(crate) fn vouch_info(d: &vouch_node::provider::Done, failover: &[Value]) -> Value {
    let mut v = json!({"receipt": d.receipt.id(), "job": d.job, "provider": d.receipt.provider, "commit_tx": d.commit,
           "engine_ms": d.engine.as_secs_f64() * 1e3});
    if !failover.is_empty() {
        v["failover"] = json!(failover);
    }
    v
}

/// A checked request, ready to run on whichever provider the scheduler picks.
pub(crate) struct Plan {
    s: AppState,
    /// This node's provider (its tokenizer priced the request).
    local: Arc<ProviderRole>,
    /// A place in the local queue, if one was free.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    model: Hash32,
    input_hash: Hash32,
    input: Input,
    sampling: Sampling,
    controls: Controls,
    messages: Option<Vec<Message>>,
    raw: Option<String>,
    /// Prompt tokens plus `max_tokens`: what the escrow covers at the provider's price.
    tokens: u64,
    local_price: u64,
    wallet: Arc<SigningKey>,
    prefer: Option<Hash32>,
}

/// The one answer a request gets.
pub(crate) struct Answer {
    pub(crate) done: vouch_node::provider::Done,
    /// The answering provider's price per token.
    pub(crate) price: u64,
    /// Providers that failed before it, and why.
    pub(crate) failover: Vec<Value>,
}

impl Plan {
    /// Runs the job on the best provider, and on the next best if that one fails, up to
    /// [`dispatch::MAX_ATTEMPTS`]. Each attempt is its own escrowed job; a failed one's
    /// escrow expires and is refunded. Streamed text reaches `sink` once: a later attempt
    /// only adds what goes beyond what the client already has, and its receipt must begin
    /// with that text.
    pub(crate) async fn execute(
        mut self,
        sink: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Answer, ApiError> {
        let sent = Arc::new(Mutex::new(String::new()));
        let mut tried = HashSet::new();
        let mut failover = Vec::new();
        let mut last_error = None;
        for _ in 0..dispatch::MAX_ATTEMPTS {
            let (target, price) = match &self.s.dispatch {
                None => (Target::Local, self.local_price),
                Some(d) => match d.pick(&self.model, &tried, self.prefer.as_ref()) {
                    Some(x) => x,
                    None => break,
                },
            };
            let addr = match &target {
                Target::Local => self.local.key.public(),
                Target::Remote { provider, .. } => *provider,
            };
            tried.insert(addr);
            let action = Action::SubmitJob {
                model: self.model,
                provider: addr,
                input_hash: self.input_hash,
                max_tokens: self.sampling.max_tokens,
                max_fee: price.saturating_mul(self.tokens),
            };
            let (attempt_sink, relay) = match &sink {
                Some(out) => {
                    let (tx, h) = relay(out.clone(), sent.clone());
                    (Some(tx), Some(h))
                }
                None => (None, None),
            };
            let mut escrow = None;
            let r = match target {
                Target::Local => {
                    let permit = match self.permit.take() {
                        Some(p) => p,
                        None => match self.local.admit() {
                            Ok(p) => p,
                            Err(e) => {
                                last_error = Some(e.into());
                                continue;
                            }
                        },
                    };
                    let started = std::time::Instant::now();
                    let r = self
                        .local
                        .run_escrowed(
                            &self.s.chain,
                            Escrow::Custodial(self.wallet.clone(), action),
                            Work::Generate(
                                self.input.clone(),
                                self.sampling,
                                self.controls.clone(),
                            ),
                            attempt_sink,
                        )
                        .await;
                    drop(permit);
                    if let (Ok(d), Some(disp)) = (&r, &self.s.dispatch) {
                        disp.observe_local(d.receipt.output_tokens.len(), started.elapsed());
                    }
                    // A local failure is the request's or the ledger's, not a provider's.
                    r.map_err(AttemptError::Client)
                }
                Target::Remote { provider, peer } => {
                    self.permit = None;
                    let d = self
                        .s
                        .dispatch
                        .clone()
                        .ok_or_else(|| ApiError::internal("remote target without dispatch"))?;
                    // The escrow is admitted here (and gossiped) before the provider is
                    // asked: whatever happens to the provider, it lands and either pays
                    // for the answer or expires and is refunded.
                    let (job, tx) = self
                        .s
                        .chain
                        .submit_signed_tx(&self.wallet, action)
                        .map_err(submit_error)?;
                    escrow = Some(job);
                    let req = JobRequest {
                        tx: hex::encode(tx.encode()),
                        messages: self.messages.clone(),
                        prompt: self.raw.clone(),
                        temperature: self.sampling.temperature,
                        top_p: self.sampling.top_p,
                        seed: self.sampling.seed,
                        max_tokens: self.sampling.max_tokens,
                        stop: self.controls.stop.clone(),
                        constraint: self.controls.constraint.clone(),
                        presence_penalty: self.sampling.presence_penalty,
                        frequency_penalty: self.sampling.frequency_penalty,
                    };
                    d.run_remote(provider, peer, req, attempt_sink).await
                }
            };
            if let Some(h) = relay {
                let _ = h.await;
            }
            match r {
                Ok(done) => {
                    // A remote provider made its side durable; this node's side of the
                    // answer (the escrow it signed, in the outbox) is made durable here.
                    if escrow.is_some() {
                        self.s.chain.sync().map_err(ApiError::internal)?;
                    }
                    if let Some(out) = &sink {
                        let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        match done.receipt.output.strip_prefix(sent.as_str()) {
                            Some(rest) if !rest.is_empty() => {
                                let _ = out.send(rest.to_string());
                            }
                            Some(_) => {}
                            None => {
                                return Err(ApiError::internal(
                                    "the answer changed when the job moved to another provider: \
                                     the text streamed so far is not covered by its receipt",
                                ))
                            }
                        }
                    }
                    return Ok(Answer {
                        done,
                        price,
                        failover,
                    });
                }
                Err(AttemptError::Client(e)) => return Err(e.into()),
                Err(AttemptError::Provider(why)) => {
                    tracing::warn!(provider = %addr.short(), reason = %why, "provider failed; trying another");
                    // Its escrow expires unanswered and is refunded to the wallet.
                    failover.push(json!({"provider": addr, "reason": why, "job": escrow}));
                    last_error = Some(ApiError::unavailable(format!(
                        "provider {addr} failed: {why}"
                    )));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            ApiError::overloaded(format!(
                "every provider serving model {} is busy; retry shortly",
                self.model
            ))
        }))
    }
}

/// Forwards an attempt's text to the client's stream, only past what was already sent.
fn relay(
    out: tokio::sync::mpsc::UnboundedSender<String>,
    sent: Arc<Mutex<String>>,
) -> (
    tokio::sync::mpsc::UnboundedSender<String>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let h = tokio::spawn(async move {
        let mut acc = String::new();
        while let Some(t) = rx.recv().await {
            acc.push_str(&t);
            let mut sent = sent.lock().unwrap_or_else(|p| p.into_inner());
            if acc.len() > sent.len() && acc.starts_with(sent.as_str()) {
                let _ = out.send(acc[sent.len()..].to_string());
                sent.clone_from(&acc);
            }
        }
    });
    (tx, h)
}

/// `x-vouch-receipt` names the receipt; `server-timing` says how long the model ran, so a
/// client can tell the gateway's own overhead from the engine's time.
fn receipt_headers(resp: &mut Response, d: &vouch_node::provider::Done) {
    if let Ok(v) = HeaderValue::from_str(&d.receipt.id().to_hex()) {
        resp.headers_mut().insert("x-vouch-receipt", v);
    }
    let t = format!("engine;dur={:.3}", d.engine.as_secs_f64() * 1e3);
    if let Ok(v) = HeaderValue::from_str(&t) {
        resp.headers_mut().insert("server-timing", v);
    }
}

/// Token counts over the choices' receipts. A prompt is counted once however many
/// choices it had (OpenAI's rule), though each choice's job pays for its own prefill.
fn usage(rs: &[Receipt]) -> Value {
    let mut seen = BTreeSet::new();
    let p: u64 = rs
        .iter()
        .filter(|r| seen.insert(r.input_hash))
        .map(|r| r.prompt_tokens as u64)
        .sum();
    let c: u64 = rs.iter().map(|r| r.output_tokens.len() as u64).sum();
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// `GET /v1/wallet`: the caller's wallet, balance and budget.
pub async fn wallet(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (key_id, _) = load_key(&s, &headers)?;
    let rec = current(&s, &key_id)?;
    let acct = s.chain.state().account(&rec.wallet);
    Ok(Json(
        json!({"wallet": rec.wallet, "balance": acct.balance, "nonce": acct.nonce,
                   "limit": rec.limit, "spent": rec.spent, "remaining": if rec.limit == 0 { Value::Null } else { json!(rec.remaining()) }}),
    ))
}

#[derive(Deserialize)]
pub struct Pay {
    to: Hash32,
    amount: u64,
}

/// `POST /v1/wallet/transfer`: pay another wallet (another agent, a provider) from the
/// caller's own wallet, within its spend limit.
pub async fn pay(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<Pay>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (key_id, mut rec) = load_key(&s, &headers)?;
    let Json(p) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let min_fee = s.chain.state().params.min_tx_fee;
    // Moving money to the key's own wallet spends nothing.
    let cost = if p.to == rec.wallet { 0 } else { p.amount };
    let budget = reserve(&s, key_id, &mut rec, cost, min_fee)?;
    let wallet = wallet_key(&s, &rec)?;
    let id = s
        .chain
        .submit_signed(
            &wallet,
            Action::Transfer {
                to: p.to,
                amount: p.amount,
            },
        )
        .map_err(vouch_node::provider::submit_error)?;
    budget.settle(cost, &[], Some(id));
    let st = s
        .chain
        .wait_tx(&id, vouch_node::provider::COMMIT_WAIT)
        .await;
    Ok(Json(json!({"id": id, "result": st})))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    /// Token ids (one list or a list of lists): refused, see [`embeddings`].
    Tokens(Vec<Value>),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    model: String,
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<i64>,
}

/// Most texts in one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 64;

/// `POST /v1/embeddings`: one ledger job and one receipt per input text.
pub async fn embeddings(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<EmbeddingRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (key_id, mut rec) = load_key(&s, &headers)?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let provider = s
        .provider
        .clone()
        .ok_or_else(|| ApiError::unavailable("this node does not run a provider"))?;
    let embedder = provider
        .embedder
        .clone()
        .ok_or_else(|| ApiError::not_found("no embedding model is served here"))?;
    let st = s.chain.state();
    if find_model(&st, &req.model) != Some(embedder.id()) {
        return Err(ApiError::not_found(format!(
            "unknown embedding model {:?}; GET /v1/models lists them",
            req.model
        ))
        .with_code("model_not_found")
        .with_param("model"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format {other:?} is not float or base64"
            )))
        }
    };
    if let Some(d) = req.dimensions {
        if d != embedder.dim() as i64 {
            return Err(ApiError::unsupported(
                "dimensions",
                format!(
                    "this embedding model gives {} dimensions and cannot shorten its vectors; omit dimensions or ask for {}",
                    embedder.dim(),
                    embedder.dim()
                ),
            ));
        }
    }
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(v) => v,
        // Ids of another tokenizer (LangChain sends OpenAI's by default) mean nothing to
        // this model, and a receipt commits to text.
        EmbeddingInput::Tokens(_) => {
            return Err(ApiError::unsupported(
                "input",
                "input as token ids is not supported: send the texts (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))",
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad_request(format!(
            "input must hold 1 to {MAX_EMBEDDING_INPUTS} texts"
        )));
    }
    let mut tokens = Vec::with_capacity(texts.len());
    for t in &texts {
        if t.is_empty() || t.len() > MAX_PROMPT_BYTES {
            return Err(ApiError::bad_request(format!(
                "each input must be 1 to {MAX_PROMPT_BYTES} bytes"
            )));
        }
        tokens.push(
            embedder
                .count_tokens(t)
                .map_err(|e| ApiError::bad_request(e.to_string()))? as u64,
        );
    }
    let price = st
        .providers
        .get(&provider.key.public())
        .map_or(0, |p| p.price_per_token);
    let fees: Vec<u64> = tokens.iter().map(|n| price.saturating_mul(*n)).collect();
    let total: u64 = fees.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let tx_fees = st.params.min_tx_fee.saturating_mul(texts.len() as u64);
    let _permit = provider.admit()?;
    let budget = reserve(&s, key_id, &mut rec, total, tx_fees)?;
    let wallet = wallet_key(&s, &rec)?;
    let mut data = Vec::new();
    let mut receipts = Vec::new();
    let mut jobs = Vec::new();
    let mut charged = 0u64;
    for (i, (text, fee)) in texts.into_iter().zip(fees).enumerate() {
        let action = Action::SubmitJob {
            model: embedder.id(),
            provider: provider.key.public(),
            input_hash: Receipt::hash_input(ReceiptKind::Embedding, &text),
            max_tokens: 1,
            max_fee: fee,
        };
        let done = provider
            .run_escrowed(
                &s.chain,
                Escrow::Custodial(wallet.clone(), action),
                Work::Embed(text),
                None,
            )
            .await;
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                budget.settle(charged, &jobs, None);
                return Err(e.into());
            }
        };
        charged = charged.saturating_add(fee);
        jobs.push(done.job);
        let r = done.receipt;
        let values = r
            .embedding
            .as_ref()
            .map(|e| e.values.clone())
            .unwrap_or_default();
        let embedding = if base64 {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            json!(base64_encode(&bytes))
        } else {
            json!(values)
        };
        data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
        receipts.push(r.id());
    }
    // Each text's escrow is its own job; a failure part way through leaves the earlier
    // ones charged (they were answered and committed).
    budget.settle(total, &jobs, None);
    let prompt_tokens: u64 = tokens.iter().sum();
    let mut resp = Json(json!({
        "object": "list", "data": data, "model": req.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "receipts": receipts,
    }))
    .into_response();
    if let Some(first) = receipts.first() {
        if let Ok(v) = HeaderValue::from_str(&first.to_hex()) {
            resp.headers_mut().insert("x-vouch-receipt", v);
        }
    }
    Ok(resp)
}

/// Standard base64 with padding (the OpenAI client's `encoding_format: base64`).
fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(super::base64_encode(b""), "");
        assert_eq!(super::base64_encode(b"f"), "Zg==");
        assert_eq!(super::base64_encode(b"fo"), "Zm8=");
        assert_eq!(super::base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
