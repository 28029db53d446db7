//! The multi-validator engine: commonware simplex over authenticated, encrypted TCP
//! between the validators named in the genesis file.
//!
//! The engine runs in commonware's tokio runtime on its own thread (its journal in
//! `<data>/consensus`); it reaches the ledger through [`Application`] (the node's
//! [`vouch_node::Chain`]) and the shared consensus glue in `vouch-bft`. Peers are dialled at
//! the addresses given on the command line and authenticated by their validator keys
//! (a validator's vouch address is its p2p identity).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use commonware_cryptography::ChaCha20Poly1305;
use commonware_p2p::{authenticated::lookup, Address, AddressableManager as _};
use commonware_runtime::{Quota, Runner as _, Spawner as _, Supervisor as _};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{ordered::Map, NZUsize, TryCollect as _, NZU32};
use tokio::sync::watch;
use vouch_bft::{Backend, Ledger, Settings, Timing};
use vouch_state::{Applied, State};
use vouch_types::tx::{Block, Tx};
use vouch_types::Hash32;

use vouch_node::consensus::{Application, Engine, EngineFuture};

/// Largest p2p message (a full block with its certificate fits well inside).
const MAX_MESSAGE: u32 = 8 << 20;

/// Settings of the multi-validator engine.
#[derive(Debug)]
pub struct SimplexEngine {
    /// Where this validator accepts peer connections.
    pub listen: SocketAddr,
    /// Every other validator: vouch address and p2p address.
    pub peers: Vec<(Hash32, SocketAddr)>,
    /// This validator's secret key (its vouch address is its p2p identity).
    pub secret: [u8; 32],
    /// The engine's journal directory.
    pub dir: PathBuf,
    /// Least time between a block and its parent (ms).
    pub min_interval_ms: u64,
    pub timing: Timing,
    /// The engine's end of the job dispatch channel (see [`crate::dispatch`]).
    pub jobs: Option<crate::dispatch::NetIo>,
}

/// The node's chain seen as the engine's ledger.
struct AppBackend(Arc<dyn Application>);

impl Backend for AppBackend {
    fn last(&self) -> Arc<State> {
        self.0.last_state()
    }
    fn candidates(&self) -> Vec<Tx> {
        self.0.candidates()
    }
    fn prechecked(&self) -> bool {
        true
    }
    fn has_work(&self, now: u64) -> bool {
        self.0.has_work(now)
    }
    fn commit(&self, block: Block, state: State, applied: Applied) -> Result<(), String> {
        self.0.commit_block(block, state, applied)
    }
    fn block_at(&self, height: u64) -> Option<Block> {
        self.0.block_at(height)
    }
    fn receive_tx(&self, tx: Tx) {
        self.0.receive_tx(tx)
    }
}

impl Engine for SimplexEngine {
    fn run(
        self: Box<Self>,
        app: Arc<dyn Application>,
        mut shutdown: watch::Receiver<bool>,
    ) -> EngineFuture {
        Box::pin(async move {
            let state = app.last_state();
            let me = vouch_crypto::SigningKey::from_bytes(&self.secret)?.public();
            let validators: Vec<Hash32> = state.validators.iter().copied().collect();
            if !validators.contains(&me) {
                bail!(
                    "this node's validator key {me} is not in the genesis validator set; \
                     run a non-validator with `vouch up --follow URL`"
                );
            }
            for (p, _) in &self.peers {
                if !validators.contains(p) {
                    bail!("peer {p} is not a validator in the genesis file");
                }
            }
            let participants = vouch_bft::participants(&validators).map_err(anyhow::Error::msg)?;
            let (gossip_tx, mut gossip_rx) = tokio::sync::mpsc::unbounded_channel::<Tx>();
            app.set_gossip(gossip_tx);
            let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
            std::fs::create_dir_all(&self.dir)
                .with_context(|| format!("creating {}", self.dir.display()))?;
            let mut engine = *self;
            let jobs = engine.jobs.take();
            let chain_id = state.chain;
            let genesis_block = app.genesis_block();
            std::thread::Builder::new()
                .name("consensus".into())
                .spawn(move || {
                    let cfg = commonware_runtime::tokio::Config::new()
                        .with_storage_directory(engine.dir.clone())
                        .with_worker_threads(2);
                    let r = commonware_runtime::tokio::Runner::new(cfg).start(|ctx| async move {
                        let signer = vouch_bft::engine_key(&engine.secret);
                        let namespace = vouch_verify::inclusion::simplex_namespace(&chain_id);
                        let p2p = lookup::Config::local(
                            Cups::<_, ChaCha20Poly1305>::new(
                                Sake {
                                    signer,
                                    synchrony_bound: Duration::from_secs(5),
                                    max_handshake_age: Duration::from_secs(10),
                                    version: sake::Version::V1,
                                },
                                cups::Version::V1,
                            ),
                            &namespace,
                            engine.listen,
                            NZUsize!(validators.len() + 1),
                            MAX_MESSAGE,
                            NZUsize!(4096),
                        );
                        let (mut network, mut oracle) = lookup::Network::new(ctx.child("p2p"), p2p);
                        let mut book: Vec<(vouch_bft::Pk, Address)> = vec![(
                            vouch_bft::engine_public(&me).expect("ed25519"),
                            engine.listen.into(),
                        )];
                        for (p, addr) in &engine.peers {
                            book.push((
                                vouch_bft::engine_public(p).expect("checked above"),
                                (*addr).into(),
                            ));
                        }
                        let book: Map<vouch_bft::Pk, Address> = match book.into_iter().try_collect()
                        {
                            Ok(b) => b,
                            Err(_) => return Err(anyhow::anyhow!("a peer is listed twice")),
                        };
                        oracle.track(0, book);
                        let quota = Quota::per_second(NZU32!(50_000));
                        let vote = network.register(vouch_bft::VOTE_CHANNEL, quota);
                        let cert = network.register(vouch_bft::CERT_CHANNEL, quota);
                        let resolver = network.register(vouch_bft::RESOLVER_CHANNEL, quota);
                        let blocks = network.register(vouch_bft::BLOCK_CHANNEL, quota);
                        let txs = network.register(vouch_bft::TX_CHANNEL, quota);
                        let (mut job_send, mut job_recv) =
                            network.register(vouch_bft::JOB_CHANNEL, quota);
                        network.start();
                        if let Some(io) = jobs {
                            let crate::dispatch::NetIo {
                                mut outbound,
                                inbound,
                            } = io;
                            ctx.child("jobs_out").spawn(move |_| async move {
                                use commonware_p2p::{Recipients, Sender as _};
                                while let Some(m) = outbound.recv().await {
                                    let to = match m.to.as_ref().and_then(vouch_bft::engine_public)
                                    {
                                        Some(pk) => Recipients::One(pk),
                                        None if m.to.is_some() => {
                                            if let Some(s) = m.sent {
                                                let _ = s.send(false);
                                            }
                                            continue;
                                        }
                                        None => Recipients::All,
                                    };
                                    let went = !job_send.send(to, m.bytes, false).is_empty();
                                    if let Some(s) = m.sent {
                                        let _ = s.send(went);
                                    }
                                }
                            });
                            ctx.child("jobs_in").spawn(move |_| async move {
                                use commonware_p2p::Receiver as _;
                                while let Ok((peer, buf)) = job_recv.recv().await {
                                    let from = vouch_bft::pk_address(&peer);
                                    if inbound.send((from, buf.as_ref().to_vec())).is_err() {
                                        return;
                                    }
                                }
                            });
                        }

                        let (ledger, out) = Ledger::new(Arc::new(AppBackend(app)), &participants);
                        let _io = vouch_bft::spawn_io(
                            &ctx,
                            &ledger,
                            out,
                            blocks,
                            txs,
                            Duration::from_millis(100),
                        );
                        let scheme =
                            vouch_bft::scheme(&chain_id, participants.clone(), &engine.secret)
                                .ok_or_else(|| anyhow::anyhow!("not a participant"))?;
                        let settings = Settings {
                            proposer: me,
                            idle_blocks: false,
                            min_interval_ms: engine.min_interval_ms,
                            max_wait: engine.timing.leader_timeout,
                            lie: false,
                            equivocate_to: None,
                        };
                        let cfg = vouch_bft::engine_config(
                            &ctx,
                            &ledger,
                            settings,
                            scheme,
                            oracle.clone(),
                            "consensus".into(),
                            genesis_block,
                            &engine.timing,
                        );
                        let simplex =
                            commonware_consensus::simplex::Engine::new(ctx.child("simplex"), cfg);
                        let _handle = simplex.start(vote, cert, resolver);
                        let l = ledger.clone();
                        ctx.child("gossip").spawn(move |_| async move {
                            while let Some(tx) = gossip_rx.recv().await {
                                l.gossip(&tx);
                            }
                        });
                        loop {
                            if let Some(e) = ledger.failed() {
                                return Err(anyhow::anyhow!("consensus stopped: {e}"));
                            }
                            match tokio::time::timeout(Duration::from_millis(200), &mut stop_rx)
                                .await
                            {
                                Ok(_) => return Ok(()),
                                Err(_) => continue,
                            }
                        }
                    });
                    let _ = done_tx.send(r);
                })
                .context("starting the consensus thread")?;
            let mut done_rx = done_rx;
            tokio::select! {
                r = &mut done_rx => {
                    return r.unwrap_or_else(|_| Err(anyhow::anyhow!("consensus thread ended")));
                }
                _ = async {
                    while !*shutdown.borrow() {
                        if shutdown.changed().await.is_err() { break; }
                    }
                } => {}
            }
            let _ = stop_tx.send(());
            tokio::time::timeout(Duration::from_secs(10), done_rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(Ok(()))
        })
    }
}
