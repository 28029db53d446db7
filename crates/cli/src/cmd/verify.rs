//! `vouch verify`: check receipts and say what is proven (exit 0 verified, 1 invalid,
//! 2 usage or I/O error, 3 checks hold but not verified).

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vouch_inference::models;
use vouch_inference::{ChatModel, Embedder};
use vouch_types::{Receipt, ReceiptKind};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Receipt files (JSON).
    #[arg(required = true)]
    receipts: Vec<PathBuf>,
    /// Require the receipt to be signed by this provider key (hex).
    #[arg(long)]
    provider: Option<vouch_types::Hash32>,
    /// Also re-run the model over prompt + output and compare (needs the model installed).
    #[arg(long)]
    reexecute: bool,
    /// Trust only blocks certified by these validators (repeatable).
    #[arg(long = "validator")]
    validators: Vec<vouch_types::Hash32>,
    /// Pin the chain of this genesis file: its chain id and its validator set. Needed for
    /// VERIFIED.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Fail receipts that carry no ledger inclusion proof (INVALID instead of SIGNED ONLY).
    #[arg(long)]
    require_inclusion: bool,
    /// Exit 0 for receipts whose checks hold but that are not verified (SIGNED ONLY,
    /// UNBOUND, UNPINNED), e.g. receipts made with `infer --local`; the line still says
    /// what was and was not proven.
    #[arg(long)]
    allow_unverified: bool,
    /// Print the result as JSON (the global --json).
    #[arg(skip)]
    pub json: bool,
}

/// Models loaded on demand while verifying several receipts.
#[derive(Default)]
struct Verifiers {
    chat: Option<ChatModel>,
    embed: Option<Embedder>,
}

enum Outcome {
    /// The verdict, and what re-execution found when it ran.
    Judged(Box<vouch_verify::Verdict>, Option<Result<String, String>>),
    Error(String),
}

impl Outcome {
    /// Passed: verified (or, with --allow-unverified, any status but invalid), and
    /// re-execution, when asked for, reproduced the answer.
    fn passed(&self, a: &VerifyArgs) -> bool {
        match self {
            Outcome::Judged(v, re) => {
                let status_ok = v.status == vouch_verify::Status::Verified
                    || (a.allow_unverified && v.status != vouch_verify::Status::Invalid);
                status_ok && re.as_ref().is_none_or(|r| r.is_ok())
            }
            Outcome::Error(_) => false,
        }
    }
    fn invalid(&self) -> bool {
        matches!(self, Outcome::Judged(v, re)
            if v.status == vouch_verify::Status::Invalid || re.as_ref().is_some_and(|r| r.is_err()))
    }
}

pub fn verify(home: &Path, a: VerifyArgs) -> ExitCode {
    let mut models = Verifiers::default();
    let (mut invalid, mut errors, mut unverified) = (0, 0, 0);
    let many = a.receipts.len() > 1;
    let trust = match trust(&a) {
        Ok(t) => t,
        Err(e) => {
            report(&a, "", &Outcome::Error(format!("{e:#}")), None);
            return ExitCode::from(2);
        }
    };
    for path in &a.receipts {
        let (outcome, receipt) = verify_one(home, &a, &trust, path, &mut models);
        let label = if many {
            format!("{}: ", path.display())
        } else {
            String::new()
        };
        if matches!(outcome, Outcome::Error(_)) {
            errors += 1;
        } else if outcome.invalid() {
            invalid += 1;
        } else if !outcome.passed(&a) {
            unverified += 1;
        }
        report(&a, &label, &outcome, receipt.as_ref());
    }
    if errors > 0 {
        ExitCode::from(2)
    } else if invalid > 0 {
        ExitCode::from(1)
    } else if unverified > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn verify_one(
    home: &Path,
    a: &VerifyArgs,
    trust: &vouch_verify::Trust,
    path: &Path,
    models: &mut Verifiers,
) -> (Outcome, Option<Receipt>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return (
                Outcome::Error(format!("cannot read {}: {e}", path.display())),
                None,
            )
        }
    };
    // A file that is not a receipt at all is invalid (exit 1), not a usage error.
    let receipt: Receipt = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let v = vouch_verify::Verdict::not_a_receipt(e.to_string());
            return (Outcome::Judged(Box::new(v), None), None);
        }
    };
    let outcome = verify_receipt(home, a, trust, &receipt, models);
    (outcome, Some(receipt))
}

/// The verdict (`vouch_verify::assess`, the same as the node's `/v1/verify`), then, with
/// --reexecute, the model run again over the receipt.
fn verify_receipt(
    home: &Path,
    a: &VerifyArgs,
    trust: &vouch_verify::Trust,
    receipt: &Receipt,
    models: &mut Verifiers,
) -> Outcome {
    let verdict = Box::new(vouch_verify::assess(receipt, trust, None));
    if !a.reexecute || verdict.status == vouch_verify::Status::Invalid {
        return Outcome::Judged(verdict, None);
    }
    let Some(spec) = models::find_by_id(&receipt.model) else {
        return Outcome::Judged(
            verdict,
            Some(Err(format!(
                "receipt names model {} which is not in this verifier's catalogue",
                receipt.model
            ))),
        );
    };
    let tol = vouch_inference::fingerprint::Tolerance::default();
    let result = match receipt.kind {
        ReceiptKind::Embedding => {
            if models
                .embed
                .as_ref()
                .is_none_or(|m| m.id() != receipt.model)
            {
                match Embedder::load(spec, home) {
                    Ok(m) => models.embed = Some(m),
                    Err(e) => return Outcome::Error(e.to_string()),
                }
            }
            let m = models.embed.as_ref().expect("loaded above");
            vouch_verify::check_reexecute_embedding(receipt, m)
                .map(|d| format!("re-executed: embedding reproduced (max difference {d:.1e})"))
        }
        _ => {
            if models.chat.as_ref().is_none_or(|m| m.id() != receipt.model) {
                match ChatModel::load(spec, home) {
                    Ok(m) => models.chat = Some(m),
                    Err(e) => return Outcome::Error(e.to_string()),
                }
            }
            let m = models.chat.as_mut().expect("loaded above");
            vouch_verify::check_reexecute(receipt, m, &tol).map(|rep| {
                format!(
                    "re-executed: {} fingerprint chunks match (worst {:.1}% of entries), {} tokens follow the sampling rule, prefill of {} tokens in {:.2}s",
                    rep.chunks.len(),
                    rep.min_match_permille() as f64 / 10.0,
                    rep.positions_checked,
                    rep.prefill_tokens,
                    rep.seconds
                )
            })
        }
    };
    match result {
        Ok(m) => Outcome::Judged(verdict, Some(Ok(m))),
        Err(vouch_verify::VerifyError::Engine(e)) => Outcome::Error(e.to_string()),
        Err(e) => Outcome::Judged(verdict, Some(Err(format!("re-execution: {e}")))),
    }
}

/// What the command line pins: the genesis (chain id and validators), extra validators,
/// the expected signer.
fn trust(a: &VerifyArgs) -> Result<vouch_verify::Trust> {
    let mut t = vouch_verify::Trust {
        validators: a.validators.clone(),
        provider: a.provider,
        require_inclusion: a.require_inclusion,
        chain: None,
    };
    if let Some(g) = &a.genesis {
        let text =
            std::fs::read_to_string(g).with_context(|| format!("reading {}", g.display()))?;
        let genesis =
            vouch_state::Genesis::from_json(&text).with_context(|| format!("{}", g.display()))?;
        t.chain = Some(genesis.chain_id());
        t.validators.extend(genesis.validators);
    }
    Ok(t)
}

fn report(a: &VerifyArgs, label: &str, outcome: &Outcome, r: Option<&Receipt>) {
    let (v, re) = match outcome {
        Outcome::Judged(v, re) => (v, re),
        Outcome::Error(m) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"error": m, "file": label.trim_end_matches(": ")})
                );
            } else {
                eprintln!("{label}error: {m}");
            }
            return;
        }
    };
    // A failed re-execution makes the receipt invalid whatever the ledger says.
    let line = match re {
        Some(Err(e)) => format!("INVALID: {e} (the ledger facts: {})", v.line()),
        Some(Ok(m)) => format!("{}; {m}", v.line()),
        None => v.line(),
    };
    if a.json {
        let mut j = serde_json::to_value(v.as_ref()).unwrap_or_default();
        if let Some(o) = j.as_object_mut() {
            o.insert("file".into(), label.trim_end_matches(": ").into());
            o.insert("reexecuted".into(), a.reexecute.into());
            if let Some(re) = re {
                o.insert(
                    "reexecution".into(),
                    match re {
                        Ok(m) => serde_json::json!({"ok": true, "detail": m}),
                        Err(e) => serde_json::json!({"ok": false, "detail": e}),
                    },
                );
                if re.is_err() {
                    o.insert("status".into(), "invalid".into());
                    o.insert("valid".into(), false.into());
                }
            }
            if r.is_none() {
                o.insert("receipt".into(), serde_json::Value::Null);
            }
        }
        println!("{j}");
    } else {
        println!("{label}{line}");
    }
}
