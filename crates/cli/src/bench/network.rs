//! `vouch bench network`: four validators in this process, each a full node (durable
//! ledger, mempool, API) running the multi-validator engine over authenticated TCP on
//! loopback; no model. Prints finality latency (submit to durable commit) under light
//! load, committed transactions per second under a burst of transfers, and receipts
//! committed per second under a burst of jobs answered by a mock engine (each job is a
//! client's escrow and its provider's result commit, whose receipt hash enters the
//! block's receipt tree).

use anyhow::Result;
use clap::Args;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vouch_crypto::SigningKey;
use vouch_state::{sign_tx, Genesis, GenesisAccount, Params};
use vouch_state::{GenesisModel, GenesisProvider};
use vouch_types::tx::Action;
use vouch_types::Hash32;

#[derive(Args, Debug)]
pub struct NetworkBenchArgs {
    /// Transactions in the burst (throughput) run.
    #[arg(long, default_value_t = 20_000)]
    txs: usize,
    /// Transactions per second in the latency run (for 5 s).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Least time between blocks, ms.
    #[arg(long, default_value_t = 50)]
    block_interval_ms: u64,
    /// Jobs in the receipts run (escrow and result commit each, mock engine).
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Instead: four nodes each serving the real model, clients asking node 0's gateway
    /// (jobs dispatched over p2p); answers per second and time from answer to receipt
    /// inclusion proof.
    #[arg(long)]
    model: bool,
    /// Concurrent clients in the real-model run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Length of the real-model run, seconds.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Tokens generated per request in the real-model run.
    #[arg(long, default_value_t = 8)]
    max_tokens: u32,
}

fn key(tag: u8, i: usize) -> SigningKey {
    let mut b = [tag; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SigningKey::from_bytes(&b).expect("32 bytes")
}

fn port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

pub fn run(home: &std::path::Path, a: NetworkBenchArgs) -> Result<()> {
    if a.model {
        return run_model(home, &a);
    }
    let n = 4;
    let senders = 1_000usize;
    let validators: Vec<SigningKey> = (0..n).map(|i| key(0xa1, i)).collect();
    let accounts: Vec<SigningKey> = (0..senders).map(|i| key(0xa2, i)).collect();
    let providers: Vec<SigningKey> = (0..16).map(|i| key(0xa3, i)).collect();
    let model = Hash32::digest("vouch bench model", &[b"mock"]);
    let genesis = Genesis {
        chain_name: "bench-net".into(),
        time: vouch_node::clock::now_ms(),
        params: Params::default(),
        accounts: accounts
            .iter()
            .map(|k| GenesisAccount {
                address: k.public(),
                balance: 1_000_000_000_000,
                stake: 0,
            })
            .chain(validators.iter().map(|k| GenesisAccount {
                address: k.public(),
                balance: 0,
                stake: 1_000,
            }))
            .chain(providers.iter().map(|k| GenesisAccount {
                address: k.public(),
                balance: 1_000_000,
                stake: 1_000_000_000,
            }))
            .collect(),
        validators: validators.iter().map(|k| k.public()).collect(),
        models: vec![GenesisModel {
            id: model,
            name: "mock".into(),
            version: "1".into(),
            parent: None,
            licence: "none".into(),
            author: validators[0].public(),
            royalty_bps: 0,
        }],
        providers: providers
            .iter()
            .map(|k| GenesisProvider {
                address: k.public(),
                models: vec![model],
                price_per_token: 1,
                capacity: 1_000_000,
                endpoint: "bench".into(),
            })
            .collect(),
    };
    let chain_id = genesis.chain_id();
    let dir = tempfile::tempdir()?;
    let p2p: Vec<u16> = (0..n).map(|_| port()).collect::<Result<_>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut nodes = Vec::new();
        for (i, v) in validators.iter().enumerate() {
            let peers = (0..n)
                .filter(|j| *j != i)
                .map(|j| (validators[j].public(), ([127, 0, 0, 1], p2p[j]).into()))
                .collect();
            let cfg = vouch_http::NodeConfig {
                home: dir.path().join(format!("n{i}")),
                genesis: genesis.clone(),
                listen: ([127, 0, 0, 1], 0).into(),
                block_interval: Duration::from_millis(a.block_interval_ms),
                validator_key: SigningKey::from_bytes(&v.to_bytes())?,
                provider: None,
                embedder: None,
                audit: false,
                audit_mode: Default::default(),
                faucet: None,
                admin_token: None,
                queue_depth: 1,
                upstream: None,
                net: None,
                models_home: None,
                public_api: None,
                follow_models: false,
                http: Default::default(),
                cors: Default::default(),
            };
            let engine = vouch_net::SimplexEngine {
                listen: ([127, 0, 0, 1], p2p[i]).into(),
                peers,
                secret: v.to_bytes(),
                dir: dir.path().join(format!("n{i}/consensus")),
                min_interval_ms: a.block_interval_ms,
                timing: Default::default(),
                jobs: None,
            };
            nodes.push(vouch_http::start(cfg, Box::new(engine)).await?);
        }
        let chains: Vec<Arc<vouch_node::Chain>> = nodes.iter().map(|r| r.chain.clone()).collect();
        let mut nonces = vec![0u64; senders];
        let mut next = 0usize;
        let mut make = |k: usize| {
            let s = k % senders;
            let tx = sign_tx(
                &accounts[s],
                &chain_id,
                nonces[s],
                Params::default().min_tx_fee,
                Action::Transfer {
                    to: accounts[(s + 1) % senders].public(),
                    amount: 1,
                },
            );
            nonces[s] += 1;
            tx
        };
        // Let the validators connect: one transaction through each node, committed.
        let warm = Instant::now();
        for c in &chains {
            let id = c.submit(make(next))?;
            next += 1;
            let s = c.wait_tx(&id, Duration::from_secs(120)).await;
            anyhow::ensure!(
                matches!(s, vouch_node::TxStatus::Committed { .. }),
                "warm-up transaction not committed: {s:?}"
            );
        }
        eprintln!(
            "validators connected and finalizing after {:.1} s",
            warm.elapsed().as_secs_f64()
        );

        // Latency: a steady trickle, each transaction sent to one of the four nodes and
        // timed until that node reports it durably committed.
        let mut waits = Vec::new();
        let period = Duration::from_micros(1_000_000 / a.rate.max(1));
        let total = (a.rate * 5) as usize;
        for _ in 0..total {
            let tx = make(next);
            let c = chains[next % n].clone();
            next += 1;
            let t = Instant::now();
            let id = c.submit(tx)?;
            waits.push(tokio::spawn(async move {
                let s = c.wait_tx(&id, Duration::from_secs(60)).await;
                (t.elapsed().as_secs_f64() * 1e3, s)
            }));
            tokio::time::sleep(period).await;
        }
        let mut lat = Vec::new();
        for w in waits {
            let (ms, s) = w.await?;
            anyhow::ensure!(
                matches!(s, vouch_node::TxStatus::Committed { .. }),
                "a transaction was not committed: {s:?}"
            );
            lat.push(ms);
        }
        let h0 = chains[0].state().height;

        // Throughput: a burst spread over the four nodes.
        let burst: Vec<_> = (0..a.txs)
            .map(|_| {
                let tx = make(next);
                next += 1;
                tx
            })
            .collect();
        let t = Instant::now();
        let mut ids = Vec::new();
        for (k, tx) in burst.into_iter().enumerate() {
            let c = &chains[k % n];
            ids.push((k % n, c.submit(tx)?));
        }
        let submitted = t.elapsed().as_secs_f64();
        for (i, id) in &ids {
            let s = chains[*i].wait_tx(id, Duration::from_secs(300)).await;
            anyhow::ensure!(
                matches!(s, vouch_node::TxStatus::Committed { .. }),
                "a burst transaction was not committed: {s:?}"
            );
        }
        let secs = t.elapsed().as_secs_f64();
        let h1 = chains[0].state().height;

        // Receipts: a burst of jobs. Each provider works through one node; the client's
        // escrow goes to that node and the mock engine's result commit right behind it.
        let mut pnonce = vec![0u64; providers.len()];
        let fee = Params::default().min_tx_fee;
        let jobs: Vec<_> = (0..a.jobs)
            .map(|k| {
                let s = k % senders;
                let p = k % providers.len();
                let escrow = sign_tx(
                    &accounts[s],
                    &chain_id,
                    nonces[s],
                    fee,
                    Action::SubmitJob {
                        model,
                        provider: providers[p].public(),
                        input_hash: Hash32::digest("bench input", &[&(k as u64).to_le_bytes()]),
                        max_tokens: 16,
                        max_fee: 64,
                    },
                );
                nonces[s] += 1;
                let job = escrow.id(&chain_id);
                let out = Hash32::digest("bench output", &[job.as_bytes()]);
                let commit = sign_tx(
                    &providers[p],
                    &chain_id,
                    pnonce[p],
                    fee,
                    Action::CommitResult {
                        job,
                        receipt: Hash32::digest("bench receipt", &[job.as_bytes()]),
                        output_hash: out,
                        fingerprint: Hash32::digest("bench fingerprint", &[out.as_bytes()]),
                        prompt_tokens: 8,
                        output_tokens: 16,
                    },
                );
                pnonce[p] += 1;
                (p % n, escrow, commit)
            })
            .collect();
        let h2 = chains[0].state().height;
        let t = Instant::now();
        let mut commits = Vec::new();
        for (i, escrow, commit) in jobs {
            chains[i].submit(escrow)?;
            commits.push((i, chains[i].submit(commit)?));
        }
        let jobs_submitted = t.elapsed().as_secs_f64();
        for (i, id) in &commits {
            let s = chains[*i].wait_tx(id, Duration::from_secs(300)).await;
            anyhow::ensure!(
                matches!(s, vouch_node::TxStatus::Committed { .. }),
                "a result commit was not committed: {s:?}"
            );
        }
        let job_secs = t.elapsed().as_secs_f64();
        let h3 = chains[0].state().height;
        let roots: Vec<_> = chains
            .iter()
            .map(|c| (c.state().height, c.state().root()))
            .collect();
        println!("four validators in one process, loopback TCP, this machine");
        println!(
            "finality latency ({} tx at {}/s): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lat.len(),
            a.rate,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
        println!(
            "burst of {} tx: submitted in {:.2} s, all committed in {:.2} s: {:.0} tx/s, {} blocks",
            a.txs,
            submitted,
            secs,
            a.txs as f64 / secs,
            h1 - h0
        );
        println!(
            "burst of {} jobs (escrow + result commit, mock engine): submitted in {:.2} s, \
             all receipts committed in {:.2} s: {:.0} receipts/s, {} blocks",
            a.jobs,
            jobs_submitted,
            job_secs,
            a.jobs as f64 / job_secs,
            h3 - h2
        );
        println!("heights and state roots: {roots:?}");
        for r in nodes {
            r.stop().await?;
        }
        Ok(())
    })
}

/// Four nodes in this process, each a validator and a provider with the real model, the
/// engine over loopback TCP and jobs dispatched over p2p; clients ask node 0's gateway.
fn run_model(home: &std::path::Path, a: &NetworkBenchArgs) -> Result<()> {
    use anyhow::Context as _;
    use serde_json::{json, Value};
    use vouch_inference::{models, ChatModel};
    let n = 4;
    let spec = &models::SMOLLM2_135M;
    let mut progress = |_ev: models::FetchEvent| {};
    models::fetch(spec, home, &mut progress)?;
    let dir = tempfile::tempdir()?;
    let keys: Vec<vouch_node::DevKeys> = (0..n)
        .map(|i| vouch_node::DevKeys::load_or_create(&dir.path().join(format!("n{i}"))))
        .collect::<Result<_>>()?;
    let mut genesis = crate::cmd::genesis::network_genesis(&keys, &keys, "bench-net-model");
    genesis.params.audit_rate_ppm = 0;
    let p2p: Vec<u16> = (0..n).map(|_| port()).collect::<Result<_>>()?;
    let admin = "bench-admin-token";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let nodes = rt.block_on(async {
        let mut nodes = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (port_end, io) = vouch_net::dispatch::channel();
            let peers = (0..n)
                .filter(|j| *j != i)
                .map(|j| (keys[j].validator.public(), ([127, 0, 0, 1], p2p[j]).into()))
                .collect();
            let cfg = vouch_http::NodeConfig {
                home: dir.path().join(format!("n{i}/node")),
                genesis: genesis.clone(),
                listen: ([127, 0, 0, 1], 0).into(),
                block_interval: Duration::from_millis(a.block_interval_ms),
                validator_key: SigningKey::from_bytes(&k.validator.to_bytes())?,
                provider: Some((
                    SigningKey::from_bytes(&k.provider.to_bytes())?,
                    ChatModel::load(spec, home)?,
                )),
                embedder: None,
                audit: false,
                audit_mode: Default::default(),
                faucet: (i == 0)
                    .then(|| SigningKey::from_bytes(&k.faucet.to_bytes()))
                    .transpose()?,
                admin_token: Some(admin.into()),
                queue_depth: vouch_http::DEFAULT_QUEUE_DEPTH,
                upstream: None,
                net: Some(port_end),
                models_home: None,
                public_api: None,
                follow_models: false,
                http: Default::default(),
                cors: Default::default(),
            };
            let engine = vouch_net::SimplexEngine {
                listen: ([127, 0, 0, 1], p2p[i]).into(),
                peers,
                secret: k.validator.to_bytes(),
                dir: dir.path().join(format!("n{i}/node/consensus")),
                min_interval_ms: a.block_interval_ms,
                timing: Default::default(),
                jobs: Some(io),
            };
            nodes.push(vouch_http::start(cfg, Box::new(engine)).await?);
        }
        anyhow::Ok(nodes)
    })?;
    let url = format!("http://{}", nodes[0].addr);
    let admin_client = crate::client::Client::new(&url).with_token(admin);
    let k = admin_client.post("/admin/keys", &json!({"name": "bench"}))?;
    let api_key = k["api_key"].as_str().context("api key")?.to_string();
    let wallet = k["wallet"].as_str().context("wallet")?.to_string();
    for _ in 0..4 {
        admin_client.post(
            "/v1/faucet",
            &json!({"address": wallet, "amount": vouch_http::api::FAUCET_MAX}),
        )?;
    }
    // Until node 0's gateway hears all four providers.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .new_agent();
    let t0 = Instant::now();
    loop {
        let v: Value = agent
            .get(&format!("{url}/v1/providers"))
            .call()?
            .body_mut()
            .read_json()?;
        let up = v["providers"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|p| p["available"] == true).count());
        if up == n {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "providers not reachable"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stop = Instant::now() + Duration::from_secs(a.duration_secs);
    let results = std::sync::Mutex::new(Vec::<(f64, f64, String)>::new());
    let errors = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..a.clients {
            let (agent, url, key, results, errors) = (&agent, &url, &api_key, &results, &errors);
            s.spawn(move || {
                let mut k = 0;
                while Instant::now() < stop {
                    k += 1;
                    let t = Instant::now();
                    let r = agent
                        .post(&format!("{url}/v1/chat/completions"))
                        .header("authorization", &format!("Bearer {key}"))
                        .send_json(json!({
                            "model": "smollm2-135m", "max_tokens": a.max_tokens,
                            "messages": [{"role": "user", "content": format!("client {c} question {k}: name a colour")}],
                        }));
                    let Ok(mut r) = r else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    if r.status() == 429 {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    let v: Value = r.body_mut().read_json().unwrap_or_default();
                    let answered = t.elapsed().as_secs_f64() * 1e3;
                    let (Some(rid), Some(provider)) =
                        (v["vouch"]["receipt"].as_str(), v["vouch"]["provider"].as_str())
                    else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    // Finality of the receipt: until the gateway serves its inclusion proof.
                    let f = Instant::now();
                    let proof = agent
                        .get(&format!("{url}/v1/receipts/{rid}?wait_ms=30000"))
                        .call()
                        .ok()
                        .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                        .is_some_and(|v| !v["inclusion"].is_null());
                    if !proof {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner()).push((
                        answered,
                        f.elapsed().as_secs_f64() * 1e3,
                        provider.to_string(),
                    ));
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let results = results.into_inner().unwrap_or_default();
    let answer: Vec<f64> = results.iter().map(|r| r.0).collect();
    let finality: Vec<f64> = results.iter().map(|r| r.1).collect();
    let mut per: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &results {
        *per.entry(&r.2[..8]).or_default() += 1;
    }
    println!("four nodes in one process, each a validator and a provider with the real model");
    println!(
        "{} clients for {:.0} s, {} tokens per answer: {} answers with committed receipts ({:.2}/s), {} errors",
        a.clients,
        secs,
        a.max_tokens,
        results.len(),
        results.len() as f64 / secs,
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "answer latency p50 {:.0} ms, p99 {:.0} ms; answer to inclusion proof p50 {:.0} ms, p99 {:.0} ms",
        pct(&answer, 0.5),
        pct(&answer, 0.99),
        pct(&finality, 0.5),
        pct(&finality, 0.99)
    );
    println!("answers per provider: {per:?}");
    rt.block_on(async {
        for r in nodes {
            r.stop().await?;
        }
        anyhow::Ok(())
    })
}
