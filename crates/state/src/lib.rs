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

pub mod genesis;
pub mod lineage;
mod root;

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

    fn settle_honest(&mut self, id: Hash32, job: &Job, ctx: &Ctx, events: &mut Vec<Event>) {
        self.jobs.remove(&id);
        let charge = job.result.as_ref().map_or(0, |r| r.charge);
        let refund = job.escrow - charge;
        let validator = job.auditor.unwrap_or(ctx.proposer);
        let validator_amount = bps_of(charge, self.params.validator_fee_bps);
        let (author, royalty_bps) = self
            .models
            .get(&job.model)
            .map_or((job.provider, 0), |m| (m.author, m.royalty_bps));
        let royalty = bps_of(charge, royalty_bps);
        let provider_amount = charge - validator_amount.min(charge) - royalty.min(charge);
        let provider_amount = provider_amount.min(charge);
        self.credit(&job.client, refund);
        self.credit(&validator, validator_amount);
        self.credit(&author, royalty);
        self.credit(&job.provider, provider_amount);
        if let Some(p) = self.providers.get_mut(&job.provider) {
            p.jobs_settled += 1;
        }
        events.push(Event::JobSettled {
            job: id,
            client: job.client,
            refund,
            provider: job.provider,
            provider_amount,
            validator,
            validator_amount,
            author,
            royalty,
            model: Some(job.model),
        });
    }

    fn settle_guilty(&mut self, id: Hash32, job: &Job, events: &mut Vec<Event>) {
        self.jobs.remove(&id);
        self.credit(&job.client, job.escrow);
        if let Some(p) = self.providers.get_mut(&job.provider) {
            p.jobs_failed += 1;
        }
        let reporter = job.auditor.unwrap_or(job.client);
        self.slash(id, &job.provider, &reporter, events);
    }

    /// Takes `slash_bps` of the offender's bonded and unbonding stake; pays the reporter
    /// its share and burns the rest.
    fn slash(&mut self, job: Hash32, offender: &Address, reporter: &Address, ev: &mut Vec<Event>) {
        let bps = self.params.slash_bps;
        let reward_bps = self.params.reporter_reward_bps;
        let Some(acct) = self.accounts.get_mut(offender) else {
            return;
        };
        let mut amount = 0u64;
        let from_stake = bps_of(acct.stake, bps);
        acct.stake -= from_stake;
        amount += from_stake;
        for u in &mut acct.unbonding {
            let cut = bps_of(u.amount, bps);
            u.amount -= cut;
            amount = amount.saturating_add(cut);
        }
        let reward = bps_of(amount, reward_bps);
        let burned = amount - reward;
        self.credit(reporter, reward);
        self.supply.burned = self.supply.burned.saturating_add(burned);
        ev.push(Event::Slashed {
            job,
            offender: *offender,
            amount,
            reporter: *reporter,
            reward,
            burned,
        });
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

    fn validate(&self, tx: &Tx, ctx: &Ctx, scratch: &mut Scratch) -> Result<Plan, TxError> {
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
        let spend = |amount: u64| -> Result<u64, TxError> {
            let need = add(tx.fee, amount)?;
            if need > acct.balance {
                return Err(TxError::InsufficientFunds {
                    need,
                    balance: acct.balance,
                });
            }
            Ok(need)
        };
        let p = &self.params;
        Ok(match &tx.action {
            Action::Transfer { amount, .. } => {
                if *amount == 0 {
                    return Err(TxError::ZeroAmount);
                }
                spend(*amount)?;
                Plan::Simple
            }
            Action::Stake { amount } => {
                if *amount == 0 {
                    return Err(TxError::ZeroAmount);
                }
                spend(*amount)?;
                Plan::Simple
            }
            Action::Unbond { amount } => {
                spend(0)?;
                if *amount == 0 {
                    return Err(TxError::ZeroAmount);
                }
                if *amount > acct.stake {
                    return Err(TxError::InsufficientStake {
                        need: *amount,
                        stake: acct.stake,
                    });
                }
                if acct.unbonding.len() >= p.max_unbonding_entries as usize {
                    return Err(TxError::TooManyUnbonding(p.max_unbonding_entries));
                }
                add(ctx.time, p.unbonding_period_ms)?;
                Plan::Simple
            }
            Action::RegisterProvider {
                models,
                capacity,
                endpoint,
                ..
            } => {
                spend(0)?;
                if acct.stake < p.min_provider_stake {
                    return Err(TxError::InsufficientStake {
                        need: p.min_provider_stake,
                        stake: acct.stake,
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
                if *capacity == 0 {
                    return Err(TxError::InvalidField("capacity must be at least 1".into()));
                }
                if endpoint.chars().any(char::is_control) {
                    return Err(TxError::InvalidField(
                        "endpoint has control characters".into(),
                    ));
                }
                Plan::Simple
            }
            Action::RegisterModel {
                id,
                name,
                parent,
                royalty_bps,
                ..
            } => {
                spend(0)?;
                if self.models.contains_key(id) {
                    return Err(TxError::ModelExists(*id));
                }
                if let Some(parent) = parent {
                    if !self.models.contains_key(parent) {
                        return Err(TxError::UnknownParent(*parent));
                    }
                }
                if name.trim().is_empty() {
                    return Err(TxError::InvalidField("model name is empty".into()));
                }
                if *royalty_bps > p.max_royalty_bps {
                    return Err(TxError::RoyaltyTooHigh {
                        got: *royalty_bps,
                        limit: p.max_royalty_bps,
                    });
                }
                Plan::Simple
            }
            Action::PublishModel {
                id,
                name,
                parents,
                datasets,
                royalty_bps,
                ..
            } => {
                spend(0)?;
                if self.models.contains_key(id) {
                    return Err(TxError::ModelExists(*id));
                }
                if name.trim().is_empty() {
                    return Err(TxError::InvalidField("model name is empty".into()));
                }
                let distinct: BTreeSet<&Hash32> = parents.iter().collect();
                if distinct.len() != parents.len() || parents.contains(id) {
                    return Err(TxError::InvalidField(
                        "a parent is listed twice or is the model itself".into(),
                    ));
                }
                for p in parents {
                    if !self.models.contains_key(p) {
                        return Err(TxError::UnknownParent(*p));
                    }
                }
                let distinct: BTreeSet<&Hash32> = datasets.iter().collect();
                if distinct.len() != datasets.len() {
                    return Err(TxError::InvalidField("a dataset is listed twice".into()));
                }
                for d in datasets {
                    if !self.data.contains_key(d) {
                        return Err(TxError::UnknownDataset(*d));
                    }
                }
                if *royalty_bps > p.max_royalty_bps {
                    return Err(TxError::RoyaltyTooHigh {
                        got: *royalty_bps,
                        limit: p.max_royalty_bps,
                    });
                }
                Plan::Simple
            }
            Action::CreateTask {
                items,
                labels,
                annotators,
                reward,
            } => {
                spend(*reward)?;
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
                if *annotators == 0 || *annotators > vouch_types::tx::MAX_ANNOTATORS {
                    return Err(TxError::InvalidField(format!(
                        "annotators must be 1 to {}",
                        vouch_types::tx::MAX_ANNOTATORS
                    )));
                }
                Plan::Simple
            }
            Action::SubmitLabels { task, labels } => {
                spend(0)?;
                let t = self.tasks.get(task).ok_or(TxError::UnknownTask(*task))?;
                if t.decided.is_some() {
                    return Err(TxError::InvalidField(format!(
                        "task {task} is already decided"
                    )));
                }
                if tx.from == t.creator {
                    return Err(TxError::NotAllowed {
                        expected: "an annotator other than the task's creator".into(),
                        got: tx.from,
                    });
                }
                if acct.stake == 0 {
                    return Err(TxError::InsufficientStake { need: 1, stake: 0 });
                }
                if t.votes.iter().any(|(a, _, _)| *a == tx.from) {
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
                Plan::Simple
            }
            Action::AddDataItems { dataset, items } => {
                spend(0)?;
                let d = self
                    .data
                    .get(dataset)
                    .ok_or(TxError::UnknownDataset(*dataset))?;
                if d.contributor != tx.from {
                    return Err(TxError::NotAllowed {
                        expected: format!("the dataset's contributor {}", d.contributor),
                        got: tx.from,
                    });
                }
                if items.is_empty() {
                    return Err(TxError::InvalidField("no items".into()));
                }
                let distinct: BTreeSet<&Hash32> = items.iter().collect();
                if distinct.len() != items.len() {
                    return Err(TxError::InvalidField("an item is listed twice".into()));
                }
                Plan::Simple
            }
            Action::RegisterData { id, .. } | Action::RegisterSynthetic { id, .. } => {
                spend(0)?;
                if let Action::RegisterSynthetic { model, .. } = &tx.action {
                    if !self.models.contains_key(model) {
                        return Err(TxError::UnknownModel(*model));
                    }
                }
                if let Some(existing) = self.data.get(id) {
                    return Err(TxError::DuplicateData {
                        id: *id,
                        contributor: existing.contributor,
                    });
                }
                Plan::Simple
            }
            Action::SubmitJob {
                model,
                provider,
                max_tokens,
                max_fee,
                ..
            } => {
                spend(*max_fee)?;
                if !self.models.contains_key(model) {
                    return Err(TxError::UnknownModel(*model));
                }
                let prov = self
                    .providers
                    .get(provider)
                    .ok_or(TxError::UnknownProvider(*provider))?;
                if !prov.models.contains(model) {
                    return Err(TxError::ModelNotServed {
                        provider: *provider,
                        model: *model,
                    });
                }
                if !p.paid_admission && prov.in_flight >= prov.capacity {
                    return Err(TxError::ProviderBusy(*provider));
                }
                if *max_tokens == 0 {
                    return Err(TxError::InvalidField(
                        "max_tokens must be at least 1".into(),
                    ));
                }
                if p.paid_admission {
                    let least = u128::from(prov.price_per_token) * u128::from(*max_tokens);
                    if u128::from(*max_fee) < least {
                        return Err(TxError::InvalidField(format!(
                            "max_fee {max_fee} is below the price of the requested tokens \
                             ({} per token × max_tokens {max_tokens} = {least})",
                            prov.price_per_token
                        )));
                    }
                }
                let id = tx.id(&self.chain);
                if self.jobs.contains_key(&id) {
                    return Err(TxError::JobExists(id));
                }
                add(ctx.time, p.job_timeout_ms)?;
                Plan::Job {
                    id,
                    price: prov.price_per_token,
                }
            }
            Action::CommitResult {
                job,
                prompt_tokens,
                output_tokens,
                ..
            } => {
                spend(0)?;
                let j = self.jobs.get(job).ok_or(TxError::UnknownJob(*job))?;
                if tx.from != j.provider {
                    return Err(TxError::NotAllowed {
                        expected: format!("the job's provider {}", j.provider),
                        got: tx.from,
                    });
                }
                if j.status != JobStatus::Submitted {
                    return Err(wrong_status(job, j, "submitted"));
                }
                if *output_tokens > j.max_tokens {
                    return Err(TxError::TooManyTokens {
                        got: *output_tokens,
                        max: j.max_tokens,
                    });
                }
                let tokens = u128::from(*prompt_tokens) + u128::from(*output_tokens);
                let cost = tokens * u128::from(j.price_per_token);
                let charge = cost.min(u128::from(j.escrow)) as u64;
                add(ctx.time, p.challenge_window_ms)?;
                Plan::Charge(charge)
            }
            Action::AuditVerdict { job, .. } => {
                spend(0)?;
                self.require_validator(tx)?;
                let j = self.jobs.get(job).ok_or(TxError::UnknownJob(*job))?;
                if tx.from == j.provider {
                    return Err(TxError::NotAllowed {
                        expected: "a validator other than the provider".into(),
                        got: tx.from,
                    });
                }
                if j.status != JobStatus::Committed {
                    return Err(wrong_status(job, j, "committed and not yet audited"));
                }
                Plan::Simple
            }
            Action::Dispute { job } => {
                spend(0)?;
                let j = self.jobs.get(job).ok_or(TxError::UnknownJob(*job))?;
                if tx.from != j.provider {
                    return Err(TxError::NotAllowed {
                        expected: format!("the job's provider {}", j.provider),
                        got: tx.from,
                    });
                }
                if j.status != JobStatus::Failed {
                    return Err(wrong_status(job, j, "failed"));
                }
                add(ctx.time, p.dispute_period_ms)?;
                Plan::Simple
            }
            Action::ResolveDispute { job, .. } => {
                spend(0)?;
                self.require_validator(tx)?;
                let j = self.jobs.get(job).ok_or(TxError::UnknownJob(*job))?;
                if j.status != JobStatus::Disputed {
                    return Err(wrong_status(job, j, "disputed"));
                }
                if Some(tx.from) == j.auditor || tx.from == j.provider {
                    return Err(TxError::NotAllowed {
                        expected: "a validator other than the auditor and the provider".into(),
                        got: tx.from,
                    });
                }
                if j.votes.iter().any(|(v, _)| *v == tx.from) {
                    return Err(TxError::AlreadyVoted(tx.from));
                }
                Plan::Simple
            }
        })
    }

    fn require_validator(&self, tx: &Tx) -> Result<(), TxError> {
        if self.validators.contains(&tx.from) {
            Ok(())
        } else {
            Err(TxError::NotAllowed {
                expected: "a validator".into(),
                got: tx.from,
            })
        }
    }

    /// Dispute voting weight: bonded stake, or 1 for a validator with none.
    fn weight(&self, v: &Address) -> u128 {
        u128::from(self.accounts.get(v).map_or(0, |a| a.stake).max(1))
    }

    fn execute(&mut self, tx: &Tx, ctx: &Ctx, plan: Plan) -> Vec<Event> {
        let mut events = Vec::new();
        let height = self.height + 1;
        {
            let acct = self.accounts.entry(tx.from).or_default();
            acct.nonce += 1;
            acct.balance -= tx.fee;
        }
        self.credit(&ctx.proposer, tx.fee);
        match (&tx.action, plan) {
            (Action::Transfer { to, amount }, _) => {
                self.accounts.entry(tx.from).or_default().balance -= amount;
                self.credit(to, *amount);
            }
            (Action::Stake { amount }, _) => {
                let a = self.accounts.entry(tx.from).or_default();
                a.balance -= amount;
                a.stake += amount;
            }
            (Action::Unbond { amount }, _) => {
                let release_at = ctx.time + self.params.unbonding_period_ms;
                let a = self.accounts.entry(tx.from).or_default();
                a.stake -= amount;
                a.unbonding.push(Unbonding {
                    amount: *amount,
                    release_at,
                });
                self.unbond_timers.insert((release_at, tx.from));
            }
            (
                Action::RegisterProvider {
                    models,
                    price_per_token,
                    capacity,
                    endpoint,
                },
                _,
            ) => {
                let prev = self.providers.get(&tx.from);
                let p = Provider {
                    models: models.clone(),
                    price_per_token: *price_per_token,
                    capacity: *capacity,
                    endpoint: endpoint.clone(),
                    in_flight: prev.map_or(0, |p| p.in_flight),
                    jobs_settled: prev.map_or(0, |p| p.jobs_settled),
                    jobs_failed: prev.map_or(0, |p| p.jobs_failed),
                    jobs_expired: prev.map_or(0, |p| p.jobs_expired),
                };
                self.providers.insert(tx.from, p);
            }
            (
                Action::RegisterModel {
                    id,
                    name,
                    version,
                    parent,
                    licence,
                    royalty_bps,
                },
                _,
            ) => {
                self.models.insert(
                    *id,
                    Model {
                        name: name.clone(),
                        version: version.clone(),
                        parent: *parent,
                        licence: licence.clone(),
                        author: tx.from,
                        royalty_bps: *royalty_bps,
                        registered_height: height,
                        extra_parents: Vec::new(),
                        datasets: Vec::new(),
                    },
                );
            }
            (
                Action::RegisterData {
                    id,
                    source,
                    licence,
                }
                | Action::RegisterSynthetic {
                    id,
                    source,
                    licence,
                    ..
                },
                _,
            ) => {
                let generated_by = match &tx.action {
                    Action::RegisterSynthetic { model, .. } => Some(*model),
                    _ => None,
                };
                self.data.insert(
                    *id,
                    DataItem {
                        source: source.clone(),
                        licence: licence.clone(),
                        contributor: tx.from,
                        registered_height: height,
                        credited: 0,
                        duplicates: 0,
                        generated_by,
                    },
                );
            }
            (
                Action::PublishModel {
                    id,
                    name,
                    version,
                    parents,
                    datasets,
                    licence,
                    royalty_bps,
                },
                _,
            ) => {
                self.models.insert(
                    *id,
                    Model {
                        name: name.clone(),
                        version: version.clone(),
                        parent: parents.first().copied(),
                        licence: licence.clone(),
                        author: tx.from,
                        royalty_bps: *royalty_bps,
                        registered_height: height,
                        extra_parents: parents.iter().skip(1).copied().collect(),
                        datasets: datasets.clone(),
                    },
                );
            }
            (
                Action::CreateTask {
                    items,
                    labels,
                    annotators,
                    reward,
                },
                _,
            ) => {
                self.accounts.entry(tx.from).or_default().balance -= reward;
                self.tasks.insert(
                    tx.id(&self.chain),
                    Task {
                        creator: tx.from,
                        items: items.clone(),
                        labels: labels.clone(),
                        annotators: *annotators,
                        escrow: *reward,
                        created_height: height,
                        votes: Vec::new(),
                        decided: None,
                    },
                );
            }
            (Action::SubmitLabels { task, labels }, _) => {
                let stake = self.accounts.get(&tx.from).map_or(0, |a| a.stake);
                let t = self.tasks.get_mut(task).expect("validated");
                t.votes.push((tx.from, stake, labels.clone()));
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
                        task: *task,
                        labels: decided,
                        rewards,
                        refund,
                    });
                }
            }
            (Action::AddDataItems { dataset, items }, _) => {
                let mut credited = 0u32;
                for item in items {
                    if let std::collections::btree_map::Entry::Vacant(v) = self.items.entry(*item) {
                        v.insert(ItemCredit {
                            dataset: *dataset,
                            contributor: tx.from,
                            height,
                        });
                        credited += 1;
                    }
                }
                let duplicates = items.len() as u32 - credited;
                let d = self.data.get_mut(dataset).expect("validated");
                d.credited += u64::from(credited);
                d.duplicates += u64::from(duplicates);
                events.push(Event::DataItemsAdded {
                    dataset: *dataset,
                    contributor: tx.from,
                    credited,
                    duplicates,
                });
            }
            (
                Action::SubmitJob {
                    model,
                    provider,
                    input_hash,
                    max_tokens,
                    max_fee,
                },
                Plan::Job { id, price },
            ) => {
                self.accounts.entry(tx.from).or_default().balance -= max_fee;
                if let Some(p) = self.providers.get_mut(provider) {
                    p.in_flight += 1;
                }
                let due = ctx.time + self.params.job_timeout_ms;
                self.jobs.insert(
                    id,
                    Job {
                        client: tx.from,
                        provider: *provider,
                        model: *model,
                        input_hash: *input_hash,
                        max_tokens: *max_tokens,
                        escrow: *max_fee,
                        price_per_token: price,
                        submitted_at: ctx.time,
                        status: JobStatus::Submitted,
                        result: None,
                        audit_selected: false,
                        auditor: None,
                        votes: Vec::new(),
                        due,
                    },
                );
                self.job_timers.insert((due, id));
                events.push(Event::JobSubmitted {
                    job: id,
                    client: tx.from,
                    provider: *provider,
                    escrow: *max_fee,
                });
            }
            (
                Action::CommitResult {
                    job,
                    receipt,
                    output_hash,
                    fingerprint,
                    prompt_tokens,
                    output_tokens,
                },
                Plan::Charge(charge),
            ) => {
                let due = ctx.time + self.params.challenge_window_ms;
                let selected = audit_selected(&ctx.seed, job, self.params.audit_rate_ppm);
                let j = self.jobs.get_mut(job).expect("validated");
                self.job_timers.remove(&(j.due, *job));
                j.status = JobStatus::Committed;
                j.due = due;
                j.audit_selected = selected;
                j.result = Some(JobResult {
                    receipt: *receipt,
                    output_hash: *output_hash,
                    fingerprint: *fingerprint,
                    prompt_tokens: *prompt_tokens,
                    output_tokens: *output_tokens,
                    charge,
                    committed_at: ctx.time,
                });
                let provider = j.provider;
                self.job_timers.insert((due, *job));
                if let Some(p) = self.providers.get_mut(&provider) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                }
                events.push(Event::JobCommitted {
                    job: *job,
                    receipt: *receipt,
                    charge,
                    audit_selected: selected,
                });
            }
            (Action::AuditVerdict { job, pass }, _) => {
                let j = self.jobs.get_mut(job).expect("validated");
                j.status = if *pass {
                    JobStatus::Passed
                } else {
                    JobStatus::Failed
                };
                j.auditor = Some(tx.from);
                events.push(Event::JobAudited {
                    job: *job,
                    auditor: tx.from,
                    pass: *pass,
                });
            }
            (Action::Dispute { job }, _) => {
                let due = ctx.time + self.params.dispute_period_ms;
                let j = self.jobs.get_mut(job).expect("validated");
                self.job_timers.remove(&(j.due, *job));
                j.status = JobStatus::Disputed;
                j.due = due;
                self.job_timers.insert((due, *job));
                events.push(Event::JobDisputed { job: *job });
            }
            (Action::ResolveDispute { job, guilty }, _) => {
                let j = self.jobs.get_mut(job).expect("validated");
                j.votes.push((tx.from, *guilty));
                let j = j.clone();
                let eligible: Vec<Address> = self
                    .validators
                    .iter()
                    .filter(|v| Some(**v) != j.auditor && **v != j.provider)
                    .copied()
                    .collect();
                let total: u128 = eligible.iter().map(|v| self.weight(v)).sum();
                let side = |g: bool| -> u128 {
                    j.votes
                        .iter()
                        .filter(|(_, vote)| *vote == g)
                        .map(|(v, _)| self.weight(v))
                        .sum()
                };
                let (guilty_w, innocent_w) = (side(true), side(false));
                if guilty_w * 3 > total * 2 {
                    self.job_timers.remove(&(j.due, *job));
                    self.settle_guilty(*job, &j, &mut events);
                } else if innocent_w * 3 > total * 2 {
                    self.job_timers.remove(&(j.due, *job));
                    // The accusation was false: the auditor is slashed, the provider paid.
                    if let Some(auditor) = j.auditor {
                        self.slash(*job, &auditor, &j.provider, &mut events);
                    }
                    let mut honest = j.clone();
                    honest.auditor = None;
                    self.settle_honest(*job, &honest, ctx, &mut events);
                }
            }
            _ => unreachable!("plan matches the action"),
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

fn wrong_status(id: &Hash32, j: &Job, needed: &str) -> TxError {
    TxError::WrongJobStatus {
        job: *id,
        status: j.status,
        needed: needed.to_string(),
    }
}

#[derive(Default)]
struct Scratch {
    skip_signature: bool,
}

enum Plan {
    Simple,
    Job { id: Hash32, price: u64 },
    Charge(u64),
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
