//! `vouch bench gateway`: what the OpenAI-compatible gateway adds on top of the engine, and
//! how it behaves under more load than one CPU provider can serve.
//!
//! A node (single validator, provider with the real model, no audits so the model only
//! serves the bench) starts in this process on a loopback port; the client is a plain
//! HTTP client in other threads of the same process.
//!
//! 1. Overhead: sequential chat completions. Each response's `server-timing: engine`
//!    header is the time the model ran for it; overhead = client-side latency - engine
//!    time, per request (HTTP, JSON, key and budget, escrow and commit transactions,
//!    receipt store). The bare engine (the same call in this process, no node) is timed
//!    too.
//! 2. Reads under write load: sequential `GET /v1/status` on an idle node, then again
//!    while writer threads keep the mempool full of transfers, so every block is large
//!    and its commit (one fsync) runs while the reads go on. p50/p99/max of the reads show
//!    whether a reader waits for the disk.
//! 3. Load: many clients for a fixed time; the provider's bounded queue turns the excess
//!    away with 429 + Retry-After, which clients honour. Counts every outcome, samples
//!    resident memory, and checks afterwards that every answered receipt was committed.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vouch_crypto::SigningKey;
use vouch_http::NodeConfig;
use vouch_inference::{models, ChatModel};
use vouch_node::{DevKeys, SoloEngine};
use vouch_types::Sampling;
use vouch_verify::attest::{self, Input};

#[derive(Args, Debug)]
pub struct GatewayBenchArgs {
    /// Sequential requests for the overhead figures.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 4)]
    max_tokens: u32,
    /// Concurrent clients in the load run (0 skips it).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Length of the load run, seconds.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// The provider's queue depth (requests running or waiting).
    #[arg(long, default_value_t = vouch_http::DEFAULT_QUEUE_DEPTH)]
    queue_depth: usize,
    /// Block interval of the node, ms.
    #[arg(long, default_value_t = 200)]
    block_interval_ms: u64,
    /// Sequential `GET /v1/status` reads, idle and then under write load (0 skips it).
    #[arg(long, default_value_t = 2000)]
    status_reads: usize,
    /// Threads submitting transfers to the chain during the reads under write load.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

const PROMPT: &str = "Name one colour of the sky.";

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i]
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .new_agent()
}

struct Reply {
    status: u16,
    latency_ms: f64,
    engine_ms: Option<f64>,
    receipt: Option<String>,
    retry_after: Option<u64>,
    body: String,
}

fn chat(agent: &ureq::Agent, url: &str, key: &str, max_tokens: u32) -> Result<Reply> {
    let t = Instant::now();
    let mut resp = agent
        .post(&format!("{url}/v1/chat/completions"))
        .header("authorization", &format!("Bearer {key}"))
        .send_json(json!({
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens, "temperature": 0,
        }))
        .context("request")?;
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let engine_ms = header("server-timing")
        .and_then(|v| v.split("dur=").nth(1).and_then(|d| d.parse::<f64>().ok()));
    let receipt = header("x-vouch-receipt");
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(Reply {
        status,
        latency_ms: t.elapsed().as_secs_f64() * 1e3,
        engine_ms,
        receipt,
        retry_after,
        body,
    })
}

/// `GET /v1/status` latencies, ms, of `n` sequential reads.
fn status_reads(ag: &ureq::Agent, url: &str, n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut r = ag.get(&format!("{url}/v1/status")).call()?;
        let _ = r.body_mut().read_to_string()?;
        if r.status() != 200 {
            bail!("status read: HTTP {}", r.status());
        }
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// Phase 2: status reads idle, then with `writers` threads keeping transfers in the
/// mempool (each from its own funded wallet, paced to keep at most ~4 blocks waiting).
fn status_under_writes(
    url: &str,
    chain: &Arc<vouch_node::Chain>,
    faucet: &SigningKey,
    n: usize,
    writers: usize,
) -> Result<()> {
    let ag = agent();
    status_reads(&ag, url, 50)?;
    let idle = status_reads(&ag, url, n)?;
    let mut wallets = Vec::new();
    for _ in 0..writers {
        let w = SigningKey::generate(&mut rand::rngs::OsRng);
        let id = chain
            .submit_signed(
                faucet,
                vouch_types::tx::Action::Transfer {
                    to: w.public(),
                    amount: 1_000_000 * vouch_node::UNIT,
                },
            )
            .map_err(|e| anyhow::anyhow!("funding a writer: {e}"))?;
        wallets.push((w, id));
    }
    for (_, id) in &wallets {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(chain.tx_status(id), vouch_node::TxStatus::Committed { .. }) {
            if Instant::now() > deadline {
                bail!("a writer's funding did not commit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let h0 = chain.state().height;
    let stop = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicU64::new(0));
    let sink = SigningKey::generate(&mut rand::rngs::OsRng).public();
    let handles: Vec<_> = wallets
        .into_iter()
        .map(|(w, _)| {
            let (chain, stop, submitted) = (chain.clone(), stop.clone(), submitted.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if chain.mempool_len() > 4 * vouch_types::tx::MAX_BLOCK_TXS {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    let t = vouch_types::tx::Action::Transfer {
                        to: sink,
                        amount: 1,
                    };
                    if chain.submit_signed(&w, t).is_ok() {
                        submitted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let busy = status_reads(&ag, url, n)?;
    let secs = t.elapsed().as_secs_f64();
    let h1 = chain.state().height;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!("\n| `GET /v1/status`, {n} sequential reads | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| idle node | {:.2} | {:.2} | {:.2} |",
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        max(&idle)
    );
    println!(
        "| under write load ({writers} writers, {} blocks in {secs:.1} s, {} transfers submitted) | {:.2} | {:.2} | {:.2} |",
        h1 - h0,
        submitted.load(Ordering::Relaxed),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        max(&busy)
    );
    Ok(())
}

pub fn run(home: &Path, a: GatewayBenchArgs) -> Result<()> {
    let spec = &models::SMOLLM2_135M;
    let mut progress = |_ev: models::FetchEvent| {};
    models::fetch(spec, home, &mut progress)?;
    let dir = tempfile::tempdir()?;
    let keys = DevKeys::load_or_create(dir.path())?;
    let genesis = vouch_node::dev_genesis(
        &keys,
        &[(spec.id(), spec.name, spec.licence)],
        vouch_node::clock::now_ms(),
    );

    // The bare engine: the same request, in this process, no node.
    let sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 1,
        max_tokens: a.max_tokens,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    };
    let input = Input::Chat(vec![vouch_inference::chat::Message::user(PROMPT)]);
    let bare_runs = a.requests.clamp(5, 30);
    let mut bare = Vec::new();
    {
        let mut model = ChatModel::load(spec, home)?;
        let key = SigningKey::from_bytes(&keys.provider.to_bytes())?;
        for i in 0..bare_runs + 3 {
            let t = Instant::now();
            attest::generate(
                &mut model,
                &key,
                &input,
                sampling,
                &Default::default(),
                0,
                &mut |_| {},
            )?;
            if i >= 3 {
                bare.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }

    let model = ChatModel::load(spec, home)?;
    let admin = "bench-admin-token";
    let cfg = NodeConfig {
        home: dir.path().join("node"),
        genesis,
        listen: "127.0.0.1:0".parse()?,
        block_interval: Duration::from_millis(a.block_interval_ms),
        validator_key: SigningKey::from_bytes(&keys.validator.to_bytes())?,
        provider: Some((SigningKey::from_bytes(&keys.provider.to_bytes())?, model)),
        embedder: None,
        audit: false,
        audit_mode: Default::default(),
        faucet: Some(SigningKey::from_bytes(&keys.faucet.to_bytes())?),
        admin_token: Some(admin.into()),
        queue_depth: a.queue_depth,
        upstream: None,
        net: None,
        models_home: None,
        public_api: None,
        follow_models: false,
        http: Default::default(),
        cors: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let running = rt.block_on(vouch_http::start(
        cfg,
        Box::new(SoloEngine {
            interval: Duration::from_millis(a.block_interval_ms),
        }),
    ))?;
    let url = format!("http://{}", running.addr);
    let chain = running.chain.clone();
    let rss_start = rss_mb();

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

    // 1. Overhead, sequential.
    let ag = agent();
    for _ in 0..3 {
        chat(&ag, &url, &api_key, a.max_tokens)?;
    }
    let (mut e2e, mut engine, mut over) = (Vec::new(), Vec::new(), Vec::new());
    let mut receipts = Vec::new();
    for _ in 0..a.requests {
        let r = chat(&ag, &url, &api_key, a.max_tokens)?;
        if r.status != 200 {
            bail!("HTTP {}: {}", r.status, r.body);
        }
        let en = r.engine_ms.context("no server-timing header")?;
        e2e.push(r.latency_ms);
        engine.push(en);
        over.push(r.latency_ms - en);
        receipts.extend(r.receipt);
    }
    println!(
        "## vouch bench gateway (loopback, {} tokens per request, block interval {} ms)\n",
        a.max_tokens, a.block_interval_ms
    );
    println!("| sequential, {} requests | p50 ms | p99 ms |", a.requests);
    println!("| --- | --- | --- |");
    println!(
        "| bare engine (same call, no node; {bare_runs} runs) | {:.2} | {:.2} |",
        pct(&bare, 0.5),
        pct(&bare, 0.99)
    );
    println!(
        "| engine time inside the gateway (server-timing) | {:.2} | {:.2} |",
        pct(&engine, 0.5),
        pct(&engine, 0.99)
    );
    println!(
        "| end to end through the gateway | {:.2} | {:.2} |",
        pct(&e2e, 0.5),
        pct(&e2e, 0.99)
    );
    println!(
        "| **gateway overhead** (end to end - engine, per request) | **{:.2}** | **{:.2}** |",
        pct(&over, 0.5),
        pct(&over, 0.99)
    );

    // 2. Reads while blocks commit.
    if a.status_reads > 0 {
        status_under_writes(&url, &chain, &keys.faucet, a.status_reads, a.writers)?;
    }

    // 3. Load.
    if a.clients > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(Mutex::new(rss_mb()));
        let peak_pool = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, peak_rss, peak_pool, chain) = (
                stop.clone(),
                peak_rss.clone(),
                peak_pool.clone(),
                chain.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = rss_mb();
                    let mut p = peak_rss.lock().unwrap_or_else(|p| p.into_inner());
                    if r > *p {
                        *p = r;
                    }
                    drop(p);
                    peak_pool.fetch_max(chain.mempool_len() as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(a.duration_secs);
        let started = Instant::now();
        let handles: Vec<_> = (0..a.clients)
            .map(|_| {
                let (url, key) = (url.clone(), api_key.clone());
                let max_tokens = a.max_tokens;
                std::thread::spawn(move || {
                    let ag = agent();
                    let mut ok = Vec::new();
                    let (mut busy, mut errors) = (0u64, Vec::new());
                    while Instant::now() < deadline {
                        match chat(&ag, &url, &key, max_tokens) {
                            Ok(r) if r.status == 200 => ok.push((r.latency_ms, r.receipt)),
                            Ok(r) if r.status == 429 => {
                                busy += 1;
                                let wait = r.retry_after.unwrap_or(1).min(5);
                                std::thread::sleep(Duration::from_secs(wait));
                            }
                            Ok(r) => errors.push(format!("HTTP {}: {}", r.status, r.body)),
                            Err(e) => errors.push(format!("{e:#}")),
                        }
                    }
                    (ok, busy, errors)
                })
            })
            .collect();
        let mut lat = Vec::new();
        let (mut busy, mut errors) = (0u64, Vec::new());
        for h in handles {
            let (ok, b, e) = h.join().map_err(|_| anyhow::anyhow!("client panicked"))?;
            for (l, r) in ok {
                lat.push(l);
                receipts.extend(r);
            }
            busy += b;
            errors.extend(e);
        }
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let peak = *peak_rss.lock().unwrap_or_else(|p| p.into_inner());
        println!(
            "\n| load: {} clients, {:.0} s, queue depth {} | value |",
            a.clients, secs, a.queue_depth
        );
        println!("| --- | --- |");
        println!(
            "| answered (200) | {} ({:.1}/s) |",
            lat.len(),
            lat.len() as f64 / secs
        );
        println!("| turned away (429, Retry-After honoured) | {busy} |");
        println!("| other errors | {} |", errors.len());
        println!(
            "| latency of answered requests p50 / p99 | {:.0} / {:.0} ms |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        println!(
            "| resident memory: start / peak / end | {rss_start:.0} / {peak:.0} / {:.0} MB |",
            rss_mb()
        );
        println!(
            "| mempool peak | {} txs |",
            peak_pool.load(Ordering::Relaxed)
        );
        for e in errors.iter().take(5) {
            println!("error: {e}");
        }
    }

    // Every answered receipt reaches the chain.
    let ag = agent();
    let mut included = 0;
    for r in &receipts {
        let mut resp = ag
            .get(&format!("{url}/v1/receipts/{r}?wait_ms=30000"))
            .call()?;
        let v: Value = resp.body_mut().read_json()?;
        if v["inclusion"]["header"]["height"].as_u64().is_some() {
            included += 1;
        }
    }
    println!(
        "\nreceipts answered: {}, committed with inclusion proofs: {included}; chain height {}",
        receipts.len(),
        chain.state().height
    );
    rt.block_on(running.stop())?;
    if included != receipts.len() {
        bail!(
            "{} answered receipts are not on the chain",
            receipts.len() - included
        );
    }
    Ok(())
}
