//! `vouch bench network`: four validators in this process, each a full node (durable
//! ledger, mempool, API) running the multi-validator engine over authenticated TCP on
//! loopback; no model (signed transfers stand in for jobs: the ledger work per
//! transaction is the same order). Prints finality latency (submit to durable commit)
//! under light load, and committed transactions per second under a burst.

use anyhow::Result;
use clap::Args;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vouch_crypto::SigningKey;
use vouch_state::{sign_tx, Genesis, GenesisAccount, Params};
use vouch_types::tx::Action;

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

pub fn run(a: NetworkBenchArgs) -> Result<()> {
    let n = 4;
    let senders = 1_000usize;
    let validators: Vec<SigningKey> = (0..n).map(|i| key(0xa1, i)).collect();
    let accounts: Vec<SigningKey> = (0..senders).map(|i| key(0xa2, i)).collect();
    let genesis = Genesis {
        chain_name: "bench-net".into(),
        time: vouch_node::consensus::now_ms(),
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
            .collect(),
        validators: validators.iter().map(|k| k.public()).collect(),
        models: vec![],
        providers: vec![],
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
            let cfg = vouch_node::NodeConfig {
                home: dir.path().join(format!("n{i}")),
                genesis: genesis.clone(),
                listen: ([127, 0, 0, 1], 0).into(),
                block_interval: Duration::from_millis(a.block_interval_ms),
                validator_key: SigningKey::from_bytes(&v.to_bytes())?,
                provider: None,
                embedder: None,
                audit: false,
                faucet: None,
                admin_token: None,
                queue_depth: 1,
                upstream: None,
                net: None,
            };
            let engine = vouch_node::SimplexEngine {
                listen: ([127, 0, 0, 1], p2p[i]).into(),
                peers,
                secret: v.to_bytes(),
                dir: dir.path().join(format!("n{i}/consensus")),
                min_interval_ms: a.block_interval_ms,
                timing: Default::default(),
                jobs: None,
            };
            nodes.push(vouch_node::start(cfg, Box::new(engine)).await?);
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
        println!("heights and state roots: {roots:?}");
        for r in nodes {
            r.stop().await?;
        }
        Ok(())
    })
}
