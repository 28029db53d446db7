//! What a verdict proves, against real ledger blocks (the state machine proposes them, a
//! validator key certifies them) and receipts signed by random keys; no model weights.
//!
//! Issue 18: row 2 (another chain's header with the same validator key), row 3 (a
//! stranger's receipt committed by the chain's provider; a swapped `inclusion.job`),
//! row 4 (a random key's receipt without inclusion is never valid), row 7 (seeds above
//! 2^53 survive JSON; version 1 receipts with a numeric seed still verify).

use vouch_crypto::SigningKey;
use vouch_state::{
    sign_tx, Event, Genesis, GenesisAccount, GenesisModel, GenesisProvider, Params, State,
};
use vouch_types::tx::{domain, Action, Certificate, Tx, Vote};
use vouch_types::{
    ChunkProof, Fingerprint, FinishReason, Hash32, Inclusion, InclusionProof, Receipt, ReceiptKind,
    Sampling, PLAIN_RECEIPT_VERSION,
};
use vouch_verify::verdict::{LedgerFacts, LedgerJob};
use vouch_verify::{assess, check_fast, check_inclusion, Status, Trust};

const MODEL: Hash32 = Hash32([7; 32]);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32]).unwrap()
}
fn validator() -> SigningKey {
    key(2)
}
fn provider() -> SigningKey {
    key(1)
}
fn client() -> SigningKey {
    key(3)
}

/// A receipt that passes the fast path (10 fingerprint rows: one chunk of 120 points),
/// signed by `signer`.
fn receipt(signer: &SigningKey, prompt: &str, seed: u64) -> Receipt {
    let prompt = format!("<|im_start|>user\n{prompt}<|im_end|>\n");
    let output = "Hello".to_string();
    let toks = vec![19556u32, 2];
    let mut r = Receipt {
        version: PLAIN_RECEIPT_VERSION,
        kind: ReceiptKind::Chat,
        model: MODEL,
        model_name: "smollm2-135m".into(),
        tokenizer: Hash32([2; 32]),
        engine: "test".into(),
        input_hash: Receipt::hash_input(ReceiptKind::Chat, &prompt),
        prompt,
        prompt_tokens: 9,
        output_hash: Receipt::hash_output(&output, &toks),
        output,
        output_tokens: toks,
        embedding: None,
        finish_reason: FinishReason::Stop,
        sampling: Sampling {
            temperature: 0.7,
            top_p: 0.9,
            seed,
            max_tokens: 16,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        },
        stop: Vec::new(),
        constraint: None,
        fingerprint: Fingerprint {
            scheme: "rowtop4-gf65497-f16-chunk32-v1".into(),
            top_k: 128,
            chunk_tokens: 32,
            chunks: vec![ChunkProof {
                modulus: 65497,
                coeffs: vec![0; 120],
            }],
        },
        trace: None,
        created_at: 1_795_320_000,
        provider: Hash32::default(),
        signature: String::new(),
        inclusion: None,
    };
    vouch_crypto::sign_receipt(signer, &mut r);
    r
}

fn genesis(name: &str) -> Genesis {
    let a = |k: SigningKey| k.public();
    Genesis {
        chain_name: name.into(),
        time: 1_000,
        params: Params {
            min_provider_stake: 1_000,
            ..Params::default()
        },
        accounts: vec![
            GenesisAccount {
                address: a(client()),
                balance: 1_000_000,
                stake: 0,
            },
            GenesisAccount {
                address: a(provider()),
                balance: 10_000,
                stake: 100_000,
            },
            GenesisAccount {
                address: a(validator()),
                balance: 10_000,
                stake: 50_000,
            },
        ],
        validators: vec![a(validator())],
        models: vec![GenesisModel {
            id: MODEL,
            name: "smollm2-135m".into(),
            version: "1".into(),
            parent: None,
            licence: "apache-2.0".into(),
            author: a(validator()),
            royalty_bps: 0,
        }],
        providers: vec![GenesisProvider {
            address: a(provider()),
            models: vec![MODEL],
            price_per_token: 10,
            capacity: 4,
            endpoint: "local".into(),
        }],
    }
}

/// A chain with one validator, run by the state machine.
struct Chain {
    genesis: Genesis,
    state: State,
    nonces: [u64; 256],
    time: u64,
}

impl Chain {
    fn new(name: &str) -> Self {
        let genesis = genesis(name);
        let state = genesis.state().unwrap();
        Chain {
            genesis,
            state,
            nonces: [0; 256],
            time: 1_000,
        }
    }
    fn trust(&self) -> Trust {
        Trust {
            chain: Some(self.genesis.chain_id()),
            validators: self.genesis.validators.clone(),
            ..Trust::default()
        }
    }
    fn tx(&mut self, k: &SigningKey, action: Action) -> Tx {
        let n = &mut self.nonces[k.to_bytes()[0] as usize];
        let tx = sign_tx(k, &self.state.chain, *n, 1, action);
        *n += 1;
        tx
    }
    /// Proposes and certifies a block; returns it with the receipts it committed.
    fn block(&mut self, txs: Vec<Tx>) -> (vouch_types::Block, Vec<Hash32>, Vec<Event>) {
        self.time += 100;
        let p = self
            .state
            .propose(&txs, self.time, validator().public(), false);
        assert!(p.rejected.is_empty(), "rejected: {:?}", p.rejected);
        let mut block = p.block;
        let msg = vouch_verify::inclusion::header_vote_message(&block.header);
        block.certificate = Certificate {
            votes: vec![Vote {
                validator: validator().public(),
                signature: validator().sign(domain::HEADER_SIGNATURE, &msg),
            }],
            simplex: None,
        };
        self.state = p.state;
        (block, p.applied.receipts, p.applied.events)
    }
    /// The client opens a job for `r`'s model and input with the chain's provider, and
    /// `committer` commits `r`'s id as its result; returns the receipt with its inclusion
    /// proof, built as the node builds it, and the job's opening transaction.
    fn commit(&mut self, r: &Receipt, committer: &SigningKey) -> (Receipt, Tx) {
        let submit = self.tx(
            &client(),
            Action::SubmitJob {
                model: r.model,
                provider: provider().public(),
                input_hash: r.input_hash,
                max_tokens: 16,
                max_fee: 100_000,
            },
        );
        let job = submit.id(&self.state.chain);
        self.block(vec![submit.clone()]);
        let commit = self.tx(
            committer,
            Action::CommitResult {
                job,
                receipt: r.id(),
                output_hash: r.output_hash,
                fingerprint: r.fingerprint.hash(),
                prompt_tokens: r.prompt_tokens,
                output_tokens: r.output_tokens.len() as u32,
            },
        );
        // Another transaction in the block, so the commit's path is not trivial.
        let other = self.tx(
            &validator(),
            Action::Transfer {
                to: client().public(),
                amount: 1,
            },
        );
        let (block, receipts, _) = self.block(vec![other, commit]);
        let index = receipts.iter().position(|x| *x == r.id()).unwrap();
        let proof = vouch_crypto::merkle::prove(&receipts, index).unwrap();
        let mut out = r.clone();
        out.inclusion = Some(Inclusion {
            job,
            header: block.header.clone(),
            proof: InclusionProof {
                index: proof.index,
                leaves: proof.leaves,
                path: proof.path,
            },
            certificate: block.certificate.clone(),
            binding: vouch_verify::inclusion::bind(&block.header, &block.txs, 1, &submit),
        });
        (out, submit)
    }
    /// What a node of this chain knows about `r` (as `POST /v1/verify` gathers it).
    fn ledger(&self, r: &Receipt, job: Option<LedgerJob>) -> LedgerFacts {
        LedgerFacts {
            chain: self.state.chain,
            height: self.state.height,
            block_at_height: None,
            provider_registered: self.state.providers.contains_key(&r.provider),
            model_registered: self.state.models.contains_key(&r.model),
            job,
        }
    }
}

fn job_of(r: &Receipt, submit: &Tx) -> LedgerJob {
    let Action::SubmitJob {
        model,
        provider,
        input_hash,
        ..
    } = submit.action
    else {
        panic!()
    };
    LedgerJob {
        id: r.inclusion.as_ref().unwrap().job,
        provider,
        model,
        input_hash,
        receipt: Some(r.id()),
        status: "committed".into(),
        audit: None,
    }
}

#[test]
fn an_honest_committed_receipt_is_verified_with_every_fact_named() {
    let mut c = Chain::new("dev");
    let (r, submit) = c.commit(&receipt(&provider(), "Hi", 4), &provider());
    let v = assess(&r, &c.trust(), None);
    assert_eq!(v.status, Status::Verified, "{}", v.line());
    assert!(v.valid);
    assert!(v.line().starts_with("VERIFIED: "), "{}", v.line());
    let inc = r.inclusion.as_ref().unwrap();
    let committed = v.committed.as_ref().unwrap();
    assert_eq!(committed.chain, c.genesis.chain_id());
    assert_eq!(committed.height, 2);
    assert_eq!(committed.job, inc.job);
    assert!(committed.bound_to_job_and_signer);
    assert_eq!(committed.bound_by, Some("commit_transaction"));
    assert_eq!(committed.job_provider, Some(provider().public()));
    assert_eq!(committed.job_model, Some(MODEL));
    assert_eq!(v.provider_registered, Some(true));
    assert_eq!(v.chain_matches_pinned, Some(true));
    let cert = v.certified.as_ref().unwrap();
    assert_eq!(cert.signers, vec![validator().public()]);
    assert_eq!(cert.quorum_of_pinned, Some(true));
    assert_eq!(v.signature.as_ref().unwrap().key, provider().public());
    // The node's ledger agrees.
    let l = c.ledger(&r, Some(job_of(&r, &submit)));
    assert_eq!(assess(&r, &c.trust(), Some(&l)).status, Status::Verified);
    // Serialized for the API: `valid` true only here, the status by name.
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(j["status"], "verified");
    assert_eq!(j["valid"], true);
    assert_eq!(j["committed"]["bound_to_job_and_signer"], true);
    // Nothing pinned: the same proof is bound but unpinned, not verified.
    let v = assess(&r, &Trust::default(), None);
    assert_eq!(v.status, Status::Unpinned, "{}", v.line());
    assert!(!v.valid);
    // Pinned validators without a chain do not pin the chain either.
    let validators_only = Trust {
        validators: c.genesis.validators.clone(),
        ..Trust::default()
    };
    assert_eq!(assess(&r, &validators_only, None).status, Status::Unpinned);
}

/// Row 2: a dev network re-created with the same validator key (new genesis, new chain
/// id) certifies its blocks with the same key; under the old genesis its receipts fail,
/// with an error naming both chain ids.
#[test]
fn another_chains_header_with_the_same_validator_key_is_rejected_under_the_pinned_genesis() {
    let old = Chain::new("vouch-dev");
    let mut new = Chain::new("vouch-dev");
    new.genesis.time = 2_000; // re-created: another genesis, another chain id
    new.state = new.genesis.state().unwrap();
    assert_ne!(old.genesis.chain_id(), new.genesis.chain_id());
    assert_eq!(old.genesis.validators, new.genesis.validators);
    let (r, _) = new.commit(&receipt(&provider(), "Hi", 4), &provider());

    // What the verifier checked before: signature, path, and a certificate by the
    // pinned genesis's validators. All of it holds for the other chain's receipt.
    assert!(check_fast(&r).is_ok());
    assert!(check_inclusion(&r, Some(&old.genesis.validators)).is_ok());

    let v = assess(&r, &old.trust(), None);
    assert_eq!(v.status, Status::Invalid, "{}", v.line());
    assert!(!v.valid);
    assert_eq!(v.chain_matches_pinned, Some(false));
    let reason = v.reason.unwrap();
    assert!(
        reason.contains(&new.genesis.chain_id().to_hex())
            && reason.contains(&old.genesis.chain_id().to_hex())
            && reason.contains("not on the pinned chain"),
        "{reason}"
    );
    // Under its own genesis it verifies.
    assert_eq!(assess(&r, &new.trust(), None).status, Status::Verified);
}

/// Row 3: a receipt signed by a key that is not a provider on the chain, whose id the
/// chain's own provider committed for its job, is not verified, by the proof alone or by
/// a node's ledger.
#[test]
fn a_strangers_receipt_committed_by_the_chains_provider_is_not_verified() {
    let mut c = Chain::new("dev");
    let stranger = key(77);
    let (r, submit) = c.commit(&receipt(&stranger, "Hi", 4), &provider());
    assert!(!c.state.providers.contains_key(&stranger.public()));
    // The old check accepted it: signature, path and certificate all hold.
    assert!(check_fast(&r).is_ok());
    assert!(check_inclusion(&r, Some(&c.genesis.validators)).is_ok());

    let v = assess(&r, &c.trust(), None);
    assert_eq!(v.status, Status::Invalid, "{}", v.line());
    let reason = v.reason.clone().unwrap();
    assert!(
        reason.contains(&stranger.public().to_hex())
            && reason.contains(&provider().public().to_hex())
            && reason.contains("not the provider"),
        "{reason}"
    );
    // An old-format proof (no binding) is unbound, never verified ...
    let mut old = r.clone();
    old.inclusion.as_mut().unwrap().binding = None;
    let v = assess(&old, &c.trust(), None);
    assert_eq!(v.status, Status::Unbound, "{}", v.line());
    assert!(!v.valid);
    assert_eq!(v.provider_registered, None);
    // ... and a node's ledger, which knows the job's provider, rejects it.
    let l = c.ledger(&old, Some(job_of(&old, &submit)));
    assert!(!l.provider_registered);
    let v = assess(&old, &c.trust(), Some(&l));
    assert_eq!(v.status, Status::Invalid, "{}", v.line());
    assert!(v.reason.unwrap().contains("not to the receipt's signer"));
}

/// Row 3: `inclusion.job` is not covered by the receipt-root proof; replacing it is
/// caught by the binding, and by a node's ledger for old-format proofs.
#[test]
fn a_swapped_inclusion_job_is_rejected() {
    let mut c = Chain::new("dev");
    let (r, _) = c.commit(&receipt(&provider(), "Hi", 4), &provider());
    let fake = Hash32([0xee; 32]);
    let mut bad = r.clone();
    bad.inclusion.as_mut().unwrap().job = fake;
    // The old check did not see it.
    assert!(check_inclusion(&bad, Some(&c.genesis.validators)).is_ok());
    let v = assess(&bad, &c.trust(), None);
    assert_eq!(v.status, Status::Invalid, "{}", v.line());
    assert!(
        v.reason.as_ref().unwrap().contains(&fake.to_hex()),
        "{:?}",
        v.reason
    );
    // Without a binding the job is a claim: unbound, and the node does not know the job.
    bad.inclusion.as_mut().unwrap().binding = None;
    let v = assess(&bad, &c.trust(), None);
    assert_eq!(v.status, Status::Unbound);
    assert!(v.summary.contains("not bound"), "{}", v.summary);
    let l = c.ledger(&bad, None);
    let v = assess(&bad, &c.trust(), Some(&l));
    assert_eq!(v.status, Status::Invalid, "{}", v.line());
    assert!(v.reason.unwrap().contains("has no job"));
}

/// Row 4: a receipt invented and signed by a random key, with no inclusion, is
/// signed-only: never valid, with or without a pinned genesis.
#[test]
fn a_random_keys_receipt_without_inclusion_is_signed_only_never_valid() {
    let c = Chain::new("dev");
    let r = receipt(&key(99), "Invent something.", 5);
    assert!(check_fast(&r).is_ok());
    for trust in [Trust::default(), c.trust()] {
        let v = assess(&r, &trust, None);
        assert_eq!(v.status, Status::SignedOnly, "{}", v.line());
        assert!(!v.valid);
        assert!(v.line().starts_with("SIGNED ONLY: "), "{}", v.line());
        assert!(v.committed.is_none() && v.certified.is_none());
        assert!(v.signature.as_ref().unwrap().ok);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["valid"], false);
        assert_eq!(j["status"], "signed_only");
    }
    // A node says the signer is not one of its providers.
    let l = c.ledger(&r, None);
    let v = assess(&r, &c.trust(), Some(&l));
    assert_eq!(v.status, Status::SignedOnly);
    assert_eq!(v.provider_registered, Some(false));
    assert!(
        v.summary.contains("not a registered provider"),
        "{}",
        v.summary
    );
    // Required inclusion: invalid.
    let strict = Trust {
        require_inclusion: true,
        ..c.trust()
    };
    assert_eq!(assess(&r, &strict, None).status, Status::Invalid);
    // Tampered content or signature: invalid, with the facts that still hold.
    let mut t = r.clone();
    t.output.push('!');
    let v = assess(&t, &c.trust(), None);
    assert_eq!(v.status, Status::Invalid);
    assert_eq!(v.content_ok, Some(false));
    let mut t = r.clone();
    t.signature = "00".repeat(64);
    let v = assess(&t, &c.trust(), None);
    assert_eq!((v.status, v.content_ok), (Status::Invalid, Some(true)));
    assert!(!v.signature.unwrap().ok);
}

#[test]
fn a_tampered_binding_is_rejected() {
    let mut c = Chain::new("dev");
    let (r, submit) = c.commit(&receipt(&provider(), "Hi", 4), &provider());
    let trust = c.trust();
    let b = || r.inclusion.as_ref().unwrap().binding.clone().unwrap();
    let with = |f: &dyn Fn(&mut vouch_types::Binding)| {
        let mut x = r.clone();
        let mut bb = b();
        f(&mut bb);
        x.inclusion.as_mut().unwrap().binding = Some(bb);
        assess(&x, &trust, None)
    };
    // The commit transaction moved in the tree, or the tree's size changed.
    let v = with(&|b| b.commit_proof.index ^= 1);
    assert_eq!(v.status, Status::Invalid, "{}", v.line());
    let v = with(&|b| b.commit_proof.leaves += 1);
    assert!(v.reason.unwrap().contains("transactions"));
    // The job's own transaction given as the commit.
    let v = with(&|b| b.commit_tx = b.job_tx.clone());
    assert_eq!(v.status, Status::Invalid);
    // Another job's opening transaction (same body but another nonce).
    let other = sign_tx(&client(), &c.state.chain, 41, 1, submit.action.clone());
    let other_hex = hex::encode(other.encode());
    let v = with(&|b| b.job_tx = other_hex.clone());
    assert!(v.reason.unwrap().contains("job transaction has id"));
    let v = with(&|b| b.commit_tx = "zz".into());
    assert!(v.reason.unwrap().contains("not hex"));
}

/// An inclusion proof made before bindings existed: unbound offline; a node whose ledger
/// has the job, given to the signer, with this receipt as its result, binds it.
#[test]
fn an_old_format_inclusion_is_unbound_offline_and_bound_by_the_ledger() {
    let mut c = Chain::new("dev");
    let (mut r, submit) = c.commit(&receipt(&provider(), "Hi", 4), &provider());
    r.inclusion.as_mut().unwrap().binding = None;
    // Old JSON had no `binding` field.
    let mut j = serde_json::to_value(&r).unwrap();
    assert!(j["inclusion"].get("binding").is_none());
    j["inclusion"].as_object_mut().unwrap().remove("binding");
    let r: Receipt = serde_json::from_value(j).unwrap();
    let v = assess(&r, &c.trust(), None);
    assert_eq!(v.status, Status::Unbound, "{}", v.line());
    assert!(v.line().starts_with("UNBOUND: "));
    let l = c.ledger(&r, Some(job_of(&r, &submit)));
    let v = assess(&r, &c.trust(), Some(&l));
    assert_eq!(v.status, Status::Verified, "{}", v.line());
    assert_eq!(v.committed.unwrap().bound_by, Some("ledger"));
    // A ledger whose job committed another receipt says so.
    let mut job = job_of(&r, &submit);
    job.receipt = Some(Hash32([1; 32]));
    let l = c.ledger(&r, Some(job));
    assert_eq!(assess(&r, &c.trust(), Some(&l)).status, Status::Invalid);
}

/// Row 7: seeds above 2^53 are strings in JSON, so a JavaScript reader (every number a
/// double) keeps them; a version 1 receipt, written with a numeric seed, still loads
/// with the same id and verifies.
#[test]
fn seeds_above_2_pow_53_survive_json_and_old_numeric_seeds_still_verify() {
    let seed = (1u64 << 60) + 1;
    let r = receipt(&provider(), "Hi", seed);
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["sampling"]["seed"], seed.to_string());
    assert_eq!(j["version"], 2);
    // What JSON.parse then JSON.stringify do to a document: every number becomes a
    // double, integers are printed without a fraction.
    fn as_js(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(n) => {
                let f = n.as_f64().unwrap();
                if f.fract() == 0.0 && f >= 0.0 {
                    serde_json::json!(f as u64)
                } else {
                    serde_json::json!(f)
                }
            }
            serde_json::Value::Array(a) => a.iter().map(as_js).collect(),
            serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), as_js(v))).collect(),
            other => other.clone(),
        }
    }
    let back: Receipt = serde_json::from_value(as_js(&j)).unwrap();
    assert_eq!(back.sampling.seed, seed);
    assert_eq!(back.id(), r.id());
    assert!(check_fast(&back).is_ok());
    // Before: the seed was a number, which a JavaScript reader rounds, and the receipt
    // no longer matched its signature.
    let mut numeric = j.clone();
    numeric["sampling"]["seed"] = serde_json::json!(seed);
    let rounded: Receipt = serde_json::from_value(as_js(&numeric)).unwrap();
    assert_ne!(rounded.sampling.seed, seed);
    assert!(check_fast(&rounded).is_err());

    // A version 1 receipt written by the previous release (numeric seed 2^60 + 1).
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/receipt_v1.json"),
    )
    .unwrap();
    assert!(text.contains("\"seed\": 1152921504606846977"));
    let old: Receipt = serde_json::from_str(&text).unwrap();
    assert_eq!(old.version, 1);
    assert_eq!(old.sampling.seed, seed);
    assert_eq!(
        old.id().to_hex(),
        "790631b13b8ecc716e544c4e5ecd9ab7c9e53200b557ab31d52adc4e515b86ce",
        "a version 1 receipt keeps its id"
    );
    check_fast(&old).unwrap();
    let v = assess(&old, &Trust::default(), None);
    assert_eq!(v.status, Status::SignedOnly, "{}", v.line());
    // Written again, its seed is a string; read again, the same receipt.
    let again: Receipt = serde_json::from_str(&serde_json::to_string(&old).unwrap()).unwrap();
    assert_eq!(again, old);
    // An unknown version is refused.
    let mut future = old.clone();
    future.version = 3;
    assert!(check_fast(&future).is_err());
}
