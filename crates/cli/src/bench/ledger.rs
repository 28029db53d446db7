//! `vouch bench ledger`: state machine throughput on one core, receipt light-check time,
//! and block commit latency (with fsync) in single-node mode.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use vouch_crypto::SigningKey;
use vouch_state::{sign_tx, Ctx, Genesis, GenesisAccount, Params, State};
use vouch_storage::Store;
use vouch_types::tx::{Action, Certificate, Tx, Vote};
use vouch_types::{Hash32, Inclusion, InclusionProof, Receipt};

#[derive(Args, Debug)]
pub struct LedgerBenchArgs {
    /// Transactions in the throughput run.
    #[arg(long, default_value_t = 40_000)]
    txs: usize,
    /// Accounts sending them.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Also time the full offline check (`check_fast` + inclusion) of this receipt file.
    #[arg(long)]
    receipt: Option<PathBuf>,
}

fn key(i: usize) -> SigningKey {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    SigningKey::from_bytes(&b).expect("32 bytes")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn setup(n_accounts: usize, n_txs: usize) -> (State, Vec<Tx>, SigningKey) {
    let keys: Vec<SigningKey> = (0..n_accounts).map(key).collect();
    let validator = key(1_000_000);
    let g = Genesis {
        chain_name: "bench".into(),
        time: 0,
        params: Params::default(),
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.public(),
                balance: 1_000_000_000,
                stake: 0,
            })
            .collect(),
        validators: vec![validator.public()],
        models: vec![],
        providers: vec![],
    };
    let state = g.state().expect("bench genesis");
    let mut nonces = vec![0u64; n_accounts];
    let txs = (0..n_txs)
        .map(|i| {
            let from = i % n_accounts;
            let to = keys[(i * 7 + 1) % n_accounts].public();
            nonces[from] += 1;
            sign_tx(
                &keys[from],
                &state.chain,
                nonces[from] - 1,
                1,
                Action::Transfer { to, amount: 3 },
            )
        })
        .collect();
    (state, txs, validator)
}

pub fn run(a: LedgerBenchArgs) -> Result<()> {
    println!(
        "vouch bench ledger: {} transfers from {} accounts, one thread",
        a.txs, a.accounts
    );
    println!();
    let (genesis, txs, validator) = setup(a.accounts, a.txs);
    let ctx = Ctx {
        time: 1,
        proposer: validator.public(),
        seed: genesis.seed(),
    };

    // 1. apply_tx with signature verification, one transaction at a time.
    let mut s = genesis.clone();
    let t = Instant::now();
    for tx in &txs {
        s.apply_tx(tx, &ctx)
            .map_err(|e| anyhow::anyhow!("bench tx rejected: {e}"))?;
    }
    let with_sig = txs.len() as f64 / t.elapsed().as_secs_f64();
    // 2. The same with signatures checked beforehand (mempool admission).
    let mut s = genesis.clone();
    let t = Instant::now();
    for tx in &txs {
        s.apply_tx_prechecked(tx, &ctx)
            .map_err(|e| anyhow::anyhow!("bench tx rejected: {e}"))?;
    }
    let prechecked = txs.len() as f64 / t.elapsed().as_secs_f64();
    // 3. Whole blocks of 5,000: proposal, tx root, receipt root, state root; then the
    //    follower's apply_block with signature checks.
    let mut s = genesis.clone();
    let mut blocks = Vec::new();
    let t = Instant::now();
    for (i, chunk) in txs.chunks(5_000).enumerate() {
        let p = s.propose(chunk, 10 + i as u64, validator.public(), true);
        anyhow::ensure!(p.rejected.is_empty(), "bench block rejected txs");
        s = p.state;
        blocks.push(p.block);
    }
    let propose = txs.len() as f64 / t.elapsed().as_secs_f64();
    let mut f = genesis.clone();
    let t = Instant::now();
    for b in &blocks {
        f.apply_block(b, true).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let follow = txs.len() as f64 / t.elapsed().as_secs_f64();
    println!("| ledger (one core) | tx/s |");
    println!("| --- | --- |");
    println!("| apply_tx, signature checked | {with_sig:.0} |");
    println!("| apply_tx, signature checked at admission | {prechecked:.0} |");
    println!("| propose blocks of 5,000 (roots included, signatures pre-checked) | {propose:.0} |");
    println!("| apply_block as a follower (signatures checked, roots compared) | {follow:.0} |");
    println!();

    // Receipt light check: provider signature + Merkle path + block certificate.
    let r = synthetic_receipt(&validator);
    let n = 5_000;
    let t = Instant::now();
    for _ in 0..n {
        vouch_crypto::verify_receipt_signature(&r).map_err(|e| anyhow::anyhow!("{e}"))?;
        vouch_verify::check_inclusion(&r, Some(&[validator.public()]))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let light = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!("| receipt check (offline) | µs |");
    println!("| --- | --- |");
    println!("| signature + Merkle path (1,024 receipts in block) + certificate | {light:.1} |");
    if let Some(p) = &a.receipt {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let t = Instant::now();
        for _ in 0..1_000 {
            let r: Receipt = serde_json::from_slice(&bytes)?;
            vouch_verify::check_fast(&r).map_err(|e| anyhow::anyhow!("{e}"))?;
            vouch_verify::check_inclusion(&r, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let full = t.elapsed().as_secs_f64() / 1_000.0 * 1e6;
        println!(
            "| {}: JSON parse + check_fast + inclusion | {full:.1} |",
            p.display()
        );
    }
    println!();

    // Block commit latency in single-node mode: propose, sign, write with fsync.
    let dir = tempfile::tempdir()?;
    let genesis_file = Genesis {
        chain_name: "bench".into(),
        time: 0,
        params: Params::default(),
        accounts: (0..a.accounts)
            .map(|i| GenesisAccount {
                address: key(i).public(),
                balance: 1_000_000_000,
                stake: 0,
            })
            .collect(),
        validators: vec![validator.public()],
        models: vec![],
        providers: vec![],
    };
    let (store, mut state) = Store::open(&dir.path().join("ledger.redb"), &genesis_file)?;
    println!("| block commit (single node, fsync) | median ms | p90 ms |");
    println!("| --- | --- | --- |");
    let mut next = 0usize;
    for size in [1usize, 100, 1_000] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let chunk = &txs[next..next + size];
            next += size;
            let t = Instant::now();
            let p = state.propose(chunk, state.time + 1, validator.public(), true);
            anyhow::ensure!(p.rejected.is_empty(), "bench block rejected txs");
            let msg = vouch_verify::inclusion::header_vote_message(&p.block.header);
            let vote = Vote {
                validator: validator.public(),
                signature: validator.sign(vouch_types::tx::domain::HEADER_SIGNATURE, &msg),
            };
            let mut block = p.block.clone();
            block.certificate = Certificate {
                votes: vec![vote],
                simplex: None,
            };
            store.commit(&block, &p.applied, &p.state)?;
            state = p.state;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let p90 = {
            let mut v = times.clone();
            v.sort_by(f64::total_cmp);
            v[v.len() * 9 / 10]
        };
        println!("| {size} tx | {:.2} | {p90:.2} |", median(times));
    }
    Ok(())
}

fn synthetic_receipt(validator: &SigningKey) -> Receipt {
    let provider = key(2_000_000);
    let mut r = Receipt {
        version: vouch_types::PLAIN_RECEIPT_VERSION,
        kind: vouch_types::ReceiptKind::Chat,
        model: Hash32([1; 32]),
        model_name: "smollm2-135m".into(),
        tokenizer: Hash32([2; 32]),
        engine: "bench".into(),
        prompt: "x".repeat(400),
        input_hash: Hash32([3; 32]),
        prompt_tokens: 100,
        output: "y".repeat(600),
        output_tokens: vec![1; 128],
        embedding: None,
        output_hash: Hash32([4; 32]),
        finish_reason: vouch_types::FinishReason::Length,
        sampling: vouch_types::Sampling::greedy(128),
        stop: Vec::new(),
        constraint: None,
        fingerprint: vouch_types::Fingerprint::empty("bench"),
        trace: None,
        created_at: 0,
        provider: Hash32::default(),
        signature: String::new(),
        inclusion: None,
    };
    vouch_crypto::sign_receipt(&provider, &mut r);
    let mut leaves: Vec<Hash32> = (0..1024u32)
        .map(|i| Hash32::digest("leaf", &[&i.to_le_bytes()]))
        .collect();
    leaves[517] = r.id();
    let proof = vouch_crypto::merkle::prove(&leaves, 517).expect("in range");
    let header = vouch_types::Header {
        version: 1,
        chain: Hash32([5; 32]),
        height: 9,
        parent: Hash32([6; 32]),
        time: 0,
        proposer: validator.public(),
        tx_count: 0,
        tx_root: Hash32([7; 32]),
        receipt_root: vouch_crypto::merkle::root(&leaves),
        state_root: Hash32([8; 32]),
    };
    let msg = vouch_verify::inclusion::header_vote_message(&header);
    let vote = Vote {
        validator: validator.public(),
        signature: validator.sign(vouch_types::tx::domain::HEADER_SIGNATURE, &msg),
    };
    r.inclusion = Some(Inclusion {
        job: Hash32([9; 32]),
        header,
        proof: InclusionProof {
            index: proof.index,
            leaves: proof.leaves,
            path: proof.path,
        },
        certificate: Certificate {
            votes: vec![vote],
            simplex: None,
        },
        binding: None,
    });
    r
}
