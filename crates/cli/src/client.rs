//! A small blocking client for a node's HTTP API.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::time::Duration;

pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .new_agent();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    fn handle(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut resp = r.map_err(|e| {
            anyhow!(
                "cannot reach the node at {}: {e} (start one with `vouch up`, or use --local)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp
            .body_mut()
            .read_json()
            .with_context(|| format!("{url}: response is not JSON (HTTP {status})"))?;
        if !status.is_success() {
            let msg = body["error"]["message"].as_str().unwrap_or("no message");
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(body)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let r = req.call();
        self.handle(&url, r)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let r = req.send_json(body);
        self.handle(&url, r)
    }
}
