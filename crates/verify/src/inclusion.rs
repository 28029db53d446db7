//! Light check of a receipt against a block header: Merkle path to the header's receipt
//! root, the header's finality certificate, the chain it belongs to, and the transactions
//! that bind the receipt to its job and signer ([`check_binding`]). Needs no ledger state.

use vouch_crypto::merkle;
use vouch_types::tx::{domain, Action, Certificate, SimplexRound, Tx, VoteKind};
use vouch_types::{Binding, Hash32, Header, Inclusion, Receipt};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InclusionError {
    #[error("receipt has no inclusion proof (it was not committed through a node)")]
    Missing,
    #[error("inclusion proof does not lead from this receipt to the block's receipt root")]
    BadPath,
    #[error("block certificate has no signatures")]
    NoVotes,
    #[error("block certificate signature by {0} is invalid")]
    BadVote(String),
    #[error("block is signed by {signed} of {needed} required trusted validators")]
    NoQuorum { signed: usize, needed: usize },
    #[error("validator {0} signed twice")]
    DuplicateVote(String),
    #[error("receipt was committed on chain {header}, not on the pinned chain {pinned} (the chain id of the pinned genesis): another network, possibly run by the same validator keys")]
    WrongChain { header: Hash32, pinned: Hash32 },
    #[error("job binding: {0}")]
    Binding(String),
}

/// What a successful inclusion check established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionReport {
    pub chain: Hash32,
    pub height: u64,
    pub block: Hash32,
    pub job: Hash32,
    pub signers: Vec<Hash32>,
}

/// The message a validator signs to finalize a header.
pub fn header_vote_message(h: &Header) -> [u8; 32] {
    h.id().0
}

/// The namespace the BFT engine (commonware simplex) signs votes under on `chain`.
pub fn simplex_namespace(chain: &Hash32) -> Vec<u8> {
    let mut ns = b"vouch/bft/v1/".to_vec();
    ns.extend_from_slice(chain.as_bytes());
    ns
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes a simplex validator signs for a vote of `round.kind` on the block `id`:
/// the namespace (with the vote kind's suffix) prefixed by its varint length, then the
/// proposal (epoch, view, parent view as varints, and the 32-byte payload, here the
/// header id). Pinned against the engine by a test in the node crate.
pub fn simplex_vote_message(chain: &Hash32, round: &SimplexRound, id: &Hash32) -> Vec<u8> {
    let mut ns = simplex_namespace(chain);
    ns.extend_from_slice(match round.kind {
        VoteKind::Finalize => b"_FINALIZE".as_slice(),
        VoteKind::Notarize => b"_NOTARIZE".as_slice(),
    });
    let mut m = Vec::with_capacity(ns.len() + 64);
    varint(ns.len() as u64, &mut m);
    m.extend_from_slice(&ns);
    varint(round.epoch, &mut m);
    varint(round.view, &mut m);
    varint(round.parent, &mut m);
    m.extend_from_slice(id.as_bytes());
    m
}

/// Checks a header's finality certificate: every signature valid, no validator twice, and
/// with `trusted`, signatures from more than two thirds of that set. Returns the signers.
pub fn check_certificate(
    header: &Header,
    certificate: &Certificate,
    trusted: Option<&[Hash32]>,
) -> Result<Vec<Hash32>, InclusionError> {
    if certificate.votes.is_empty() {
        return Err(InclusionError::NoVotes);
    }
    let id = header.id();
    let simplex_msg = certificate
        .simplex
        .as_ref()
        .map(|r| simplex_vote_message(&header.chain, r, &id));
    let mut signers = Vec::new();
    for v in &certificate.votes {
        let ok = match &simplex_msg {
            Some(m) => vouch_crypto::verify_raw(&v.validator, m, &v.signature),
            None => vouch_crypto::verify(
                &v.validator,
                domain::HEADER_SIGNATURE,
                &header_vote_message(header),
                &v.signature,
            ),
        };
        ok.map_err(|_| InclusionError::BadVote(v.validator.to_hex()))?;
        if signers.contains(&v.validator) {
            return Err(InclusionError::DuplicateVote(v.validator.to_hex()));
        }
        signers.push(v.validator);
    }
    if let Some(set) = trusted {
        let signed = signers.iter().filter(|s| set.contains(s)).count();
        let needed = set.len() * 2 / 3 + 1;
        if signed < needed {
            return Err(InclusionError::NoQuorum { signed, needed });
        }
    }
    Ok(signers)
}

/// Checks the receipt's inclusion proof and the header's certificate. With `trusted`,
/// signatures from more than two thirds of those validators are required; without it the
/// signatures are checked and the signers reported, for the caller to compare with the
/// validator set it trusts.
pub fn check_inclusion(
    r: &Receipt,
    trusted: Option<&[Hash32]>,
) -> Result<InclusionReport, InclusionError> {
    let inc = r.inclusion.as_ref().ok_or(InclusionError::Missing)?;
    let proof = merkle::Proof {
        index: inc.proof.index,
        leaves: inc.proof.leaves,
        path: inc.proof.path.clone(),
    };
    if !merkle::verify(&inc.header.receipt_root, &r.id(), &proof) {
        return Err(InclusionError::BadPath);
    }
    let signers = check_certificate(&inc.header, &inc.certificate, trusted)?;
    Ok(InclusionReport {
        chain: inc.header.chain,
        height: inc.header.height,
        block: inc.header.id(),
        job: inc.job,
        signers,
    })
}

/// What a valid [`Binding`] established: the receipt was committed by the transaction
/// `commit_tx` of its block, sent by `provider` (the receipt's signer), for `job`, which
/// the ledger opened for `model`, `provider` and `input_hash` (the receipt's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingReport {
    pub commit_tx: Hash32,
    pub job: Hash32,
    pub provider: Hash32,
    pub model: Hash32,
    pub input_hash: Hash32,
    pub max_tokens: u32,
}

fn binding_err(msg: impl Into<String>) -> InclusionError {
    InclusionError::Binding(msg.into())
}

fn decode_tx(hex_tx: &str, what: &str) -> Result<Tx, InclusionError> {
    let bytes = hex::decode(hex_tx.trim())
        .map_err(|_| binding_err(format!("{what} transaction is not hex")))?;
    Tx::decode(&bytes).map_err(|e| binding_err(format!("{what} transaction does not decode: {e}")))
}

/// Builds the [`Binding`] for the receipt committed by `txs[commit_index]` of the block
/// with `header`, whose job was opened by `job_tx`. `None` if the index is out of range.
pub fn bind(header: &Header, txs: &[Tx], commit_index: usize, job_tx: &Tx) -> Option<Binding> {
    let ids: Vec<Hash32> = txs.iter().map(|t| t.id(&header.chain)).collect();
    let p = merkle::prove(&ids, commit_index)?;
    Some(Binding {
        commit_tx: hex::encode(txs[commit_index].encode()),
        commit_proof: vouch_types::InclusionProof {
            index: p.index,
            leaves: p.leaves,
            path: p.path,
        },
        job_tx: hex::encode(job_tx.encode()),
    })
}

/// Checks the inclusion's [`Binding`], if it has one (`Ok(None)` if not: a proof made
/// before bindings existed). Uses only the header (its chain id, `tx_root`, `tx_count`);
/// the header itself must be checked by [`check_certificate`] for this to mean anything.
///
/// Why it is enough: every transaction of a finalized block was validated by the ledger.
/// A `CommitResult` is accepted only from the provider of the job it names, and a job is
/// opened by a `SubmitJob` (job id = its transaction id) only for a registered model and a
/// registered provider serving it. So a commit transaction in the certified block, sent by
/// the receipt's signer, committing the receipt's id for job J, whose opening transaction
/// names the receipt's model, signer and input hash, proves the receipt was committed on
/// this chain by the provider that the job was given to.
pub fn check_binding(
    r: &Receipt,
    inc: &Inclusion,
) -> Result<Option<BindingReport>, InclusionError> {
    let Some(b) = &inc.binding else {
        return Ok(None);
    };
    let chain = inc.header.chain;
    let commit = decode_tx(&b.commit_tx, "commit")?;
    if b.commit_proof.leaves != u64::from(inc.header.tx_count) {
        return Err(binding_err(format!(
            "commit proof is for a block of {} transactions, the header has {}",
            b.commit_proof.leaves, inc.header.tx_count
        )));
    }
    let commit_id = commit.id(&chain);
    let proof = merkle::Proof {
        index: b.commit_proof.index,
        leaves: b.commit_proof.leaves,
        path: b.commit_proof.path.clone(),
    };
    if !merkle::verify(&inc.header.tx_root, &commit_id, &proof) {
        return Err(binding_err(
            "commit transaction is not in the block (its path does not lead to the header's transaction root)",
        ));
    }
    vouch_crypto::verify(
        &commit.from,
        domain::TX_SIGNATURE,
        &commit.signing_bytes(&chain),
        &commit.signature,
    )
    .map_err(|_| binding_err("commit transaction's signature is invalid"))?;
    let Action::CommitResult {
        job,
        receipt,
        output_hash,
        fingerprint,
        prompt_tokens,
        output_tokens,
    } = &commit.action
    else {
        return Err(binding_err(format!(
            "the transaction given as the commit is a {}, not a commit_result",
            commit.action.name()
        )));
    };
    if *receipt != r.id() {
        return Err(binding_err(format!(
            "the commit transaction commits receipt {receipt}, not this receipt ({})",
            r.id()
        )));
    }
    if *job != inc.job {
        return Err(binding_err(format!(
            "the inclusion names job {}, but the commit transaction commits job {job}",
            inc.job
        )));
    }
    if commit.from != r.provider {
        return Err(binding_err(format!(
            "receipt is signed by {}, but was committed by {}, the job's provider: the signer is not the provider that served the job",
            r.provider, commit.from
        )));
    }
    if *output_hash != r.output_hash
        || *fingerprint != r.fingerprint.hash()
        || *prompt_tokens != r.prompt_tokens
        || *output_tokens as usize != r.output_tokens.len()
    {
        return Err(binding_err(
            "the committed result (output hash, fingerprint, token counts) differs from the receipt's",
        ));
    }
    let opened = decode_tx(&b.job_tx, "job")?;
    if opened.id(&chain) != inc.job {
        return Err(binding_err(format!(
            "the job transaction has id {}, not the job {}",
            opened.id(&chain),
            inc.job
        )));
    }
    let Action::SubmitJob {
        model,
        provider,
        input_hash,
        max_tokens,
        ..
    } = opened.action
    else {
        return Err(binding_err(format!(
            "the job transaction is a {}, not a submit_job",
            opened.action.name()
        )));
    };
    if provider != r.provider {
        return Err(binding_err(format!(
            "job {} was given to provider {provider}, not to the receipt's signer {}",
            inc.job, r.provider
        )));
    }
    if model != r.model {
        return Err(binding_err(format!(
            "job {} is for model {model}, the receipt names {}",
            inc.job, r.model
        )));
    }
    if input_hash != r.input_hash {
        return Err(binding_err(format!(
            "job {} is for another input (input hash {input_hash}, the receipt's is {})",
            inc.job, r.input_hash
        )));
    }
    Ok(Some(BindingReport {
        commit_tx: commit_id,
        job: inc.job,
        provider,
        model,
        input_hash,
        max_tokens,
    }))
}
