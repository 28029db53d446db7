//! Canonical encoding of the state for its root hash.
//!
//! Every map is a `BTreeMap`, so iteration order is the key order and the encoding is a
//! function of the state's contents alone. The root is one BLAKE3 pass over it: O(state)
//! per block, which is cheap at the sizes a single chain reaches between settlements
//! (settled jobs leave the state). An authenticated tree with per-account proofs is the
//! upgrade path when light clients need to prove balances.

use crate::{Account, DataItem, Job, Model, Params, Provider, State};
use vouch_types::{Encoder, Hash32};

const DOMAIN: &str = "vouch 2026 state root v1";

fn opt(e: &mut Encoder, v: &Option<Hash32>) {
    match v {
        None => {
            e.u8(0);
        }
        Some(h) => {
            e.u8(1).fixed(h.as_bytes());
        }
    }
}

fn params(e: &mut Encoder, p: &Params) {
    e.u64(p.min_tx_fee)
        .u64(p.unbonding_period_ms)
        .u64(p.min_provider_stake)
        .u64(p.job_timeout_ms)
        .u64(p.challenge_window_ms)
        .u64(p.dispute_period_ms)
        .u32(p.validator_fee_bps.into())
        .u32(p.max_royalty_bps.into())
        .u32(p.slash_bps.into())
        .u32(p.reporter_reward_bps.into())
        .u32(p.audit_rate_ppm)
        .u32(p.max_unbonding_entries);
    // Appended only when set, so chains from before the rule keep their roots.
    if p.paid_admission {
        e.u8(1);
    }
}

fn account(e: &mut Encoder, a: &Account) {
    e.u64(a.balance).u64(a.nonce).u64(a.stake);
    e.u32(a.unbonding.len() as u32);
    for u in &a.unbonding {
        e.u64(u.amount).u64(u.release_at);
    }
}

fn provider(e: &mut Encoder, p: &Provider) {
    e.u32(p.models.len() as u32);
    for m in &p.models {
        e.fixed(m.as_bytes());
    }
    e.u64(p.price_per_token)
        .u32(p.capacity)
        .str(&p.endpoint)
        .u32(p.in_flight)
        .u64(p.jobs_settled)
        .u64(p.jobs_failed)
        .u64(p.jobs_expired);
}

fn model(e: &mut Encoder, m: &Model) {
    e.str(&m.name).str(&m.version);
    opt(e, &m.parent);
    e.str(&m.licence)
        .fixed(m.author.as_bytes())
        .u32(m.royalty_bps.into())
        .u64(m.registered_height);
}

fn hashes(e: &mut Encoder, v: &[Hash32]) {
    e.u64(v.len() as u64);
    for h in v {
        e.fixed(h.as_bytes());
    }
}

fn data(e: &mut Encoder, d: &DataItem) {
    e.str(&d.source)
        .str(&d.licence)
        .fixed(d.contributor.as_bytes())
        .u64(d.registered_height);
}

fn job(e: &mut Encoder, j: &Job) {
    e.fixed(j.client.as_bytes())
        .fixed(j.provider.as_bytes())
        .fixed(j.model.as_bytes())
        .fixed(j.input_hash.as_bytes())
        .u32(j.max_tokens)
        .u64(j.escrow)
        .u64(j.price_per_token)
        .u64(j.submitted_at)
        .u8(j.status.tag());
    match &j.result {
        None => {
            e.u8(0);
        }
        Some(r) => {
            e.u8(1)
                .fixed(r.receipt.as_bytes())
                .fixed(r.output_hash.as_bytes())
                .fixed(r.fingerprint.as_bytes())
                .u32(r.prompt_tokens)
                .u32(r.output_tokens)
                .u64(r.charge)
                .u64(r.committed_at);
        }
    }
    e.u8(u8::from(j.audit_selected));
    opt(e, &j.auditor);
    e.u32(j.votes.len() as u32);
    for (v, g) in &j.votes {
        e.fixed(v.as_bytes()).u8(u8::from(*g));
    }
    e.u64(j.due);
}

/// Canonical bytes of the whole state.
pub fn encode(s: &State) -> Vec<u8> {
    let mut e = Encoder::new();
    e.fixed(s.chain.as_bytes());
    params(&mut e, &s.params);
    // `last_block` is not hashed: the header that carries this root names its parent,
    // and its own id cannot be inside the root it contains.
    e.u64(s.height).u64(s.time);
    e.u64(s.accounts.len() as u64);
    for (k, v) in &s.accounts {
        e.fixed(k.as_bytes());
        account(&mut e, v);
    }
    e.u64(s.validators.len() as u64);
    for v in &s.validators {
        e.fixed(v.as_bytes());
    }
    e.u64(s.providers.len() as u64);
    for (k, v) in &s.providers {
        e.fixed(k.as_bytes());
        provider(&mut e, v);
    }
    e.u64(s.models.len() as u64);
    for (k, v) in &s.models {
        e.fixed(k.as_bytes());
        model(&mut e, v);
    }
    e.u64(s.data.len() as u64);
    for (k, v) in &s.data {
        e.fixed(k.as_bytes());
        data(&mut e, v);
    }
    // Lineage beyond one parent and item credit came later: hashed in sections of their
    // own, present only when non-empty, so the roots of chains without them are unchanged.
    let lineage: Vec<_> = s
        .models
        .iter()
        .filter(|(_, m)| !m.extra_parents.is_empty() || !m.datasets.is_empty())
        .collect();
    if !lineage.is_empty() {
        e.str("lineage v1").u64(lineage.len() as u64);
        for (k, m) in lineage {
            e.fixed(k.as_bytes());
            hashes(&mut e, &m.extra_parents);
            hashes(&mut e, &m.datasets);
        }
    }
    let counted: Vec<_> = s
        .data
        .iter()
        .filter(|(_, d)| d.credited > 0 || d.duplicates > 0)
        .collect();
    if !s.items.is_empty() || !counted.is_empty() {
        e.str("items v1").u64(s.items.len() as u64);
        for (k, c) in &s.items {
            e.fixed(k.as_bytes())
                .fixed(c.dataset.as_bytes())
                .fixed(c.contributor.as_bytes())
                .u64(c.height);
        }
        e.u64(counted.len() as u64);
        for (k, d) in counted {
            e.fixed(k.as_bytes()).u64(d.credited).u64(d.duplicates);
        }
    }
    let synthetic: Vec<_> = s
        .data
        .iter()
        .filter_map(|(k, d)| d.generated_by.map(|m| (k, m)))
        .collect();
    if !synthetic.is_empty() {
        e.str("synthetic v1").u64(synthetic.len() as u64);
        for (k, m) in synthetic {
            e.fixed(k.as_bytes()).fixed(m.as_bytes());
        }
    }
    if !s.tasks.is_empty() {
        e.str("tasks v1").u64(s.tasks.len() as u64);
        for (k, t) in &s.tasks {
            e.fixed(k.as_bytes()).fixed(t.creator.as_bytes());
            hashes(&mut e, &t.items);
            e.u64(t.labels.len() as u64);
            for l in &t.labels {
                e.str(l);
            }
            e.u32(t.annotators).u64(t.escrow).u64(t.created_height);
            e.u64(t.votes.len() as u64);
            for (a, stake, labels) in &t.votes {
                e.fixed(a.as_bytes()).u64(*stake).bytes(labels);
            }
            match &t.decided {
                None => {
                    e.u8(0);
                }
                Some(d) => {
                    e.u8(1).bytes(d);
                }
            }
        }
    }
    e.u64(s.jobs.len() as u64);
    for (k, v) in &s.jobs {
        e.fixed(k.as_bytes());
        job(&mut e, v);
    }
    // The timer sets are derived from jobs and accounts; hashing them too makes an
    // inconsistency between them show up as a root mismatch.
    e.u64(s.job_timers.len() as u64);
    for (t, j) in &s.job_timers {
        e.u64(*t).fixed(j.as_bytes());
    }
    e.u64(s.unbond_timers.len() as u64);
    for (t, a) in &s.unbond_timers {
        e.u64(*t).fixed(a.as_bytes());
    }
    e.u64(s.supply.genesis)
        .u64(s.supply.minted)
        .u64(s.supply.burned);
    e.finish()
}

pub fn state_root(s: &State) -> Hash32 {
    Hash32::digest(DOMAIN, &[&encode(s)])
}
