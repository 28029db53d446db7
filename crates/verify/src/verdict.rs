//! One verdict for a receipt, naming each fact that was proven, shared by every place
//! that verifies receipts (`vouch verify`, `POST /v1/verify`, the explorer, the MCP tool
//! `verify_receipt`), so they can never disagree.
//!
//! The facts, each separately (see `docs/receipt.md`, "What a verdict proves"):
//!
//! - `signature`: the receipt is signed by key K, and its hashes and structure hold;
//! - `provider_registered`: K is (or is not) a registered provider of the chain;
//! - `committed`: committed at height H of chain C, and whether the proof binds it to
//!   job J and to K (the commit transaction, see [`crate::inclusion::check_binding`]);
//! - `certified`: the validators whose certificate the block carries, and whether they are
//!   a quorum of the pinned set;
//! - `chain_matches_pinned`: C is the chain of the pinned genesis.
//!
//! [`Status::Verified`] (and `valid: true`) is said only when all of them hold: committed
//! on the pinned chain, certified by more than two thirds of the pinned validators, by
//! the provider the job was given to.

use serde::Serialize;
use vouch_types::{Hash32, Receipt, ReceiptKind};

use crate::inclusion::{self, InclusionError};

/// What the caller trusts: the pinned genesis (its chain id and validator set), an
/// expected signer, and whether a receipt must have been committed.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Chain id of the pinned genesis (the hash of its content, `Genesis::chain_id`).
    pub chain: Option<Hash32>,
    /// Validators a block's certificate must carry more than two thirds of.
    pub validators: Vec<Hash32>,
    /// The key the receipt must be signed by.
    pub provider: Option<Hash32>,
    /// A receipt without an inclusion proof is invalid, not signed-only.
    pub require_inclusion: bool,
}

/// The whole claim in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Committed on the pinned chain, certified by a quorum of its validators, by the
    /// provider the job was given to, for that job.
    Verified,
    /// Committed and bound to its job and signer on chain C, certified by the validators
    /// listed, but no chain was pinned to compare C with.
    Unpinned,
    /// Carries an inclusion proof made before bindings existed: the block committed the
    /// receipt's id, but nothing proves who committed it or for which job.
    Unbound,
    /// The signature and hashes hold; nothing shows it was committed on any chain.
    SignedOnly,
    /// A check failed; `reason` says which.
    Invalid,
}

impl Status {
    /// The word a person sees (`vouch verify`, the explorer).
    pub fn label(self) -> &'static str {
        match self {
            Status::Verified => "VERIFIED",
            Status::Unpinned => "UNPINNED",
            Status::Unbound => "UNBOUND",
            Status::SignedOnly => "SIGNED ONLY",
            Status::Invalid => "INVALID",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFact {
    pub ok: bool,
    pub key: Hash32,
}

/// Where the receipt was committed, and what binds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Committed {
    pub chain: Hash32,
    pub height: u64,
    pub block: Hash32,
    /// The job the inclusion names; a claim unless `bound_to_job_and_signer`.
    pub job: Hash32,
    pub bound_to_job_and_signer: bool,
    /// What binds it: `commit_transaction` (the proof itself, checkable offline) or
    /// `ledger` (this node's ledger, for proofs made before bindings existed).
    pub bound_by: Option<&'static str>,
    /// Id of the `CommitResult` transaction (bound by the proof).
    pub commit_tx: Option<Hash32>,
    /// What the job was opened for, from its `SubmitJob` transaction.
    pub job_model: Option<Hash32>,
    pub job_provider: Option<Hash32>,
    pub job_input_hash: Option<Hash32>,
}

/// Who certified the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Certified {
    pub signers: Vec<Hash32>,
    /// More than two thirds of the pinned validator set signed (`None`: no set pinned).
    pub quorum_of_pinned: Option<bool>,
    pub pinned_validators: usize,
}

/// A job as a node's ledger has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerJob {
    pub id: Hash32,
    pub provider: Hash32,
    pub model: Hash32,
    pub input_hash: Hash32,
    /// The receipt id its result committed, if committed.
    pub receipt: Option<Hash32>,
    /// submitted, committed, disputed, settled, expired, slashed.
    pub status: String,
    /// The audit's outcome, if audited.
    pub audit: Option<bool>,
}

/// What a full node knows from its own ledger (`POST /v1/verify`): facts a light check
/// cannot have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerFacts {
    pub chain: Hash32,
    /// The node's height.
    pub height: u64,
    /// The id of the node's block at the receipt's height, if it has that block.
    pub block_at_height: Option<Hash32>,
    /// The receipt's signer is a registered provider now.
    pub provider_registered: bool,
    /// The receipt's model is registered now.
    pub model_registered: bool,
    /// The job the receipt's inclusion names, if this ledger has it.
    pub job: Option<LedgerJob>,
}

/// The verdict: the status, one line for a person, and every fact on its own.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: Status,
    /// `true` only for [`Status::Verified`] (kept for clients that read `valid`).
    pub valid: bool,
    /// One line saying what was proven and what was not.
    pub summary: String,
    /// Why the receipt is not verified (the failed check when invalid).
    pub reason: Option<String>,
    pub receipt: Option<Hash32>,
    pub kind: Option<ReceiptKind>,
    pub model: Option<Hash32>,
    pub model_name: Option<String>,
    pub provider: Option<Hash32>,
    pub signature: Option<SignatureFact>,
    /// Input and output hashes, bounds and fingerprint structure hold.
    pub content_ok: Option<bool>,
    /// The signer is a registered provider of the chain (`null`: not known). Proven by a
    /// bound inclusion (the job was given to it), else from a node's ledger.
    pub provider_registered: Option<bool>,
    pub committed: Option<Committed>,
    pub certified: Option<Certified>,
    pub pinned_chain: Option<Hash32>,
    pub chain_matches_pinned: Option<bool>,
    pub ledger: Option<LedgerFacts>,
}

impl Verdict {
    /// The verdict for input that is not a receipt at all.
    pub fn not_a_receipt(reason: impl Into<String>) -> Self {
        let reason = format!("not a receipt: {}", reason.into());
        Verdict {
            status: Status::Invalid,
            valid: false,
            summary: reason.clone(),
            reason: Some(reason),
            receipt: None,
            kind: None,
            model: None,
            model_name: None,
            provider: None,
            signature: None,
            content_ok: None,
            provider_registered: None,
            committed: None,
            certified: None,
            pinned_chain: None,
            chain_matches_pinned: None,
            ledger: None,
        }
    }

    fn invalid(mut self, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        self.status = Status::Invalid;
        self.valid = false;
        self.summary = reason.clone();
        self.reason = Some(reason);
        self
    }

    /// The line `vouch verify` prints: `LABEL: summary`.
    pub fn line(&self) -> String {
        format!("{}: {}", self.status.label(), self.summary)
    }
}

fn signers_list(s: &[Hash32]) -> String {
    s.iter().map(|s| s.short()).collect::<Vec<_>>().join(",")
}

/// Judges a receipt: the offline checks, its inclusion proof against `trust`, and, on a
/// node, the facts of its own ledger. Pure: no I/O, no clock.
pub fn assess(r: &Receipt, trust: &Trust, ledger: Option<&LedgerFacts>) -> Verdict {
    let mut v = Verdict::not_a_receipt("");
    v.reason = None;
    v.receipt = Some(r.id());
    v.kind = Some(r.kind);
    v.model = Some(r.model);
    v.model_name = Some(r.model_name.clone());
    v.provider = Some(r.provider);
    v.pinned_chain = trust.chain;
    v.ledger = ledger.cloned();
    let sig_ok = vouch_crypto::verify_receipt_signature(r).is_ok();
    v.signature = Some(SignatureFact {
        ok: sig_ok,
        key: r.provider,
    });
    if let Err(e) = crate::check_fast(r) {
        // The signature is checked last: a signature error means the content held.
        v.content_ok = Some(matches!(e, crate::VerifyError::Signature(_)));
        return v.invalid(e.to_string());
    }
    v.content_ok = Some(true);
    if let Some(p) = &trust.provider {
        if let Err(e) = crate::check_provider(r, p) {
            return v.invalid(e.to_string());
        }
    }
    // What the node's ledger says about the signer, for the receipt's chain only.
    let ledger_here = |chain: &Hash32| ledger.filter(|l| l.chain == *chain);
    let k = r.provider.short();

    let Some(inc) = &r.inclusion else {
        if trust.require_inclusion {
            return v.invalid(InclusionError::Missing.to_string());
        }
        v.provider_registered = ledger.map(|l| l.provider_registered);
        let who = match (v.provider_registered, ledger) {
            (Some(true), Some(l)) => {
                format!(", a registered provider of chain {}", l.chain.short())
            }
            (Some(false), Some(l)) => {
                format!(
                    ", which is not a registered provider of chain {}",
                    l.chain.short()
                )
            }
            _ => String::new(),
        };
        v.status = Status::SignedOnly;
        v.reason = Some(
            "no inclusion proof: nothing shows this receipt was committed on any chain".into(),
        );
        v.summary = format!(
            "signed by {k}{who}; signature, hashes and fingerprint structure hold; not committed on any chain (no inclusion proof), so nothing shows a provider of the network answered this"
        );
        return v;
    };

    // Merkle path to the receipt root, and every certificate signature.
    let rep = match inclusion::check_inclusion(r, None) {
        Ok(rep) => rep,
        Err(e) => return v.invalid(e.to_string()),
    };
    let h = &inc.header;
    v.committed = Some(Committed {
        chain: h.chain,
        height: h.height,
        block: rep.block,
        job: inc.job,
        bound_to_job_and_signer: false,
        bound_by: None,
        commit_tx: None,
        job_model: None,
        job_provider: None,
        job_input_hash: None,
    });
    // The chain first: another network run by the same validator keys certifies its
    // blocks just as well.
    if let Some(pinned) = trust.chain {
        v.chain_matches_pinned = Some(h.chain == pinned);
        if h.chain != pinned {
            return v.invalid(
                InclusionError::WrongChain {
                    header: h.chain,
                    pinned,
                }
                .to_string(),
            );
        }
    }
    let pinned_set = (!trust.validators.is_empty()).then_some(trust.validators.as_slice());
    let quorum = pinned_set.map(|set| {
        let signed = rep.signers.iter().filter(|s| set.contains(s)).count();
        (signed, set.len() * 2 / 3 + 1)
    });
    v.certified = Some(Certified {
        signers: rep.signers.clone(),
        quorum_of_pinned: quorum.map(|(s, n)| s >= n),
        pinned_validators: trust.validators.len(),
    });
    if let Some((signed, needed)) = quorum {
        if signed < needed {
            return v.invalid(InclusionError::NoQuorum { signed, needed }.to_string());
        }
    }
    let binding = match inclusion::check_binding(r, inc) {
        Ok(b) => b,
        Err(e) => return v.invalid(e.to_string()),
    };
    let committed = v.committed.as_mut().expect("set above");
    if let Some(b) = &binding {
        committed.bound_to_job_and_signer = true;
        committed.bound_by = Some("commit_transaction");
        committed.commit_tx = Some(b.commit_tx);
        committed.job_model = Some(b.model);
        committed.job_provider = Some(b.provider);
        committed.job_input_hash = Some(b.input_hash);
    }

    // A node compares the proof with its own ledger, and can bind an old proof itself.
    if let Some(l) = ledger_here(&h.chain) {
        if h.height <= l.height {
            if let Some(id) = l.block_at_height {
                if id != rep.block {
                    return v.invalid(format!(
                        "this node's block at height {} is {}, not the receipt's block {}",
                        h.height, id, rep.block
                    ));
                }
            }
            let Some(j) = &l.job else {
                return v.invalid(format!(
                    "this node's ledger has no job {} (the job the inclusion names)",
                    inc.job
                ));
            };
            let mismatch = if j.provider != r.provider {
                Some(format!(
                    "was given to provider {}, not to the receipt's signer {}",
                    j.provider, r.provider
                ))
            } else if j.model != r.model {
                Some(format!(
                    "is for model {}, the receipt names {}",
                    j.model, r.model
                ))
            } else if j.input_hash != r.input_hash {
                Some("is for another input (input hash differs)".to_string())
            } else if j.receipt != Some(r.id()) {
                Some(match j.receipt {
                    Some(other) => format!("committed receipt {other}, not this one"),
                    None => "has no committed result".to_string(),
                })
            } else {
                None
            };
            if let Some(m) = mismatch {
                return v.invalid(format!("on this node's ledger, job {} {m}", inc.job));
            }
            let committed = v.committed.as_mut().expect("set above");
            if !committed.bound_to_job_and_signer {
                committed.bound_to_job_and_signer = true;
                committed.bound_by = Some("ledger");
                committed.job_model = Some(j.model);
                committed.job_provider = Some(j.provider);
                committed.job_input_hash = Some(j.input_hash);
            }
        }
    }

    let committed = v.committed.clone().expect("set above");
    v.provider_registered = if committed.bound_to_job_and_signer {
        Some(true)
    } else {
        ledger_here(&h.chain).map(|l| l.provider_registered)
    };
    let c = h.chain.short();
    let certified = format!("certified by {}", signers_list(&rep.signers));
    let at = format!(
        "committed at height {} (block {}) of chain {c}",
        h.height,
        rep.block.short()
    );
    if !committed.bound_to_job_and_signer {
        v.status = Status::Unbound;
        v.reason = Some(
            "the inclusion proof does not bind the receipt to its job or signer (made by an older node): who committed it, and for which job, is not proven".into(),
        );
        v.summary = format!(
            "signed by {k}; {at}, {certified}; not bound to a job or signer: the proof (made by an older node) does not show that {k} committed it, nor for job {} as it claims",
            inc.job.short()
        );
        return v;
    }
    let bound = format!(
        "bound to job {} and to {k} by {}",
        inc.job.short(),
        match committed.bound_by {
            Some("ledger") => "this node's ledger",
            _ => "its commit transaction",
        }
    );
    let model = format!("model {} ({})", r.model.short(), r.model_name);
    match (trust.chain, quorum) {
        (Some(_), Some((signed, _))) => {
            v.status = Status::Verified;
            v.valid = true;
            v.summary = format!(
                "signed by {k}, the registered provider that job {} was given to ({model}); {at}, the pinned chain; {bound}; certified by {signed} of the pinned genesis's {} validators ({})",
                inc.job.short(),
                trust.validators.len(),
                signers_list(&rep.signers)
            );
        }
        _ => {
            v.status = Status::Unpinned;
            v.reason = Some(
                "no chain pinned: pass the network's genesis file (--genesis) to verify the chain and its validators".into(),
            );
            v.summary = format!(
                "signed by {k}, the provider that job {} was given to ({model}); {at}; {bound}; {certified}{}; chain not pinned (pass --genesis): not verified",
                inc.job.short(),
                match quorum {
                    Some(_) => " (a quorum of the pinned validators)",
                    None => "",
                }
            );
        }
    }
    v
}
