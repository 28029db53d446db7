//! Prometheus metrics (typed families of `prometheus-client`), served by the HTTP crate at
//! `/metrics` as OpenMetrics text.
//!
//! Every metric is a typed family with a fixed label set, and every label value comes
//! from a bounded set: routes are the router's own patterns (or `unmatched`), statuses are
//! HTTP status codes, kinds and audit modes are enums, and MCP tool names are the server's
//! own tools (`unknown` for anything else). The library escapes label values, so nothing
//! a caller sends can add lines or series to the exposition.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency histogram buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditRunLabels {
    mode: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolCall {
    tool: &'static str,
    ok: bool,
}

type Latency = Family<Route, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The node's metrics registry.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteStatus, Counter>,
    latency: Latency,
    blocks: Counter,
    transactions: Counter,
    jobs_submitted: Counter,
    jobs_committed: Counter,
    jobs_settled: Counter,
    jobs_expired: Counter,
    audits: Family<AuditResult, Counter>,
    audit_runs: Family<AuditRunLabels, Counter>,
    slashes: Counter,
    slashed_amount: Counter,
    prompt_tokens: Family<Kind, Counter>,
    generated_tokens: Family<Kind, Counter>,
    mcp_calls: Family<ToolCall, Counter>,
    http_connections: Gauge,
    http_connections_evicted: Counter,
    block_height: Gauge,
    mempool: Gauge,
    open_jobs: Gauge,
    burned: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            http_requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            blocks: Counter::default(),
            transactions: Counter::default(),
            jobs_submitted: Counter::default(),
            jobs_committed: Counter::default(),
            jobs_settled: Counter::default(),
            jobs_expired: Counter::default(),
            audits: Family::default(),
            audit_runs: Family::default(),
            slashes: Counter::default(),
            slashed_amount: Counter::default(),
            prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            mcp_calls: Family::default(),
            http_connections: Gauge::default(),
            http_connections_evicted: Counter::default(),
            block_height: Gauge::default(),
            mempool: Gauge::default(),
            open_jobs: Gauge::default(),
            burned: Gauge::default(),
            registry: Registry::default(),
        };
        // Counter names are registered without `_total`: the encoder appends it.
        r.register(
            "vouch_http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        r.register(
            "vouch_http_request_duration_seconds",
            "HTTP request latency by route",
            m.latency.clone(),
        );
        r.register("vouch_blocks", "blocks finalized", m.blocks.clone());
        r.register(
            "vouch_transactions",
            "transactions in finalized blocks",
            m.transactions.clone(),
        );
        r.register(
            "vouch_jobs_submitted",
            "jobs escrowed",
            m.jobs_submitted.clone(),
        );
        r.register(
            "vouch_jobs_committed",
            "job results committed",
            m.jobs_committed.clone(),
        );
        r.register("vouch_jobs_settled", "jobs settled", m.jobs_settled.clone());
        r.register("vouch_jobs_expired", "jobs expired", m.jobs_expired.clone());
        r.register(
            "vouch_audits",
            "audit verdicts on the ledger",
            m.audits.clone(),
        );
        r.register(
            "vouch_audit_runs",
            "audits this node ran, by mode and outcome (cannot_audit: nothing posted)",
            m.audit_runs.clone(),
        );
        r.register("vouch_slashes", "slashes", m.slashes.clone());
        r.register(
            "vouch_slashed_amount",
            "base units slashed",
            m.slashed_amount.clone(),
        );
        r.register(
            "vouch_prompt_tokens",
            "prompt tokens served by this node's provider",
            m.prompt_tokens.clone(),
        );
        r.register(
            "vouch_generated_tokens",
            "tokens generated by this node's provider",
            m.generated_tokens.clone(),
        );
        r.register(
            "vouch_mcp_calls",
            "MCP tool calls by tool (unknown: not one of the server's tools)",
            m.mcp_calls.clone(),
        );
        r.register(
            "vouch_http_connections",
            "open HTTP connections",
            m.http_connections.clone(),
        );
        r.register(
            "vouch_http_connections_evicted",
            "idle HTTP connections closed to make room at the connection limit",
            m.http_connections_evicted.clone(),
        );
        r.register(
            "vouch_block_height",
            "height of the last finalized block",
            m.block_height.clone(),
        );
        r.register(
            "vouch_mempool_transactions",
            "transactions waiting",
            m.mempool.clone(),
        );
        r.register(
            "vouch_open_jobs",
            "jobs escrowed and not yet settled",
            m.open_jobs.clone(),
        );
        r.register(
            "vouch_supply_burned",
            "base units burned by slashing",
            m.burned.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// One HTTP request: `route` is the router's pattern (a bounded set).
    pub fn http_request(&self, route: &str, status: u16, secs: f64) {
        self.http_requests
            .get_or_create(&RouteStatus {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(secs);
    }

    /// A finalized block with `txs` transactions.
    pub fn block(&self, txs: u64) {
        self.blocks.inc();
        self.transactions.inc_by(txs);
    }

    /// Tokens a provider processed for one receipt of `kind`.
    pub fn tokens(&self, kind: &'static str, prompt: u64, generated: u64) {
        self.prompt_tokens
            .get_or_create(&Kind { kind })
            .inc_by(prompt);
        self.generated_tokens
            .get_or_create(&Kind { kind })
            .inc_by(generated);
    }

    /// An audit this node ran: `mode` spot/reexec/fallback, `result` pass/fail/cannot_audit.
    pub fn audit_run(&self, mode: &'static str, result: &'static str) {
        self.audit_runs
            .get_or_create(&AuditRunLabels { mode, result })
            .inc();
    }

    /// An MCP tool call; `tool` must be one of the server's tool names or `unknown`.
    pub fn mcp_call(&self, tool: &'static str, ok: bool) {
        self.mcp_calls.get_or_create(&ToolCall { tool, ok }).inc();
    }

    /// The server's open-connection count changed by `delta`.
    pub fn http_connections(&self, delta: i64) {
        self.http_connections.inc_by(delta);
    }

    /// An idle connection was closed to make room for a new one.
    pub fn http_connection_evicted(&self) {
        self.http_connections_evicted.inc();
    }

    /// Counts what a finalized block did (audits, slashes, settlements).
    pub fn record_events(&self, events: &[vouch_state::Event]) {
        use vouch_state::Event;
        for e in events {
            match e {
                Event::JobSubmitted { .. } => {
                    self.jobs_submitted.inc();
                }
                Event::JobCommitted { .. } => {
                    self.jobs_committed.inc();
                }
                Event::JobAudited { pass, .. } => {
                    let result = if *pass { "pass" } else { "fail" };
                    self.audits.get_or_create(&AuditResult { result }).inc();
                }
                Event::JobSettled { .. } => {
                    self.jobs_settled.inc();
                }
                Event::JobExpired { .. } => {
                    self.jobs_expired.inc();
                }
                Event::Slashed { amount, .. } => {
                    self.slashes.inc();
                    self.slashed_amount.inc_by(*amount);
                }
                _ => {}
            }
        }
    }

    /// The exposition, with the gauges read from the ledger now.
    pub fn render(&self, height: u64, mempool: usize, open_jobs: usize, burned: u64) -> String {
        self.block_height
            .set(i64::try_from(height).unwrap_or(i64::MAX));
        self.mempool.set(i64::try_from(mempool).unwrap_or(i64::MAX));
        self.open_jobs
            .set(i64::try_from(open_jobs).unwrap_or(i64::MAX));
        self.burned.set(burned);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
