//! The Vouch ledger state machine.
//!
//! Pure: no clock, no I/O, no entropy. Block time, proposer and the chain-derived seed
//! come in through [`Ctx`]; everything else is a function of the genesis and the ordered
//! transactions. Replaying the same blocks from the same genesis gives the same state
//! root on every machine.
//!
//! Every transaction is checked completely before any state changes, so a rejected
//! transaction leaves the state exactly as it was. Amounts are `u64` base units; sums that
//! could exceed that are computed in `u128` and rejected, and total supply fits in `u64`
//! by a genesis check, so balances cannot overflow.
//!
//! This file holds the state, blocks and the dispatch; the actions live with their
//! family: `accounts` (transfer, stake, unbond), `registry` (providers, models),
//! `data` (datasets, synthetic data, items), `tasks` (annotation) and `jobs`
//! (submit, commit, audit, dispute, and settlement). `State::validate` runs the checks
//! every transaction shares, then one match over [`Action`] calls the action's check,
//! which returns its family's plan (what it found and computed); `State::execute` takes
//! the fee and carries out the plan, without looking at the action again.

mod accounts;
mod data;
pub mod genesis;
mod jobs;
pub mod lineage;
mod registry;
mod root;
mod tasks;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vouch_types::tx::{domain, Action, Address, Block, Header, Tx};
use vouch_types::Hash32;

pub use genesis::{Genesis, GenesisAccount, GenesisModel, GenesisProvider};

/// Chain parameters, fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Smallest fee a transaction may pay (base units).
    pub min_tx_fee: u64,
    /// How long unbonded stake stays slashable before it returns to the balance (ms).
    pub unbonding_period_ms: u64,
    /// Stake a provider must have bonded to register.
    pub min_provider_stake: u64,
    /// A submitted job not committed within this time expires and is refunded (ms).
    pub job_timeout_ms: u64,
    /// Time after a commit during which a job can be audited (ms); then it settles.
    pub challenge_window_ms: u64,
    /// Time a dispute stays open for votes (ms).
    pub dispute_period_ms: u64,
    /// Share of each settled job's charge that goes to the validator side (basis points).
    pub validator_fee_bps: u16,
    /// Largest royalty a model author may set (basis points).
    pub max_royalty_bps: u16,
    /// Share of the guilty party's stake taken by a slash (basis points).
    pub slash_bps: u16,
    /// Share of a slash paid to the party that proved the cheat; the rest is burned.
    pub reporter_reward_bps: u16,
    /// Fraction of committed jobs selected for audit, in parts per million.
    pub audit_rate_ppm: u32,
    /// Most unbonding entries one account may have at once.
    pub max_unbonding_entries: u32,
    /// Paid job admission (docs/ledger.md, `submit_job`): a job's escrow must cover the
    /// provider's price for its `max_tokens`, and a provider's registered capacity does
    /// not refuse jobs (jobs nobody sends input for hold no capacity; the provider's own
    /// queue bounds the work it takes). Off in genesis files written before the rule,
    /// so their stored blocks replay to the same roots.
    #[serde(default)]
    pub paid_admission: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_tx_fee: 1,
            unbonding_period_ms: 7 * 24 * 3600 * 1000,
            min_provider_stake: 1_000_000,
            job_timeout_ms: 120_000,
            challenge_window_ms: 60_000,
            dispute_period_ms: 60_000,
            validator_fee_bps: 500,
            max_royalty_bps: 2_000,
            slash_bps: 1_000,
            reporter_reward_bps: 5_000,
            audit_rate_ppm: 100_000,
            max_unbonding_entries: 16,
            paid_admission: true,
        }
    }
}

/// What the block proposer supplies to the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Block time, ms since the Unix epoch.
    pub time: u64,
    pub proposer: Address,
    /// Chain randomness for this block (see [`State::seed`]).
    pub seed: Hash32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbonding {
    pub amount: u64,
    pub release_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
    pub stake: u64,
    pub unbonding: Vec<Unbonding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub models: Vec<Hash32>,
    pub price_per_token: u64,
    pub capacity: u32,
    pub endpoint: String,
    /// Jobs submitted and not yet committed or expired.
    pub in_flight: u32,
    pub jobs_settled: u64,
    pub jobs_failed: u64,
    pub jobs_expired: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub version: String,
    /// The model this one derives from (its first parent, for a merge).
    pub parent: Option<Hash32>,
    pub licence: String,
    pub author: Address,
    pub royalty_bps: u16,
    pub registered_height: u64,
    /// Further parents of a merge (`publish_model`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_parents: Vec<Hash32>,
    /// Registered datasets the model was trained on (`publish_model`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<Hash32>,
}

impl Model {
    /// Every parent, the first one first.
    pub fn parents(&self) -> Vec<Hash32> {
        self.parent
            .iter()
            .chain(self.extra_parents.iter())
            .copied()
            .collect()
    }
}

/// An annotation task and the labels submitted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub creator: Address,
    pub items: Vec<Hash32>,
    pub labels: Vec<String>,
    /// Annotators the task waits for before it is decided.
    pub annotators: u32,
    /// The reward, escrowed from the creator until the task is decided.
    pub escrow: u64,
    pub created_height: u64,
    /// Every submission: annotator, its bonded stake when it submitted (its weight), and
    /// one label index per item.
    pub votes: Vec<(Address, u64, Vec<u8>)>,
    /// The consensus label of every item, once decided.
    pub decided: Option<Vec<u8>>,
}

/// The stake-weighted consensus of a task's votes: for each item the label with the most
/// stake behind it (the lowest index on a tie; a vote of an account without stake counts
/// 1), and for each voter the number of items on which it agreed.
pub fn consensus(task: &Task) -> (Vec<u8>, Vec<u32>) {
    let n_labels = task.labels.len();
    let decided: Vec<u8> = (0..task.items.len())
        .map(|i| {
            let mut weight = vec![0u128; n_labels];
            for (_, stake, labels) in &task.votes {
                weight[labels[i] as usize] += u128::from((*stake).max(1));
            }
            let best = weight.iter().copied().max().unwrap_or(0);
            weight.iter().position(|w| *w == best).unwrap_or(0) as u8
        })
        .collect();
    let agree = task
        .votes
        .iter()
        .map(|(_, _, labels)| labels.iter().zip(&decided).filter(|(a, b)| a == b).count() as u32)
        .collect();
    (decided, agree)
}

/// Who first added a data item to the ledger: the only contributor it credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCredit {
    pub dataset: Hash32,
    pub contributor: Address,
    pub height: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataItem {
    pub source: String,
    pub licence: String,
    pub contributor: Address,
    pub registered_height: u64,
    /// Items added to this dataset that nobody had added before (credited here).
    #[serde(default)]
    pub credited: u64,
    /// Items added to this dataset that another dataset had first (credited there).
    #[serde(default)]
    pub duplicates: u64,
    /// The model whose jobs generated this dataset (synthetic data), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_by: Option<Hash32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Fee escrowed, waiting for the provider's result.
    Submitted,
    /// Result committed, challenge window open.
    Committed,
    /// Audited and found honest; settles at the end of the window.
    Passed,
    /// Audited and found wrong; the provider may dispute before the window ends.
    Failed,
    /// The provider contested a failed audit; validators vote.
    Disputed,
}

impl JobStatus {
    fn tag(self) -> u8 {
        match self {
            JobStatus::Submitted => 0,
            JobStatus::Committed => 1,
            JobStatus::Passed => 2,
            JobStatus::Failed => 3,
            JobStatus::Disputed => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub receipt: Hash32,
    pub output_hash: Hash32,
    pub fingerprint: Hash32,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// What the client pays: price × tokens, capped by the escrow.
    pub charge: u64,
    pub committed_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub client: Address,
    pub provider: Address,
    pub model: Hash32,
    pub input_hash: Hash32,
    pub max_tokens: u32,
    pub escrow: u64,
    pub price_per_token: u64,
    pub submitted_at: u64,
    pub status: JobStatus,
    pub result: Option<JobResult>,
    /// Chosen for audit by chain randomness when the result was committed.
    pub audit_selected: bool,
    pub auditor: Option<Address>,
    /// Dispute votes: (validator, guilty).
    pub votes: Vec<(Address, bool)>,
    /// When the job's next automatic step happens (expiry or settlement), ms.
    pub due: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    pub genesis: u64,
    pub minted: u64,
    pub burned: u64,
}

impl Supply {
    /// What all balances, stakes, unbonding entries and escrows must add up to.
    pub fn expected_total(&self) -> u128 {
        u128::from(self.genesis) + u128::from(self.minted) - u128::from(self.burned)
    }
}

/// Something the state machine did that an indexer or a user wants to know about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    JobSubmitted {
        job: Hash32,
        client: Address,
        provider: Address,
        escrow: u64,
    },
    JobCommitted {
        job: Hash32,
        receipt: Hash32,
        charge: u64,
        audit_selected: bool,
    },
    JobAudited {
        job: Hash32,
        auditor: Address,
        pass: bool,
    },
    JobDisputed {
        job: Hash32,
    },
    JobSettled {
        job: Hash32,
        client: Address,
        refund: u64,
        provider: Address,
        provider_amount: u64,
        validator: Address,
        validator_amount: u64,
        author: Address,
        royalty: u64,
        /// The model the job ran (absent in events stored before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<Hash32>,
    },
    JobExpired {
        job: Hash32,
        client: Address,
        refund: u64,
    },
    Slashed {
        job: Hash32,
        offender: Address,
        amount: u64,
        reporter: Address,
        reward: u64,
        burned: u64,
    },
    Unbonded {
        account: Address,
        amount: u64,
    },
    /// Items added to a dataset: `credited` were new and are credited to `contributor`,
    /// `duplicates` were already on the ledger and stay credited to their first contributor.
    DataItemsAdded {
        dataset: Hash32,
        contributor: Address,
        credited: u32,
        duplicates: u32,
    },
    /// An annotation task reached its annotators: the consensus label of each item, what
    /// each agreeing annotator was paid, and the rounding refunded to the creator.
    TaskDecided {
        task: Hash32,
        labels: Vec<u8>,
        rewards: Vec<(Address, u64)>,
        refund: u64,
    },
}

/// Why a transaction was rejected. Every message is meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum TxError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("transaction is {len} bytes, the limit is {limit}")]
    Oversized { len: usize, limit: usize },
    #[error("bad signature: not signed by {from} for this chain")]
    BadSignature { from: Address },
    #[error("unknown account {0}: it has never received funds")]
    UnknownAccount(Address),
    #[error("replay: nonce {got} was already used (next nonce is {expected})")]
    Replay { expected: u64, got: u64 },
    #[error("bad nonce: expected {expected}, got {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("fee {fee} is below the minimum {min}")]
    FeeTooLow { fee: u64, min: u64 },
    #[error("insufficient funds: need {need}, balance is {balance}")]
    InsufficientFunds { need: u64, balance: u64 },
    #[error("insufficient stake: need {need}, bonded stake is {stake}")]
    InsufficientStake { need: u64, stake: u64 },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("too many unbonding entries (limit {0}); wait for one to complete")]
    TooManyUnbonding(u32),
    #[error("unknown model {0}")]
    UnknownModel(Hash32),
    #[error("unknown parent model {0}")]
    UnknownParent(Hash32),
    #[error("model {0} is already registered")]
    ModelExists(Hash32),
    #[error("data item {id} was already registered by {contributor}")]
    DuplicateData { id: Hash32, contributor: Address },
    #[error("unknown dataset {0}: register it first (register_data)")]
    UnknownDataset(Hash32),
    #[error("unknown annotation task {0}")]
    UnknownTask(Hash32),
    #[error("royalty {got} bps exceeds the limit {limit} bps")]
    RoyaltyTooHigh { got: u16, limit: u16 },
    #[error("invalid field: {0}")]
    InvalidField(String),
    #[error("{0} is not a registered provider")]
    UnknownProvider(Address),
    #[error("provider {provider} does not serve model {model}")]
    ModelNotServed { provider: Address, model: Hash32 },
    #[error("provider {0} is at capacity; try again later or another provider")]
    ProviderBusy(Address),
    #[error("unknown job {0} (never submitted, or already settled)")]
    UnknownJob(Hash32),
    #[error("job {job} is {status:?}; this transaction needs it {needed}")]
    WrongJobStatus {
        job: Hash32,
        status: JobStatus,
        needed: String,
    },
    #[error("only {expected} may do this, not {got}")]
    NotAllowed { expected: String, got: Address },
    #[error("job {0} already exists")]
    JobExists(Hash32),
    #[error("output of {got} tokens exceeds the job's max_tokens {max}")]
    TooManyTokens { got: u32, max: u32 },
    #[error("validator {0} already voted on this dispute")]
    AlreadyVoted(Address),
}

/// Why a block was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for chain {got}, this node runs {expected}")]
    WrongChain { expected: Hash32, got: Hash32 },
    #[error("block height {got}, expected {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block parent {got} is not the last block {expected}")]
    WrongParent { expected: Hash32, got: Hash32 },
    #[error("block time {got} is before the previous block time {previous}")]
    TimeWentBack { previous: u64, got: u64 },
    #[error("{what} root in the header is {got}, computed {computed}")]
    RootMismatch {
        what: &'static str,
        got: Hash32,
        computed: Hash32,
    },
    #[error("transaction {index} ({id}) is invalid: {error}")]
    Tx {
        index: usize,
        id: Hash32,
        error: TxError,
    },
    #[error("block has {0} transactions, more than the limit")]
    TooManyTxs(usize),
    #[error(
        "block time {time} is ahead of this node's clock ({now}) by more than the allowed skew"
    )]
    FromTheFuture { time: u64, now: u64 },
}

/// The result of applying a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub events: Vec<Event>,
    /// Receipt ids committed by this block, in transaction order (the receipt tree leaves).
    pub receipts: Vec<Hash32>,
    /// Jobs touched by this block (for indexes).
    pub jobs: Vec<Hash32>,
}

/// The whole ledger state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub chain: Hash32,
    pub params: Params,
    /// Height of the last applied block (0 = genesis).
    pub height: u64,
    /// Time of the last applied block (ms).
    pub time: u64,
    /// Id of the last applied block header (the genesis id at height 0).
    pub last_block: Hash32,
    pub accounts: BTreeMap<Address, Account>,
    pub validators: BTreeSet<Address>,
    pub providers: BTreeMap<Address, Provider>,
    pub models: BTreeMap<Hash32, Model>,
    pub data: BTreeMap<Hash32, DataItem>,
    /// Data items by content id, with their first contributor.
    #[serde(default)]
    pub items: BTreeMap<Hash32, ItemCredit>,
    /// Annotation tasks by id.
    #[serde(default)]
    pub tasks: BTreeMap<Hash32, Task>,
    pub jobs: BTreeMap<Hash32, Job>,
    /// (due time, job): expiry and settlement schedule.
    pub job_timers: BTreeSet<(u64, Hash32)>,
    /// (release time, account): unbonding schedule.
    pub unbond_timers: BTreeSet<(u64, Address)>,
    pub supply: Supply,
}

fn add(a: u64, b: u64) -> Result<u64, TxError> {
    a.checked_add(b).ok_or(TxError::Overflow)
}

/// `amount × bps / 10000`, rounded down.
pub fn bps_of(amount: u64, bps: u16) -> u64 {
    (u128::from(amount) * u128::from(bps) / 10_000) as u64
}

/// Whether `job` is chosen for audit under `seed` at `rate_ppm`: uniform, and unknown to
/// the provider until the block that commits its result is proposed.
pub fn audit_selected(seed: &Hash32, job: &Hash32, rate_ppm: u32) -> bool {
    let h = Hash32::digest(
        "vouch 2026 audit selection v1",
        &[seed.as_bytes(), job.as_bytes()],
    );
    let x = u32::from_le_bytes([h.0[0], h.0[1], h.0[2], h.0[3]]) % 1_000_000;
    x < rate_ppm
}

impl State {
    /// Randomness for the next block: derived from the last block id.
    pub fn seed(&self) -> Hash32 {
        Hash32::digest(domain::BLOCK_SEED, &[self.last_block.as_bytes()])
    }

    pub fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).cloned().unwrap_or_default()
    }

    /// Sum of everything that holds value. Equals [`Supply::expected_total`] at all times.
    pub fn total_value(&self) -> u128 {
        let mut t: u128 = 0;
        for a in self.accounts.values() {
            t += u128::from(a.balance) + u128::from(a.stake);
            t += a
                .unbonding
                .iter()
                .map(|u| u128::from(u.amount))
                .sum::<u128>();
        }
        t + self
            .jobs
            .values()
            .map(|j| u128::from(j.escrow))
            .sum::<u128>()
            + self
                .tasks
                .values()
                .map(|t| u128::from(t.escrow))
                .sum::<u128>()
    }

    /// Checks a transaction's signature for this chain.
    pub fn check_signature(&self, tx: &Tx) -> Result<(), TxError> {
        vouch_crypto::verify(
            &tx.from,
            domain::TX_SIGNATURE,
            &tx.signing_bytes(&self.chain),
            &tx.signature,
        )
        .map_err(|_| TxError::BadSignature { from: tx.from })
    }

    /// Mempool admission: everything [`State::apply_tx`] would check, without changing
    /// anything. Later transactions of the same sender in the pool are not considered.
    pub fn check_tx(&self, tx: &Tx, ctx: &Ctx) -> Result<(), TxError> {
        let mut scratch = Scratch::default();
        self.validate(tx, ctx, &mut scratch).map(|_| ())
    }

    /// Runs the automatic steps due at `ctx.time`: unbonding releases, job expiry and
    /// settlement. Called once at the start of every block.
    pub fn begin_block(&mut self, ctx: &Ctx) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(&(t, who)) = self.unbond_timers.first() {
            if t > ctx.time {
                break;
            }
            self.unbond_timers.pop_first();
            let acct = self.accounts.entry(who).or_default();
            let mut released = 0u64;
            acct.unbonding.retain(|u| {
                if u.release_at <= ctx.time {
                    released = released.saturating_add(u.amount);
                    false
                } else {
                    true
                }
            });
            if released > 0 {
                acct.balance = acct.balance.saturating_add(released);
                events.push(Event::Unbonded {
                    account: who,
                    amount: released,
                });
            }
        }
        while let Some(&(t, id)) = self.job_timers.first() {
            if t > ctx.time {
                break;
            }
            self.job_timers.pop_first();
            let Some(job) = self.jobs.get(&id).cloned() else {
                continue;
            };
            match job.status {
                JobStatus::Submitted => {
                    self.jobs.remove(&id);
                    self.credit(&job.client, job.escrow);
                    if let Some(p) = self.providers.get_mut(&job.provider) {
                        p.in_flight = p.in_flight.saturating_sub(1);
                        p.jobs_expired += 1;
                    }
                    events.push(Event::JobExpired {
                        job: id,
                        client: job.client,
                        refund: job.escrow,
                    });
                }
                JobStatus::Committed | JobStatus::Passed => {
                    self.settle_honest(id, &job, ctx, &mut events);
                }
                // No dispute in time, or no quorum in the dispute period: the audit stands.
                JobStatus::Failed | JobStatus::Disputed => {
                    self.settle_guilty(id, &job, &mut events);
                }
            }
        }
        events
    }

    fn credit(&mut self, who: &Address, amount: u64) {
        if amount == 0 {
            return;
        }
        let a = self.accounts.entry(*who).or_default();
        // Cannot saturate: every balance is part of a total that fits in u64.
        a.balance = a.balance.saturating_add(amount);
    }

    /// Applies one transaction. On error the state is unchanged.
    pub fn apply_tx(&mut self, tx: &Tx, ctx: &Ctx) -> Result<Vec<Event>, TxError> {
        let mut scratch = Scratch::default();
        let plan = self.validate(tx, ctx, &mut scratch)?;
        Ok(self.execute(tx, ctx, plan))
    }

    /// Applies a transaction whose signature the caller already checked (a mempool that
    /// verified it on admission, or a batch verification).
    pub fn apply_tx_prechecked(&mut self, tx: &Tx, ctx: &Ctx) -> Result<Vec<Event>, TxError> {
        let mut scratch = Scratch {
            skip_signature: true,
        };
        let plan = self.validate(tx, ctx, &mut scratch)?;
        Ok(self.execute(tx, ctx, plan))
    }

    /// Checks everything `tx` needs, without changing anything, and returns what it will
    /// do. The checks common to every transaction come first (signature, nonce, fee);
    /// then the one match over [`Action`]: each action's check lives with its family and
    /// yields that family's plan, so an action cannot exist without both its check and
    /// (through the plan, in [`State::execute`]) its effect.
    fn validate<'t>(
        &self,
        tx: &'t Tx,
        ctx: &Ctx,
        scratch: &mut Scratch,
    ) -> Result<Plan<'t>, TxError> {
        if !scratch.skip_signature {
            self.check_signature(tx)?;
        }
        let acct = self
            .accounts
            .get(&tx.from)
            .ok_or(TxError::UnknownAccount(tx.from))?;
        if tx.nonce < acct.nonce {
            return Err(TxError::Replay {
                expected: acct.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce > acct.nonce {
            return Err(TxError::BadNonce {
                expected: acct.nonce,
                got: tx.nonce,
            });
        }
        if tx.fee < self.params.min_tx_fee {
            return Err(TxError::FeeTooLow {
                fee: tx.fee,
                min: self.params.min_tx_fee,
            });
        }
        let s = &Sender {
            from: tx.from,
            tx,
            acct,
        };
        Ok(match &tx.action {
            // accounts.rs
            Action::Transfer { to, amount } => {
                Plan::Accounts(self.check_transfer(s, *to, *amount)?)
            }
            Action::Stake { amount } => Plan::Accounts(self.check_stake(s, *amount)?),
            Action::Unbond { amount } => Plan::Accounts(self.check_unbond(s, ctx, *amount)?),
            // registry.rs
            Action::RegisterProvider {
                models,
                price_per_token,
                capacity,
                endpoint,
            } => Plan::Registry(self.check_register_provider(
                s,
                models,
                *price_per_token,
                *capacity,
                endpoint,
            )?),
            Action::RegisterModel {
                id,
                name,
                version,
                parent,
                licence,
                royalty_bps,
            } => Plan::Registry(self.check_register_model(
                s,
                registry::NewModel {
                    id: *id,
                    name,
                    version,
                    licence,
                    royalty_bps: *royalty_bps,
                    parents: parent.as_slice(),
                    datasets: &[],
                },
            )?),
            Action::PublishModel {
                id,
                name,
                version,
                parents,
                datasets,
                licence,
                royalty_bps,
            } => Plan::Registry(self.check_publish_model(
                s,
                registry::NewModel {
                    id: *id,
                    name,
                    version,
                    licence,
                    royalty_bps: *royalty_bps,
                    parents,
                    datasets,
                },
            )?),
            // data.rs
            Action::RegisterData {
                id,
                source,
                licence,
            } => Plan::Data(self.check_register_data(s, *id, source, licence, None)?),
            Action::RegisterSynthetic {
                id,
                model,
                source,
                licence,
            } => Plan::Data(self.check_register_data(s, *id, source, licence, Some(*model))?),
            Action::AddDataItems { dataset, items } => {
                Plan::Data(self.check_add_data_items(s, *dataset, items)?)
            }
            // tasks.rs
            Action::CreateTask {
                items,
                labels,
                annotators,
                reward,
            } => Plan::Tasks(self.check_create_task(s, items, labels, *annotators, *reward)?),
            Action::SubmitLabels { task, labels } => {
                Plan::Tasks(self.check_submit_labels(s, *task, labels)?)
            }
            // jobs.rs
            Action::SubmitJob {
                model,
                provider,
                input_hash,
                max_tokens,
                max_fee,
            } => Plan::Jobs(self.check_submit_job(
                s,
                ctx,
                jobs::NewJob {
                    model: *model,
                    provider: *provider,
                    input_hash: *input_hash,
                    max_tokens: *max_tokens,
                    max_fee: *max_fee,
                },
            )?),
            Action::CommitResult {
                job,
                receipt,
                output_hash,
                fingerprint,
                prompt_tokens,
                output_tokens,
            } => Plan::Jobs(self.check_commit_result(
                s,
                ctx,
                jobs::Commit {
                    job: *job,
                    receipt: *receipt,
                    output_hash: *output_hash,
                    fingerprint: *fingerprint,
                    prompt_tokens: *prompt_tokens,
                    output_tokens: *output_tokens,
                },
            )?),
            Action::AuditVerdict { job, pass } => {
                Plan::Jobs(self.check_audit_verdict(s, *job, *pass)?)
            }
            Action::Dispute { job } => Plan::Jobs(self.check_dispute(s, ctx, *job)?),
            Action::ResolveDispute { job, guilty } => {
                Plan::Jobs(self.check_resolve_dispute(s, *job, *guilty)?)
            }
        })
    }

    /// Carries out a plan [`State::validate`] made from this state: takes the fee (paid
    /// to the proposer), advances the nonce, then the action's effect. Reads nothing of
    /// the transaction but its sender and fee.
    fn execute(&mut self, tx: &Tx, ctx: &Ctx, plan: Plan) -> Vec<Event> {
        let mut events = Vec::new();
        let height = self.height + 1;
        {
            let acct = self.accounts.entry(tx.from).or_default();
            acct.nonce += 1;
            acct.balance -= tx.fee;
        }
        self.credit(&ctx.proposer, tx.fee);
        let from = tx.from;
        match plan {
            Plan::Accounts(p) => self.execute_accounts(from, p),
            Plan::Registry(p) => self.execute_registry(from, height, p),
            Plan::Data(p) => self.execute_data(from, height, p, &mut events),
            Plan::Tasks(p) => self.execute_tasks(from, height, p, &mut events),
            Plan::Jobs(p) => self.execute_jobs(from, ctx, p, &mut events),
        }
        events
    }

    /// Checks a block against this state and applies it. On error nothing changes.
    pub fn apply_block(
        &mut self,
        block: &Block,
        check_signatures: bool,
    ) -> Result<Applied, BlockError> {
        let h = &block.header;
        self.check_header_link(h)?;
        if block.txs.len() > vouch_types::tx::MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTxs(block.txs.len()));
        }
        let ids: Vec<Hash32> = block.txs.iter().map(|t| t.id(&self.chain)).collect();
        let tx_root = vouch_crypto::merkle::root(&ids);
        if tx_root != h.tx_root {
            return Err(BlockError::RootMismatch {
                what: "transaction",
                got: h.tx_root,
                computed: tx_root,
            });
        }
        let ctx = Ctx {
            time: h.time,
            proposer: h.proposer,
            seed: self.seed(),
        };
        let mut next = self.clone();
        let mut applied = Applied {
            events: next.begin_block(&ctx),
            ..Applied::default()
        };
        for (index, tx) in block.txs.iter().enumerate() {
            let r = if check_signatures {
                next.apply_tx(tx, &ctx)
            } else {
                next.apply_tx_prechecked(tx, &ctx)
            };
            match r {
                Ok(ev) => applied.events.extend(ev),
                Err(error) => {
                    return Err(BlockError::Tx {
                        index,
                        id: ids[index],
                        error,
                    })
                }
            }
        }
        next.height = h.height;
        next.time = h.time;
        applied.collect_from_events();
        let receipt_root = vouch_crypto::merkle::root(&applied.receipts);
        if receipt_root != h.receipt_root {
            return Err(BlockError::RootMismatch {
                what: "receipt",
                got: h.receipt_root,
                computed: receipt_root,
            });
        }
        let state_root = next.root();
        if state_root != h.state_root {
            return Err(BlockError::RootMismatch {
                what: "state",
                got: h.state_root,
                computed: state_root,
            });
        }
        next.last_block = h.id();
        *self = next;
        Ok(applied)
    }

    fn check_header_link(&self, h: &Header) -> Result<(), BlockError> {
        if h.chain != self.chain {
            return Err(BlockError::WrongChain {
                expected: self.chain,
                got: h.chain,
            });
        }
        if h.height != self.height + 1 {
            return Err(BlockError::WrongHeight {
                expected: self.height + 1,
                got: h.height,
            });
        }
        if h.parent != self.last_block {
            return Err(BlockError::WrongParent {
                expected: self.last_block,
                got: h.parent,
            });
        }
        if h.time < self.time {
            return Err(BlockError::TimeWentBack {
                previous: self.time,
                got: h.time,
            });
        }
        Ok(())
    }

    /// Builds the next block from candidate transactions: the ones that apply are
    /// included in order, the others are returned with the reason. The returned block has
    /// an empty certificate; the consensus engine adds it. `self` is not changed.
    pub fn propose(
        &self,
        candidates: &[Tx],
        time: u64,
        proposer: Address,
        prechecked: bool,
    ) -> Proposal {
        let time = time.max(self.time);
        let ctx = Ctx {
            time,
            proposer,
            seed: self.seed(),
        };
        let mut next = self.clone();
        let mut applied = Applied {
            events: next.begin_block(&ctx),
            ..Applied::default()
        };
        let mut txs = Vec::new();
        let mut rejected = Vec::new();
        for tx in candidates {
            if txs.len() >= vouch_types::tx::MAX_BLOCK_TXS {
                break;
            }
            let r = if prechecked {
                next.apply_tx_prechecked(tx, &ctx)
            } else {
                next.apply_tx(tx, &ctx)
            };
            match r {
                Ok(ev) => {
                    applied.events.extend(ev);
                    txs.push(tx.clone());
                }
                Err(e) => rejected.push((tx.id(&self.chain), e)),
            }
        }
        applied.collect_from_events();
        let ids: Vec<Hash32> = txs.iter().map(|t| t.id(&self.chain)).collect();
        let mut header = Header {
            version: 1,
            chain: self.chain,
            height: self.height + 1,
            parent: self.last_block,
            time,
            proposer,
            tx_count: txs.len() as u32,
            tx_root: vouch_crypto::merkle::root(&ids),
            receipt_root: vouch_crypto::merkle::root(&applied.receipts),
            state_root: Hash32::default(),
        };
        next.height = header.height;
        next.time = time;
        header.state_root = next.root();
        next.last_block = header.id();
        Proposal {
            block: Block {
                header,
                txs,
                certificate: Default::default(),
            },
            state: next,
            applied,
            rejected,
        }
    }

    /// The state root: a hash of the canonical encoding of the whole state.
    pub fn root(&self) -> Hash32 {
        root::state_root(self)
    }
}

/// A block built by [`State::propose`].
#[derive(Debug, Clone)]
pub struct Proposal {
    pub block: Block,
    pub state: State,
    pub applied: Applied,
    pub rejected: Vec<(Hash32, TxError)>,
}

impl Applied {
    fn collect_from_events(&mut self) {
        for e in &self.events {
            match e {
                Event::JobCommitted { job, receipt, .. } => {
                    self.receipts.push(*receipt);
                    self.jobs.push(*job);
                }
                Event::JobSubmitted { job, .. }
                | Event::JobAudited { job, .. }
                | Event::JobDisputed { job }
                | Event::JobSettled { job, .. }
                | Event::JobExpired { job, .. } => self.jobs.push(*job),
                _ => {}
            }
        }
    }
}

#[derive(Default)]
struct Scratch {
    skip_signature: bool,
}

/// The sender of a transaction under validation, its account, and the check that it can
/// pay the fee plus an amount.
struct Sender<'s> {
    from: Address,
    tx: &'s Tx,
    acct: &'s Account,
}

impl Sender<'_> {
    /// Refuses unless the balance covers the fee plus `amount`.
    fn spend(&self, amount: u64) -> Result<(), TxError> {
        let need = add(self.tx.fee, amount)?;
        if need > self.acct.balance {
            return Err(TxError::InsufficientFunds {
                need,
                balance: self.acct.balance,
            });
        }
        Ok(())
    }
}

/// What a valid transaction will do, as [`State::validate`] found it: one variant per
/// family of actions, each carrying that family's plan (the amounts, ids, prices, charges
/// and due times validation looked up or computed, and the parts of the transaction the
/// effect stores). [`State::execute`] consumes it.
enum Plan<'t> {
    Accounts(accounts::Plan),
    Registry(registry::Plan<'t>),
    Data(data::Plan<'t>),
    Tasks(tasks::Plan<'t>),
    Jobs(jobs::Plan),
}

/// Builds and signs a transaction for `chain`.
pub fn sign_tx(
    key: &vouch_crypto::SigningKey,
    chain: &Hash32,
    nonce: u64,
    fee: u64,
    action: Action,
) -> Tx {
    let mut tx = Tx {
        from: key.public(),
        nonce,
        fee,
        action,
        signature: [0; 64],
    };
    tx.signature = key.sign(domain::TX_SIGNATURE, &tx.signing_bytes(chain));
    tx
}
