//! `vouch bench data`: near-duplicate precision and recall on a labelled corpus built with
//! controlled edits, `data add` throughput on a large corpus, and the cost of the MiniLM
//! confirmation per candidate pair.

use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use vouch_data::{corpus, DedupParams};

use crate::cmd::data::{add, AddArgs, CONFIRM_BELOW_JACCARD};

#[derive(Args, Debug)]
pub struct DataBenchArgs {
    /// Documents in the throughput corpus.
    #[arg(long, default_value_t = 100_000)]
    pub docs: usize,
    /// Base documents of the labelled corpus (each gets several edited variants).
    #[arg(long, default_value_t = 2_000)]
    pub labelled: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(home: &Path, a: DataBenchArgs) -> Result<()> {
    let p = DedupParams::default();
    println!(
        "vouch bench data: {} MinHash permutations, {} bands x {} rows, word {}-shingles, Jaccard >= {}",
        p.perms, p.bands, p.rows, p.shingle_words, p.jaccard
    );

    // Quality: every reported pair judged against the true duplicate groups.
    let l = corpus::labelled(a.labelled, a.seed);
    let texts: Vec<&str> = l.texts.iter().map(String::as_str).collect();
    let r = vouch_data::dedup(&texts, &p, None)?;
    let groups = l.groups();
    let mut cluster_of = vec![u32::MAX; texts.len()];
    for (c, members) in r.clusters.iter().enumerate() {
        for &i in members {
            cluster_of[i as usize] = c as u32;
        }
    }
    let reported: Vec<(u32, u32)> = r
        .exact
        .iter()
        .map(|&(d, o)| (o.min(d), o.max(d)))
        .chain(r.near.iter().map(|n| (n.a, n.b)))
        .collect();
    let correct = reported
        .iter()
        .filter(|(x, y)| groups[*x as usize] == groups[*y as usize])
        .count();
    let mut per_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (&(x, y), kind) in l.pairs.iter().zip(&l.kinds) {
        let found =
            cluster_of[x as usize] != u32::MAX && cluster_of[x as usize] == cluster_of[y as usize];
        let e = per_kind.entry(kind.as_str()).or_default();
        e.0 += usize::from(found);
        e.1 += 1;
    }
    let negatives_merged = l
        .hard_negatives
        .iter()
        .filter(|(x, y)| {
            cluster_of[*x as usize] != u32::MAX
                && cluster_of[*x as usize] == cluster_of[*y as usize]
        })
        .count();
    println!(
        "\nQuality on a labelled corpus of {} texts ({} base documents and edited variants; seed {}):\n",
        texts.len(),
        a.labelled,
        a.seed
    );
    println!("| edit kind | pairs | found (same cluster) | recall |");
    println!("| --- | --- | --- | --- |");
    let (mut f_all, mut n_all) = (0, 0);
    for (kind, (f, n)) in &per_kind {
        let must = corpus::must_find(kind);
        if must {
            f_all += f;
            n_all += n;
        }
        println!(
            "| {kind}{} | {n} | {f} | {:.3} |",
            if must { "" } else { " (not required)" },
            *f as f64 / (*n).max(1) as f64
        );
    }
    println!(
        "\nprecision {:.4} ({correct} of {} reported pairs in a true duplicate group); recall {:.4} over the required kinds; {} of {} hard negatives (same topic, written independently) merged",
        correct as f64 / reported.len().max(1) as f64,
        reported.len(),
        f_all as f64 / n_all.max(1) as f64,
        negatives_merged,
        l.hard_negatives.len()
    );

    // Throughput: the whole `data add` path short of the ledger (read JSONL, content ids,
    // signatures, LSH, report), on a fresh home so nothing earlier is compared.
    let dir = tempfile::tempdir()?;
    let docs = corpus::bench_corpus(a.docs, a.seed);
    let words: usize = docs.iter().map(|d| d.split_whitespace().count()).sum();
    let file = dir.path().join("corpus.jsonl");
    let mut body = String::with_capacity(words * 8);
    for d in &docs {
        body.push_str(&serde_json::json!({ "text": d }).to_string());
        body.push('\n');
    }
    std::fs::write(&file, body)?;
    let mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let t = Instant::now();
    let out = add(
        &dir.path().join("home"),
        "http://unused",
        &AddArgs {
            files: vec![file],
            source: "bench".into(),
            licence: "CC0-1.0".into(),
            no_confirm: true,
            dry_run: true,
            index: None,
        },
    )?;
    let secs = t.elapsed().as_secs_f64();
    let borderline = out.report["duplicates"].as_array().map_or(0, |d| {
        d.iter()
            .filter(|x| {
                x["jaccard"]
                    .as_f64()
                    .is_some_and(|j| j < CONFIRM_BELOW_JACCARD)
            })
            .count()
    });
    println!(
        "\n`data add --dry-run --no-confirm` on {} documents ({:.0} words on average, {mb:.0} MB of JSONL): {secs:.2} s = {:.0} documents/s ({:.0} in dedup alone); {} new, {} exact and {} near duplicates, {} LSH candidate pairs; dataset {}",
        a.docs,
        words as f64 / a.docs as f64,
        a.docs as f64 / secs,
        out.report["docs_per_second"].as_f64().unwrap_or(0.0),
        out.report["new"],
        out.report["exact_duplicates"],
        out.report["near_duplicates"],
        out.report["candidate_pairs"],
        out.dataset.map(|d| d.to_string()).unwrap_or_default()
    );

    // Confirmation: MiniLM over both texts of a candidate pair (their first 1,000
    // characters; shorter if that is over the model's 512 tokens).
    let mut progress = |_ev: vouch_inference::models::FetchEvent| {};
    vouch_inference::models::fetch(&vouch_inference::models::MINILM_L6, home, &mut progress)?;
    let e = vouch_inference::Embedder::load(&vouch_inference::models::MINILM_L6, home)?;
    let n = 50.min(docs.len());
    let t = Instant::now();
    for d in docs.iter().take(n) {
        let head: String = d.chars().take(1_000).collect();
        if e.embed(&head).is_err() {
            e.embed(&d.chars().take(500).collect::<String>())?;
        }
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "MiniLM confirmation: {:.1} ms per document embedded; only near pairs with Jaccard below {} are embedded (two documents each, cached): {borderline} of the {} near duplicates above, about {:.0} s more for `data add` with confirmation",
        per * 1e3,
        CONFIRM_BELOW_JACCARD,
        out.report["near_duplicates"],
        borderline as f64 * 2.0 * per
    );
    Ok(())
}
