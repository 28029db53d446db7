//! The dev network: its keys, parameters and genesis (`vouch up`).

use std::path::Path;

use anyhow::Result;
use vouch_crypto::SigningKey;
use vouch_state::{Genesis, GenesisAccount, GenesisModel, GenesisProvider, Params};

use crate::keys;

/// One whole token in base units (amounts on the ledger are integers).
pub const UNIT: u64 = 1_000_000;

/// The keys a dev network uses, kept in `<node home>/keys`.
#[derive(Debug)]
pub struct DevKeys {
    pub validator: SigningKey,
    pub provider: SigningKey,
    pub faucet: SigningKey,
    pub author: SigningKey,
}

impl DevKeys {
    pub fn load_or_create(node_home: &Path) -> Result<Self> {
        let dir = node_home.join("keys");
        Ok(DevKeys {
            validator: keys::load_or_create(&dir, "validator")?.0,
            provider: keys::load_or_create(&dir, "provider")?.0,
            faucet: keys::load_or_create(&dir, "faucet")?.0,
            author: keys::load_or_create(&dir, "author")?.0,
        })
    }
}

/// Parameters of the dev network: short windows so a person sees settlement in seconds.
pub fn dev_params() -> Params {
    Params {
        min_tx_fee: 10,
        unbonding_period_ms: 60_000,
        min_provider_stake: 1_000 * UNIT,
        job_timeout_ms: 120_000,
        challenge_window_ms: 10_000,
        dispute_period_ms: 10_000,
        validator_fee_bps: 500,
        max_royalty_bps: 2_000,
        slash_bps: 1_000,
        reporter_reward_bps: 5_000,
        audit_rate_ppm: 250_000,
        max_unbonding_entries: 16,
        paid_admission: true,
    }
}

/// A dev genesis: a funded faucet, one validator, one provider serving `models`
/// (content id, name, licence), all authored by the dev author key.
pub fn dev_genesis(
    keys: &DevKeys,
    models: &[(vouch_types::Hash32, &str, &str)],
    time: u64,
) -> Genesis {
    Genesis {
        chain_name: "vouch-dev".into(),
        time,
        params: dev_params(),
        accounts: vec![
            GenesisAccount {
                address: keys.faucet.public(),
                balance: 1_000_000_000 * UNIT,
                stake: 0,
            },
            GenesisAccount {
                address: keys.validator.public(),
                balance: 10 * UNIT,
                stake: 10_000 * UNIT,
            },
            GenesisAccount {
                address: keys.provider.public(),
                balance: 10 * UNIT,
                stake: 10_000 * UNIT,
            },
            GenesisAccount {
                address: keys.author.public(),
                balance: 0,
                stake: 0,
            },
        ],
        validators: vec![keys.validator.public()],
        models: models
            .iter()
            .map(|(id, name, licence)| GenesisModel {
                id: *id,
                name: name.to_string(),
                version: "1".into(),
                parent: None,
                licence: licence.to_string(),
                author: keys.author.public(),
                royalty_bps: 1_000,
            })
            .collect(),
        providers: vec![GenesisProvider {
            address: keys.provider.public(),
            models: models.iter().map(|m| m.0).collect(),
            price_per_token: 10,
            capacity: 16,
            endpoint: "local".into(),
        }],
    }
}
