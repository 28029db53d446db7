//! Who serves and what is served: `register_provider`, `register_model`, `publish_model`.

use std::collections::BTreeSet;

use vouch_types::tx::Address;
use vouch_types::Hash32;

use crate::genesis::MAX_SUPPLY;
use crate::{Model, Provider, Sender, State, TxError};

/// What a validated registry transaction does.
pub(crate) enum Plan<'a> {
    /// Register or update the sender as a provider (its job counters are kept).
    Provider {
        models: &'a [Hash32],
        price_per_token: u64,
        capacity: u32,
        endpoint: &'a str,
    },
    /// Register a model authored by the sender.
    Model(NewModel<'a>),
}

/// A model as `register_model` or `publish_model` describes it.
pub(crate) struct NewModel<'a> {
    pub id: Hash32,
    pub name: &'a str,
    pub version: &'a str,
    pub licence: &'a str,
    pub royalty_bps: u16,
    /// Every parent, the first one first (`register_model`: at most one).
    pub parents: &'a [Hash32],
    /// Registered datasets it was trained on (`register_model`: none).
    pub datasets: &'a [Hash32],
}

impl State {
    pub(crate) fn check_register_provider<'a>(
        &self,
        s: &Sender,
        models: &'a [Hash32],
        price_per_token: u64,
        capacity: u32,
        endpoint: &'a str,
    ) -> Result<Plan<'a>, TxError> {
        let p = &self.params;
        s.spend(0)?;
        if s.acct.stake < p.min_provider_stake {
            return Err(TxError::InsufficientStake {
                need: p.min_provider_stake,
                stake: s.acct.stake,
            });
        }
        if models.is_empty() {
            return Err(TxError::InvalidField(
                "a provider must serve a model".into(),
            ));
        }
        let distinct: BTreeSet<_> = models.iter().collect();
        if distinct.len() != models.len() {
            return Err(TxError::InvalidField("models listed twice".into()));
        }
        for m in models {
            if !self.models.contains_key(m) {
                return Err(TxError::UnknownModel(*m));
            }
        }
        if capacity == 0 {
            return Err(TxError::InvalidField("capacity must be at least 1".into()));
        }
        if endpoint.chars().any(char::is_control) {
            return Err(TxError::InvalidField(
                "endpoint has control characters".into(),
            ));
        }
        // A price is an amount a client escrows per token: like every amount it must
        // stay exact in JSON numbers. Chains from before paid admission never checked
        // it, and replay unchanged.
        if p.paid_admission && price_per_token > MAX_SUPPLY {
            return Err(TxError::InvalidField(format!(
                "price_per_token {price_per_token} exceeds 2^53 - 1 = {MAX_SUPPLY}"
            )));
        }
        Ok(Plan::Provider {
            models,
            price_per_token,
            capacity,
            endpoint,
        })
    }

    /// `register_model`: `m.parents` holds the optional parent.
    pub(crate) fn check_register_model<'a>(
        &self,
        s: &Sender,
        m: NewModel<'a>,
    ) -> Result<Plan<'a>, TxError> {
        s.spend(0)?;
        if self.models.contains_key(&m.id) {
            return Err(TxError::ModelExists(m.id));
        }
        if let Some(parent) = m.parents.first() {
            if !self.models.contains_key(parent) {
                return Err(TxError::UnknownParent(*parent));
            }
        }
        if m.name.trim().is_empty() {
            return Err(TxError::InvalidField("model name is empty".into()));
        }
        self.check_royalty(m.royalty_bps)?;
        Ok(Plan::Model(m))
    }

    pub(crate) fn check_publish_model<'a>(
        &self,
        s: &Sender,
        m: NewModel<'a>,
    ) -> Result<Plan<'a>, TxError> {
        s.spend(0)?;
        if self.models.contains_key(&m.id) {
            return Err(TxError::ModelExists(m.id));
        }
        if m.name.trim().is_empty() {
            return Err(TxError::InvalidField("model name is empty".into()));
        }
        let distinct: BTreeSet<&Hash32> = m.parents.iter().collect();
        if distinct.len() != m.parents.len() || m.parents.contains(&m.id) {
            return Err(TxError::InvalidField(
                "a parent is listed twice or is the model itself".into(),
            ));
        }
        for p in m.parents {
            if !self.models.contains_key(p) {
                return Err(TxError::UnknownParent(*p));
            }
        }
        let distinct: BTreeSet<&Hash32> = m.datasets.iter().collect();
        if distinct.len() != m.datasets.len() {
            return Err(TxError::InvalidField("a dataset is listed twice".into()));
        }
        for d in m.datasets {
            if !self.data.contains_key(d) {
                return Err(TxError::UnknownDataset(*d));
            }
        }
        self.check_royalty(m.royalty_bps)?;
        Ok(Plan::Model(m))
    }

    fn check_royalty(&self, royalty_bps: u16) -> Result<(), TxError> {
        let limit = self.params.max_royalty_bps;
        if royalty_bps > limit {
            return Err(TxError::RoyaltyTooHigh {
                got: royalty_bps,
                limit,
            });
        }
        Ok(())
    }

    pub(crate) fn execute_registry(&mut self, from: Address, height: u64, plan: Plan) {
        match plan {
            Plan::Provider {
                models,
                price_per_token,
                capacity,
                endpoint,
            } => {
                let prev = self.providers.get(&from);
                let p = Provider {
                    models: models.to_vec(),
                    price_per_token,
                    capacity,
                    endpoint: endpoint.to_string(),
                    in_flight: prev.map_or(0, |p| p.in_flight),
                    jobs_settled: prev.map_or(0, |p| p.jobs_settled),
                    jobs_failed: prev.map_or(0, |p| p.jobs_failed),
                    jobs_expired: prev.map_or(0, |p| p.jobs_expired),
                };
                self.providers.insert(from, p);
            }
            Plan::Model(m) => {
                self.models.insert(
                    m.id,
                    Model {
                        name: m.name.to_string(),
                        version: m.version.to_string(),
                        parent: m.parents.first().copied(),
                        licence: m.licence.to_string(),
                        author: from,
                        royalty_bps: m.royalty_bps,
                        registered_height: height,
                        extra_parents: m.parents.iter().skip(1).copied().collect(),
                        datasets: m.datasets.to_vec(),
                    },
                );
            }
        }
    }
}
