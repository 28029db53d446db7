//! Inference jobs from escrow to settlement: `submit_job`, `commit_result`,
//! `audit_verdict`, `dispute`, `resolve_dispute`, and the settlement and slashing that
//! [`State::begin_block`] and dispute votes trigger.

use vouch_types::tx::Address;
use vouch_types::Hash32;

use crate::{
    add, audit_selected, bps_of, Ctx, Event, Job, JobResult, JobStatus, Sender, State, TxError,
};

/// A `submit_job` request.
#[derive(Clone, Copy)]
pub(crate) struct NewJob {
    pub model: Hash32,
    pub provider: Address,
    pub input_hash: Hash32,
    pub max_tokens: u32,
    pub max_fee: u64,
}

/// A `commit_result` request.
#[derive(Clone, Copy)]
pub(crate) struct Commit {
    pub job: Hash32,
    pub receipt: Hash32,
    pub output_hash: Hash32,
    pub fingerprint: Hash32,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
}

/// What a validated job transaction does.
pub(crate) enum Plan {
    /// Open job `id` (the transaction id) at the provider's current `price`, escrowing
    /// `max_fee`; it expires at `due`.
    Submit {
        id: Hash32,
        job: NewJob,
        price: u64,
        due: u64,
    },
    /// Record the provider's result with what it costs the client (`charge`, capped by
    /// the escrow); the challenge window closes at `due`.
    Commit {
        commit: Commit,
        charge: u64,
        due: u64,
    },
    /// The sender's audit verdict on a committed job.
    Audit { job: Hash32, pass: bool },
    /// The provider contests a failed audit; the dispute closes at `due`.
    Dispute { job: Hash32, due: u64 },
    /// The sender's vote on a disputed job; a two-thirds side decides it.
    Vote { job: Hash32, guilty: bool },
}

fn wrong_status(id: &Hash32, j: &Job, needed: &str) -> TxError {
    TxError::WrongJobStatus {
        job: *id,
        status: j.status,
        needed: needed.to_string(),
    }
}

impl State {
    pub(crate) fn check_submit_job(
        &self,
        s: &Sender,
        ctx: &Ctx,
        job: NewJob,
    ) -> Result<Plan, TxError> {
        let p = &self.params;
        let NewJob {
            model,
            provider,
            max_tokens,
            max_fee,
            ..
        } = job;
        s.spend(max_fee)?;
        if !self.models.contains_key(&model) {
            return Err(TxError::UnknownModel(model));
        }
        let prov = self
            .providers
            .get(&provider)
            .ok_or(TxError::UnknownProvider(provider))?;
        if !prov.models.contains(&model) {
            return Err(TxError::ModelNotServed { provider, model });
        }
        if !p.paid_admission && prov.in_flight >= prov.capacity {
            return Err(TxError::ProviderBusy(provider));
        }
        if max_tokens == 0 {
            return Err(TxError::InvalidField(
                "max_tokens must be at least 1".into(),
            ));
        }
        if p.paid_admission {
            let least = u128::from(prov.price_per_token) * u128::from(max_tokens);
            if u128::from(max_fee) < least {
                return Err(TxError::InvalidField(format!(
                    "max_fee {max_fee} is below the price of the requested tokens \
                     ({} per token × max_tokens {max_tokens} = {least})",
                    prov.price_per_token
                )));
            }
        }
        let id = s.tx.id(&self.chain);
        if self.jobs.contains_key(&id) {
            return Err(TxError::JobExists(id));
        }
        let due = add(ctx.time, p.job_timeout_ms)?;
        Ok(Plan::Submit {
            id,
            job,
            price: prov.price_per_token,
            due,
        })
    }

    pub(crate) fn check_commit_result(
        &self,
        s: &Sender,
        ctx: &Ctx,
        commit: Commit,
    ) -> Result<Plan, TxError> {
        let job = &commit.job;
        s.spend(0)?;
        let j = self.jobs.get(job).ok_or(TxError::UnknownJob(*job))?;
        if s.from != j.provider {
            return Err(TxError::NotAllowed {
                expected: format!("the job's provider {}", j.provider),
                got: s.from,
            });
        }
        if j.status != JobStatus::Submitted {
            return Err(wrong_status(job, j, "submitted"));
        }
        if commit.output_tokens > j.max_tokens {
            return Err(TxError::TooManyTokens {
                got: commit.output_tokens,
                max: j.max_tokens,
            });
        }
        let tokens = u128::from(commit.prompt_tokens) + u128::from(commit.output_tokens);
        let cost = tokens * u128::from(j.price_per_token);
        let charge = cost.min(u128::from(j.escrow)) as u64;
        let due = add(ctx.time, self.params.challenge_window_ms)?;
        Ok(Plan::Commit {
            commit,
            charge,
            due,
        })
    }

    pub(crate) fn check_audit_verdict(
        &self,
        s: &Sender,
        job: Hash32,
        pass: bool,
    ) -> Result<Plan, TxError> {
        s.spend(0)?;
        self.require_validator(s)?;
        let j = self.jobs.get(&job).ok_or(TxError::UnknownJob(job))?;
        if s.from == j.provider {
            return Err(TxError::NotAllowed {
                expected: "a validator other than the provider".into(),
                got: s.from,
            });
        }
        if j.status != JobStatus::Committed {
            return Err(wrong_status(&job, j, "committed and not yet audited"));
        }
        Ok(Plan::Audit { job, pass })
    }

    pub(crate) fn check_dispute(
        &self,
        s: &Sender,
        ctx: &Ctx,
        job: Hash32,
    ) -> Result<Plan, TxError> {
        s.spend(0)?;
        let j = self.jobs.get(&job).ok_or(TxError::UnknownJob(job))?;
        if s.from != j.provider {
            return Err(TxError::NotAllowed {
                expected: format!("the job's provider {}", j.provider),
                got: s.from,
            });
        }
        if j.status != JobStatus::Failed {
            return Err(wrong_status(&job, j, "failed"));
        }
        let due = add(ctx.time, self.params.dispute_period_ms)?;
        Ok(Plan::Dispute { job, due })
    }

    pub(crate) fn check_resolve_dispute(
        &self,
        s: &Sender,
        job: Hash32,
        guilty: bool,
    ) -> Result<Plan, TxError> {
        s.spend(0)?;
        self.require_validator(s)?;
        let j = self.jobs.get(&job).ok_or(TxError::UnknownJob(job))?;
        if j.status != JobStatus::Disputed {
            return Err(wrong_status(&job, j, "disputed"));
        }
        if Some(s.from) == j.auditor || s.from == j.provider {
            return Err(TxError::NotAllowed {
                expected: "a validator other than the auditor and the provider".into(),
                got: s.from,
            });
        }
        if j.votes.iter().any(|(v, _)| *v == s.from) {
            return Err(TxError::AlreadyVoted(s.from));
        }
        Ok(Plan::Vote { job, guilty })
    }

    fn require_validator(&self, s: &Sender) -> Result<(), TxError> {
        if self.validators.contains(&s.from) {
            Ok(())
        } else {
            Err(TxError::NotAllowed {
                expected: "a validator".into(),
                got: s.from,
            })
        }
    }

    /// The job a plan names: validation found it in this state.
    fn planned_job(&mut self, id: &Hash32) -> &mut Job {
        self.jobs
            .get_mut(id)
            .expect("the plan names a job it found in this state")
    }

    pub(crate) fn execute_jobs(
        &mut self,
        from: Address,
        ctx: &Ctx,
        plan: Plan,
        events: &mut Vec<Event>,
    ) {
        match plan {
            Plan::Submit {
                id,
                job,
                price,
                due,
            } => {
                self.accounts.entry(from).or_default().balance -= job.max_fee;
                if let Some(p) = self.providers.get_mut(&job.provider) {
                    p.in_flight += 1;
                }
                self.jobs.insert(
                    id,
                    Job {
                        client: from,
                        provider: job.provider,
                        model: job.model,
                        input_hash: job.input_hash,
                        max_tokens: job.max_tokens,
                        escrow: job.max_fee,
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
                    client: from,
                    provider: job.provider,
                    escrow: job.max_fee,
                });
            }
            Plan::Commit {
                commit: c,
                charge,
                due,
            } => {
                let selected = audit_selected(&ctx.seed, &c.job, self.params.audit_rate_ppm);
                let j = self.planned_job(&c.job);
                let old_due = j.due;
                j.status = JobStatus::Committed;
                j.due = due;
                j.audit_selected = selected;
                j.result = Some(JobResult {
                    receipt: c.receipt,
                    output_hash: c.output_hash,
                    fingerprint: c.fingerprint,
                    prompt_tokens: c.prompt_tokens,
                    output_tokens: c.output_tokens,
                    charge,
                    committed_at: ctx.time,
                });
                let provider = j.provider;
                self.job_timers.remove(&(old_due, c.job));
                self.job_timers.insert((due, c.job));
                if let Some(p) = self.providers.get_mut(&provider) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                }
                events.push(Event::JobCommitted {
                    job: c.job,
                    receipt: c.receipt,
                    charge,
                    audit_selected: selected,
                });
            }
            Plan::Audit { job, pass } => {
                let j = self.planned_job(&job);
                j.status = if pass {
                    JobStatus::Passed
                } else {
                    JobStatus::Failed
                };
                j.auditor = Some(from);
                events.push(Event::JobAudited {
                    job,
                    auditor: from,
                    pass,
                });
            }
            Plan::Dispute { job, due } => {
                let j = self.planned_job(&job);
                let old_due = j.due;
                j.status = JobStatus::Disputed;
                j.due = due;
                self.job_timers.remove(&(old_due, job));
                self.job_timers.insert((due, job));
                events.push(Event::JobDisputed { job });
            }
            Plan::Vote { job, guilty } => {
                let j = self.planned_job(&job);
                j.votes.push((from, guilty));
                let j = j.clone();
                self.count_votes(job, &j, ctx, events);
            }
        }
    }

    /// Decides a dispute once one side has more than two thirds of the weight of the
    /// validators eligible to vote (all but the auditor and the provider).
    fn count_votes(&mut self, id: Hash32, j: &Job, ctx: &Ctx, events: &mut Vec<Event>) {
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
            self.job_timers.remove(&(j.due, id));
            self.settle_guilty(id, j, events);
        } else if innocent_w * 3 > total * 2 {
            self.job_timers.remove(&(j.due, id));
            // The accusation was false: the auditor is slashed, the provider paid.
            if let Some(auditor) = j.auditor {
                self.slash(id, &auditor, &j.provider, events);
            }
            let mut honest = j.clone();
            honest.auditor = None;
            self.settle_honest(id, &honest, ctx, events);
        }
    }

    /// Dispute voting weight: bonded stake, or 1 for a validator with none.
    fn weight(&self, v: &Address) -> u128 {
        u128::from(self.accounts.get(v).map_or(0, |a| a.stake).max(1))
    }

    /// Pays out an honest job: the client gets back what was not charged; the charge is
    /// split between validator, model author and provider.
    pub(crate) fn settle_honest(
        &mut self,
        id: Hash32,
        job: &Job,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
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

    /// Refunds the client of a job found wrong and slashes its provider.
    pub(crate) fn settle_guilty(&mut self, id: Hash32, job: &Job, events: &mut Vec<Event>) {
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
}
