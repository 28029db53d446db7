//! A whole node in memory for `oneshot` tests of the HTTP surface: a temp-dir store, the
//! dev genesis, a [`SoloEngine`] finalizing blocks every 20 ms, a provider on the
//! deterministic [`HashEngine`], the dev faucet and an admin token. No sockets, no
//! weights, no Python.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;
use vouch_crypto::SigningKey;
use vouch_http::state::{AppState, Budgets};
use vouch_node::consensus::{Application, Engine};
use vouch_node::engine::{ChatEngine, Gate, HashEngine};
use vouch_node::keystore::Keystore;
use vouch_node::metrics::Metrics;
use vouch_node::provider::ProviderRole;
use vouch_node::{dev_genesis, Chain, DevKeys, SoloEngine};
use vouch_storage::Store;
use vouch_types::Hash32;

pub const ADMIN: &str = "test-admin-token";
pub const MODEL: &str = "hash-chat";
/// The dev genesis's price per token.
pub const PRICE: u64 = 10;

/// How the test node is set up.
pub struct Opts {
    pub queue_depth: usize,
    pub context: usize,
    pub system_default: Option<&'static str>,
    pub token_delay: Duration,
    pub gate: Option<Arc<Gate>>,
    pub failing: bool,
    pub admin: bool,
    pub faucet: bool,
    pub provider: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            queue_depth: 16,
            context: 4096,
            system_default: Some("You are a test."),
            token_delay: Duration::ZERO,
            gate: None,
            failing: false,
            admin: true,
            faucet: true,
            provider: true,
        }
    }
}

pub struct Node {
    pub app: axum::Router,
    pub state: AppState,
    pub keys: DevKeys,
    /// The engine the provider runs, to compute expected answers.
    pub engine: Arc<HashEngine>,
    pub gate: Option<Arc<Gate>>,
    shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// A key created through `/admin/keys`.
#[derive(Debug, Clone)]
pub struct Key {
    pub api_key: String,
    pub id: String,
    pub wallet: Hash32,
}

fn hash_engine(o: &Opts) -> HashEngine {
    let mut e = HashEngine::new(MODEL)
        .with_context(o.context)
        .with_system_default(o.system_default)
        .with_token_delay(o.token_delay);
    if let Some(g) = &o.gate {
        e = e.with_gate(g.clone());
    }
    if o.failing {
        e = e.failing();
    }
    e
}

impl Node {
    pub async fn start() -> Node {
        Node::with(Opts::default()).await
    }

    pub async fn with(o: Opts) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let keys = DevKeys {
            validator: SigningKey::generate(&mut rand::rngs::OsRng),
            provider: SigningKey::generate(&mut rand::rngs::OsRng),
            faucet: SigningKey::generate(&mut rand::rngs::OsRng),
            author: SigningKey::generate(&mut rand::rngs::OsRng),
        };
        let engine = Arc::new(hash_engine(&o));
        let genesis = dev_genesis(
            &keys,
            &[(engine.id(), MODEL, "MIT")],
            vouch_node::clock::now_ms(),
        );
        let (store, state) = Store::open(&dir.path().join("ledger.redb"), &genesis).unwrap();
        let keystore = Arc::new(Keystore::load_or_create(dir.path()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let chain = Arc::new(Chain::new(
            store,
            state,
            genesis,
            SigningKey::from_bytes(&keys.validator.to_bytes()).unwrap(),
            metrics.clone(),
        ));
        let (shutdown, rx) = watch::channel(false);
        let app: Arc<dyn Application> = chain.clone();
        let solo = Box::new(SoloEngine {
            interval: Duration::from_millis(20),
        });
        tokio::spawn(async move { solo.run(app, rx).await });
        let provider = o.provider.then(|| {
            Arc::new(ProviderRole::new(
                SigningKey::from_bytes(&keys.provider.to_bytes()).unwrap(),
                engine.clone() as Arc<dyn ChatEngine>,
                None,
                o.queue_depth,
            ))
        });
        let state = AppState {
            chain,
            provider,
            faucet: o
                .faucet
                .then(|| Arc::new(SigningKey::from_bytes(&keys.faucet.to_bytes()).unwrap())),
            admin_token: o.admin.then(|| Arc::new(ADMIN.to_string())),
            budgets: Arc::new(Budgets::default()),
            metrics,
            dispatch: None,
            blobs: None,
            public_api: None,
            keystore,
        };
        Node {
            app: vouch_http::api::router(state.clone()),
            state,
            keys,
            engine,
            gate: o.gate,
            shutdown,
            _dir: dir,
        }
    }

    /// Sends one request through the router.
    pub async fn call(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = tokio::time::timeout(Duration::from_secs(20), self.app.clone().oneshot(req))
            .await
            .expect("request timed out")
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(Duration::from_secs(20), body.collect())
            .await
            .expect("body timed out")
            .unwrap()
            .to_bytes();
        (parts.status, parts.headers, bytes)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(get(path, None)).await;
        (s, json_of(&b))
    }

    pub async fn get_auth(&self, path: &str, bearer: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(get(path, Some(bearer))).await;
        (s, json_of(&b))
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> (StatusCode, Value) {
        let (s, _, b) = self.call(post(path, body, bearer)).await;
        (s, json_of(&b))
    }

    /// A new API key (through `/admin/keys`) with this limit, its wallet funded by the
    /// faucet with `fund` (committed before this returns).
    pub async fn key(&self, limit: u64, fund: u64) -> Key {
        let (s, v) = self
            .post(
                "/admin/keys",
                &json!({"name": "agent", "limit": limit}),
                Some(ADMIN),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let k = Key {
            api_key: v["api_key"].as_str().unwrap().to_string(),
            id: v["id"].as_str().unwrap().to_string(),
            wallet: v["wallet"].as_str().unwrap().parse().unwrap(),
        };
        if fund > 0 {
            self.fund(&k.wallet, fund).await;
        }
        k
    }

    /// Pays `amount` from the faucet and waits for the commit.
    pub async fn fund(&self, to: &Hash32, amount: u64) {
        let (s, v) = self
            .post(
                "/v1/faucet",
                &json!({"address": to.to_hex(), "amount": amount}),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["result"]["status"], "committed", "{v}");
    }

    /// A chat request body for the test model.
    pub fn chat_body(&self, content: &str, max_tokens: u32) -> Value {
        json!({"model": MODEL, "messages": [{"role": "user", "content": content}],
               "max_tokens": max_tokens})
    }

    /// The balance of `a` on the ledger now.
    pub fn balance(&self, a: &Hash32) -> u64 {
        self.state.chain.state().account(a).balance
    }

    /// Waits until the chain's height reaches `h`.
    pub async fn wait_height(&self, h: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.state.chain.state().height < h {
            assert!(
                tokio::time::Instant::now() < deadline,
                "height {h} not reached"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(g) = &self.gate {
            g.open();
        }
        let _ = self.shutdown.send(true);
    }
}

pub fn get(path: &str, bearer: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

pub fn post(path: &str, body: &Value, bearer: Option<&str>) -> Request<Body> {
    post_raw(path, body.to_string().into_bytes(), bearer)
}

pub fn post_raw(path: &str, body: Vec<u8>, bearer: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body)).unwrap()
}

/// The body as JSON, or `null` when it is not JSON.
pub fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// Asserts an OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}` with
/// this status and type, a string code, and a message containing `needle`.
#[track_caller]
pub fn assert_error(got: (StatusCode, Value), status: u16, kind: &str, needle: &str) {
    let (s, v) = got;
    assert_eq!(s.as_u16(), status, "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"].get("param").is_some(), "{v}");
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains(needle), "{needle:?} not in {m:?}");
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            let lines: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}
