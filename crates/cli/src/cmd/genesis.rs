//! `vouch genesis`: a network's genesis file from its nodes' keys.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use vouch_inference::models;
use vouch_node::DevKeys;
use vouch_state::Genesis;

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
        vouch_node::clock::now_ms(),
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
