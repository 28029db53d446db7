//! Annotation tasks: `create_task`, `submit_labels`.

use std::collections::BTreeSet;

use vouch_types::tx::Address;
use vouch_types::Hash32;

use crate::{consensus, Event, Sender, State, Task, TxError};

/// What a validated annotation transaction does.
pub(crate) enum Plan<'a> {
    /// Open task `id` (the transaction id), escrowing `reward` from the sender.
    Create {
        id: Hash32,
        items: &'a [Hash32],
        labels: &'a [String],
        annotators: u32,
        reward: u64,
    },
    /// Record the sender's labels for `task` with its bonded `stake` as weight; the last
    /// awaited submission decides the task.
    Labels {
        task: Hash32,
        labels: &'a [u8],
        stake: u64,
    },
}

impl State {
    pub(crate) fn check_create_task<'a>(
        &self,
        s: &Sender,
        items: &'a [Hash32],
        labels: &'a [String],
        annotators: u32,
        reward: u64,
    ) -> Result<Plan<'a>, TxError> {
        s.spend(reward)?;
        if items.is_empty() {
            return Err(TxError::InvalidField("no items".into()));
        }
        let distinct: BTreeSet<&Hash32> = items.iter().collect();
        if distinct.len() != items.len() {
            return Err(TxError::InvalidField("an item is listed twice".into()));
        }
        if let Some(i) = items.iter().find(|i| !self.items.contains_key(i)) {
            return Err(TxError::InvalidField(format!(
                "item {i} is not on the ledger (add_data_items)"
            )));
        }
        let distinct: BTreeSet<&String> = labels.iter().collect();
        if labels.len() < 2
            || distinct.len() != labels.len()
            || labels.iter().any(|l| l.trim().is_empty())
        {
            return Err(TxError::InvalidField(
                "a task needs 2 to 16 distinct, non-empty labels".into(),
            ));
        }
        if annotators == 0 || annotators > vouch_types::tx::MAX_ANNOTATORS {
            return Err(TxError::InvalidField(format!(
                "annotators must be 1 to {}",
                vouch_types::tx::MAX_ANNOTATORS
            )));
        }
        Ok(Plan::Create {
            id: s.tx.id(&self.chain),
            items,
            labels,
            annotators,
            reward,
        })
    }

    pub(crate) fn check_submit_labels<'a>(
        &self,
        s: &Sender,
        task: Hash32,
        labels: &'a [u8],
    ) -> Result<Plan<'a>, TxError> {
        s.spend(0)?;
        let t = self.tasks.get(&task).ok_or(TxError::UnknownTask(task))?;
        if t.decided.is_some() {
            return Err(TxError::InvalidField(format!(
                "task {task} is already decided"
            )));
        }
        if s.from == t.creator {
            return Err(TxError::NotAllowed {
                expected: "an annotator other than the task's creator".into(),
                got: s.from,
            });
        }
        if s.acct.stake == 0 {
            return Err(TxError::InsufficientStake { need: 1, stake: 0 });
        }
        if t.votes.iter().any(|(a, _, _)| *a == s.from) {
            return Err(TxError::InvalidField(
                "this annotator already labelled the task".into(),
            ));
        }
        if labels.len() != t.items.len() {
            return Err(TxError::InvalidField(format!(
                "{} labels for {} items",
                labels.len(),
                t.items.len()
            )));
        }
        if labels.iter().any(|l| *l as usize >= t.labels.len()) {
            return Err(TxError::InvalidField(format!(
                "a label index is not below {}",
                t.labels.len()
            )));
        }
        Ok(Plan::Labels {
            task,
            labels,
            stake: s.acct.stake,
        })
    }

    pub(crate) fn execute_tasks(
        &mut self,
        from: Address,
        height: u64,
        plan: Plan,
        events: &mut Vec<Event>,
    ) {
        match plan {
            Plan::Create {
                id,
                items,
                labels,
                annotators,
                reward,
            } => {
                self.accounts.entry(from).or_default().balance -= reward;
                self.tasks.insert(
                    id,
                    Task {
                        creator: from,
                        items: items.to_vec(),
                        labels: labels.to_vec(),
                        annotators,
                        escrow: reward,
                        created_height: height,
                        votes: Vec::new(),
                        decided: None,
                    },
                );
            }
            Plan::Labels {
                task,
                labels,
                stake,
            } => {
                let t = self
                    .tasks
                    .get_mut(&task)
                    .expect("the plan names a task it found in this state");
                t.votes.push((from, stake, labels.to_vec()));
                if t.votes.len() as u32 >= t.annotators {
                    let (decided, agree) = consensus(t);
                    let units: u64 = agree.iter().map(|a| u64::from(*a)).sum();
                    let per = t.escrow.checked_div(units).unwrap_or(0);
                    let rewards: Vec<(Address, u64)> = t
                        .votes
                        .iter()
                        .zip(&agree)
                        .filter(|(_, a)| **a > 0)
                        .map(|((v, _, _), a)| (*v, per * u64::from(*a)))
                        .collect();
                    let paid: u64 = rewards.iter().map(|r| r.1).sum();
                    let refund = t.escrow - paid;
                    let creator = t.creator;
                    t.escrow = 0;
                    t.decided = Some(decided.clone());
                    for (v, amount) in &rewards {
                        self.credit(v, *amount);
                    }
                    self.credit(&creator, refund);
                    events.push(Event::TaskDecided {
                        task,
                        labels: decided,
                        rewards,
                        refund,
                    });
                }
            }
        }
    }
}
