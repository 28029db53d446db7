//! Balances and stake: `transfer`, `stake`, `unbond`.

use vouch_types::tx::Address;

use crate::{add, Ctx, Sender, State, TxError, Unbonding};

/// What a validated balance or stake transaction does.
pub(crate) enum Plan {
    /// Move `amount` from the sender's balance to `to`.
    Transfer { to: Address, amount: u64 },
    /// Bond `amount` of the sender's balance.
    Stake { amount: u64 },
    /// Move `amount` of bonded stake into an unbonding entry released at `release_at`.
    Unbond { amount: u64, release_at: u64 },
}

impl State {
    pub(crate) fn check_transfer(
        &self,
        s: &Sender,
        to: Address,
        amount: u64,
    ) -> Result<Plan, TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        s.spend(amount)?;
        Ok(Plan::Transfer { to, amount })
    }

    pub(crate) fn check_stake(&self, s: &Sender, amount: u64) -> Result<Plan, TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        s.spend(amount)?;
        Ok(Plan::Stake { amount })
    }

    pub(crate) fn check_unbond(&self, s: &Sender, ctx: &Ctx, amount: u64) -> Result<Plan, TxError> {
        let p = &self.params;
        s.spend(0)?;
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        if amount > s.acct.stake {
            return Err(TxError::InsufficientStake {
                need: amount,
                stake: s.acct.stake,
            });
        }
        if s.acct.unbonding.len() >= p.max_unbonding_entries as usize {
            return Err(TxError::TooManyUnbonding(p.max_unbonding_entries));
        }
        let release_at = add(ctx.time, p.unbonding_period_ms)?;
        Ok(Plan::Unbond { amount, release_at })
    }

    pub(crate) fn execute_accounts(&mut self, from: Address, plan: Plan) {
        match plan {
            Plan::Transfer { to, amount } => {
                self.accounts.entry(from).or_default().balance -= amount;
                self.credit(&to, amount);
            }
            Plan::Stake { amount } => {
                let a = self.accounts.entry(from).or_default();
                a.balance -= amount;
                a.stake += amount;
            }
            Plan::Unbond { amount, release_at } => {
                let a = self.accounts.entry(from).or_default();
                a.stake -= amount;
                a.unbonding.push(Unbonding { amount, release_at });
                self.unbond_timers.insert((release_at, from));
            }
        }
    }
}
