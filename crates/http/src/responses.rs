//! `POST /v1/responses`: OpenAI's Responses API over the same checked, priced and
//! receipted jobs as chat completions.
//!
//! The request is read into a chat request (input items become chat turns, `instructions`
//! the system turn, `text.format` the response format, flat function tools the chat tool
//! shape), planned by [`gateway::prepare`], and answered as a response object: a
//! `message` item with `output_text`, or `function_call` items. Streaming sends the
//! Responses event sequence (`response.created` … `response.output_text.delta` …
//! `response.completed`). No state is kept, so `previous_response_id` is refused: send
//! the conversation as input items.

use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vouch_types::{FinishReason, Receipt};

use crate::error::ApiError;
use crate::gateway::{self, Answer, ChatRequest, Prepared};
use crate::state::AppState;

fn bad(param: &str, m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m.into()).with_param(param.to_string())
}

/// The text of a content value: a string, or a list of `input_text` / `output_text`
/// parts (other parts are refused, naming the field).
fn content_text(v: &Value, at: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => out.push(
                        p.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    other => {
                        return Err(ApiError::unsupported(
                            &format!("{at}[{j}].type"),
                            format!("content part type {other:?}: this model reads text only"),
                        ))
                    }
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(bad(at, format!("{at} must be a string or a list of parts"))),
    }
}

/// Reads a Responses request as the chat request it amounts to.
pub fn to_chat(v: &Value) -> Result<ChatRequest, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if v.get("previous_response_id").is_some_and(|x| !x.is_null()) {
        return Err(ApiError::unsupported(
            "previous_response_id",
            "this node keeps no responses: send the conversation as input items",
        ));
    }
    let mut messages: Vec<Value> = Vec::new();
    if let Some(i) = v.get("instructions").filter(|x| !x.is_null()) {
        messages.push(json!({"role": "system", "content": content_text(i, "instructions")?}));
    }
    match v.get("input") {
        None | Some(Value::Null) => return Err(bad("input", "input is required")),
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                match it.get("type").and_then(Value::as_str).unwrap_or("message") {
                    "message" => {
                        let role = it.get("role").and_then(Value::as_str).unwrap_or("user");
                        let content = content_text(
                            it.get("content").unwrap_or(&Value::Null),
                            &format!("{at}.content"),
                        )?;
                        messages.push(json!({"role": role, "content": content}));
                    }
                    "function_call" => {
                        let call_id = it.get("call_id").and_then(Value::as_str).unwrap_or("call");
                        let name = it.get("name").and_then(Value::as_str).unwrap_or_default();
                        let args = it.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]}));
                    }
                    "function_call_output" => {
                        let out = match it.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(o) => content_text(o, &format!("{at}.output"))?,
                            None => String::new(),
                        };
                        messages.push(json!({"role": "tool",
                            "tool_call_id": it.get("call_id").cloned().unwrap_or(Value::Null), "content": out}));
                    }
                    other => {
                        return Err(ApiError::unsupported(
                            &format!("{at}.type"),
                            format!("input item type {other:?} is not supported"),
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(bad("input", "input must be a string or a list of items")),
    }
    let mut chat =
        json!({"model": v.get("model").cloned().unwrap_or(Value::Null), "messages": messages});
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("stream", "stream"),
        ("provider", "provider"),
    ] {
        if let Some(x) = v.get(from).filter(|x| !x.is_null()) {
            chat[to] = x.clone();
        }
    }
    if let Some(tools) = v.get("tools").and_then(Value::as_array) {
        let mut out = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::unsupported(
                    &format!("tools[{i}].type"),
                    "only function tools are supported (no hosted tools)",
                ));
            }
            let mut f = json!({"name": t.get("name").cloned().unwrap_or(Value::Null)});
            for k in ["description", "parameters"] {
                if let Some(x) = t.get(k).filter(|x| !x.is_null()) {
                    f[k] = x.clone();
                }
            }
            out.push(json!({"type": "function", "function": f}));
        }
        chat["tools"] = json!(out);
    }
    match v.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => chat["tool_choice"] = json!(s),
        Some(c) => {
            let name = c.get("name").cloned().unwrap_or(Value::Null);
            chat["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
    }
    if let Some(f) = v.get("text").and_then(|t| t.get("format")) {
        chat["response_format"] = match f.get("type").and_then(Value::as_str) {
            Some("json_schema") => json!({"type": "json_schema", "json_schema": {
                "name": f.get("name").cloned().unwrap_or(json!("response")),
                "schema": f.get("schema").cloned().unwrap_or(Value::Null)}}),
            _ => f.clone(),
        };
    }
    serde_json::from_value(chat)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))
}

/// The output items for an answer: function calls when tools were offered and the model
/// called one, else one message.
fn output_items(r: &Receipt, offered: &[crate::tools::Tool], msg_id: &str) -> Vec<Value> {
    let (message, _) = gateway::assistant_message(r, offered);
    let mut items = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let id = c["id"].as_str().unwrap_or_default();
            items.push(json!({"type": "function_call", "id": format!("fc_{}", id.trim_start_matches("call_")),
                "call_id": id, "name": c["function"]["name"], "arguments": c["function"]["arguments"],
                "status": "completed"}));
        }
    }
    if let Some(text) = message["content"].as_str() {
        items.insert(
            0,
            json!({"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}),
        );
    }
    items
}

fn response_object(
    id: &str,
    p: &Meta,
    status: &str,
    output: Vec<Value>,
    answer: Option<&Answer>,
) -> Value {
    let mut v = json!({
        "id": id, "object": "response", "created_at": p.created, "status": status,
        "error": null, "incomplete_details": null, "instructions": null, "metadata": {},
        "model": p.model_name, "output": output, "parallel_tool_calls": true,
        "temperature": null, "top_p": null, "tool_choice": p.tool_choice, "tools": p.tools,
        "max_output_tokens": null, "previous_response_id": null, "reasoning": null,
        "store": false, "text": {"format": {"type": "text"}}, "truncation": "disabled", "user": null,
    });
    if let Some(a) = answer {
        let r = &a.done.receipt;
        let (i, o) = (r.prompt_tokens as u64, r.output_tokens.len() as u64);
        v["usage"] = json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o});
        if r.finish_reason == FinishReason::Length {
            v["status"] = json!("incomplete");
            v["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        v["receipt"] = json!(r.id());
        v["receipt_url"] = json!(format!("/v1/receipts/{}", r.id()));
        v["vouch"] = gateway::vouch_info(&a.done, &a.failover);
    }
    v
}

/// What the response object echoes of the request.
struct Meta {
    created: u64,
    model_name: String,
    tools: Value,
    tool_choice: Value,
}

pub async fn responses(
    AxState(s): AxState<AppState>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (key_id, rec) = gateway::load_key(&s, &headers)?;
    let Json(v) =
        body.map_err(|e| ApiError::bad_request(format!("malformed request: {}", e.body_text())))?;
    let req = to_chat(&v)?;
    let Prepared {
        mut plans,
        budget,
        offered,
        model_name,
        created,
        stream,
        ..
    } = gateway::prepare(&s, key_id, rec, req, true).await?;
    let meta = Meta {
        created,
        model_name,
        tools: v.get("tools").cloned().unwrap_or(json!([])),
        tool_choice: v.get("tool_choice").cloned().unwrap_or(json!("auto")),
    };
    let plan = plans.remove(0);
    let id = gateway::response_id("resp");
    let msg_id = gateway::response_id("msg");
    if !stream {
        let a = match plan.execute(None).await {
            Ok(a) => a,
            Err(e) => {
                budget.settle(0, &[], None);
                return Err(e);
            }
        };
        budget.settle(
            gateway::charge(a.price, &a.done.receipt),
            &[a.done.job],
            None,
        );
        let out = output_items(&a.done.receipt, &offered, &msg_id);
        return Ok(Json(response_object(&id, &meta, "completed", out, Some(&a))).into_response());
    }
    // Streaming: the Responses event sequence, text deltas as they are generated (held
    // until the end when tools were offered: whether it is a call is known only then).
    let (tx, rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<SseEvent, std::convert::Infallible>>();
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut send = |kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(seq);
            seq += 1;
            let _ = tx.send(Ok(SseEvent::default().event(kind).data(data.to_string())));
        };
        let started = response_object(&id, &meta, "in_progress", Vec::new(), None);
        send("response.created", json!({"response": started}));
        send("response.in_progress", json!({"response": started}));
        let hold = !offered.is_empty();
        let (tx_text, mut rx_text) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (tx_delta, mut rx_delta) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = tokio::spawn(async move {
            while let Some(t) = rx_text.recv().await {
                if !hold {
                    let _ = tx_delta.send(t);
                }
            }
        });
        let run = plan.execute(Some(tx_text));
        tokio::pin!(run);
        let mut opened = false;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(d) = rx_delta.recv() => {
                    if !opened {
                        opened = true;
                        send("response.output_item.added", json!({"output_index": 0, "item":
                            {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}}));
                        send("response.content_part.added", json!({"item_id": msg_id, "output_index": 0,
                            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
                    }
                    send("response.output_text.delta", json!({"item_id": msg_id, "output_index": 0,
                        "content_index": 0, "delta": d, "logprobs": []}));
                }
            }
        };
        let _ = forward.await;
        while let Ok(d) = rx_delta.try_recv() {
            send(
                "response.output_text.delta",
                json!({"item_id": msg_id, "output_index": 0,
                "content_index": 0, "delta": d, "logprobs": []}),
            );
        }
        match result {
            Ok(a) => {
                budget.settle(
                    gateway::charge(a.price, &a.done.receipt),
                    &[a.done.job],
                    None,
                );
                let items = output_items(&a.done.receipt, &offered, &msg_id);
                for (k, item) in items.iter().enumerate() {
                    if item["type"] == "message" {
                        let text = item["content"][0]["text"].clone();
                        if !opened {
                            send(
                                "response.output_item.added",
                                json!({"output_index": k, "item":
                                {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}}),
                            );
                            send(
                                "response.content_part.added",
                                json!({"item_id": msg_id, "output_index": k,
                                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
                            );
                            if hold {
                                send(
                                    "response.output_text.delta",
                                    json!({"item_id": msg_id, "output_index": k,
                                    "content_index": 0, "delta": text, "logprobs": []}),
                                );
                            }
                        }
                        send(
                            "response.output_text.done",
                            json!({"item_id": msg_id, "output_index": k,
                            "content_index": 0, "text": text, "logprobs": []}),
                        );
                        send(
                            "response.content_part.done",
                            json!({"item_id": msg_id, "output_index": k,
                            "content_index": 0, "part": item["content"][0]}),
                        );
                    } else {
                        let mut pending = item.clone();
                        pending["status"] = json!("in_progress");
                        pending["arguments"] = json!("");
                        send(
                            "response.output_item.added",
                            json!({"output_index": k, "item": pending}),
                        );
                        send(
                            "response.function_call_arguments.delta",
                            json!({"item_id": item["id"],
                            "output_index": k, "delta": item["arguments"]}),
                        );
                        send(
                            "response.function_call_arguments.done",
                            json!({"item_id": item["id"],
                            "output_index": k, "arguments": item["arguments"]}),
                        );
                    }
                    send(
                        "response.output_item.done",
                        json!({"output_index": k, "item": item}),
                    );
                }
                let done = response_object(&id, &meta, "completed", items, Some(&a));
                send("response.completed", json!({"response": done}));
            }
            Err(e) => {
                budget.settle(0, &[], None);
                send(
                    "error",
                    json!({"code": e.body()["code"], "message": e.body()["message"], "param": e.body()["param"]}),
                );
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}
