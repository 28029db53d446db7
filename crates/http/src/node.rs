//! The node process: opens the ledger, starts the consensus engine, the provider and
//! validator roles, the p2p job dispatch and the HTTP server, and stops them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use vouch_crypto::SigningKey;
use vouch_inference::ChatModel;
use vouch_net::{blob_store, dispatch, model_follow};
use vouch_node::{keystore, provider, validator, Chain, Engine};
use vouch_state::Genesis;
use vouch_storage::Store;

use crate::{api, gateway, server};

/// Everything a node process runs.
pub struct NodeConfig {
    pub home: PathBuf,
    pub genesis: Genesis,
    pub listen: SocketAddr,
    pub block_interval: Duration,
    pub validator_key: SigningKey,
    /// Provider key and model, if this node serves jobs.
    pub provider: Option<(SigningKey, ChatModel)>,
    /// Embedding model served by the provider.
    pub embedder: Option<vouch_inference::Embedder>,
    /// Audit selected jobs (needs the model: the provider's, shared).
    pub audit: bool,
    /// How audits check generation receipts.
    pub audit_mode: validator::AuditMode,
    pub faucet: Option<SigningKey>,
    /// Enables `/admin/keys` with this bearer token.
    pub admin_token: Option<String>,
    /// Jobs a provider keeps running or waiting; beyond this, requests get 429.
    pub queue_depth: usize,
    /// Follow this node's chain (see [`consensus::FollowEngine`]): take no transactions.
    pub upstream: Option<String>,
    /// The node's end of the p2p job channel (multi-node networks): jobs go to other
    /// nodes' providers and audits fetch their receipts.
    pub net: Option<dispatch::NetPort>,
    /// The Vouch home whose model files this node serves to peers (`models/`, `blobs/`).
    pub models_home: Option<PathBuf>,
    /// The API address peers reach this node at [default: `http://<listen>` unless it
    /// listens on an unspecified address].
    pub public_api: Option<String>,
    /// Pull new model versions descending from the models this node holds.
    pub follow_models: bool,
    /// Connection limit and timeouts of the HTTP server.
    pub http: server::HttpLimits,
    /// Browser origins allowed to call the API.
    pub cors: api::CorsOrigins,
}

/// Default provider queue depth.
pub const DEFAULT_QUEUE_DEPTH: usize = 16;

/// A running node.
pub struct Running {
    pub chain: Arc<Chain>,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

impl Running {
    /// Stops the engine and the server, and writes a state snapshot.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            match t.await {
                Ok(r) => r?,
                Err(e) => anyhow::bail!("task failed: {e}"),
            }
        }
        self.chain.snapshot().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// Runs until Ctrl-C / SIGTERM, or until the engine stops on an error.
    pub async fn run_until_signal(mut self) -> Result<()> {
        let engine = self.tasks.remove(0);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = engine => {
                let r = r.map_err(|e| anyhow::anyhow!("engine panicked: {e}")).and_then(|r| r);
                let _ = self.shutdown.send(true);
                r?;
                anyhow::bail!("consensus engine stopped")
            }
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        self.stop().await
    }
}

/// Opens the ledger and starts the engine, roles and HTTP server.
pub async fn start(cfg: NodeConfig, engine: Box<dyn Engine>) -> Result<Running> {
    std::fs::create_dir_all(&cfg.home)
        .with_context(|| format!("creating {}", cfg.home.display()))?;
    let db = cfg.home.join("ledger.redb");
    let genesis = cfg.genesis.clone();
    let (store, state) = tokio::task::spawn_blocking(move || Store::open(&db, &genesis)).await??;
    tracing::info!(height = state.height, root = %state.root().short(), "ledger opened");
    // Agent-wallet secrets: sealed with a key kept beside the database, not in it.
    let keystore = Arc::new(keystore::Keystore::load_or_create(&cfg.home)?);
    let sealed = keystore.migrate(&store)?;
    if sealed > 0 {
        tracing::info!(
            records = sealed,
            "agent-wallet secrets sealed with the keystore key"
        );
    }
    let validator_key = SigningKey::from_bytes(&cfg.validator_key.to_bytes())?;
    let metrics = Arc::new(vouch_node::metrics::Metrics::default());
    let chain = Arc::new(Chain::new(
        store,
        state,
        cfg.genesis,
        cfg.validator_key,
        metrics.clone(),
    ));
    // The spend of the requests a crash interrupted is reconciled with the replayed outbox.
    gateway::reconcile(&chain);
    if let Some(up) = &cfg.upstream {
        chain.set_upstream(up);
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let app: Arc<dyn vouch_node::consensus::Application> = chain.clone();
    let rx = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move { engine.run(app, rx).await }));

    if let Some((key, model)) = &cfg.provider {
        provider::check_weights(&chain.state(), &key.public(), &model.id(), model.name())
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let embedder = cfg.embedder.map(Arc::new);
    let provider = cfg.provider.map(|(key, model)| {
        // Jobs escrowed but not yet committed never exceed the queue, so a queue within
        // the capacity registered on the ledger never gets an escrow refused as busy.
        let capacity = chain
            .state()
            .providers
            .get(&key.public())
            .map_or(usize::MAX, |p| p.capacity as usize);
        let depth = cfg.queue_depth.clamp(1, capacity.max(1));
        if depth < cfg.queue_depth {
            tracing::warn!(
                queue_depth = cfg.queue_depth,
                capacity,
                "queue depth lowered to the provider's capacity on the ledger"
            );
        }
        Arc::new(provider::ProviderRole::new(
            key,
            Arc::new(vouch_node::engine::ModelEngine::new(model)),
            embedder.clone(),
            depth,
        ))
    });
    // Bound before the roles start, so the address can be announced to peers.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_api = cfg
        .public_api
        .clone()
        .or_else(|| (!addr.ip().is_unspecified()).then(|| format!("http://{addr}")));
    let blobs = cfg
        .models_home
        .as_deref()
        .map(|h| Arc::new(blob_store::BlobStore::new(h)));
    let dispatch = cfg.net.map(|port| {
        let seeds = blobs
            .clone()
            .and_then(|b| public_api.clone().map(|api| (api, b)));
        dispatch::Dispatch::start(
            chain.clone(),
            provider.clone(),
            &validator_key,
            port,
            seeds,
            shutdown_rx.clone(),
        )
    });
    if cfg.follow_models {
        match (&blobs, &dispatch) {
            (Some(b), Some(d)) => {
                let (c, b, d, rx) = (chain.clone(), b.clone(), d.clone(), shutdown_rx.clone());
                tasks.push(tokio::spawn(async move {
                    model_follow::follow(c, b, d, rx).await;
                    Ok(())
                }));
            }
            _ => tracing::warn!("--follow-models needs peers and a model store; ignored"),
        }
    }
    if cfg.audit {
        // Audits re-run the real model: a provider on a stand-in engine is not audited.
        if let Some((p, model)) = provider
            .as_ref()
            .and_then(|p| p.chat_model().map(|m| (p, m)))
        {
            let v = Arc::new(validator::ValidatorRole {
                key: validator_key,
                model,
                embedder: embedder.clone(),
                dispatch: dispatch.clone().map(|d| d as Arc<dyn validator::Peers>),
                provider: Some(SigningKey::from_bytes(&p.key.to_bytes())?),
                mode: cfg.audit_mode,
            });
            let c = chain.clone();
            let rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                v.run(c, rx).await;
                Ok(())
            }));
        }
    }

    let router = api::router(crate::state::AppState {
        chain: chain.clone(),
        provider,
        faucet: cfg.faucet.map(Arc::new),
        admin_token: cfg.admin_token.map(Arc::new),
        budgets: Arc::new(crate::state::Budgets::default()),
        metrics: metrics.clone(),
        dispatch,
        blobs,
        public_api: public_api.map(Arc::new),
        keystore,
    })
    .layer(api::cors(cfg.cors));
    let limits = cfg.http;
    tasks.push(tokio::spawn(async move {
        server::serve(listener, router, limits, metrics, shutdown_rx)
            .await
            .context("http server")
    }));
    Ok(Running {
        chain,
        addr,
        shutdown,
        tasks,
    })
}
