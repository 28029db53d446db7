//! Jobs in the simulator: providers answering escrowed jobs with a hash-based mock engine
//! (honestly, or cheating in one of the ways a real provider could), validators auditing
//! every selected job by re-running the mock engine, providers disputing failed audits,
//! and validators voting on disputes. The actors react to what their validator finalized,
//! and send their transactions to every live validator's mempool (gossip).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use vouch_crypto::SigningKey;
use vouch_state::{sign_tx, Event, State};
use vouch_types::tx::{Action, Tx};
use vouch_types::Hash32;

use crate::Mem;

/// How a provider answers its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Runs a cheaper model but claims the registered one.
    SubstitutedModel,
    /// Runs honestly, then changes a token of the answer.
    EditedOutput,
    /// Stops after half the tokens (saving compute) and claims that is the answer.
    Truncated,
    /// Ignores the client's sampling seed.
    WrongSeed,
    /// Commits more output tokens than it produced (overcharging).
    InflatedCount,
    /// Commits a receipt it never shows anyone.
    Withheld,
}

impl Behaviour {
    pub const CHEATS: [Behaviour; 6] = [
        Behaviour::SubstitutedModel,
        Behaviour::EditedOutput,
        Behaviour::Truncated,
        Behaviour::WrongSeed,
        Behaviour::InflatedCount,
        Behaviour::Withheld,
    ];
}

/// A provider in the simulation: its key and how it behaves.
#[derive(Debug, Clone)]
pub struct SimProvider {
    pub key: [u8; 32],
    pub behaviour: Behaviour,
}

/// What a receipt says, in the mock engine's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReceipt {
    pub job: Hash32,
    pub provider: Hash32,
    pub model: Hash32,
    pub input_hash: Hash32,
    pub seed: u64,
    pub tokens: Vec<u32>,
    pub fingerprint: Hash32,
}

impl MockReceipt {
    pub fn id(&self) -> Hash32 {
        let tokens: Vec<u8> = self.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        Hash32::digest(
            "vouch sim receipt",
            &[
                self.job.as_bytes(),
                self.provider.as_bytes(),
                self.model.as_bytes(),
                self.input_hash.as_bytes(),
                &self.seed.to_le_bytes(),
                &tokens,
                self.fingerprint.as_bytes(),
            ],
        )
    }
    pub fn output_hash(&self) -> Hash32 {
        output_hash(&self.tokens)
    }
}

fn output_hash(tokens: &[u32]) -> Hash32 {
    let b: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    Hash32::digest("vouch sim output", &[&b])
}

/// The mock engine: the answer's length, tokens and activation fingerprint are hashes of
/// the weights, the input and the sampling seed. An answer stops on its own before
/// `max_tokens` (between 2 and `max_tokens - 1` tokens; `max_tokens` >= 4).
pub fn mock_run(
    weights: &Hash32,
    input: &Hash32,
    seed: u64,
    max_tokens: u32,
) -> (Vec<u32>, Hash32) {
    let tokens = vouch_types::stand_in::tokens(weights, input, seed, max_tokens);
    let fp = Hash32::digest(
        "vouch sim fingerprint",
        &[
            weights.as_bytes(),
            input.as_bytes(),
            output_hash(&tokens).as_bytes(),
        ],
    );
    (tokens, fp)
}

/// The sampling seed a client asked for (the simulation derives it from the job id).
pub fn job_seed(job: &Hash32) -> u64 {
    u64::from_le_bytes(job.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Which validator audits `job` first: they take turns by job id.
pub fn assigned_auditor(job: &Hash32, validators: usize) -> usize {
    (job_seed(&Hash32::digest("vouch sim auditor", &[job.as_bytes()])) % validators as u64) as usize
}

/// The audit decision, from the committed hashes and the receipt (if shown).
pub fn audit(
    committed: &vouch_state::JobResult,
    job: &vouch_state::Job,
    job_id: &Hash32,
    receipt: Option<&MockReceipt>,
) -> Result<(), String> {
    let r = receipt.ok_or("the provider did not produce the receipt")?;
    if r.id() != committed.receipt {
        return Err("the receipt shown is not the one committed".into());
    }
    if r.job != *job_id || r.model != job.model || r.input_hash != job.input_hash {
        return Err("receipt names another job, model or input".into());
    }
    let (tokens, fp) = mock_run(
        &job.model,
        &job.input_hash,
        job_seed(job_id),
        job.max_tokens,
    );
    if r.seed != job_seed(job_id) || r.tokens != tokens || r.fingerprint != fp {
        return Err("re-execution differs".into());
    }
    if committed.output_hash != r.output_hash()
        || committed.fingerprint != r.fingerprint
        || committed.output_tokens as usize != r.tokens.len()
    {
        return Err("the commit does not match the receipt".into());
    }
    Ok(())
}

/// The actors' shared view: receipts providers published, what each actor has read.
pub struct Actors {
    pub providers: Vec<SimProvider>,
    /// Validators whose audits and votes call every job guilty.
    pub lying_auditors: Vec<usize>,
    /// Receipts providers showed (a cheater of kind `Withheld` shows none).
    pub published: HashMap<Hash32, MockReceipt>,
    /// Per provider and per validator: how many of its home validator's events it read.
    provider_cursor: Vec<usize>,
    validator_cursor: Vec<usize>,
    /// Audits a validator holds back (not its turn): when, who, which job.
    later: BTreeMap<(Duration, usize, Hash32), ()>,
    pub fallback_delay: Duration,
}

impl Actors {
    pub fn new(providers: Vec<SimProvider>, lying_auditors: Vec<usize>, validators: usize) -> Self {
        Actors {
            provider_cursor: vec![0; providers.len()],
            providers,
            lying_auditors,
            published: HashMap::new(),
            validator_cursor: vec![0; validators],
            later: BTreeMap::new(),
            fallback_delay: Duration::from_millis(300),
        }
    }

    /// One round: every actor reads what its validator finalized since last time and acts.
    pub fn tick(&mut self, mems: &[Arc<Mem>], live: &[bool], now: Duration) {
        let Some(home) = live.iter().position(|l| *l) else {
            return;
        };
        let send = |tx: Tx| {
            for (m, l) in mems.iter().zip(live) {
                if *l {
                    m.submit(tx.clone());
                }
            }
        };
        // Providers answer their jobs and dispute failed audits.
        for p in 0..self.providers.len() {
            let key = SigningKey::from_bytes(&self.providers[p].key).expect("32 bytes");
            let me = key.public();
            let (events, state) = mems[home].events_since(self.provider_cursor[p]);
            self.provider_cursor[p] += events.len();
            for e in events {
                match e {
                    Event::JobSubmitted { job, provider, .. } if provider == me => {
                        let Some(j) = state.jobs.get(&job) else {
                            continue;
                        };
                        let (receipt, counted) = answer(&self.providers[p], &me, &job, j);
                        let action = Action::CommitResult {
                            job,
                            receipt: receipt.id(),
                            output_hash: receipt.output_hash(),
                            fingerprint: receipt.fingerprint,
                            prompt_tokens: 8,
                            output_tokens: counted,
                        };
                        if self.providers[p].behaviour != Behaviour::Withheld {
                            self.published.insert(receipt.id(), receipt);
                        }
                        send(next_tx(&mems[home], &key, action));
                    }
                    // Every provider contests a failed audit; the vote decides.
                    Event::JobAudited {
                        job, pass: false, ..
                    } if state.jobs.get(&job).is_some_and(|j| j.provider == me) => {
                        send(next_tx(&mems[home], &key, Action::Dispute { job }));
                    }
                    _ => {}
                }
            }
        }
        // Validators audit (their turn now, the others later if nobody did) and vote.
        for (v, mem) in mems.iter().enumerate() {
            if !live[v] {
                continue;
            }
            let key = crate::vouch_key(v);
            let (events, state) = mem.events_since(self.validator_cursor[v]);
            self.validator_cursor[v] += events.len();
            for e in events {
                match e {
                    Event::JobCommitted {
                        job,
                        audit_selected: true,
                        ..
                    } => {
                        let delay = if assigned_auditor(&job, mems.len()) == v {
                            Duration::ZERO
                        } else {
                            self.fallback_delay
                        };
                        self.later.insert((now + delay, v, job), ());
                    }
                    Event::JobDisputed { job } => {
                        let Some(j) = state.jobs.get(&job) else {
                            continue;
                        };
                        if j.auditor == Some(key.public()) {
                            continue;
                        }
                        let guilty = self.verdict(v, &job, j).is_err();
                        send(next_tx(mem, &key, Action::ResolveDispute { job, guilty }));
                    }
                    _ => {}
                }
            }
        }
        let due: Vec<(Duration, usize, Hash32)> = self
            .later
            .range(..=(now, usize::MAX, Hash32::default()))
            .map(|(k, _)| *k)
            .filter(|k| k.0 <= now)
            .collect();
        for k in due {
            self.later.remove(&k);
            let (_, v, job) = k;
            if !live[v] {
                continue;
            }
            let state = mems[v].snapshot();
            let Some(j) = state.jobs.get(&job) else {
                continue;
            };
            if j.status != vouch_state::JobStatus::Committed {
                continue;
            }
            let pass = self.verdict(v, &job, j).is_ok();
            send(next_tx(
                &mems[v],
                &crate::vouch_key(v),
                Action::AuditVerdict { job, pass },
            ));
        }
    }

    fn verdict(&self, v: usize, job_id: &Hash32, j: &vouch_state::Job) -> Result<(), String> {
        if self.lying_auditors.contains(&v) {
            return Err("lying auditor".into());
        }
        let committed = j.result.as_ref().ok_or("not committed")?;
        audit(committed, j, job_id, self.published.get(&committed.receipt))
    }
}

/// A provider's answer to a job, and the output token count it commits.
fn answer(p: &SimProvider, me: &Hash32, job: &Hash32, j: &vouch_state::Job) -> (MockReceipt, u32) {
    let seed = job_seed(job);
    let (mut tokens, fingerprint) = match p.behaviour {
        Behaviour::SubstitutedModel => {
            let cheap = Hash32::digest("vouch sim cheaper weights", &[j.model.as_bytes()]);
            mock_run(&cheap, &j.input_hash, seed, j.max_tokens)
        }
        Behaviour::WrongSeed => mock_run(&j.model, &j.input_hash, seed ^ 1, j.max_tokens),
        _ => mock_run(&j.model, &j.input_hash, seed, j.max_tokens),
    };
    match p.behaviour {
        Behaviour::EditedOutput => tokens[0] ^= 1,
        Behaviour::Truncated => tokens.truncate(tokens.len() / 2),
        _ => {}
    }
    let count = match p.behaviour {
        Behaviour::InflatedCount => j.max_tokens,
        _ => tokens.len() as u32,
    };
    (
        MockReceipt {
            job: *job,
            provider: *me,
            model: j.model,
            input_hash: j.input_hash,
            seed,
            tokens,
            fingerprint,
        },
        count,
    )
}

/// A transaction from `key` with the next nonce after its finalized and pending ones.
fn next_tx(mem: &Mem, key: &SigningKey, action: Action) -> Tx {
    let (state, pending) = mem.nonce_view(&key.public());
    let nonce = state.account(&key.public()).nonce + pending;
    sign_tx(key, &state.chain, nonce, state.params.min_tx_fee, action)
}

/// Everything finalized in `events` about slashing: (job, offender).
pub fn slashes(events: &[Event]) -> Vec<(Hash32, Hash32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Slashed { job, offender, .. } => Some((*job, *offender)),
            _ => None,
        })
        .collect()
}

/// Whether `state` has no open job left.
pub fn all_settled(state: &State) -> bool {
    state.jobs.is_empty()
}
