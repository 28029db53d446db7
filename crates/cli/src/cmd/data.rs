//! `vouch data`: data provenance: add a corpus (content ids, exact and near-duplicate
//! report, first-contributor credit on the ledger), show a dataset's duplicate clusters;
//! the local data index the corpora are compared with.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vouch_inference::models;
use vouch_types::tx::{Action, MAX_ITEMS_PER_TX};
use vouch_types::Hash32;

use super::common::{short, submit_all};
use super::wallet::load_wallet;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Add a corpus: content ids, exact and near-duplicate report (within the corpus,
    /// against what this machine added before, and against the ledger), then register it
    /// as a dataset and record its new items on the ledger, credited to the wallet.
    Add(AddArgs),
    /// Exact and near-duplicate clusters of a dataset this machine added.
    Dedup {
        dataset: Hash32,
        /// Skip the MiniLM confirmation of near-duplicate candidates.
        #[arg(long)]
        no_confirm: bool,
        /// The data index the dataset was added to [default: <home>/data].
        #[arg(long, env = "VOUCH_DATA_INDEX")]
        index: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// JSONL files (one item per line: a JSON string, or an object with a "text" field);
    /// any other file is one item.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where the data comes from (recorded on the ledger).
    #[arg(long)]
    pub source: String,
    #[arg(long, default_value = "CC-BY-4.0")]
    pub licence: String,
    /// Skip the MiniLM confirmation of near-duplicate candidates.
    #[arg(long)]
    pub no_confirm: bool,
    /// Report only: register nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The data index new items are compared with and added to: every corpus added to
    /// one index (by any contributor) is checked for near duplicates against all earlier
    /// ones [default: <home>/data].
    #[arg(long, env = "VOUCH_DATA_INDEX")]
    pub index: Option<PathBuf>,
}

/// Reads the items of a corpus, with a clear error (file and line) for a malformed line.
pub fn read_items(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut items = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        if f.extension().is_some_and(|e| e == "jsonl") {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a JSON value", f.display(), i + 1))?;
                let item = match &v {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o
                        .get("text")
                        .and_then(Value::as_str)
                        .with_context(|| {
                            format!(
                                "{}:{}: object without a \"text\" string",
                                f.display(),
                                i + 1
                            )
                        })?
                        .to_string(),
                    _ => bail!(
                        "{}:{}: expected a string or an object with \"text\"",
                        f.display(),
                        i + 1
                    ),
                };
                items.push(item);
            }
        } else {
            items.push(text);
        }
    }
    Ok(items)
}

/// The dataset id: BLAKE3 over its source and its items' content ids in order.
pub fn dataset_id(source: &str, items: &[Hash32]) -> Hash32 {
    let mut parts: Vec<&[u8]> = vec![source.as_bytes()];
    parts.extend(items.iter().map(|h| h.as_bytes().as_slice()));
    Hash32::digest("vouch 2026 dataset v1", &parts)
}

/// A data index: the datasets added to it, in order, as `<dir>/<id>.jsonl` (one
/// `{"id", "text"}` per line) and `<dir>/index.json` listing them.
pub struct LocalData {
    dir: PathBuf,
    order: Vec<Hash32>,
}

impl LocalData {
    pub fn open(home: &Path, index: Option<&Path>) -> Result<Self> {
        let dir = index.map_or_else(|| home.join("data"), Path::to_path_buf);
        let index = dir.join("index.json");
        let order = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!("{} is corrupt; move it away to start over", index.display())
            })?
        } else {
            Vec::new()
        };
        Ok(LocalData { dir, order })
    }

    pub fn items(&self, dataset: &Hash32) -> Result<Vec<(Hash32, String)>> {
        let p = self.dir.join(format!("{dataset}.jsonl"));
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "dataset {dataset} was not added on this machine ({})",
                p.display()
            )
        })?;
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                let v: Value = serde_json::from_str(l)
                    .with_context(|| format!("{}:{}: corrupt line", p.display(), i + 1))?;
                let id: Hash32 = v["id"].as_str().context("line without id")?.parse()?;
                let text = v["text"].as_str().context("line without text")?.to_string();
                Ok((id, text))
            })
            .collect()
    }

    /// Writes the dataset's file, then the index (a crash between the two leaves an
    /// unlisted file, never a listed one that is missing).
    pub fn save(&mut self, dataset: Hash32, items: &[(Hash32, &str)]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut body = String::new();
        for (id, text) in items {
            body.push_str(&json!({"id": id, "text": text}).to_string());
            body.push('\n');
        }
        let p = self.dir.join(format!("{dataset}.jsonl"));
        write_atomic(&p, body.as_bytes())?;
        if !self.order.contains(&dataset) {
            self.order.push(dataset);
        }
        write_atomic(
            &self.dir.join("index.json"),
            serde_json::to_string(&self.order)?.as_bytes(),
        )
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Embedding confirmation of near-duplicate candidates with MiniLM, when its weights are
/// on this machine: cosine similarity of the two texts' embeddings at or above
/// [`CONFIRM_COSINE`].
pub const CONFIRM_COSINE: f32 = 0.85;
/// Pairs whose estimated Jaccard similarity of word 3-grams is at least this share most
/// of their wording verbatim: they are accepted without the embedding (MiniLM costs
/// about half a second per document on two cores). Between the dedup threshold and
/// this, the embedding decides.
pub const CONFIRM_BELOW_JACCARD: f64 = 0.6;

/// The confirmation hook of `data add` and `data dedup`: clear pairs pass on their
/// Jaccard estimate (score NaN: not embedded), borderline ones on their MiniLM cosine.
fn confirm_pair(
    confirmer: Option<&mut Confirmer>,
    texts: &[&str],
    a: u32,
    b: u32,
    jaccard: f64,
    embedded: &mut usize,
) -> Option<f32> {
    if jaccard >= CONFIRM_BELOW_JACCARD {
        return Some(f32::NAN);
    }
    let c = confirmer?;
    *embedded += 1;
    let s = c.cosine(
        (a as usize, &head_words(texts[a as usize])),
        (b as usize, &head_words(texts[b as usize])),
    )?;
    (s >= CONFIRM_COSINE).then_some(s)
}

struct Confirmer {
    model: vouch_inference::Embedder,
    cache: BTreeMap<usize, Vec<f32>>,
}

impl Confirmer {
    fn load(home: &Path) -> Option<Confirmer> {
        let spec = &models::MINILM_L6;
        let mut progress = |_ev: models::FetchEvent| {};
        models::fetch(spec, home, &mut progress).ok()?;
        let model = vouch_inference::Embedder::load(spec, home).ok()?;
        Some(Confirmer {
            model,
            cache: BTreeMap::new(),
        })
    }

    fn embedding(&mut self, i: usize, text: &str) -> Option<Vec<f32>> {
        if let Some(e) = self.cache.get(&i) {
            return Some(e.clone());
        }
        // A text of unusual words can still exceed the model's input: shorten until it fits.
        let mut max = CONFIRM_CHARS;
        let e = loop {
            match self.model.embed(&head_chars(text, max)) {
                Ok(e) => break e,
                Err(_) if max > 100 => max /= 2,
                Err(_) => return None,
            }
        };
        self.cache.insert(i, e.clone());
        Some(e)
    }

    fn cosine(&mut self, a: (usize, &str), b: (usize, &str)) -> Option<f32> {
        let x = self.embedding(a.0, a.1)?;
        let y = self.embedding(b.0, b.1)?;
        let dot: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
        let nx: f32 = x.iter().map(|p| p * p).sum::<f32>().sqrt();
        let ny: f32 = y.iter().map(|p| p * p).sum::<f32>().sqrt();
        Some(dot / (nx * ny).max(f32::MIN_POSITIVE))
    }
}

/// Characters of a text given to MiniLM for confirmation: its input is bounded (512
/// tokens), and the start of a document carries its topic and wording.
const CONFIRM_CHARS: usize = 1_000;

/// The start of `text`, at most `max` characters, cut at a word boundary.
fn head_words(text: &str) -> String {
    head_chars(text, CONFIRM_CHARS)
}

fn head_chars(text: &str, max: usize) -> String {
    let mut out = String::new();
    for w in text.split_whitespace() {
        if out.chars().count() + w.chars().count() + 1 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// One new item that duplicates an earlier one.
#[derive(serde::Serialize)]
struct Dup {
    /// Index of the item in the new corpus.
    item: usize,
    id: Hash32,
    kind: &'static str,
    /// Where the original is: "this corpus" (index in it) or a dataset added before.
    original_dataset: Option<Hash32>,
    original_index: usize,
    original_id: Hash32,
    jaccard: Option<f64>,
    cosine: Option<f32>,
}

/// What `data add` found and did.
pub struct Added {
    pub report: Value,
    pub dataset: Option<Hash32>,
}

pub fn data(home: &Path, node: &str, cmd: DataCmd, json_out: bool) -> Result<()> {
    match cmd {
        DataCmd::Add(a) => {
            let out = add(home, node, &a)?;
            if json_out {
                println!("{}", out.report);
            } else {
                print_add(&out.report);
            }
            Ok(())
        }
        DataCmd::Dedup {
            dataset,
            no_confirm,
            index,
        } => {
            let local = LocalData::open(home, index.as_deref())?;
            let items = local.items(&dataset)?;
            let texts: Vec<&str> = items.iter().map(|(_, t)| t.as_str()).collect();
            let mut confirmer = if no_confirm {
                None
            } else {
                Confirmer::load(home)
            };
            let on = confirmer.is_some();
            let mut embedded = 0usize;
            let mut hook = |a: u32, b: u32, j: f64| -> Option<f32> {
                confirm_pair(confirmer.as_mut(), &texts, a, b, j, &mut embedded)
            };
            let confirm: vouch_data::Confirm<'_> = if on { Some(&mut hook) } else { None };
            let r = vouch_data::dedup(&texts, &vouch_data::DedupParams::default(), confirm)?;
            let clusters: Vec<Value> = r
                .clusters
                .iter()
                .map(|c| {
                    json!(c
                        .iter()
                        .map(|&i| json!({"index": i, "id": items[i as usize].0,
                        "text": preview(&items[i as usize].1)}))
                        .collect::<Vec<_>>())
                })
                .collect();
            let v = json!({"dataset": dataset, "items": r.items, "exact": r.exact.len(),
                "near": r.near, "clusters": clusters, "unique": r.unique.len()});
            if json_out {
                println!("{v}");
            } else {
                println!(
                    "dataset {dataset}: {} items, {} unique, {} exact duplicates, {} near-duplicate pairs, {} clusters",
                    r.items,
                    r.unique.len(),
                    r.exact.len(),
                    r.near.len(),
                    r.clusters.len()
                );
                for (k, c) in r.clusters.iter().enumerate() {
                    println!("cluster {k}:");
                    for &i in c {
                        let kind = if i == c[0] { "original " } else { "duplicate" };
                        println!(
                            "  {kind} #{i} {}  {}",
                            items[i as usize].0,
                            preview(&items[i as usize].1)
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

fn preview(t: &str) -> String {
    let s: String = t.chars().take(60).collect();
    let s = s.replace('\n', " ");
    if t.chars().count() > 60 {
        format!("{s}...")
    } else {
        s
    }
}

/// `data add`: dedup against this machine's earlier datasets and within the corpus, check
/// the rest against the ledger, register the dataset and its new items.
pub fn add(home: &Path, node: &str, a: &AddArgs) -> Result<Added> {
    let t0 = std::time::Instant::now();
    let items = read_items(&a.files)?;
    if items.is_empty() {
        bail!("no items in {:?}", a.files);
    }
    let mut local = LocalData::open(home, a.index.as_deref())?;
    let mut existing: Vec<(Hash32, usize, Hash32, String)> = Vec::new();
    for d in local.order.clone() {
        for (i, (id, text)) in local.items(&d)?.into_iter().enumerate() {
            existing.push((d, i, id, text));
        }
    }
    let e = existing.len();
    let texts: Vec<&str> = existing
        .iter()
        .map(|x| x.3.as_str())
        .chain(items.iter().map(String::as_str))
        .collect();
    let mut confirmer = if a.no_confirm {
        None
    } else {
        Confirmer::load(home)
    };
    let confirming = confirmer.is_some();
    let mut confirmed_pairs = 0usize;
    let mut hook = |x: u32, y: u32, j: f64| -> Option<f32> {
        confirm_pair(confirmer.as_mut(), &texts, x, y, j, &mut confirmed_pairs)
    };
    let confirm: vouch_data::Confirm<'_> = if confirming { Some(&mut hook) } else { None };
    let r = vouch_data::dedup(&texts, &vouch_data::DedupParams::default(), confirm)?;
    let dedup_s = t0.elapsed().as_secs_f64();

    // The original of every item: the lowest index of its cluster.
    let mut original: Vec<u32> = (0..texts.len() as u32).collect();
    for c in &r.clusters {
        for &i in c {
            original[i as usize] = c[0];
        }
    }
    let exact: BTreeMap<u32, u32> = r.exact.iter().copied().collect();
    let mut near: BTreeMap<u32, (f64, Option<f32>)> = BTreeMap::new();
    for p in &r.near {
        near.entry(p.b).or_insert((p.jaccard, p.confirm));
    }
    let mut dups = Vec::new();
    let mut fresh: Vec<usize> = Vec::new();
    for k in 0..items.len() {
        let i = (e + k) as u32;
        let o = original[i as usize];
        if o == i {
            fresh.push(k);
            continue;
        }
        let (jaccard, cosine) = near
            .get(&i)
            .map_or((None, None), |x| (Some(x.0), x.1.filter(|c| !c.is_nan())));
        let (original_dataset, original_index) = if (o as usize) < e {
            let x = &existing[o as usize];
            (Some(x.0), x.1)
        } else {
            (None, o as usize - e)
        };
        dups.push(Dup {
            item: k,
            id: r.ids[i as usize],
            kind: if exact.contains_key(&i) {
                "exact"
            } else {
                "near"
            },
            original_dataset,
            original_index,
            original_id: r.ids[o as usize],
            jaccard,
            cosine,
        });
    }
    let submit: Vec<Hash32> = fresh.iter().map(|&k| r.ids[e + k]).collect();
    let dataset = (!submit.is_empty()).then(|| dataset_id(&a.source, &submit));
    let mut report = json!({
        "items": items.len(),
        "new": submit.len(),
        "duplicates": dups,
        "exact_duplicates": dups.iter().filter(|d| d.kind == "exact").count(),
        "near_duplicates": dups.iter().filter(|d| d.kind == "near").count(),
        "compared_with": e,
        "candidate_pairs": r.candidates_checked,
        "confirmation": if confirming { json!({"model": "all-minilm-l6-v2", "min_cosine": CONFIRM_COSINE, "below_jaccard": CONFIRM_BELOW_JACCARD, "pairs_embedded": confirmed_pairs}) } else { Value::Null },
        "dedup_seconds": dedup_s,
        "docs_per_second": texts.len() as f64 / dedup_s.max(1e-9),
        "dataset": dataset,
    });
    let Some(dataset) = dataset else {
        report["registered"] = json!(false);
        return Ok(Added {
            report,
            dataset: None,
        });
    };
    if a.dry_run {
        report["registered"] = json!(false);
        return Ok(Added {
            report,
            dataset: Some(dataset),
        });
    }
    let client = Client::new(node);
    // Items another contributor already put on the ledger stay credited to them.
    let mut on_ledger = serde_json::Map::new();
    for chunk in submit.chunks(100 * MAX_ITEMS_PER_TX) {
        let v = client.post("/v1/items/lookup", &json!({ "items": chunk }))?;
        if let Some(m) = v["known"].as_object() {
            on_ledger.extend(m.clone());
        }
    }
    let key = load_wallet(home)?;
    let mut actions = vec![Action::RegisterData {
        id: dataset,
        source: a.source.clone(),
        licence: a.licence.clone(),
    }];
    for chunk in submit.chunks(MAX_ITEMS_PER_TX) {
        actions.push(Action::AddDataItems {
            dataset,
            items: chunk.to_vec(),
        });
    }
    let txs = submit_all(&client, &key, actions)?;
    let d = client.get(&format!("/v1/datasets/{dataset}"))?;
    let saved: Vec<(Hash32, &str)> = (0..items.len())
        .map(|k| (r.ids[e + k], items[k].as_str()))
        .collect();
    local.save(dataset, &saved)?;
    report["registered"] = json!(true);
    report["contributor"] = json!(key.public());
    report["credited"] = d["credited"].clone();
    report["already_on_ledger"] = Value::Object(on_ledger);
    report["ledger_duplicates"] = d["duplicates"].clone();
    report["transactions"] = json!(txs.len());
    Ok(Added {
        report,
        dataset: Some(dataset),
    })
}

fn print_add(v: &Value) {
    println!(
        "{} items: {} new, {} exact and {} near duplicates (compared with {} items of the data index; {} LSH candidate pairs{})",
        v["items"],
        v["new"],
        v["exact_duplicates"],
        v["near_duplicates"],
        v["compared_with"],
        v["candidate_pairs"],
        if v["confirmation"].is_null() {
            ", no embedding confirmation".to_string()
        } else {
            format!(", {} borderline pairs checked with MiniLM", v["confirmation"]["pairs_embedded"])
        }
    );
    if let Some(d) = v["duplicates"].as_array() {
        for x in d.iter().take(20) {
            let whence = if x["original_dataset"].is_null() {
                "this corpus".to_string()
            } else {
                format!("dataset {}", short(&x["original_dataset"]))
            };
            println!(
                "  item {} duplicates item {} of {} ({}{})",
                x["item"],
                x["original_index"],
                whence,
                x["kind"].as_str().unwrap_or("?"),
                x["jaccard"]
                    .as_f64()
                    .map(|j| format!(", jaccard {j:.2}"))
                    .unwrap_or_default()
            );
        }
        if d.len() > 20 {
            println!("  ... and {} more (--json for all)", d.len() - 20);
        }
    }
    if v["registered"] == true {
        println!(
            "dataset {} registered: {} items credited to {}, {} already credited to another contributor",
            v["dataset"].as_str().unwrap_or("?"),
            v["credited"],
            v["contributor"].as_str().unwrap_or("?"),
            v["ledger_duplicates"]
        );
    } else if v["dataset"].is_null() {
        println!("nothing new: every item duplicates an earlier one; nothing registered");
    } else {
        println!(
            "dry run: dataset {} not registered",
            v["dataset"].as_str().unwrap_or("?")
        );
    }
}
