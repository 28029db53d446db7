//! A small blocking client for a node's HTTP API.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::time::Duration;

pub struct Client {
    base: String,
    agent: ureq::Agent,
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
        }
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
        let r = self.agent.get(&url).call();
        self.handle(&url, r)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.post(&url).send_json(body);
        self.handle(&url, r)
    }
}
