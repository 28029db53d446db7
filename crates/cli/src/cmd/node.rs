//! `vouch node`: one validator of a multi-node network (BFT consensus with its peers).

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vouch_node::DevKeys;
use vouch_types::Hash32;

use super::up::{init_logs, launch, HttpArgs, LogFormat, Net, UpArgs};

/// `vouch node`: one validator of a multi-node network.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The network's genesis file (validators, providers, accounts); the same on every node.
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Address for peer (validator-to-validator) connections, e.g. 127.0.0.1:7000.
    #[arg(long, required_unless_present = "show_id")]
    pub listen: Option<SocketAddr>,
    /// Another validator: <validator address>@<host:port> (repeat for each; see
    /// `vouch node --show-id`).
    #[arg(long = "peer", value_name = "ID@ADDR")]
    pub peers: Vec<String>,
    /// Address of this node's HTTP API and gateway [default: 127.0.0.1:8080].
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Serve jobs with the models (this node's provider key must be in the genesis).
    #[arg(long)]
    pub provider: bool,
    /// Take part in consensus. Every `vouch node` is a validator (its key must be in the
    /// genesis); a node that only reads the chain is `vouch up --follow URL`.
    #[arg(long, default_value_t = true)]
    pub validator: bool,
    /// Serve jobs but do not audit them.
    #[arg(long)]
    pub no_audit: bool,
    /// How audits check generations: spot or reexec [default: spot].
    #[arg(long)]
    pub audit_mode: Option<vouch_node::validator::AuditMode>,
    /// Least time between blocks in milliseconds [default: 100].
    #[arg(long)]
    pub block_interval_ms: Option<u64>,
    /// How long validators wait for a leader's block before moving on [default: 1000].
    #[arg(long, default_value_t = 1000)]
    pub leader_timeout_ms: u64,
    /// Provider queue depth [default: 16].
    #[arg(long)]
    pub queue_depth: Option<usize>,
    /// Node data directory (default: <home>/node).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Log format on stderr: text or json.
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// The URL other nodes reach this node's API at, announced to peers for model
    /// transfers [default: http://<--api> unless it is an unspecified address].
    #[arg(long)]
    pub public_api: Option<String>,
    /// Pull every newly published model version that descends from a model this node
    /// holds, from the peers that have it (opt-in propagation of new versions).
    #[arg(long)]
    pub follow_models: bool,
    /// Print this node's keys (validator = its id for --peer, provider, faucet, author)
    /// as JSON, creating them if needed, and exit.
    #[arg(long)]
    pub show_id: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub fn node(home: &Path, a: NodeArgs) -> Result<()> {
    let data = a.data.clone().unwrap_or_else(|| home.join("node"));
    if a.show_id {
        let keys = DevKeys::load_or_create(&data)?;
        println!(
            "{}",
            json!({
                "validator": keys.validator.public(),
                "provider": keys.provider.public(),
                "faucet": keys.faucet.public(),
                "author": keys.author.public(),
            })
        );
        return Ok(());
    }
    let Some(genesis) = a.genesis.clone() else {
        bail!("--genesis is required (create one with `vouch genesis`)");
    };
    let peers = a
        .peers
        .iter()
        .map(|p| {
            let (id, addr) = p
                .split_once('@')
                .with_context(|| format!("--peer {p}: expected <validator address>@<host:port>"))?;
            let id: Hash32 = id
                .parse()
                .map_err(|e| anyhow::anyhow!("--peer {p}: address: {e}"))?;
            let addr = addr
                .parse()
                .with_context(|| format!("--peer {p}: host:port"))?;
            Ok((id, addr))
        })
        .collect::<Result<Vec<_>>>()?;
    let up = UpArgs {
        listen: a.api,
        block_interval_ms: Some(a.block_interval_ms.unwrap_or(100)),
        genesis: Some(genesis),
        data: Some(data),
        no_provider: !a.provider,
        no_audit: a.no_audit,
        audit_mode: a.audit_mode,
        queue_depth: a.queue_depth,
        log_format: a.log_format,
        http: a.http.clone(),
        ..Default::default()
    };
    let s = up.settle(home, None)?;
    init_logs(s.log_format, &s.log)?;
    launch(
        home,
        s,
        Some(Net {
            listen: a.listen.context("--listen is required")?,
            peers,
            provider: a.provider,
            leader_timeout_ms: a.leader_timeout_ms.max(100),
            public_api: a.public_api.clone(),
            follow_models: a.follow_models,
        }),
    )
}
