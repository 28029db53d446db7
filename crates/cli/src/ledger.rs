//! Ledger commands: `up`, `wallet`, `tx`, `block`, and inference through a node.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vouch_crypto::SigningKey;
use vouch_inference::chat::Message;
use vouch_inference::models;
use vouch_inference::ChatModel;
use vouch_node::{DevKeys, NodeConfig, SoloEngine};
use vouch_state::Genesis;
use vouch_types::tx::{Action, Tx};
use vouch_types::{Hash32, Receipt};

use crate::client::Client;

/// `vouch up` settings. Each comes from, in order: its flag, its `VOUCH_*` environment
/// variable, the TOML file given by `--config` (keys named like the flags, with `_`),
/// and the default.
#[derive(Args, Debug, Default)]
pub struct UpArgs {
    /// TOML file with any of: listen, block_interval_ms, genesis, data, no_provider,
    /// no_audit, queue_depth, log_format, log, max_connections, header_timeout_ms,
    /// idle_timeout_ms. Relative paths are taken from the file's
    /// directory. Flags and environment variables override it.
    #[arg(long, env = "VOUCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "VOUCH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Block production interval in milliseconds; blocks are made only when there is
    /// work [default: 200].
    #[arg(long, env = "VOUCH_BLOCK_INTERVAL_MS")]
    pub block_interval_ms: Option<u64>,
    /// Genesis file (default: <data>/genesis.json, created for a dev network).
    #[arg(long, env = "VOUCH_GENESIS")]
    pub genesis: Option<PathBuf>,
    /// Node data directory (default: <home>/node).
    #[arg(long, env = "VOUCH_DATA")]
    pub data: Option<PathBuf>,
    /// Run the ledger only: no provider, no audits, no model loaded.
    #[arg(long, env = "VOUCH_NO_PROVIDER")]
    pub no_provider: bool,
    /// Serve jobs but do not audit them.
    #[arg(long, env = "VOUCH_NO_AUDIT")]
    pub no_audit: bool,
    /// How audits check generations: `spot` (spot checks over the committed trace,
    /// about 1% of the generation's cost) or `reexec` (re-run the whole answer)
    /// [default: spot].
    #[arg(long, env = "VOUCH_AUDIT_MODE")]
    pub audit_mode: Option<vouch_node::validator::AuditMode>,
    /// Jobs the provider keeps running or waiting; more get 429 with Retry-After
    /// [default: 16].
    #[arg(long, env = "VOUCH_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Log format on stderr: text or json (one JSON object per line) [default: text].
    #[arg(long, env = "VOUCH_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Follow the chain of the node at this URL: fetch its finalized blocks, check each
    /// certificate against the validator set of the genesis file (--genesis, required)
    /// and every root, and serve the same API read-only (no provider, no faucet, no
    /// blocks of its own; transactions are refused with the URL to send them to).
    #[arg(long, env = "VOUCH_FOLLOW")]
    pub follow: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Limits of the node's HTTP server (`vouch up` and `vouch node`).
#[derive(Args, Debug, Default, Clone)]
pub struct HttpArgs {
    /// HTTP connections held open at once; when all are taken, a new one replaces the
    /// longest-idle one, or waits if none is idle [default: 512].
    #[arg(long, env = "VOUCH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, ms [default: 10000].
    #[arg(long, env = "VOUCH_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// Time a connection may stay open with no request in flight and no bytes moving,
    /// ms; streaming responses are requests in flight [default: 60000].
    #[arg(long, env = "VOUCH_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The `--config` file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpFile {
    listen: Option<SocketAddr>,
    block_interval_ms: Option<u64>,
    genesis: Option<PathBuf>,
    data: Option<PathBuf>,
    no_provider: Option<bool>,
    no_audit: Option<bool>,
    queue_depth: Option<usize>,
    log_format: Option<LogFormat>,
    follow: Option<String>,
    /// Log filter (as `VOUCH_LOG`), e.g. "info" or "vouch_node=debug".
    log: Option<String>,
    max_connections: Option<usize>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
}

/// `vouch up` settings after merging flags, environment, file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct UpSettings {
    pub listen: SocketAddr,
    pub block_interval_ms: u64,
    pub genesis: Option<PathBuf>,
    pub data: PathBuf,
    pub no_provider: bool,
    pub no_audit: bool,
    pub audit_mode: vouch_node::validator::AuditMode,
    pub queue_depth: usize,
    pub log_format: LogFormat,
    pub log: String,
    pub follow: Option<String>,
    pub http: vouch_node::server::HttpLimits,
}

impl UpArgs {
    /// Merges the flags (and environment, which clap has already folded in) over the
    /// config file's text (`file`, read from `dir`) over the defaults.
    pub fn settle(self, home: &Path, file: Option<(&str, &Path)>) -> Result<UpSettings> {
        let f: UpFile = match file {
            Some((text, _)) => toml::from_str(text).context("config file")?,
            None => UpFile::default(),
        };
        let rel = |p: PathBuf| match file {
            Some((_, dir)) if p.is_relative() => dir.join(p),
            _ => p,
        };
        let data = self
            .data
            .or(f.data.map(rel))
            .unwrap_or_else(|| home.join("node"));
        let s = UpSettings {
            listen: self
                .listen
                .or(f.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            block_interval_ms: self
                .block_interval_ms
                .or(f.block_interval_ms)
                .unwrap_or(200),
            genesis: self.genesis.or(f.genesis.map(rel)),
            data,
            no_provider: self.no_provider || f.no_provider.unwrap_or(false),
            no_audit: self.no_audit || f.no_audit.unwrap_or(false),
            audit_mode: self.audit_mode.unwrap_or_default(),
            queue_depth: self
                .queue_depth
                .or(f.queue_depth)
                .unwrap_or(vouch_node::DEFAULT_QUEUE_DEPTH),
            log_format: self.log_format.or(f.log_format).unwrap_or(LogFormat::Text),
            follow: self.follow.or(f.follow),
            log: std::env::var("VOUCH_LOG")
                .ok()
                .or(f.log)
                .unwrap_or_else(|| "info".into()),
            http: {
                let d = vouch_node::server::HttpLimits::default();
                let ms = std::time::Duration::from_millis;
                vouch_node::server::HttpLimits {
                    max_connections: self
                        .http
                        .max_connections
                        .or(f.max_connections)
                        .unwrap_or(d.max_connections),
                    header_timeout: self
                        .http
                        .header_timeout_ms
                        .or(f.header_timeout_ms)
                        .map_or(d.header_timeout, ms),
                    idle_timeout: self
                        .http
                        .idle_timeout_ms
                        .or(f.idle_timeout_ms)
                        .map_or(d.idle_timeout, ms),
                }
            },
        };
        if s.http.max_connections == 0 || s.http.max_connections > 1_000_000 {
            bail!("max_connections must be between 1 and 1000000");
        }
        if s.http.header_timeout.is_zero() || s.http.idle_timeout.is_zero() {
            bail!("header_timeout_ms and idle_timeout_ms must be at least 1");
        }
        if s.block_interval_ms == 0 || s.block_interval_ms > 60_000 {
            bail!("block_interval_ms must be between 1 and 60000");
        }
        if s.queue_depth == 0 || s.queue_depth > 4096 {
            bail!("queue_depth must be between 1 and 4096");
        }
        Ok(s)
    }
}

fn init_logs(format: LogFormat, filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("log filter {filter:?}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
    Ok(())
}

pub fn up(home: &Path, a: UpArgs) -> Result<()> {
    let file = match &a.config {
        Some(p) => Some((
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
        )),
        None => None,
    };
    let a = a
        .settle(home, file.as_ref().map(|(t, d)| (t.as_str(), d.as_path())))
        .with_context(|| match file {
            Some(_) => "settings (flags, VOUCH_* environment, --config file)".to_string(),
            None => "settings (flags, VOUCH_* environment)".to_string(),
        })?;
    init_logs(a.log_format, &a.log)?;
    launch(home, a, None)
}

/// How a `vouch node` reaches the other validators.
#[derive(Debug, Clone)]
pub struct Net {
    pub listen: SocketAddr,
    pub peers: Vec<(Hash32, SocketAddr)>,
    pub provider: bool,
    pub leader_timeout_ms: u64,
    pub public_api: Option<String>,
    pub follow_models: bool,
}

/// Starts a node with settled settings: the single-validator engine, a follower, or
/// (with `net`) a validator of a multi-node network.
fn launch(home: &Path, a: UpSettings, net: Option<Net>) -> Result<()> {
    let data = a.data.clone();
    let keys = DevKeys::load_or_create(&data)?;
    let spec = &models::SMOLLM2_135M;
    let genesis_path = a
        .genesis
        .clone()
        .unwrap_or_else(|| data.join("genesis.json"));
    if a.follow.is_some() && !genesis_path.exists() {
        bail!(
            "a follower needs the network's genesis file (--genesis): it is what the \
             peer's blocks are checked against"
        );
    }
    let genesis = if genesis_path.exists() {
        let text = std::fs::read_to_string(&genesis_path)
            .with_context(|| format!("reading {}", genesis_path.display()))?;
        Genesis::from_json(&text).with_context(|| format!("{}", genesis_path.display()))?
    } else {
        let e = &models::MINILM_L6;
        let g = vouch_node::dev_genesis(
            &keys,
            &[
                (spec.id(), spec.name, spec.licence),
                (e.id(), e.name, e.licence),
            ],
            vouch_node::consensus::now_ms(),
        );
        std::fs::create_dir_all(&data)?;
        std::fs::write(&genesis_path, g.to_json())
            .with_context(|| format!("writing {}", genesis_path.display()))?;
        eprintln!("created dev genesis {}", genesis_path.display());
        g
    };
    let following = a.follow.is_some();
    if net.is_some() && !genesis_path.exists() {
        bail!("a network node needs the network's genesis file (--genesis)");
    }
    let serve = match &net {
        // A validator of a network serves jobs only with --provider, and only if its
        // provider key is registered in the genesis.
        Some(n) => {
            n.provider
                && genesis
                    .providers
                    .iter()
                    .any(|p| p.address == keys.provider.public())
        }
        None => !a.no_provider && !following,
    };
    if net.as_ref().is_some_and(|n| n.provider) && !serve {
        bail!(
            "--provider: this node's provider key {} is not a provider in the genesis file",
            keys.provider.public()
        );
    }
    let provider = if !serve {
        None
    } else {
        let mut progress = |_ev: models::FetchEvent| {};
        models::fetch(spec, home, &mut progress)?;
        let model = ChatModel::load(spec, home)?;
        Some((SigningKey::from_bytes(&keys.provider.to_bytes())?, model))
    };
    let embedder = if !serve {
        None
    } else {
        let mut progress = |_ev: models::FetchEvent| {};
        models::fetch(&models::MINILM_L6, home, &mut progress)?;
        Some(vouch_inference::Embedder::load(&models::MINILM_L6, home)?)
    };
    let audit = !a.no_audit && provider.is_some();
    let admin_token = admin_token(&data)?;
    let (port, jobs_io) = match &net {
        Some(_) => {
            let (p, io) = vouch_node::dispatch::channel();
            (Some(p), Some(io))
        }
        None => (None, None),
    };
    let cfg = NodeConfig {
        home: data.clone(),
        genesis: genesis.clone(),
        listen: a.listen,
        block_interval: Duration::from_millis(a.block_interval_ms),
        validator_key: SigningKey::from_bytes(&keys.validator.to_bytes())?,
        provider,
        embedder,
        audit,
        audit_mode: a.audit_mode,
        faucet: if following {
            None
        } else {
            Some(SigningKey::from_bytes(&keys.faucet.to_bytes())?)
        },
        admin_token: Some(admin_token),
        queue_depth: a.queue_depth,
        upstream: a.follow.clone(),
        net: port,
        models_home: Some(home.to_path_buf()),
        public_api: net.as_ref().and_then(|n| n.public_api.clone()),
        follow_models: net.as_ref().is_some_and(|n| n.follow_models),
        http: a.http,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let engine: Box<dyn vouch_node::Engine> = match (&a.follow, &net) {
            (Some(peer), _) => Box::new(vouch_node::FollowEngine {
                peer: peer.clone(),
                poll: Duration::from_millis(a.block_interval_ms.max(50)),
            }),
            (None, Some(n)) => Box::new(vouch_node::SimplexEngine {
                listen: n.listen,
                peers: n.peers.clone(),
                secret: keys.validator.to_bytes(),
                dir: data.join("consensus"),
                min_interval_ms: a.block_interval_ms,
                timing: vouch_bft::Timing {
                    leader_timeout: Duration::from_millis(n.leader_timeout_ms),
                    certification_timeout: Duration::from_millis(n.leader_timeout_ms * 2),
                    ..Default::default()
                },
                jobs: jobs_io,
            }),
            (None, None) => Box::new(SoloEngine {
                interval: Duration::from_millis(a.block_interval_ms),
            }),
        };
        let running = vouch_node::start(cfg, engine).await?;
        let st = running.chain.state();
        eprintln!(
            "vouch node up: chain {} ({}), height {}",
            st.chain.short(),
            genesis.chain_name,
            st.height
        );
        eprintln!("  api        http://{}", running.addr);
        match &a.follow {
            Some(peer) => eprintln!("  following  {peer} (read-only)"),
            None => eprintln!("  validator  {}", keys.validator.public()),
        }
        if let Some(n) = &net {
            eprintln!("  p2p        {} ({} peers)", n.listen, n.peers.len());
        }
        if serve {
            eprintln!(
                "  provider   {} serving {} ({})",
                keys.provider.public(),
                spec.name,
                spec.id().short()
            );
        }
        if !following {
            eprintln!("  faucet     {}", keys.faucet.public());
        }
        eprintln!("  data       {}", data.display());
        // Tests and scripts wait for this line on stdout.
        println!("listening on {}", running.addr);
        running.run_until_signal().await
    })
}

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

/// `vouch genesis`: a network's genesis from its nodes' keys.
#[derive(Args, Debug)]
pub struct GenesisArgs {
    /// A validator node's data directory (its keys are read, or created): repeat.
    #[arg(long = "validator", value_name = "DATA_DIR", required = true)]
    pub validators: Vec<PathBuf>,
    /// A provider node's data directory: repeat. Its provider key serves the catalogue
    /// models.
    #[arg(long = "provider", value_name = "DATA_DIR")]
    pub providers: Vec<PathBuf>,
    /// Chain name.
    #[arg(long, default_value = "vouch-net")]
    pub name: String,
    /// Where to write the genesis file.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of committed jobs audited, 0 to 1 [default: 0.25].
    #[arg(long)]
    pub audit_rate: Option<f64>,
    /// Time a job has to be answered before its escrow expires and is refunded (ms)
    /// [default: 120000].
    #[arg(long)]
    pub job_timeout_ms: Option<u64>,
    /// Time validators have to audit a committed job before it settles (ms)
    /// [default: 10000].
    #[arg(long)]
    pub challenge_window_ms: Option<u64>,
}

/// Builds a network genesis: every validator staked, every provider registered for the
/// catalogue models, the first validator node's faucet funded and its author key the
/// models' author.
pub fn genesis(a: GenesisArgs) -> Result<()> {
    let keys = a
        .validators
        .iter()
        .map(|d| DevKeys::load_or_create(d))
        .collect::<Result<Vec<_>>>()?;
    let providers = a
        .providers
        .iter()
        .map(|d| DevKeys::load_or_create(d))
        .collect::<Result<Vec<_>>>()?;
    let mut g = network_genesis(&keys, &providers, &a.name);
    if let Some(r) = a.audit_rate {
        if !(0.0..=1.0).contains(&r) {
            bail!("--audit-rate must be between 0 and 1, got {r}");
        }
        g.params.audit_rate_ppm = (r * 1e6).round() as u32;
    }
    if let Some(t) = a.job_timeout_ms {
        if t < 1_000 {
            bail!("--job-timeout-ms must be at least 1000");
        }
        g.params.job_timeout_ms = t;
    }
    if let Some(t) = a.challenge_window_ms {
        if t < 1_000 {
            bail!("--challenge-window-ms must be at least 1000");
        }
        g.params.challenge_window_ms = t;
    }
    g.state().map_err(|e| anyhow::anyhow!("genesis: {e}"))?;
    std::fs::write(&a.out, g.to_json()).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{}",
        json!({"genesis": a.out, "chain": g.chain_id(), "validators": g.validators.len(), "providers": g.providers.len()})
    );
    Ok(())
}

/// A network's genesis from its nodes' keys: every validator staked, every provider
/// registered for the catalogue models, the first validator node's faucet funded and its
/// author key the models' author.
pub fn network_genesis(keys: &[DevKeys], providers: &[DevKeys], name: &str) -> Genesis {
    let spec = &models::SMOLLM2_135M;
    let e = &models::MINILM_L6;
    let mut g = vouch_node::dev_genesis(
        &keys[0],
        &[
            (spec.id(), spec.name, spec.licence),
            (e.id(), e.name, e.licence),
        ],
        vouch_node::consensus::now_ms(),
    );
    g.chain_name = name.to_string();
    // dev_genesis made the first node validator and provider; list exactly the chosen ones.
    g.validators = keys.iter().map(|k| k.validator.public()).collect();
    let template = g.providers[0].clone();
    g.accounts.retain(|acc| {
        acc.address == keys[0].faucet.public() || acc.address == keys[0].author.public()
    });
    for k in keys {
        g.accounts.push(vouch_state::GenesisAccount {
            address: k.validator.public(),
            balance: 10 * vouch_node::UNIT,
            stake: 10_000 * vouch_node::UNIT,
        });
    }
    g.providers.clear();
    for p in providers {
        if !g
            .accounts
            .iter()
            .any(|acc| acc.address == p.provider.public())
        {
            g.accounts.push(vouch_state::GenesisAccount {
                address: p.provider.public(),
                balance: 10 * vouch_node::UNIT,
                stake: 10_000 * vouch_node::UNIT,
            });
        }
        g.providers.push(vouch_state::GenesisProvider {
            address: p.provider.public(),
            ..template.clone()
        });
    }
    g
}

/// The node's admin token (`<data>/admin.token`, 0600), created on first start.
fn admin_token(data: &Path) -> Result<String> {
    let path = data.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    let token = hex::encode(b);
    std::fs::create_dir_all(data)?;
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(token.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, &token)?;
    Ok(token)
}

// ------------------------------------------------------------------ API keys

#[derive(Subcommand, Debug)]
pub enum ApiKeyCmd {
    /// Create an API key bound to a new wallet held by the gateway (printed once).
    Create {
        /// A name for the key (an agent, an app).
        name: String,
        /// Spend limit per period in base units (0 = none).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Length of the spend-limit period in seconds.
        #[arg(long, default_value_t = 86_400)]
        period_secs: u64,
        /// Fund the new wallet from this machine's wallet with this amount.
        #[arg(long)]
        fund: Option<u64>,
    },
    /// List keys (names, wallets, balances, limits; never the keys).
    List,
    /// Revoke a key by its id.
    Revoke { id: Hash32 },
}

pub fn apikey(home: &Path, node: &str, data: Option<PathBuf>, cmd: ApiKeyCmd) -> Result<()> {
    let data = data.unwrap_or_else(|| home.join("node"));
    let token = std::fs::read_to_string(data.join("admin.token")).with_context(|| {
        format!(
            "no admin token in {} (is this the node's machine?)",
            data.display()
        )
    })?;
    let client = Client::new(node).with_token(token.trim());
    match cmd {
        ApiKeyCmd::Create {
            name,
            limit,
            period_secs,
            fund,
        } => {
            // Funds are checked before the key exists: a key is never created and
            // printed only for its funding to fail for want of money.
            let funding = match fund {
                Some(amount) => {
                    let key = load_wallet(home)?;
                    let plain = Client::new(node);
                    let status = plain.get("/v1/status")?;
                    let acct = plain.get(&format!("/v1/accounts/{}", key.public()))?;
                    let balance = acct["balance"].as_u64().unwrap_or(0);
                    let fee = status["params"]["min_tx_fee"].as_u64().unwrap_or(0);
                    let need = amount.saturating_add(fee);
                    if balance < need {
                        anyhow::bail!(
                            "cannot fund the key with {amount}: wallet {} holds {balance}, \
                             and funding needs {need} (amount + fee); no key was created",
                            key.public()
                        );
                    }
                    Some((amount, key, plain, status))
                }
                None => None,
            };
            let mut v = client.post(
                "/admin/keys",
                &json!({"name": name, "limit": limit, "period_secs": period_secs}),
            )?;
            let mut failed = None;
            if let Some((amount, key, plain, status)) = funding {
                let to: Hash32 = hash_field(&v["wallet"], "wallet")?;
                let r =
                    sign(&plain, &status, &key, Action::Transfer { to, amount }).and_then(|tx| {
                        plain.post(
                            "/v1/txs",
                            &json!({"tx": hex::encode(tx.encode()), "wait": true}),
                        )
                    });
                match r {
                    Ok(r) => {
                        v["funded"] =
                            json!({"amount": amount, "tx": r["id"], "result": r["result"]})
                    }
                    Err(e) => {
                        v["funded"] = json!({"amount": amount, "error": format!("{e:#}")});
                        failed = Some(e);
                    }
                }
            }
            // One JSON document on stdout, funding included.
            println!("{}", serde_json::to_string_pretty(&v)?);
            match failed {
                Some(e) => Err(e.context("the key was created (above) but not funded")),
                None => Ok(()),
            }
        }
        ApiKeyCmd::List => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.get("/admin/keys")?)?
            );
            Ok(())
        }
        ApiKeyCmd::Revoke { id } => {
            println!(
                "{}",
                client.post(&format!("/admin/keys/{id}/revoke"), &json!({}))?
            );
            Ok(())
        }
    }
}

// ------------------------------------------------------------------ wallet

#[derive(Subcommand, Debug)]
pub enum WalletCmd {
    /// Create a wallet key (and ask a dev node's faucet for funds).
    New {
        /// Replace an existing wallet key (its funds become unreachable).
        #[arg(long)]
        force: bool,
    },
    /// Print the wallet's address.
    Address,
    /// Balance, stake and nonce of the wallet (or any address).
    Balance { address: Option<Hash32> },
    /// Ask the node's dev faucet for funds.
    Faucet {
        #[arg(long)]
        amount: Option<u64>,
    },
    /// Send funds to another address.
    Send { to: Hash32, amount: u64 },
    /// Bond part of the balance as stake (what annotation votes and provider registration
    /// weigh).
    Stake { amount: u64 },
    /// Start unbonding stake; it returns to the balance after the unbonding period.
    Unbond { amount: u64 },
}

pub fn wallet_path(home: &Path) -> PathBuf {
    home.join("keys").join("wallet.key")
}

pub fn load_wallet(home: &Path) -> Result<SigningKey> {
    vouch_node::keys::load(&wallet_path(home))?.with_context(|| {
        format!(
            "no wallet at {}; create one with `vouch wallet new`",
            wallet_path(home).display()
        )
    })
}

pub fn wallet(home: &Path, node: &str, cmd: WalletCmd, json_out: bool) -> Result<()> {
    let client = Client::new(node);
    match cmd {
        WalletCmd::New { force } => {
            let path = wallet_path(home);
            if path.exists() {
                if !force {
                    bail!(
                        "a wallet already exists at {} (use --force to replace it)",
                        path.display()
                    );
                }
                std::fs::remove_file(&path)?;
            }
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            vouch_node::keys::create(&path, &key)?;
            if !json_out {
                println!("{}", key.public());
            }
            eprintln!("wallet key written to {}", path.display());
            let faucet = client.post("/v1/faucet", &json!({"address": key.public()}));
            match &faucet {
                Ok(v) => eprintln!(
                    "faucet sent {} (tx {})",
                    v["amount"],
                    v["id"].as_str().unwrap_or("")
                ),
                Err(e) => eprintln!("no faucet funds: {e:#}"),
            }
            if json_out {
                let faucet = match faucet {
                    Ok(v) => v,
                    Err(e) => json!({"error": format!("{e:#}")}),
                };
                println!(
                    "{}",
                    json!({"address": key.public(), "key_file": path, "faucet": faucet})
                );
            }
            Ok(())
        }
        WalletCmd::Address => {
            let a = load_wallet(home)?.public();
            if json_out {
                println!("{}", json!({"address": a}));
            } else {
                println!("{a}");
            }
            Ok(())
        }
        WalletCmd::Balance { address } => {
            let addr = match address {
                Some(a) => a,
                None => load_wallet(home)?.public(),
            };
            let v = client.get(&format!("/v1/accounts/{addr}"))?;
            if json_out {
                println!("{v}");
            } else {
                println!(
                    "address {addr}\nbalance {}\nstake   {}\nnonce   {}\nheight  {}",
                    v["balance"], v["stake"], v["nonce"], v["height"]
                );
            }
            Ok(())
        }
        WalletCmd::Faucet { amount } => {
            let key = load_wallet(home)?;
            let v = client.post(
                "/v1/faucet",
                &json!({"address": key.public(), "amount": amount}),
            )?;
            println!("{v}");
            Ok(())
        }
        WalletCmd::Send { to, amount } => {
            submit_one(home, &client, Action::Transfer { to, amount }, "transfer")
        }
        WalletCmd::Stake { amount } => submit_one(home, &client, Action::Stake { amount }, "stake"),
        WalletCmd::Unbond { amount } => {
            submit_one(home, &client, Action::Unbond { amount }, "unbond")
        }
    }
}

/// Signs `action` from the wallet, submits it, waits for its block, prints the result.
fn submit_one(home: &Path, client: &Client, action: Action, what: &str) -> Result<()> {
    let key = load_wallet(home)?;
    let status = client.get("/v1/status")?;
    let tx = sign(client, &status, &key, action)?;
    let v = client.post(
        "/v1/txs",
        &json!({"tx": hex::encode(tx.encode()), "wait": true}),
    )?;
    println!("{v}");
    if v["result"]["status"] != "committed" {
        bail!("{what} not committed: {}", v["result"]);
    }
    Ok(())
}

fn hash_field(v: &Value, what: &str) -> Result<Hash32> {
    v.as_str()
        .with_context(|| format!("node status lacks {what}"))?
        .parse()
        .with_context(|| format!("node status: bad {what}"))
}

/// Signs `action` from `key` with its next nonce and the chain's minimum fee.
fn sign(client: &Client, status: &Value, key: &SigningKey, action: Action) -> Result<Tx> {
    let chain = hash_field(&status["chain"], "chain")?;
    let fee = status["params"]["min_tx_fee"]
        .as_u64()
        .context("node status lacks min_tx_fee")?;
    let acct = client.get(&format!("/v1/accounts/{}", key.public()))?;
    let nonce = acct["nonce"].as_u64().context("account lacks nonce")?;
    Ok(vouch_state::sign_tx(key, &chain, nonce, fee, action))
}

// ------------------------------------------------------------------ tx, block

#[derive(Subcommand, Debug)]
pub enum TxCmd {
    /// Whether a transaction is pending, committed (where) or rejected (why).
    Status { id: Hash32 },
}

#[derive(Subcommand, Debug)]
pub enum BlockCmd {
    /// Header, certificate, transactions and events of a block (`latest` for the head).
    Show { height: String },
}

pub fn tx(node: &str, cmd: TxCmd) -> Result<()> {
    let TxCmd::Status { id } = cmd;
    let v = Client::new(node).get(&format!("/v1/txs/{id}"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub fn block(node: &str, cmd: BlockCmd) -> Result<()> {
    let BlockCmd::Show { height } = cmd;
    let v = Client::new(node).get(&format!("/v1/blocks/{height}"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

// ------------------------------------------------------------------ infer through a node

pub struct NodeInfer<'a> {
    pub model: &'a str,
    pub messages: Option<Vec<Message>>,
    pub raw: Option<String>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub max_tokens: u32,
}

/// Escrows the fee for a job from the wallet, has the node's provider run it, and returns
/// the receipt with its inclusion proof.
pub fn infer_via_node(home: &Path, node: &str, req: NodeInfer<'_>) -> Result<Receipt> {
    let client = Client::new(node);
    let key = load_wallet(home)?;
    let spec = models::find(req.model)?;
    let model_id = spec.id();
    let status = client.get("/v1/status")?;
    let providers = status["providers"].as_array().cloned().unwrap_or_default();
    let chosen = providers
        .iter()
        .filter(|p| {
            p["models"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x.as_str() == Some(&model_id.to_hex())))
        })
        .min_by_key(|p| p["price_per_token"].as_u64().unwrap_or(u64::MAX))
        .with_context(|| {
            format!(
                "no provider on this network serves {} ({model_id})",
                spec.name
            )
        })?;
    let provider: Hash32 = hash_field(&chosen["address"], "provider address")?;
    let price = chosen["price_per_token"].as_u64().unwrap_or(0);
    let (kind_prompt, prompt) = vouch_node::provider::render(
        req.messages.as_deref(),
        req.raw.as_deref(),
        spec.chat_system_default,
    )
    .map_err(anyhow::Error::msg)?;
    let input_hash = Receipt::hash_input(kind_prompt, &prompt);
    // Upper bound: every token of the context window at the provider's price. The charge
    // is price × tokens actually used; the rest of the escrow comes back at settlement.
    let context_tokens = 8192u64;
    let max_fee = price.saturating_mul(context_tokens + u64::from(req.max_tokens));
    let tx = sign(
        &client,
        &status,
        &key,
        Action::SubmitJob {
            model: model_id,
            provider,
            input_hash,
            max_tokens: req.max_tokens,
            max_fee,
        },
    )?;
    let job = tx.id(&hash_field(&status["chain"], "chain")?);
    let body = json!({
        "tx": hex::encode(tx.encode()),
        "messages": req.messages,
        "prompt": req.raw,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "max_tokens": req.max_tokens,
    });
    let v = client
        .post("/v1/jobs", &body)
        .with_context(|| format!("job {}", job.short()))?;
    let r: Receipt =
        serde_json::from_value(v).context("node returned something that is not a receipt")?;
    Ok(r)
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn args(v: &[&str]) -> UpArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            up: UpArgs,
        }
        <P as clap::Parser>::try_parse_from(std::iter::once("up").chain(v.iter().copied()))
            .unwrap()
            .up
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = "listen = \"127.0.0.1:9000\"\nblock_interval_ms = 50\nqueue_depth = 4\n\
                    data = \"n0\"\nlog_format = \"json\"\nno_audit = true\n";
        let dir = Path::new("/etc/vouch");
        let s = args(&["--block-interval-ms", "75"])
            .settle(Path::new("/h"), Some((file, dir)))
            .unwrap();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.block_interval_ms, 75, "the flag wins over the file");
        assert_eq!(s.queue_depth, 4);
        assert_eq!(s.data, Path::new("/etc/vouch/n0"), "relative to the file");
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(s.no_audit && !s.no_provider);

        let d = args(&[]).settle(Path::new("/h"), None).unwrap();
        assert_eq!(d.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(d.block_interval_ms, 200);
        assert_eq!(d.data, Path::new("/h/node"));
        assert_eq!(d.queue_depth, vouch_node::DEFAULT_QUEUE_DEPTH);
        assert_eq!(d.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_files_and_values_are_refused_with_the_reason() {
        let e = args(&[])
            .settle(Path::new("/h"), Some(("listne = \"x\"", Path::new("/"))))
            .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `listne`"), "{e:#}");
        let e = args(&[])
            .settle(Path::new("/h"), Some(("queue_depth = -1", Path::new("/"))))
            .unwrap_err();
        assert!(format!("{e:#}").contains("queue_depth"), "{e:#}");
        let e = args(&["--queue-depth", "0"])
            .settle(Path::new("/h"), None)
            .unwrap_err();
        assert!(e.to_string().contains("queue_depth must be"), "{e}");
        let e = args(&[])
            .settle(
                Path::new("/h"),
                Some(("block_interval_ms = 0", Path::new("/"))),
            )
            .unwrap_err();
        assert!(e.to_string().contains("block_interval_ms"), "{e}");
    }
}
