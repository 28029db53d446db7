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

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Block production interval in milliseconds (blocks are made only when there is work).
    #[arg(long, default_value_t = 200)]
    pub block_interval_ms: u64,
    /// Genesis file (default: <home>/node/genesis.json, created for a dev network).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Node data directory (default: <home>/node).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run the ledger only: no provider, no audits, no model loaded.
    #[arg(long)]
    pub no_provider: bool,
    /// Serve jobs but do not audit them.
    #[arg(long)]
    pub no_audit: bool,
}

pub fn up(home: &Path, a: UpArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOUCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let data = a.data.clone().unwrap_or_else(|| home.join("node"));
    let keys = DevKeys::load_or_create(&data)?;
    let spec = &models::SMOLLM2_135M;
    let genesis_path = a
        .genesis
        .clone()
        .unwrap_or_else(|| data.join("genesis.json"));
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
    let provider = if a.no_provider {
        None
    } else {
        let mut progress = |_ev: models::FetchEvent| {};
        models::fetch(spec, home, &mut progress)?;
        let model = ChatModel::load(spec, home)?;
        Some((SigningKey::from_bytes(&keys.provider.to_bytes())?, model))
    };
    let embedder = if a.no_provider {
        None
    } else {
        let mut progress = |_ev: models::FetchEvent| {};
        models::fetch(&models::MINILM_L6, home, &mut progress)?;
        Some(vouch_inference::Embedder::load(&models::MINILM_L6, home)?)
    };
    let audit = !a.no_audit && provider.is_some();
    let admin_token = admin_token(&data)?;
    let cfg = NodeConfig {
        home: data.clone(),
        genesis: genesis.clone(),
        listen: a.listen,
        block_interval: Duration::from_millis(a.block_interval_ms),
        validator_key: SigningKey::from_bytes(&keys.validator.to_bytes())?,
        provider,
        embedder,
        audit,
        faucet: Some(SigningKey::from_bytes(&keys.faucet.to_bytes())?),
        admin_token: Some(admin_token),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = vouch_node::start(
            cfg,
            Box::new(SoloEngine {
                interval: Duration::from_millis(a.block_interval_ms),
            }),
        )
        .await?;
        let st = running.chain.state();
        eprintln!(
            "vouch node up: chain {} ({}), height {}",
            st.chain.short(),
            genesis.chain_name,
            st.height
        );
        eprintln!("  api        http://{}", running.addr);
        eprintln!("  validator  {}", keys.validator.public());
        if !a.no_provider {
            eprintln!(
                "  provider   {} serving {} ({})",
                keys.provider.public(),
                spec.name,
                spec.id().short()
            );
        }
        eprintln!("  faucet     {}", keys.faucet.public());
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
            let v = client.post(
                "/admin/keys",
                &json!({"name": name, "limit": limit, "period_secs": period_secs}),
            )?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if let Some(amount) = fund {
                let to: Hash32 = hash_field(&v["wallet"], "wallet")?;
                let key = load_wallet(home)?;
                let plain = Client::new(node);
                let status = plain.get("/v1/status")?;
                let tx = sign(&plain, &status, &key, Action::Transfer { to, amount })?;
                let r = plain.post(
                    "/v1/txs",
                    &json!({"tx": hex::encode(tx.encode()), "wait": true}),
                )?;
                eprintln!("funded {to} with {amount}: {}", r["result"]);
            }
            Ok(())
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
            println!("{}", key.public());
            eprintln!("wallet key written to {}", path.display());
            match client.post("/v1/faucet", &json!({"address": key.public()})) {
                Ok(v) => eprintln!(
                    "faucet sent {} (tx {})",
                    v["amount"],
                    v["id"].as_str().unwrap_or("")
                ),
                Err(e) => eprintln!("no faucet funds: {e:#}"),
            }
            Ok(())
        }
        WalletCmd::Address => {
            println!("{}", load_wallet(home)?.public());
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
            let key = load_wallet(home)?;
            let status = client.get("/v1/status")?;
            let tx = sign(&client, &status, &key, Action::Transfer { to, amount })?;
            let v = client.post(
                "/v1/txs",
                &json!({"tx": hex::encode(tx.encode()), "wait": true}),
            )?;
            println!("{v}");
            if v["result"]["status"] != "committed" {
                bail!("transfer not committed: {}", v["result"]);
            }
            Ok(())
        }
    }
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
