//! Light check of a receipt against a block header: Merkle path to the header's receipt
//! root, and the header's finality certificate. Needs no ledger state.

use vouch_crypto::merkle;
use vouch_types::tx::{domain, Certificate, SimplexRound, VoteKind};
use vouch_types::{Hash32, Header, Receipt};

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
