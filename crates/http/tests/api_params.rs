//! The OpenAI request parameters real apps send (issue 20's first part), against a node
//! in memory with the hash engine: content parts, roles, stop strings bound into the
//! receipt, `n` choices with one receipt each, penalties signed into the sampling rule,
//! default `max_tokens`, completions prompt lists, OpenAI error bodies with `param` and
//! string codes, parameters that would be silently ignored answered with a clear 400,
//! `GET /v1/models/{id}`, `x-request-id` and CORS.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use vouch_http::api::CorsOrigins;
use vouch_inference::chat::Message;
use vouch_node::engine::ChatEngine;
use vouch_types::{Receipt, Sampling};
use vouch_verify::attest::Input;

mod common;
use common::{assert_error, json_of, post, sse_data, Node, Opts, MODEL};

const UNIT: u64 = vouch_node::UNIT;

async fn chat(n: &Node, key: &str, body: &Value) -> (StatusCode, Value) {
    n.post("/v1/chat/completions", body, Some(key)).await
}

/// The hash engine's greedy answer to one user message, without stop strings.
fn plain(n: &Node, content: &str, max_tokens: u32) -> Receipt {
    n.engine
        .generate(
            &vouch_crypto::SigningKey::generate(&mut rand::rngs::OsRng),
            &Input::Chat(vec![Message::user(content)]),
            Sampling::greedy(max_tokens),
            &Default::default(),
            0,
            &mut |_| {},
        )
        .unwrap()
}

async fn receipt(n: &Node, id: &Value) -> Receipt {
    let (s, v) = n
        .get(&format!("/v1/receipts/{}", id.as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_parts_developer_role_and_null_assistant_content_render_as_text() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let body = json!({"model": MODEL, "max_tokens": 8, "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": null},
        {"role": "user", "content": "three", "name": "ann"}]});
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["refusal"], Value::Null);
    let r = receipt(&n, &v["receipt"]).await;
    let want = n.engine.render_chat(&[
        Message {
            role: "system".into(),
            content: "Be brief.".into(),
        },
        Message::user("one\ntwo"),
        Message {
            role: "assistant".into(),
            content: String::new(),
        },
        Message::user("three"),
    ]);
    assert_eq!(r.prompt, want);
    // An image part is refused with the field named.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "http://x"}}]}]});
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_error(
        (s, v.clone()),
        400,
        "invalid_request_error",
        "reads text only",
    );
    assert_eq!(v["error"]["param"], "messages[0].content[1].type");
    assert_eq!(v["error"]["code"], "unsupported_parameter");
    let body = json!({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]});
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_error(
        (s, v.clone()),
        400,
        "invalid_request_error",
        "is not system",
    );
    assert_eq!(v["error"]["param"], "messages[0].role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_cuts_the_text_ends_the_generation_and_is_signed_in_the_receipt() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let full = plain(&n, "tell me", 40);
    assert!(full.output_tokens.len() >= 4, "{}", full.output);
    // A word from the middle of the answer is the stop string.
    let words: Vec<&str> = full.output.split(' ').filter(|w| !w.is_empty()).collect();
    let stop = format!(" {}", words[2]);
    let cut = full.output.find(&stop).unwrap();
    let mut body = n.chat_body("tell me", 40);
    body["stop"] = json!([stop, "never-appears"]);
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], full.output[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let r = receipt(&n, &v["receipt"]).await;
    assert_eq!(r.version, 3);
    assert_eq!(r.stop, vec![stop.clone(), "never-appears".to_string()]);
    assert_eq!(r.output, full.output[..cut]);
    assert_eq!(
        r.output_tokens.len(),
        3,
        "generation ended at the token completing it"
    );
    vouch_verify::check_fast(&r).unwrap();
    // The stop list is signed: removing it breaks the signature.
    let mut edited = r.clone();
    edited.stop.clear();
    edited.version = 2;
    assert!(vouch_verify::check_fast(&edited).is_err());
    // A string stop, streamed: the stop text never reaches the client.
    body["stop"] = json!(stop);
    body["stream"] = json!(true);
    let (s, _, raw) = n
        .call(post("/v1/chat/completions", &body, Some(&k.api_key)))
        .await;
    assert_eq!(s, StatusCode::OK);
    let text: String = sse_data(&raw)
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, full.output[..cut]);
    // Bounds: at most 4, none empty.
    body["stream"] = json!(false);
    for bad in [
        json!(["a", "b", "c", "d", "e"]),
        json!([""]),
        json!("x".repeat(65)),
    ] {
        body["stop"] = bad;
        let (s, v) = chat(&n, &k.api_key, &body).await;
        assert_error((s, v.clone()), 400, "invalid_request_error", "stop");
        assert_eq!(v["error"]["param"], "stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_each_have_their_own_job_receipt_and_seed() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let mut body = n.chat_body("pick", 12);
    body["n"] = json!(3);
    body["temperature"] = json!(0.9);
    body["seed"] = json!("100");
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let mut outputs = Vec::new();
    let mut completion = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let r = receipt(&n, &c["receipt"]).await;
        assert_eq!(r.sampling.seed, 100 + i as u64);
        assert_eq!(c["message"]["content"], r.output);
        vouch_verify::check_fast(&r).unwrap();
        completion += r.output_tokens.len();
        outputs.push(r.output);
    }
    assert_eq!(v["receipts"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["completion_tokens"], completion);
    outputs.dedup();
    assert!(outputs.len() > 1, "different seeds give different samples");
    for bad in [0, 17, -1] {
        body["n"] = json!(bad);
        let (s, v) = chat(&n, &k.api_key, &body).await;
        assert_error((s, v.clone()), 400, "invalid_request_error", "n times");
        assert_eq!(v["error"]["param"], "n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalties_are_bounded_and_signed_into_the_sampling_rule() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let mut body = n.chat_body("again", 8);
    body["presence_penalty"] = json!(0.5);
    body["frequency_penalty"] = json!(-0.25);
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = receipt(&n, &v["receipt"]).await;
    assert_eq!(r.version, 3);
    assert_eq!(r.sampling.presence_penalty, 0.5);
    assert_eq!(r.sampling.frequency_penalty, -0.25);
    vouch_verify::check_fast(&r).unwrap();
    let mut zeroed = r.clone();
    zeroed.sampling.presence_penalty = 0.0;
    assert!(vouch_verify::check_fast(&zeroed).is_err());
    for (param, x) in [("presence_penalty", 2.5), ("frequency_penalty", -3.0)] {
        let mut b = n.chat_body("again", 8);
        b[param] = json!(x);
        let (s, v) = chat(&n, &k.api_key, &b).await;
        assert_error((s, v.clone()), 400, "invalid_request_error", param);
        assert_eq!(v["error"]["param"], param);
    }
    // Plain requests keep writing version 2 receipts (old verifiers read them).
    let (_, v) = chat(&n, &k.api_key, &n.chat_body("plain", 4)).await;
    assert_eq!(receipt(&n, &v["receipt"]).await.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_this_node_cannot_honour_are_400_never_ignored() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let cases = [("logit_bias", json!({"50": 5}), "logit_bias")];
    for (field, value, param) in cases {
        let mut b = n.chat_body("x", 4);
        b[field] = value;
        let (s, v) = chat(&n, &k.api_key, &b).await;
        assert_error(
            (s, v.clone()),
            400,
            "invalid_request_error",
            "not supported",
        );
        assert_eq!(v["error"]["param"], param, "{v}");
        assert_eq!(v["error"]["code"], "unsupported_parameter");
    }
    // What changes nothing passes.
    let mut b = n.chat_body("x", 4);
    b["response_format"] = json!({"type": "text"});
    b["tool_choice"] = json!("none");
    b["tools"] = json!([]);
    b["logprobs"] = json!(false);
    b["user"] = json!("u-1");
    let (s, v) = chat(&n, &k.api_key, &b).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_offered_in_the_prompt_and_the_follow_up_turn_is_rendered() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    // auto: the tools are in the system turn the receipt's prompt commits to.
    let mut b = n.chat_body("Weather in Paris?", 8);
    b["tools"] = tools.clone();
    let (s, v) = chat(&n, &k.api_key, &b).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = receipt(&n, &v["receipt"]).await;
    assert!(
        r.prompt
            .contains("<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"get_weather\""),
        "{}",
        r.prompt
    );
    assert!(r.constraint.is_none(), "auto leaves the answer free");
    // The stand-in engine writes words, never a call.
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
    // none: not offered at all.
    b["tool_choice"] = json!("none");
    let (_, v) = chat(&n, &k.api_key, &b).await;
    assert!(!receipt(&n, &v["receipt"]).await.prompt.contains("<tools>"));
    // A forced choice needs a grammar engine: the stand-in refuses it clearly rather than
    // answering unconstrained.
    b["tool_choice"] = json!("required");
    let (s, v) = chat(&n, &k.api_key, &b).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "tool_choice");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("constraint"),
        "{v}"
    );
    // Choices that cannot be met are 400 with the field named.
    for (choice, tools_v) in [
        (json!("required"), json!([])),
        (
            json!({"type": "function", "function": {"name": "nope"}}),
            tools.clone(),
        ),
        (json!("sometimes"), tools.clone()),
    ] {
        let mut b = n.chat_body("x", 4);
        b["tools"] = tools_v;
        b["tool_choice"] = choice;
        let (s, v) = chat(&n, &k.api_key, &b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["param"], "tool_choice", "{v}");
    }
    let mut b = n.chat_body("x", 4);
    b["tools"] = json!([{"type": "function", "function": {"name": "has space"}}]);
    let (s, v) = chat(&n, &k.api_key, &b).await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("tools[0]"))
    );
    // The follow-up turn: the assistant's call and the tool's result, as the model reads them.
    let call = json!({"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}});
    let body = json!({"model": MODEL, "max_tokens": 8, "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}"}]});
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = receipt(&n, &v["receipt"]).await;
    assert!(r.prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call><|im_end|>"), "{}", r.prompt);
    assert!(
        r.prompt.contains(
            "<|im_start|>user\n<tool_response>\n{\"temp_c\": 18}\n</tool_response><|im_end|>"
        ),
        "{}",
        r.prompt
    );
    // Arguments that are not JSON are refused, naming the field.
    let mut bad = body.clone();
    bad["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!("{city: Paris");
    let (s, v) = chat(&n, &k.api_key, &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["error"]["param"],
        "messages[1].tool_calls[0].function.arguments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_format_is_read_never_ignored() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    for (f, needle) in [
        (
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            "schema is required",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}),
            "must be a JSON schema",
        ),
        (
            json!({"type": "yaml"}),
            "must be text, json_object or json_schema",
        ),
        // Well-formed, but the stand-in engine has no grammar engine: refused, not ignored.
        (json!({"type": "json_object"}), "constraint"),
    ] {
        let mut b = n.chat_body("x", 4);
        b["response_format"] = f;
        let (s, v) = chat(&n, &k.api_key, &b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["param"], "response_format", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Nothing was charged for the refusals.
    let (_, w) = n.get_auth("/v1/wallet", &k.api_key).await;
    assert_eq!(w["spent"].as_u64().unwrap_or(0), 0, "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_defaults_to_the_room_left_and_overflow_says_context_length_exceeded() {
    let n = Node::with(Opts {
        context: 256,
        ..Opts::default()
    })
    .await;
    let k = n.key(0, UNIT).await;
    let body = json!({"model": MODEL, "prompt": "a".repeat(200)});
    let (s, v) = n.post("/v1/completions", &body, Some(&k.api_key)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(receipt(&n, &v["receipt"]).await.sampling.max_tokens, 56);
    let body = json!({"model": MODEL, "prompt": "a".repeat(256)});
    let (s, v) = n.post("/v1/completions", &body, Some(&k.api_key)).await;
    assert_error(
        (s, v.clone()),
        400,
        "invalid_request_error",
        "leaves no room",
    );
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "prompt");
    let body = json!({"model": MODEL, "prompt": "a".repeat(200), "max_tokens": 57});
    let (s, v) = n.post("/v1/completions", &body, Some(&k.api_key)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completions_prompt_list_gives_one_choice_per_prompt() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let body = json!({"model": MODEL, "prompt": ["Once", "Twice"], "max_tokens": 6});
    let (s, v) = n.post("/v1/completions", &body, Some(&k.api_key)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, p) in ["Once", "Twice"].iter().enumerate() {
        let r = receipt(&n, &choices[i]["receipt"]).await;
        assert_eq!(r.prompt, *p);
        assert_eq!(choices[i]["text"], r.output);
        assert_eq!(choices[i]["index"], i);
    }
    let body = json!({"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 6});
    let (s, v) = n.post("/v1/completions", &body, Some(&k.api_key)).await;
    assert_error((s, v.clone()), 400, "invalid_request_error", "token ids");
    assert_eq!(v["error"]["param"], "prompt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_by_id_request_ids_and_unique_stream_ids() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let (s, v) = n.get(&format!("/v1/models/{MODEL}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], MODEL);
    assert_eq!(v["object"], "model");
    let (s, v) = n
        .get(&format!(
            "/v1/models/{}",
            v["vouch_model_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = n.get("/v1/models/nope").await;
    assert_error((s, v.clone()), 404, "not_found_error", "nope");
    assert_eq!(v["error"]["code"], "model_not_found");
    // x-request-id: echoed when given, generated (and distinct) when not.
    let mut req = common::get("/v1/status", None);
    req.headers_mut()
        .insert("x-request-id", "client-7".parse().unwrap());
    let (_, h, _) = n.call(req).await;
    assert_eq!(h["x-request-id"], "client-7");
    let (_, h1, _) = n.call(common::get("/v1/status", None)).await;
    let (_, h2, _) = n.call(common::get("/v1/status", None)).await;
    assert_ne!(h1["x-request-id"], h2["x-request-id"]);
    // Two streams of the same request never share an id.
    let mut body = n.chat_body("same", 4);
    body["stream"] = json!(true);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, _, raw) = n
            .call(post("/v1/chat/completions", &body, Some(&k.api_key)))
            .await;
        let first: Value = serde_json::from_str(&sse_data(&raw)[0]).unwrap();
        ids.push(first["id"].as_str().unwrap().to_string());
        assert!(ids.last().unwrap().starts_with("chatcmpl-"));
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_for_allowed_origins_only() {
    let n = Node::start().await;
    let app = n
        .app
        .clone()
        .layer(vouch_http::api::cors(CorsOrigins::Localhost));
    let preflight = |origin: &str| {
        Request::options("/v1/chat/completions")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let r = app
        .clone()
        .oneshot(preflight("http://localhost:5173"))
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let r = app
        .clone()
        .oneshot(preflight("https://evil.example"))
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A simple request from an allowed page can read the receipt header.
    let req = Request::get("/v1/status")
        .header("origin", "http://127.0.0.1:3000")
        .body(Body::empty())
        .unwrap();
    let r = app.oneshot(req).await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://127.0.0.1:3000"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-vouch-receipt"), "{exposed}");
    // Which origins each setting allows.
    let l = CorsOrigins::Localhost;
    for ok in [
        "http://localhost",
        "http://localhost:8080",
        "https://127.0.0.1:1",
        "http://[::1]:3000",
    ] {
        assert!(l.allows(ok), "{ok}");
    }
    for bad in [
        "http://localhost.evil.com",
        "http://evil.com",
        "file://",
        "http://localhost:x",
        "null",
        "http://127.0.0.1.nip.io",
    ] {
        assert!(!l.allows(bad), "{bad}");
    }
    assert!(CorsOrigins::parse(&["*".into()])
        .unwrap()
        .allows("https://a.b"));
    let list = CorsOrigins::parse(&["https://app.example".into()]).unwrap();
    assert!(list.allows("https://app.example") && !list.allows("https://app.example.evil"));
    assert!(CorsOrigins::parse(&["app.example".into()]).is_err());
    assert!(!CorsOrigins::parse(&["none".into()])
        .unwrap()
        .allows("http://localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_type_param_and_a_string_code() {
    let n = Node::start().await;
    let (s, v) = n
        .post("/v1/chat/completions", &n.chat_body("x", 4), None)
        .await;
    assert_error((s, v.clone()), 401, "authentication_error", "API key");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let k = n.key(0, UNIT).await;
    let body = json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]});
    let (s, v) = chat(&n, &k.api_key, &body).await;
    assert_error((s, v.clone()), 404, "not_found_error", "unknown model");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    let (s, v) = json_post_raw(&n, "/v1/chat/completions", "not json", &k.api_key).await;
    assert_error((s, v), 400, "invalid_request_error", "malformed request");
}

async fn json_post_raw(n: &Node, path: &str, body: &str, key: &str) -> (StatusCode, Value) {
    let (s, _, b) = n
        .call(common::post_raw(path, body.as_bytes().to_vec(), Some(key)))
        .await;
    (s, json_of(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_answer_with_a_message_item_and_the_event_stream() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    let body = json!({"model": MODEL, "input": "hello there", "instructions": "Be brief.", "max_output_tokens": 6});
    let (s, v) = n.post("/v1/responses", &body, Some(&k.api_key)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp-"));
    let r = receipt(&n, &v["receipt"]).await;
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], r.output.as_str());
    assert_eq!(v["usage"]["output_tokens"], r.output_tokens.len());
    // instructions are the system turn, input the user turn.
    let want = n.engine.render_chat(&[
        Message {
            role: "system".into(),
            content: "Be brief.".into(),
        },
        Message::user("hello there"),
    ]);
    assert_eq!(r.prompt, want);
    if r.finish_reason == vouch_types::FinishReason::Length {
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }
    // Input items: a message with parts, an earlier call and its output.
    let body = json!({"model": MODEL, "max_output_tokens": 4, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "cold"}]});
    let (s, v) = n.post("/v1/responses", &body, Some(&k.api_key)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = receipt(&n, &v["receipt"]).await;
    assert!(r.prompt.contains("<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>"), "{}", r.prompt);
    assert!(
        r.prompt.contains("<tool_response>\ncold\n</tool_response>"),
        "{}",
        r.prompt
    );
    // No state is kept: previous_response_id is refused, naming the field.
    let body = json!({"model": MODEL, "input": "x", "previous_response_id": "resp-1"});
    let (s, v) = n.post("/v1/responses", &body, Some(&k.api_key)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "previous_response_id");
    let (s, v) = n
        .post("/v1/responses", &json!({"model": MODEL}), Some(&k.api_key))
        .await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("input"))
    );
    // Streamed: the event sequence, the deltas adding up to the receipt's output.
    let body =
        json!({"model": MODEL, "input": "stream please", "max_output_tokens": 6, "stream": true});
    let (s, _, raw) = n.call(post("/v1/responses", &body, Some(&k.api_key))).await;
    assert_eq!(s, StatusCode::OK);
    let events: Vec<Value> = sse_data(&raw)
        .into_iter()
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "response.created");
    assert_eq!(*kinds.last().unwrap(), "response.completed");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let done = &events.last().unwrap()["response"];
    let r = receipt(&n, &done["receipt"]).await;
    assert_eq!(deltas, r.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_bounded_and_need_the_real_model() {
    let n = Node::start().await;
    let k = n.key(0, UNIT).await;
    for (lp, top, param) in [
        (json!(true), json!(21), "top_logprobs"),
        (json!(false), json!(2), "logprobs"),
        // The stand-in engine has no logits: refused, never made up.
        (json!(true), json!(2), "logprobs"),
    ] {
        let mut b = n.chat_body("x", 4);
        b["logprobs"] = lp;
        b["top_logprobs"] = top;
        let (s, v) = chat(&n, &k.api_key, &b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
}
