//! Vouch HTTP API, and the node process that serves it.
//!
//! - [`api`]: the router: every route and the middleware around it.
//! - [`state`]: what every handler shares ([`state::AppState`]).
//! - [`error`]: the one place where refusals become HTTP statuses (OpenAI error bodies).
//! - [`gateway`]: the OpenAI-compatible gateway (API keys, budgets, chat, completions,
//!   embeddings, wallets), called by the handlers and by MCP alike.
//! - [`mcp`]: the MCP server (streamable HTTP).
//! - [`explorer`]: the explorer's views and the shared receipt verdict.
//! - [`provenance`]: lineage and data provenance views.
//! - [`blobs`]: serving model files to peers.
//! - [`observe`]: request metrics and `/metrics`.
//! - [`server`]: the accept loop (connection limit, header and idle timeouts).
//! - [`node`]: starting and stopping a whole node (ledger, engine, roles, p2p, HTTP).

pub mod api;
pub mod blobs;
pub mod error;
pub mod explorer;
pub mod gateway;
pub mod mcp;
pub mod node;
pub mod observe;
pub mod provenance;
pub mod responses;
pub mod server;
pub mod state;
pub mod tools;

pub use node::{start, NodeConfig, Running, DEFAULT_QUEUE_DEPTH};
