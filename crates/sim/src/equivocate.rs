//! An equivocating leader: a validator whose vote channel, whenever it sends the notarize
//! vote that carries its own proposal, sends everyone but one victim that vote and the
//! victim a notarize vote, in the same round, for a second, different valid block (built
//! by its ledger next to the proposal, see `vouch_bft::Settings::equivocate_to`). Two
//! signed proposals for one view: what a byzantine leader does to split the honest
//! validators.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use commonware_actor::{Feedback, Unreliable};
use commonware_codec::{DecodeExt as _, Encode as _};
use commonware_consensus::simplex::types::{Notarize, Proposal, Vote};
use commonware_cryptography::sha256::Digest;
use commonware_p2p::{CheckedSender, LimitedSender, Recipients};
use commonware_runtime::IoBufs;
use vouch_bft::{Ledger, Pk, Scheme};

use crate::Mem;

/// The equivocator's vote sender.
#[derive(Clone)]
pub struct Equivocating<S> {
    pub inner: S,
    pub ledger: Ledger<Mem>,
    pub scheme: Scheme,
    pub victim: Pk,
    /// Conflicting votes sent.
    pub sent: Arc<AtomicU64>,
    /// Off: a plain sender (honest validators use the same type).
    pub active: bool,
}

/// [`Equivocating`] after the rate check: the recipients, decided per message.
pub struct Checked<'a, S> {
    me: &'a mut Equivocating<S>,
    to: Vec<Pk>,
}

impl<S: LimitedSender<PublicKey = Pk>> LimitedSender for Equivocating<S> {
    type PublicKey = Pk;
    type Checked<'a>
        = Checked<'a, S>
    where
        Self: 'a;

    fn check(&mut self, recipients: Recipients<Pk>) -> Result<Self::Checked<'_>, SystemTime> {
        let to = self.inner.check(recipients)?.recipients();
        Ok(Checked { me: self, to })
    }
}

fn send_to<S: LimitedSender<PublicKey = Pk>>(
    s: &mut S,
    to: Vec<Pk>,
    msg: impl Into<IoBufs> + Send,
    priority: bool,
) -> Unreliable<Feedback> {
    if to.is_empty() {
        return Unreliable::Outcome(Feedback::Ok);
    }
    match s.check(Recipients::Some(to)) {
        Ok(c) => c.send(msg, priority),
        Err(_) => Unreliable::Rejected,
    }
}

impl<S: LimitedSender<PublicKey = Pk>> CheckedSender for Checked<'_, S> {
    type PublicKey = Pk;

    fn recipients(&self) -> Vec<Pk> {
        self.to.clone()
    }

    fn send(self, message: impl Into<IoBufs> + Send, priority: bool) -> Unreliable<Feedback> {
        let bytes = message.into().coalesce();
        let me = self.me;
        let twin = match Vote::<Scheme, Digest>::decode(bytes.clone()) {
            Ok(Vote::Notarize(n)) if me.active => me
                .ledger
                .twin_of(&n.proposal.payload)
                .map(|t| (n.proposal.clone(), t)),
            _ => None,
        };
        let Some((ours, twin)) = twin else {
            return send_to(&mut me.inner, self.to, bytes, priority);
        };
        let others: Vec<Pk> = self
            .to
            .iter()
            .filter(|p| **p != me.victim)
            .cloned()
            .collect();
        let conflicting = Proposal::new(ours.round, ours.parent, twin);
        if let Some(vote) = Notarize::sign(&me.scheme, conflicting) {
            let wire = Vote::<Scheme, Digest>::Notarize(vote).encode();
            let victim = vec![me.victim.clone()];
            send_to(&mut me.inner, victim, wire, priority);
            me.sent.fetch_add(1, Ordering::Relaxed);
        }
        send_to(&mut me.inner, others, bytes, priority)
    }
}
