//! Datasets and their items: `register_data`, `register_synthetic`, `add_data_items`.

use std::collections::btree_map::Entry;
use std::collections::BTreeSet;

use vouch_types::tx::Address;
use vouch_types::Hash32;

use crate::{DataItem, Event, ItemCredit, Sender, State, TxError};

/// What a validated data transaction does.
pub(crate) enum Plan<'a> {
    /// Register a dataset contributed by the sender (`generated_by`: synthetic data).
    Dataset {
        id: Hash32,
        source: &'a str,
        licence: &'a str,
        generated_by: Option<Hash32>,
    },
    /// Add items to the sender's dataset; the ones nobody added before are credited.
    Items {
        dataset: Hash32,
        items: &'a [Hash32],
    },
}

impl State {
    /// `register_data`, or `register_synthetic` when `generated_by` names the model.
    pub(crate) fn check_register_data<'a>(
        &self,
        s: &Sender,
        id: Hash32,
        source: &'a str,
        licence: &'a str,
        generated_by: Option<Hash32>,
    ) -> Result<Plan<'a>, TxError> {
        s.spend(0)?;
        if let Some(model) = generated_by {
            if !self.models.contains_key(&model) {
                return Err(TxError::UnknownModel(model));
            }
        }
        if let Some(existing) = self.data.get(&id) {
            return Err(TxError::DuplicateData {
                id,
                contributor: existing.contributor,
            });
        }
        Ok(Plan::Dataset {
            id,
            source,
            licence,
            generated_by,
        })
    }

    pub(crate) fn check_add_data_items<'a>(
        &self,
        s: &Sender,
        dataset: Hash32,
        items: &'a [Hash32],
    ) -> Result<Plan<'a>, TxError> {
        s.spend(0)?;
        let d = self
            .data
            .get(&dataset)
            .ok_or(TxError::UnknownDataset(dataset))?;
        if d.contributor != s.from {
            return Err(TxError::NotAllowed {
                expected: format!("the dataset's contributor {}", d.contributor),
                got: s.from,
            });
        }
        if items.is_empty() {
            return Err(TxError::InvalidField("no items".into()));
        }
        let distinct: BTreeSet<&Hash32> = items.iter().collect();
        if distinct.len() != items.len() {
            return Err(TxError::InvalidField("an item is listed twice".into()));
        }
        Ok(Plan::Items { dataset, items })
    }

    pub(crate) fn execute_data(
        &mut self,
        from: Address,
        height: u64,
        plan: Plan,
        events: &mut Vec<Event>,
    ) {
        match plan {
            Plan::Dataset {
                id,
                source,
                licence,
                generated_by,
            } => {
                self.data.insert(
                    id,
                    DataItem {
                        source: source.to_string(),
                        licence: licence.to_string(),
                        contributor: from,
                        registered_height: height,
                        credited: 0,
                        duplicates: 0,
                        generated_by,
                    },
                );
            }
            Plan::Items { dataset, items } => {
                let mut credited = 0u32;
                for item in items {
                    if let Entry::Vacant(v) = self.items.entry(*item) {
                        v.insert(ItemCredit {
                            dataset,
                            contributor: from,
                            height,
                        });
                        credited += 1;
                    }
                }
                let duplicates = items.len() as u32 - credited;
                let d = self
                    .data
                    .get_mut(&dataset)
                    .expect("the plan names a dataset it found in this state");
                d.credited += u64::from(credited);
                d.duplicates += u64::from(duplicates);
                events.push(Event::DataItemsAdded {
                    dataset,
                    contributor: from,
                    credited,
                    duplicates,
                });
            }
        }
    }
}
