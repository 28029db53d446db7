//! `vouch model`: model versions on the ledger: publish one with its lineage, show a
//! lineage, pull a model's files from peers by content id.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use vouch_inference::models;
use vouch_types::tx::Action;
use vouch_types::Hash32;

use super::common::{short, submit_all};
use super::wallet::load_wallet;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum ModelCmd {
    /// Register a model version from its weights file: content id, name, version, parents,
    /// training datasets, licence, royalty; the wallet becomes its author.
    Publish(PublishArgs),
    /// Ancestors and descendants of a model, with their authors, datasets and royalties.
    Lineage { id: Hash32 },
    /// Fetch a model's files from peers by content id into this home: every 256 KiB
    /// checked against the file's BLAKE3 hash before it is written, a peer that sends a
    /// bad piece dropped, an interrupted pull resumed by running it again.
    Pull(PullArgs),
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The model's content id.
    pub id: Hash32,
    /// A node to fetch from (its API URL; repeat). The node given by --node is asked too,
    /// and every peer names the other nodes that announced the model.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Cap on the transfer rate, in MB/s.
    #[arg(long)]
    pub limit_rate: Option<f64>,
    /// Concurrent range requests.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Pull even if the ledger cannot be asked whether the model is registered.
    #[arg(long)]
    pub unregistered: bool,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The weights (GGUF).
    pub file: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub version: String,
    /// A model this one derives from (repeat for a merge).
    #[arg(long = "parent")]
    pub parents: Vec<Hash32>,
    /// A registered dataset it was trained on (repeat for several).
    #[arg(long = "trained-on")]
    pub datasets: Vec<Hash32>,
    #[arg(long, default_value = "apache-2.0")]
    pub licence: String,
    /// Share of every settled job's fee paid to the author, in basis points.
    #[arg(long, default_value_t = 0)]
    pub royalty_bps: u16,
    /// Do not add the file to this home's model store (by default the node of this home
    /// serves it to peers that pull it).
    #[arg(long)]
    pub no_seed: bool,
}

/// The content id of a weights file, as providers compute it when they load it.
pub fn file_model_id(path: &Path) -> Result<Hash32> {
    let h = models::hash_file(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(models::model_id_from_file_hashes(&[h]))
}

pub fn model(home: &Path, node: &str, cmd: ModelCmd, json_out: bool) -> Result<()> {
    let client = Client::new(node);
    match cmd {
        ModelCmd::Publish(a) => {
            let key = load_wallet(home)?;
            let id = file_model_id(&a.file)?;
            let ids = submit_all(
                &client,
                &key,
                vec![Action::PublishModel {
                    id,
                    name: a.name.clone(),
                    version: a.version.clone(),
                    parents: a.parents.clone(),
                    datasets: a.datasets.clone(),
                    licence: a.licence.clone(),
                    royalty_bps: a.royalty_bps,
                }],
            )?;
            let seeded = if a.no_seed {
                None
            } else {
                let name: String = a
                    .file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("weights.gguf")
                    .trim_start_matches('.')
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "._-".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(120)
                    .collect();
                let m = vouch_net::blob_store::BlobStore::new(home)
                    .seed(
                        &a.file,
                        &a.name,
                        if name.is_empty() {
                            "weights.gguf"
                        } else {
                            &name
                        },
                    )
                    .with_context(|| format!("adding {} to the model store", a.file.display()))?;
                Some(m.files[0].hash)
            };
            let out = json!({"model": id, "name": a.name, "version": a.version,
                             "parents": a.parents, "datasets": a.datasets,
                             "author": key.public(), "tx": ids[0], "seeded": seeded});
            if json_out {
                println!("{out}");
            } else {
                println!(
                    "published {} {} as {id} (author {}, tx {})",
                    a.name,
                    a.version,
                    key.public(),
                    ids[0]
                );
            }
            Ok(())
        }
        ModelCmd::Pull(a) => pull(home, node, &client, a, json_out),
        ModelCmd::Lineage { id } => {
            let v = client.get(&format!("/v1/registry/models/{id}/lineage"))?;
            if json_out {
                println!("{v}");
            } else {
                print!("{}", render_lineage(&v));
            }
            Ok(())
        }
    }
}

fn mb(b: u64) -> String {
    if b < 100_000 {
        format!("{:.1} KB", b as f64 / 1e3)
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

fn pull(home: &Path, node: &str, client: &Client, a: PullArgs, json_out: bool) -> Result<()> {
    use std::io::{IsTerminal, Write};
    use vouch_net::blob_store::BlobStore;
    use vouch_net::pull::{self, PullEvent, PullOptions};
    let id = a.id;
    match client.get("/v1/registry/models") {
        Ok(v) => {
            let known = v["models"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["id"] == json!(id)));
            if !known && !a.unregistered {
                bail!("model {id} is not registered on the ledger of {node} (--unregistered pulls it anyway)");
            }
        }
        Err(e) if a.unregistered => {
            eprintln!("note: cannot ask the ledger ({e:#}); pulling anyway")
        }
        Err(e) => bail!(
            "cannot ask {node} whether model {id} is registered: {e:#} (--unregistered skips this)"
        ),
    }
    let mut asked = a.peers.clone();
    asked.push(node.to_string());
    let sources = pull::discover(&asked, &id);
    let opts = PullOptions {
        workers: a.workers.max(1),
        max_rate: a.limit_rate.map(|r| (r * 1e6) as u64),
    };
    let tty = std::io::stderr().is_terminal();
    let mut started = std::time::Instant::now();
    let mut file_bytes = (String::new(), 0u64);
    let mut on = |e: &PullEvent| {
        let mut err = std::io::stderr();
        match e {
            PullEvent::File {
                name,
                bytes,
                resumed,
            } => {
                file_bytes = (name.clone(), *resumed);
                started = std::time::Instant::now();
                if *resumed == *bytes {
                    let _ = writeln!(err, "{name}: already here ({})", mb(*bytes));
                } else if *resumed > 0 {
                    let _ = writeln!(
                        err,
                        "{name}: resuming, {} of {} already verified",
                        mb(*resumed),
                        mb(*bytes)
                    );
                } else {
                    let _ = writeln!(err, "{name}: {}", mb(*bytes));
                }
            }
            PullEvent::Progress { done, total } => {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = (done - file_bytes.1) as f64 / secs / 1e6;
                let line = format!(
                    "{}: {} of {} ({:.0}%), {rate:.1} MB/s",
                    file_bytes.0,
                    mb(*done),
                    mb(*total),
                    100.0 * *done as f64 / (*total).max(1) as f64
                );
                let _ = if tty {
                    write!(err, "\r{line}  ")
                } else {
                    writeln!(err, "{line}")
                };
            }
            PullEvent::Dropped { peer, why } => {
                let _ = writeln!(
                    err,
                    "{}dropped peer {peer}: {why}",
                    if tty { "\n" } else { "" }
                );
            }
        }
    };
    let store = BlobStore::new(home);
    let r = pull::pull(&store, &id, &sources, &opts, &mut on);
    if tty {
        eprintln!();
    }
    let r = r?;
    if json_out {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let fetched_rate = r.fetched as f64 / r.secs.max(1e-3) / 1e6;
    println!(
        "pulled {} {id}: {} in {:.2} s ({fetched_rate:.1} MB/s), {} fetched, {} already here",
        r.name,
        mb(r.bytes),
        r.secs,
        mb(r.fetched),
        mb(r.reused)
    );
    for (peer, b) in &r.from {
        println!("  from {peer}: {}", mb(*b));
    }
    for (peer, why) in &r.dropped {
        println!("  dropped {peer}: {why}");
    }
    for f in &r.files {
        println!("  {}", f.display());
    }
    Ok(())
}

fn describe(n: &Value) -> String {
    let datasets: Vec<String> = n["datasets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let generated = if d["generated_by"].is_string() {
                        format!(", generated by model {}", short(&d["generated_by"]))
                    } else {
                        String::new()
                    };
                    format!(
                        "{} ({}, by {}{generated})",
                        short(&d["id"]),
                        d["source"].as_str().unwrap_or("?"),
                        short(&d["contributor"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} {} v{}  author {}  {}  royalty {} bps, {} paid over {} jobs{}",
        short(&n["id"]),
        n["name"].as_str().unwrap_or("?"),
        n["version"].as_str().unwrap_or("?"),
        short(&n["author"]),
        n["licence"].as_str().unwrap_or("?"),
        n["royalty_bps"],
        n["royalties_paid"],
        n["jobs_settled"],
        if datasets.is_empty() {
            String::new()
        } else {
            format!("\n{:w$}trained on {}", "", datasets.join(", "), w = 6)
        }
    )
}

/// Ancestors above the model (farthest first), descendants below, indented by depth.
pub fn render_lineage(v: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let anc = v["ancestors"].as_array().unwrap_or(&empty);
    let desc = v["descendants"].as_array().unwrap_or(&empty);
    let max = anc
        .iter()
        .filter_map(|n| n["depth"].as_u64())
        .max()
        .unwrap_or(0);
    if !anc.is_empty() {
        out.push_str("ancestors\n");
        for n in anc.iter().rev() {
            let d = n["depth"].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "  {:w$}^ {}\n",
                "",
                describe(n),
                w = 2 * (max - d) as usize
            ));
        }
    }
    out.push_str(&format!("model\n  * {}\n", describe(&v["model"])));
    if !desc.is_empty() {
        out.push_str("descendants\n");
        for n in desc {
            let d = n["depth"].as_u64().unwrap_or(1);
            out.push_str(&format!(
                "  {:w$}v {}\n",
                "",
                describe(n),
                w = 2 * (d - 1) as usize
            ));
        }
    }
    let generated = v["generated"].as_array().unwrap_or(&empty);
    if !generated.is_empty() {
        out.push_str(
            "generated datasets
",
        );
        for d in generated {
            out.push_str(&format!(
                "  + {} {} ({} items credited)
",
                short(&d["id"]),
                d["source"].as_str().unwrap_or("?"),
                d["credited"]
            ));
        }
    }
    out
}
