//! The audit decision for a committed job, with the real model: a spot check when the
//! provider opens its trace, a re-execution when the opening never comes (the provider's
//! node is down or refuses), and a failed verdict for a receipt its model did not produce,
//! whichever way the audit ran.

use std::sync::Arc;

use vouch_crypto::SigningKey;
use vouch_inference::chat::Message;
use vouch_inference::models::{default_home, SMOLLM2_135M};
use vouch_inference::ChatModel;
use vouch_node::chain::Chain;
use vouch_node::validator::{audit, spot_challenges, AuditRun, Verdict};
use vouch_node::{dev_genesis, DevKeys};
use vouch_storage::Store;
use vouch_types::tx::{Action, Certificate};
use vouch_types::{Hash32, Receipt, Sampling};
use vouch_verify::attest::{self, Input};
use vouch_verify::spot;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32]).unwrap()
}

fn finalize(chain: &Chain, time: u64) {
    let p = chain.propose(time);
    let vote = chain.vote(&p.block);
    chain
        .finalize(
            p,
            Certificate {
                votes: vec![vote],
                simplex: None,
            },
        )
        .unwrap();
}

/// Escrows a job for `receipt`'s input, commits `receipt` as its result and keeps it in
/// the store, as a provider does; returns the job id.
fn commit(chain: &Chain, keys: &DevKeys, receipt: &Receipt, time: u64) -> Hash32 {
    let job = chain
        .submit_signed(
            &keys.faucet,
            Action::SubmitJob {
                model: receipt.model,
                provider: keys.provider.public(),
                input_hash: receipt.input_hash,
                max_tokens: receipt.sampling.max_tokens,
                max_fee: 1_000_000,
            },
        )
        .unwrap();
    finalize(chain, time);
    let rid = receipt.id();
    chain
        .store()
        .put_receipt(&rid, &serde_json::to_vec(receipt).unwrap())
        .unwrap();
    chain
        .submit_signed(
            &keys.provider,
            Action::CommitResult {
                job,
                receipt: rid,
                output_hash: receipt.output_hash,
                fingerprint: receipt.fingerprint.hash(),
                prompt_tokens: receipt.prompt_tokens,
                output_tokens: receipt.output_tokens.len() as u32,
            },
        )
        .unwrap();
    finalize(chain, time + 1);
    job
}

#[test]
fn a_missing_opening_falls_back_to_re_execution_and_still_catches_a_forgery() {
    let mut model = ChatModel::load(&SMOLLM2_135M, &default_home()).expect("vouch models fetch");
    let keys = DevKeys {
        validator: key(1),
        provider: key(2),
        faucet: key(3),
        author: key(4),
    };
    let mut g = dev_genesis(&keys, &[(model.id(), "smollm2-135m", "apache-2.0")], 1_000);
    g.params.audit_rate_ppm = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = Store::open(&dir.path().join("ledger.redb"), &g).unwrap();
    let chain = Chain::new(store, state, g, key(1), Arc::default());

    let input = Input::Chat(vec![Message::user("Name three colours.")]);
    let sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_tokens: 12,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    };
    let honest = attest::generate(
        &mut model,
        &keys.provider,
        &input,
        sampling,
        &Default::default(),
        1_500,
        &mut |_| {},
    )
    .unwrap();
    assert!(honest.trace.is_some(), "receipts commit to their trace");
    // A forgery: the last token swapped after the fact, re-signed by the provider.
    let mut forged = honest.clone();
    let last = forged.output_tokens.len() - 1;
    forged.output_tokens[last] = (forged.output_tokens[last] + 1) % model.vocab() as u32;
    forged.output = model.detokenize(&forged.output_tokens).unwrap();
    forged.output_hash = Receipt::hash_output(&forged.output, &forged.output_tokens);
    vouch_crypto::sign_receipt(&keys.provider, &mut forged);

    let honest_job = commit(&chain, &keys, &honest, 2_000);
    let forged_job = commit(&chain, &keys, &forged, 3_000);
    let run = |job: &Hash32, r: &Receipt, opening, model: &mut ChatModel| {
        audit(&chain, job, &r.id(), Some(r.clone()), opening, model, None)
    };

    // The provider opens its trace: a spot check.
    let checks = spot_challenges(&chain, &honest).unwrap();
    let opening = spot::open(&mut model, &honest, &checks).unwrap();
    let (how, verdict) = run(&honest_job, &honest, Some(Ok(opening)), &mut model);
    assert_eq!((how, verdict), (AuditRun::Spot, Verdict::Pass));

    // The opening never came: the auditor re-executes and the honest job passes.
    let down = || {
        Some(Err(
            "the provider did not open its trace in time".to_string()
        ))
    };
    let (how, verdict) = run(&honest_job, &honest, down(), &mut model);
    assert_eq!((how, verdict), (AuditRun::Fallback, Verdict::Pass));

    // Refusing to open does not hide a forgery: re-execution catches it.
    let (how, verdict) = run(&forged_job, &forged, down(), &mut model);
    assert_eq!(how, AuditRun::Fallback);
    let Verdict::Fail(reason) = verdict else {
        panic!("a forged receipt did not fail its audit: {verdict:?}")
    };
    assert!(!reason.is_empty());
    // (A spot check catches this forged token only if a sampling check lands on it, at
    // the rate docs/verification.md §7.3 gives: crates/verify/tests/spot.rs measures it.)

    // Without an opening at all (re-execution mode), the same verdicts.
    assert_eq!(
        run(&honest_job, &honest, None, &mut model),
        (AuditRun::Reexec, Verdict::Pass)
    );
    assert!(matches!(
        run(&forged_job, &forged, None, &mut model).1,
        Verdict::Fail(_)
    ));
    // An embedding receipt and no embedder here: this auditor's gap, not a verdict.
    let mut emb = honest.clone();
    emb.kind = vouch_types::ReceiptKind::Embedding;
    vouch_crypto::sign_receipt(&keys.provider, &mut emb);
    let emb_job = commit(&chain, &keys, &emb, 4_000);
    assert!(matches!(
        run(&emb_job, &emb, None, &mut model).1,
        Verdict::CannotAudit(_)
    ));
}

#[test]
fn a_provider_refuses_weights_that_do_not_hash_to_a_registered_model() {
    let home = default_home();
    let model = ChatModel::load(&SMOLLM2_135M, &home).expect("vouch models fetch");
    let keys = DevKeys {
        validator: key(1),
        provider: key(2),
        faucet: key(3),
        author: key(4),
    };
    let g = dev_genesis(&keys, &[(model.id(), "smollm2-135m", "apache-2.0")], 1_000);
    let state = g.state().unwrap();
    let me = keys.provider.public();
    vouch_node::provider::check_weights(&state, &me, &model.id(), model.name()).unwrap();

    // One byte of the weights changed (the last byte of the file, inside the last tensor):
    // the file still loads and runs, but its content id is another one, and it is refused.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tampered.gguf");
    let mut bytes = std::fs::read(SMOLLM2_135M.path(&home, 0)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&copy, &bytes).unwrap();
    let tampered = ChatModel::load_gguf(&copy).unwrap();
    assert_ne!(tampered.id(), model.id());
    let err = vouch_node::provider::check_weights(&state, &me, &tampered.id(), "smollm2-135m")
        .unwrap_err();
    assert!(err.contains("not a registered model"), "{err}");
    assert!(
        err.contains(&model.id().to_string()),
        "names the registered id: {err}"
    );
}
