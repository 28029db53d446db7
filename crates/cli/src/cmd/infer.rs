//! `vouch infer`: answer a prompt with a chat model and a signed receipt, through a node
//! (fee escrowed, result committed, receipt with its inclusion proof) or `--local`.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use vouch_inference::chat::Message;
use vouch_inference::models;
use vouch_inference::ChatModel;
use vouch_types::tx::Action;
use vouch_types::{Hash32, Receipt, Sampling};
use vouch_verify::attest::{self, Input};

use super::common::{hash_field, now_unix, sign, write_receipt};
use super::wallet::load_wallet;
use crate::client::Client;
use crate::keys;

#[derive(Args, Debug)]
pub struct InferArgs {
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// The user message (or raw text with --raw).
    #[arg(long, required_unless_present = "prompts_file")]
    prompt: Option<String>,
    /// Many prompts, one per line, generated as one batch (receipts go to --receipt-dir).
    #[arg(long, requires = "receipt_dir", conflicts_with = "prompt")]
    prompts_file: Option<PathBuf>,
    /// Directory for the receipts of --prompts-file (`0.json`, `1.json`, ...).
    #[arg(long)]
    receipt_dir: Option<PathBuf>,
    /// Recompute the whole sequence at every step instead of using the KV cache (slow;
    /// the receipt is the same).
    #[arg(long)]
    no_kv_cache: bool,
    /// System message (default: the model's own).
    #[arg(long)]
    system: Option<String>,
    /// Feed the prompt to the tokenizer as is, without the chat template.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampling rule (default: random, recorded in the receipt).
    #[arg(long)]
    seed: Option<u64>,
    /// Write the receipt here (JSON).
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// Print the receipt JSON instead of streaming text (the global --json).
    #[arg(skip)]
    pub json: bool,
    /// Run the model in this process with the local provider key, without a node
    /// (no escrow, no ledger commit, no inclusion proof).
    #[arg(long)]
    local: bool,
}

fn load_chat(home: &Path, name: &str) -> Result<ChatModel> {
    let spec = models::find(name)?;
    Ok(ChatModel::load(spec, home)?)
}

fn make_input(a: &InferArgs, prompt: &str) -> Input {
    if a.raw {
        Input::Completion(prompt.to_string())
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message {
                role: "system".into(),
                content: s.clone(),
            });
        }
        msgs.push(Message::user(prompt));
        Input::Chat(msgs)
    }
}

/// `--prompts-file`: every line is one request; batches of 16 run together.
fn infer_batch(home: &Path, a: &InferArgs, file: &Path, dir: &Path) -> Result<()> {
    let key = keys::load_or_create(home)?;
    let mut model = load_chat(home, &a.model)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let prompts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base_seed = a.seed.unwrap_or_else(rand::random);
    let mut jobs = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let sampling = Sampling {
            temperature: a.temperature,
            top_p: a.top_p,
            seed: base_seed.wrapping_add(i as u64),
            max_tokens: a.max_tokens,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        };
        jobs.push(attest::prepare(
            &model,
            &make_input(a, p),
            sampling,
            &Default::default(),
        )?);
    }
    let started = std::time::Instant::now();
    let mut tokens = 0;
    for (b, batch) in jobs.chunks(16).enumerate() {
        let receipts = attest::generate_batch(&mut model, &key, batch, !a.no_kv_cache, now_unix())?;
        for (j, r) in receipts.iter().enumerate() {
            let i = b * 16 + j;
            tokens += r.output_tokens.len();
            write_receipt(&dir.join(format!("{i}.json")), r)?;
            println!("{i}\t{}", r.output.replace('\n', " "));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompts, {tokens} tokens in {secs:.2}s ({:.1} tok/s), receipts in {}]",
        jobs.len(),
        tokens as f64 / secs,
        dir.display()
    );
    Ok(())
}

pub fn infer(home: &Path, node: &str, a: InferArgs) -> Result<()> {
    if let (Some(file), Some(dir)) = (&a.prompts_file, &a.receipt_dir) {
        return infer_batch(home, &a, file, dir);
    }
    if !a.local {
        return infer_node(home, node, &a);
    }
    let key = keys::load_or_create(home)?;
    let mut model = load_chat(home, &a.model)?;
    let input = make_input(&a, a.prompt.as_deref().unwrap_or_default());
    let sampling = Sampling {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed.unwrap_or_else(rand::random),
        max_tokens: a.max_tokens,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    };
    let started = std::time::Instant::now();
    let job = attest::prepare(&model, &input, sampling, &Default::default())?;
    let tokenizer = model.tokenizer();
    let mut streamed: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let mut stdout = std::io::stdout();
    let stream = !a.json;
    let kv_cache = !a.no_kv_cache;
    let mut g =
        model.generate_batch(std::slice::from_ref(&job.request), kv_cache, &mut |_, t| {
            if !stream {
                return;
            }
            // Decode the whole prefix so characters split across tokens print whole.
            streamed.push(t);
            if let Ok(text) = tokenizer.decode(&streamed) {
                if text.len() > printed && text.is_char_boundary(printed) {
                    let _ = stdout.write_all(&text.as_bytes()[printed..]);
                    let _ = stdout.flush();
                    printed = text.len();
                }
            }
        })?;
    let receipt = attest::receipt_for(&model, &key, &job, &g.remove(0), now_unix())?;
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
    } else {
        if receipt.output.len() > printed {
            print!("{}", &receipt.output[printed.min(receipt.output.len())..]);
        }
        println!();
    }
    if let Some(p) = &a.receipt {
        write_receipt(p, &receipt)?;
    }
    eprintln!(
        "[{} tokens in {:.2}s ({:.1} tok/s), finish {:?}, model {}, receipt {}{}]",
        receipt.output_tokens.len(),
        secs,
        receipt.output_tokens.len() as f64 / secs,
        receipt.finish_reason,
        receipt.model.short(),
        receipt.id().short(),
        a.receipt
            .as_ref()
            .map(|p| format!(" -> {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

fn infer_node(home: &Path, node: &str, a: &InferArgs) -> Result<()> {
    let prompt = a.prompt.clone().unwrap_or_default();
    let (messages, raw) = match make_input(a, &prompt) {
        Input::Chat(m) => (Some(m), None),
        Input::Completion(t) => (None, Some(t)),
    };
    let started = std::time::Instant::now();
    let r = infer_via_node(
        home,
        node,
        NodeInfer {
            model: &a.model,
            messages,
            raw,
            temperature: a.temperature,
            top_p: a.top_p,
            seed: a.seed.unwrap_or_else(rand::random),
            max_tokens: a.max_tokens,
        },
    )?;
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{}", r.output);
    }
    if let Some(p) = &a.receipt {
        write_receipt(p, &r)?;
    }
    let inc = r.inclusion.as_ref();
    eprintln!(
        "[{} tokens in {secs:.2}s, job {}, committed in block {}, receipt {}{}]",
        r.output_tokens.len(),
        inc.map(|i| i.job.short()).unwrap_or_default(),
        inc.map(|i| i.header.height.to_string())
            .unwrap_or_else(|| "?".into()),
        r.id().short(),
        a.receipt
            .as_ref()
            .map(|p| format!(" -> {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

// ------------------------------------------------------------------ infer through a node

pub struct NodeInfer<'a> {
    pub model: &'a str,
    pub messages: Option<Vec<Message>>,
    pub raw: Option<String>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub max_tokens: u32,
}

/// Escrows the fee for a job from the wallet, has the node's provider run it, and returns
/// the receipt with its inclusion proof.
pub fn infer_via_node(home: &Path, node: &str, req: NodeInfer<'_>) -> Result<Receipt> {
    let client = Client::new(node);
    let key = load_wallet(home)?;
    let spec = models::find(req.model)?;
    let model_id = spec.id();
    let status = client.get("/v1/status")?;
    let providers = status["providers"].as_array().cloned().unwrap_or_default();
    let chosen = providers
        .iter()
        .filter(|p| {
            p["models"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x.as_str() == Some(&model_id.to_hex())))
        })
        .min_by_key(|p| p["price_per_token"].as_u64().unwrap_or(u64::MAX))
        .with_context(|| {
            format!(
                "no provider on this network serves {} ({model_id})",
                spec.name
            )
        })?;
    let provider: Hash32 = hash_field(&chosen["address"], "provider address")?;
    let price = chosen["price_per_token"].as_u64().unwrap_or(0);
    let (kind_prompt, prompt) = vouch_node::provider::render(
        req.messages.as_deref(),
        req.raw.as_deref(),
        spec.chat_system_default,
    )
    .map_err(anyhow::Error::msg)?;
    let input_hash = Receipt::hash_input(kind_prompt, &prompt);
    // Upper bound: every token of the context window at the provider's price. The charge
    // is price × tokens actually used; the rest of the escrow comes back at settlement.
    let context_tokens = 8192u64;
    let max_fee = price.saturating_mul(context_tokens + u64::from(req.max_tokens));
    let tx = sign(
        &client,
        &status,
        &key,
        Action::SubmitJob {
            model: model_id,
            provider,
            input_hash,
            max_tokens: req.max_tokens,
            max_fee,
        },
    )?;
    let job = tx.id(&hash_field(&status["chain"], "chain")?);
    let body = json!({
        "tx": hex::encode(tx.encode()),
        "messages": req.messages,
        "prompt": req.raw,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "max_tokens": req.max_tokens,
    });
    let v = client
        .post("/v1/jobs", &body)
        .with_context(|| format!("job {}", job.short()))?;
    let r: Receipt =
        serde_json::from_value(v).context("node returned something that is not a receipt")?;
    Ok(r)
}
