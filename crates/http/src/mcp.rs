//! MCP server (streamable HTTP at `/mcp`) for AI agents: six tools, each call made with the
//! agent's API key (`Authorization: Bearer <key>`, read per HTTP request) and bounded by that
//! key's spend limit. Paid tools (`infer`, `embed`) run through the same gateway code as the
//! OpenAI endpoints: a ledger job paid from the key's wallet, with a receipt. No tool reads
//! files or contacts addresses: they see only the node's state and what the call carries.
//!
//! Authorization follows the MCP spec for HTTP transports: every HTTP request to `/mcp`
//! must carry a valid key; a missing, unknown or revoked key gets HTTP 401 with a
//! `WWW-Authenticate: Bearer` challenge before the request reaches the MCP session.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

const UNAUTHORIZED: ErrorCode = ErrorCode(-32001);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InferArgs {
    /// The user message.
    prompt: String,
    /// Largest number of tokens to generate (default 128).
    max_tokens: Option<u32>,
    /// Chat model name (default smollm2-135m).
    model: Option<String>,
    /// Functions the model may call, in OpenAI's `tools` shape.
    tools: Option<Vec<Value>>,
    /// `auto` (default with tools), `none`, `required`, or `{"type": "function",
    /// "function": {"name": ...}}`.
    tool_choice: Option<Value>,
    /// A JSON schema the answer must match (constrained decoding; signed into the
    /// receipt and re-checked by verifiers).
    response_schema: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EmbedArgs {
    text: String,
    /// Embedding model name (default minilm-l6).
    model: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct VerifyArgs {
    /// The receipt object, as returned with an answer or by /v1/receipts/{id}.
    receipt: serde_json::Map<String, Value>,
}

/// Tools without arguments: any argument is refused, not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetModelArgs {
    /// Model name (e.g. smollm2-135m) or content id.
    name: String,
}

#[derive(Clone)]
pub struct VouchMcp {
    state: AppState,
}

fn tools() -> Vec<Tool> {
    fn schema<T: JsonSchema + 'static>() -> Arc<rmcp::model::JsonObject> {
        schema_for_input::<T>().expect("tool input schemas are objects")
    }
    vec![
        Tool::new(
            "infer",
            "Answer a prompt with a chat model on the Vouch network. Paid from your key's wallet; returns the text and the id of its verifiable receipt.",
            schema::<InferArgs>(),
        ),
        Tool::new(
            "embed",
            "Embed a text with an embedding model. Paid from your key's wallet; returns the vector and its receipt id.",
            schema::<EmbedArgs>(),
        ),
        Tool::new(
            "verify_receipt",
            "Check a receipt and say exactly what is proven: status `verified` (committed on this chain, certified by its validators, by the provider the job was given to; `valid` is true only then), `signed_only` (signature good, not committed), `unbound` (old proof: job and signer not proven), `unpinned` or `invalid` (with the reason), and each fact separately.",
            schema::<VerifyArgs>(),
        ),
        Tool::new(
            "get_model",
            "A registered model: content id, version, licence, author, royalty, and its parent (lineage).",
            schema::<GetModelArgs>(),
        ),
        Tool::new(
            "list_providers",
            "Providers on this network with the models they serve, price per token, stake and record.",
            schema_for_empty_input(),
        ),
        Tool::new(
            "wallet_balance",
            "Your key's wallet: address, balance, and what is left of the spend limit.",
            schema_for_empty_input(),
        ),
    ]
}

fn bearer(ctx: &RequestContext<RoleServer>) -> Result<String, McpError> {
    let parts = ctx
        .extensions
        .get::<axum::http::request::Parts>()
        .ok_or_else(|| McpError::new(UNAUTHORIZED, "unauthorized: no HTTP request", None))?;
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            McpError::new(
                UNAUTHORIZED,
                "unauthorized: send 'Authorization: Bearer <API key>'",
                None,
            )
        })?;
    Ok(v.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(req: &CallToolRequestParams) -> Result<T, McpError> {
    let args = Value::Object(req.arguments.clone().unwrap_or_default());
    serde_json::from_value(args)
        .map_err(|e| McpError::invalid_params(format!("arguments of {}: {e}", req.name), None))
}

fn ok(v: Value) -> Result<CallToolResponse, McpError> {
    Ok(CallToolResult::structured(v).into())
}

fn tool_error(msg: impl Into<String>) -> Result<CallToolResponse, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(msg.into())]).into())
}

async fn json_of(r: Result<Response, ApiError>) -> Result<Value, String> {
    let resp = r.map_err(|e| e.message)?;
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

impl VouchMcp {
    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}")) {
            h.insert(axum::http::header::AUTHORIZATION, v);
        }
        h
    }

    async fn call(
        &self,
        name: &str,
        req: &CallToolRequestParams,
        key: &str,
    ) -> Result<CallToolResponse, McpError> {
        let s = self.state.clone();
        let headers = Self::headers(key);
        match name {
            "infer" => {
                let a: InferArgs = parse(req)?;
                let mut body = json!({
                    "model": a.model.unwrap_or_else(|| "smollm2-135m".into()),
                    "messages": [{"role": "user", "content": a.prompt}],
                    "max_tokens": a.max_tokens.unwrap_or(128),
                });
                if let Some(t) = a.tools {
                    body["tools"] = json!(t);
                }
                if let Some(c) = a.tool_choice {
                    body["tool_choice"] = c;
                }
                if let Some(schema) = a.response_schema {
                    body["response_format"] = json!({"type": "json_schema",
                        "json_schema": {"name": "answer", "schema": schema, "strict": true}});
                }
                let body = serde_json::from_value(body)
                    .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
                let r = crate::gateway::chat_completions(
                    axum::extract::State(s),
                    headers,
                    Ok(Json(body)),
                )
                .await;
                match json_of(r).await {
                    Ok(v) => ok(json!({
                        "text": v["choices"][0]["message"]["content"],
                        "tool_calls": v["choices"][0]["message"].get("tool_calls").cloned().unwrap_or(json!([])),
                        "finish_reason": v["choices"][0]["finish_reason"],
                        "usage": v["usage"], "receipt": v["receipt"], "job": v["vouch"]["job"],
                        "commit_tx": v["vouch"]["commit_tx"],
                    })),
                    Err(e) => tool_error(e),
                }
            }
            "embed" => {
                let a: EmbedArgs = parse(req)?;
                let body = serde_json::from_value(json!({
                    "model": a.model.unwrap_or_else(|| "minilm-l6".into()),
                    "input": a.text, "encoding_format": "float",
                }))
                .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
                let r =
                    crate::gateway::embeddings(axum::extract::State(s), headers, Ok(Json(body)))
                        .await;
                match json_of(r).await {
                    Ok(v) => ok(
                        json!({"embedding": v["data"][0]["embedding"], "receipt": v["receipts"][0], "usage": v["usage"]}),
                    ),
                    Err(e) => tool_error(e),
                }
            }
            "verify_receipt" => {
                let a: VerifyArgs = parse(req)?;
                let receipt = match serde_json::from_value(Value::Object(a.receipt)) {
                    Ok(r) => r,
                    Err(e) => {
                        let v = vouch_verify::Verdict::not_a_receipt(e.to_string());
                        return ok(serde_json::to_value(v).unwrap_or_default());
                    }
                };
                match crate::explorer::verify(axum::extract::State(s), Ok(Json(receipt))).await {
                    Ok(Json(v)) => ok(v),
                    Err(e) => tool_error(e.message),
                }
            }
            "get_model" => {
                let a: GetModelArgs = parse(req)?;
                let st = s.chain.state();
                let found = st
                    .models
                    .iter()
                    .find(|(id, m)| m.name == a.name || id.to_hex() == a.name);
                match found {
                    Some((id, m)) => ok(json!({
                        "id": id, "name": m.name, "version": m.version, "licence": m.licence,
                        "author": m.author, "royalty_bps": m.royalty_bps, "parent": m.parent,
                        "served_by": st.providers.iter().filter(|(_, p)| p.models.contains(id)).map(|(a, _)| a).collect::<Vec<_>>(),
                    })),
                    None => tool_error(format!("no model named {:?} is registered", a.name)),
                }
            }
            "list_providers" => {
                let NoArgs {} = parse(req)?;
                let st = s.chain.state();
                let list: Vec<Value> = st
                    .providers
                    .iter()
                    .map(|(a, p)| {
                        let names: Vec<&str> = p
                            .models
                            .iter()
                            .filter_map(|m| st.models.get(m).map(|x| x.name.as_str()))
                            .collect();
                        json!({"address": a, "models": names, "price_per_token": p.price_per_token,
                               "capacity": p.capacity, "stake": st.account(a).stake,
                               "jobs_settled": p.jobs_settled, "jobs_failed": p.jobs_failed})
                    })
                    .collect();
                ok(json!({"providers": list}))
            }
            "wallet_balance" => {
                let NoArgs {} = parse(req)?;
                match crate::gateway::wallet(axum::extract::State(s), headers).await {
                    Ok(Json(v)) => ok(v),
                    Err(e) => tool_error(e.message),
                }
            }
            other => Err(McpError::invalid_params(
                format!("unknown tool {other:?}"),
                None,
            )),
        }
    }
}

impl ServerHandler for VouchMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("vouch", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Vouch: verifiable AI inference. Send 'Authorization: Bearer <API key>'; \
                 every answer comes with a receipt id you can check with verify_receipt.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let key = bearer(&context)?;
        // Every call needs a valid, unrevoked key with budget left, paid or not.
        let (_, mut rec) =
            crate::gateway::load_key(&self.state, &Self::headers(&key)).map_err(|e| {
                McpError::new(UNAUTHORIZED, format!("unauthorized: {}", e.message), None)
            })?;
        rec.roll(vouch_node::clock::now_ms());
        if rec.limit > 0 && rec.remaining() == 0 {
            return tool_error("spend limit of this API key is used up for this period");
        }
        let name = request.name.to_string();
        let r = self.call(&name, &request, &key).await;
        self.state.metrics.mcp_call(tool_label(&name), r.is_ok());
        r
    }
}

/// The server's tool names, as metric labels; anything else is `unknown` (a caller must
/// not be able to create series).
pub fn tool_label(name: &str) -> &'static str {
    const NAMES: [&str; 6] = [
        "infer",
        "embed",
        "verify_receipt",
        "get_model",
        "list_providers",
        "wallet_balance",
    ];
    NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("unknown")
}

/// HTTP 401 with the bearer challenge (RFC 6750), as the MCP authorization spec asks.
fn unauthorized(reason: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null,
                      "error": {"code": UNAUTHORIZED.0, "message": format!("unauthorized: {reason}")}});
    let mut r = (axum::http::StatusCode::UNAUTHORIZED, Json(body)).into_response();
    let desc: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer realm=\"vouch\", error=\"invalid_token\", error_description=\"{desc}\""
    )) {
        r.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Middleware in front of the MCP transport: a valid, unrevoked key on every request.
async fn require_key(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match crate::gateway::load_key(&s, req.headers()) {
        Ok(_) => next.run(req).await,
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => unauthorized(&e.message),
        Err(e) => e.into_response(),
    }
}

/// The `/mcp` service for the node's router: the key check, then the MCP transport.
pub fn service(state: AppState) -> axum::Router {
    let mcp = StreamableHttpService::new(
        {
            let state = state.clone();
            move || {
                Ok(VouchMcp {
                    state: state.clone(),
                })
            }
        },
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    axum::Router::new()
        .fallback_service(mcp)
        .layer(axum::middleware::from_fn_with_state(state, require_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18 row 12: tools without arguments refuse them (they were ignored).
    #[test]
    fn no_argument_tools_refuse_arguments() {
        assert!(serde_json::from_value::<NoArgs>(json!({})).is_ok());
        assert!(serde_json::from_value::<NoArgs>(json!({"path": "/etc/passwd"})).is_err());
    }

    /// Issue 18 row 12: no or a bad key is HTTP 401 with a Bearer challenge.
    #[test]
    fn unauthorized_is_401_with_a_bearer_challenge() {
        let r = unauthorized("invalid API key \"x\"\n");
        assert_eq!(r.status(), axum::http::StatusCode::UNAUTHORIZED);
        let h = r.headers()[axum::http::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(h.starts_with("Bearer realm=\"vouch\""), "{h}");
        assert!(h.contains("error_description=\"invalid API key x\""), "{h}");
    }

    /// Issue 18 row 9: tool names are metric labels only when they are the server's own.
    #[test]
    fn tool_labels_are_bounded() {
        assert_eq!(tool_label("infer"), "infer");
        assert_eq!(tool_label("wallet_balance"), "wallet_balance");
        assert_eq!(tool_label("x\"}\nvouch_block_height 9"), "unknown");
    }
}
