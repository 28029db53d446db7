//! `vouch up`: the whole network on this machine (ledger, validator, provider, API), its
//! settings (flags, `VOUCH_*` environment, `--config` file), and the node start shared
//! with `vouch node`.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vouch_crypto::SigningKey;
use vouch_http::NodeConfig;
use vouch_inference::models;
use vouch_inference::ChatModel;
use vouch_node::{DevKeys, SoloEngine};
use vouch_state::Genesis;
use vouch_types::Hash32;

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
    /// A browser origin allowed to call the API (CORS), e.g. https://app.example.com;
    /// repeat for more; `*` for any, `none` for none [default: localhost pages, any port].
    #[arg(
        long = "cors-origin",
        env = "VOUCH_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
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
    cors_origins: Option<Vec<String>>,
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
    pub http: vouch_http::server::HttpLimits,
    pub cors: vouch_http::api::CorsOrigins,
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
                .unwrap_or(vouch_http::DEFAULT_QUEUE_DEPTH),
            log_format: self.log_format.or(f.log_format).unwrap_or(LogFormat::Text),
            follow: self.follow.or(f.follow),
            log: std::env::var("VOUCH_LOG")
                .ok()
                .or(f.log)
                .unwrap_or_else(|| "info".into()),
            http: {
                let d = vouch_http::server::HttpLimits::default();
                let ms = std::time::Duration::from_millis;
                vouch_http::server::HttpLimits {
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
            cors: {
                let given = if self.http.cors_origins.is_empty() {
                    f.cors_origins.unwrap_or_default()
                } else {
                    self.http.cors_origins.clone()
                };
                vouch_http::api::CorsOrigins::parse(&given).map_err(anyhow::Error::msg)?
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

pub fn init_logs(format: LogFormat, filter: &str) -> Result<()> {
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
pub fn launch(home: &Path, a: UpSettings, net: Option<Net>) -> Result<()> {
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
            vouch_node::clock::now_ms(),
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
            let (p, io) = vouch_net::dispatch::channel();
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
        cors: a.cors.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let engine: Box<dyn vouch_node::Engine> = match (&a.follow, &net) {
            (Some(peer), _) => Box::new(vouch_net::FollowEngine {
                peer: peer.clone(),
                poll: Duration::from_millis(a.block_interval_ms.max(50)),
            }),
            (None, Some(n)) => Box::new(vouch_net::SimplexEngine {
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
        let running = vouch_http::start(cfg, engine).await?;
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
        assert_eq!(d.queue_depth, vouch_http::DEFAULT_QUEUE_DEPTH);
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
