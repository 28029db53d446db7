//! Observing the API: the request-counting middleware and `GET /metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Middleware: counts requests by route and status, and records latency.
pub async fn track(AxState(s): AxState<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics.http_request(
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// `GET /metrics`.
pub async fn metrics(AxState(s): AxState<AppState>) -> impl IntoResponse {
    let st = s.chain.state();
    let body = s.metrics.render(
        st.height,
        s.chain.mempool_len(),
        st.jobs.len(),
        st.supply.burned,
    );
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod tests {
    use vouch_node::metrics::Metrics;

    /// Row 9 (issue 18): label values are escaped, so a crafted name cannot forge a line
    /// (the red team's `vouch_block_height 999999999`), and per-caller names stay bounded.
    #[test]
    fn labels_are_escaped_and_series_bounded() {
        let m = Metrics::default();
        let evil = "x\"}\nvouch_block_height 999999999\n#";
        m.http_request(evil, 200, 0.01);
        for i in 0..300 {
            m.mcp_call(crate::mcp::tool_label(&format!("nope{i}")), false);
        }
        m.mcp_call(crate::mcp::tool_label(evil), false);
        m.mcp_call(crate::mcp::tool_label("infer"), true);
        let text = m.render(7, 0, 0, 0);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"vouch_block_height 7"), "{text}");
        assert!(
            !lines.iter().any(|l| l.starts_with("vouch_block_height 9")),
            "a label forged a sample:\n{text}"
        );
        assert!(text.contains(r#"route="x\"}\nvouch_block_height 999999999\n#""#));
        let mcp: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("vouch_mcp_calls_total{"))
            .collect();
        assert_eq!(mcp.len(), 2, "{mcp:?}");
        assert!(text.contains(r#"vouch_mcp_calls_total{tool="unknown",ok="false"} 301"#));
        assert!(text.contains(r#"vouch_mcp_calls_total{tool="infer",ok="true"} 1"#));
        // The names tests and dashboards use.
        m.audit_run("spot", "pass");
        m.tokens("chat", 3, 4);
        let text = m.render(7, 0, 0, 0);
        for needle in [
            r#"vouch_audit_runs_total{mode="spot",result="pass"} 1"#,
            r#"vouch_generated_tokens_total{kind="chat"} 4"#,
            r#"vouch_http_requests_total{route="#,
            r#"vouch_http_request_duration_seconds_bucket{le="+Inf",route="#,
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
    }
}
