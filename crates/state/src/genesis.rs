//! The genesis file: chain parameters, initial accounts, validators, models, providers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vouch_types::tx::Address;
use vouch_types::Hash32;

use crate::{Account, Model, Params, Provider, State, Supply};

/// The largest total supply a genesis may create: 2^53 − 1 base units, the largest integer
/// a JSON number read by JavaScript (an IEEE double) holds exactly. Nothing mints after
/// genesis (fees, charges and rewards move existing units; slashing burns), so every
/// balance, stake, escrow, fee, charge and reward on the ledger is at most this, and the
/// API can write amounts as plain JSON numbers. See docs/ledger.md.
pub const MAX_SUPPLY: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: u64,
    #[serde(default)]
    pub stake: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisModel {
    pub id: Hash32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub parent: Option<Hash32>,
    pub licence: String,
    pub author: Address,
    #[serde(default)]
    pub royalty_bps: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisProvider {
    pub address: Address,
    pub models: Vec<Hash32>,
    pub price_per_token: u64,
    pub capacity: u32,
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Human name of the chain; part of the chain id.
    pub chain_name: String,
    /// Genesis time, ms since the Unix epoch.
    pub time: u64,
    pub params: Params,
    pub accounts: Vec<GenesisAccount>,
    pub validators: Vec<Address>,
    #[serde(default)]
    pub models: Vec<GenesisModel>,
    #[serde(default)]
    pub providers: Vec<GenesisProvider>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenesisError {
    #[error("genesis is not valid JSON for a vouch genesis: {0}")]
    Parse(String),
    #[error("total supply in genesis is {0}, above the cap of 2^53 - 1 = {MAX_SUPPLY} base units (every amount must stay exact in JSON read by JavaScript)")]
    SupplyOverflow(u128),
    #[error("account {0} is listed twice")]
    DuplicateAccount(Address),
    #[error("genesis needs at least one validator")]
    NoValidators,
    #[error("model {0}: {1}")]
    Model(Hash32, String),
    #[error("provider {0}: {1}")]
    Provider(Address, String),
}

impl Genesis {
    pub fn from_json(s: &str) -> Result<Self, GenesisError> {
        serde_json::from_str(s).map_err(|e| GenesisError::Parse(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serializes")
    }

    /// The chain id: a hash of the genesis content (re-serialized, so whitespace in the
    /// file does not matter).
    pub fn chain_id(&self) -> Hash32 {
        let canonical = serde_json::to_vec(self).expect("genesis serializes");
        Hash32::digest("vouch 2026 chain id v1", &[&canonical])
    }

    /// The state at height 0.
    pub fn state(&self) -> Result<State, GenesisError> {
        let chain = self.chain_id();
        let mut accounts = BTreeMap::new();
        let mut total: u128 = 0;
        for a in &self.accounts {
            total += u128::from(a.balance) + u128::from(a.stake);
            let acct = Account {
                balance: a.balance,
                stake: a.stake,
                ..Account::default()
            };
            if accounts.insert(a.address, acct).is_some() {
                return Err(GenesisError::DuplicateAccount(a.address));
            }
        }
        if total > u128::from(MAX_SUPPLY) {
            return Err(GenesisError::SupplyOverflow(total));
        }
        let genesis_supply = total as u64;
        if self.validators.is_empty() {
            return Err(GenesisError::NoValidators);
        }
        let mut models = BTreeMap::new();
        for m in &self.models {
            if let Some(p) = &m.parent {
                if !models.contains_key(p) {
                    return Err(GenesisError::Model(
                        m.id,
                        "parent must be listed before".into(),
                    ));
                }
            }
            if m.royalty_bps > self.params.max_royalty_bps {
                return Err(GenesisError::Model(m.id, "royalty above the limit".into()));
            }
            models.insert(
                m.id,
                Model {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    parent: m.parent,
                    licence: m.licence.clone(),
                    author: m.author,
                    royalty_bps: m.royalty_bps,
                    registered_height: 0,
                    extra_parents: Vec::new(),
                    datasets: Vec::new(),
                },
            );
        }
        let mut providers = BTreeMap::new();
        for p in &self.providers {
            for m in &p.models {
                if !models.contains_key(m) {
                    return Err(GenesisError::Provider(
                        p.address,
                        format!("unknown model {m}"),
                    ));
                }
            }
            if p.capacity == 0 {
                return Err(GenesisError::Provider(p.address, "capacity 0".into()));
            }
            providers.insert(
                p.address,
                Provider {
                    models: p.models.clone(),
                    price_per_token: p.price_per_token,
                    capacity: p.capacity,
                    endpoint: p.endpoint.clone(),
                    in_flight: 0,
                    jobs_settled: 0,
                    jobs_failed: 0,
                    jobs_expired: 0,
                },
            );
        }
        Ok(State {
            chain,
            params: self.params.clone(),
            height: 0,
            time: self.time,
            last_block: Hash32::digest("vouch 2026 genesis block v1", &[chain.as_bytes()]),
            accounts,
            validators: self.validators.iter().copied().collect::<BTreeSet<_>>(),
            providers,
            models,
            data: BTreeMap::new(),
            items: BTreeMap::new(),
            tasks: BTreeMap::new(),
            jobs: BTreeMap::new(),
            job_timers: BTreeSet::new(),
            unbond_timers: BTreeSet::new(),
            supply: Supply {
                genesis: genesis_supply,
                minted: 0,
                burned: 0,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_supply_is_capped_at_2_pow_53_minus_1() {
        let account = |n: u8, balance: u64, stake: u64| GenesisAccount {
            address: Hash32([n; 32]),
            balance,
            stake,
        };
        let mut g = Genesis {
            chain_name: "cap".into(),
            time: 0,
            params: Params::default(),
            accounts: vec![account(1, MAX_SUPPLY - 10, 0), account(2, 5, 5)],
            validators: vec![Hash32([1; 32])],
            models: vec![],
            providers: vec![],
        };
        assert_eq!(g.state().unwrap().supply.genesis, MAX_SUPPLY);
        g.accounts[1].stake = 6;
        assert_eq!(
            g.state().unwrap_err(),
            GenesisError::SupplyOverflow(u128::from(MAX_SUPPLY) + 1)
        );
        // Far above 64 bits in total is the same error, not an overflow.
        g.accounts = (0..4).map(|i| account(i, u64::MAX, u64::MAX)).collect();
        assert!(matches!(
            g.state().unwrap_err(),
            GenesisError::SupplyOverflow(_)
        ));
    }
}
