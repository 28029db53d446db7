//! Prometheus metrics in the text exposition format, served at `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;

/// Upper bounds of the latency histogram buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// Adds `by` to counter `name` with the label set `labels` (already formatted).
    pub fn inc(&self, name: &str, labels: &str, by: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name.to_string(), labels.to_string())).or_insert(0) += by;
    }

    fn observe(&self, route: &str, secs: f64) {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let e = h.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                e.counts[i] += 1;
            }
        }
        e.count += 1;
        e.sum += secs;
    }

    /// Counts what a finalized block did (audits, slashes, settlements).
    pub fn record_events(&self, events: &[vouch_state::Event]) {
        use vouch_state::Event;
        for e in events {
            match e {
                Event::JobSubmitted { .. } => self.inc("vouch_jobs_submitted_total", "", 1),
                Event::JobCommitted { .. } => self.inc("vouch_jobs_committed_total", "", 1),
                Event::JobAudited { pass, .. } => {
                    let l = if *pass {
                        "result=\"pass\""
                    } else {
                        "result=\"fail\""
                    };
                    self.inc("vouch_audits_total", l, 1)
                }
                Event::JobSettled { .. } => self.inc("vouch_jobs_settled_total", "", 1),
                Event::JobExpired { .. } => self.inc("vouch_jobs_expired_total", "", 1),
                Event::Slashed { amount, .. } => {
                    self.inc("vouch_slashes_total", "", 1);
                    self.inc("vouch_slashed_amount_total", "", *amount);
                }
                _ => {}
            }
        }
    }

    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        for (name, help, v) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, labels), v) in c.iter() {
            if name != last {
                out.push_str(&format!("# TYPE {name} counter\n"));
                last = name;
            }
            if labels.is_empty() {
                out.push_str(&format!("{name} {v}\n"));
            } else {
                out.push_str(&format!("{name}{{{labels}}} {v}\n"));
            }
        }
        drop(c);
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP vouch_http_request_duration_seconds HTTP request latency by route\n");
        out.push_str("# TYPE vouch_http_request_duration_seconds histogram\n");
        for (route, hist) in h.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "vouch_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}\n",
                    hist.counts[i]
                ));
            }
            out.push_str(&format!(
                "vouch_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n",
                hist.count
            ));
            out.push_str(&format!(
                "vouch_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n",
                hist.sum
            ));
            out.push_str(&format!(
                "vouch_http_request_duration_seconds_count{{route=\"{route}\"}} {}\n",
                hist.count
            ));
        }
        out
    }
}

/// Middleware: counts requests by route and status, and records latency.
pub async fn track(AxState(s): AxState<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    s.metrics.inc(
        "vouch_http_requests_total",
        &format!("route=\"{route}\",status=\"{status}\""),
        1,
    );
    s.metrics.observe(&route, start.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`.
pub async fn metrics(AxState(s): AxState<AppState>) -> impl IntoResponse {
    let st = s.chain.state();
    let gauges = [
        (
            "vouch_block_height",
            "height of the last finalized block",
            st.height as f64,
        ),
        (
            "vouch_mempool_transactions",
            "transactions waiting",
            s.chain.mempool_len() as f64,
        ),
        (
            "vouch_open_jobs",
            "jobs escrowed and not yet settled",
            st.jobs.len() as f64,
        ),
        (
            "vouch_supply_burned",
            "base units burned by slashing",
            st.supply.burned as f64,
        ),
    ];
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(&gauges),
    )
}
