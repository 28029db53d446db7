//! Times deduplication of `corpus::bench_corpus`.
//!
//! `cargo run --release -p vouch-data --example throughput -- [docs] [threads] [perms bands rows]`

use std::time::Instant;
use vouch_data::{corpus, dedup, normalize, Collection, DedupParams, MinHasher};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numeric argument"))
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let threads = args.get(1).copied().unwrap_or(0);
    let mut p = DedupParams::default();
    if let [perms, bands, rows] = args.get(2..5).unwrap_or(&[]) {
        (p.perms, p.bands, p.rows) = (*perms, *bands, *rows);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| {
        let t = Instant::now();
        let texts = corpus::bench_corpus(n, 1);
        let gen = t.elapsed();
        let words: usize = texts.iter().map(|t| normalize(t).split(' ').count()).sum();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

        let h = MinHasher::new(&p);
        let t = Instant::now();
        let sigs: usize = {
            use rayon::prelude::*;
            refs.par_iter().map(|t| h.signature(t).0.len()).sum()
        };
        let sig_time = t.elapsed();
        assert_eq!(sigs, n * p.perms);

        let before = reset_peak_rss_mib();
        let t = Instant::now();
        let r = dedup(&refs, &p, None).expect("dedup");
        let total = t.elapsed();
        let after_dedup = peak_rss_mib();

        let before_collection = reset_peak_rss_mib();
        let t = Instant::now();
        let mut c = Collection::new(&p).expect("params");
        let half = n / 2;
        c.add(&refs[..half], None).expect("add");
        c.add(&refs[half..], None).expect("add");
        let incremental = t.elapsed();
        let after_collection = peak_rss_mib();
        assert_eq!(c.report(), r);
        println!(
            "docs {n} (mean {:.0} words, generated in {:.2?}), threads {}, params {}x{}={}",
            words as f64 / n as f64,
            gen,
            rayon::current_num_threads(),
            p.bands,
            p.rows,
            p.perms
        );
        println!(
            "signatures only: {:.2?} = {:.0} docs/s",
            sig_time,
            n as f64 / sig_time.as_secs_f64()
        );
        println!(
            "dedup (ids + signatures + LSH + checks + clusters): {:.2?} = {:.0} docs/s",
            total,
            n as f64 / total.as_secs_f64()
        );
        println!(
            "collection (two batches, same report): {:.2?} = {:.0} docs/s",
            incremental,
            n as f64 / incremental.as_secs_f64()
        );
        println!(
            "memory: dedup peak +{:.0} MiB over {before:.0} MiB; collection peak +{:.0} MiB over {before_collection:.0} MiB",
            after_dedup - before,
            after_collection - before_collection
        );
        println!(
            "exact {}, near {}, clusters {}, candidates {}",
            r.exact.len(),
            r.near.len(),
            r.clusters.len(),
            r.candidates_checked
        );
    });
}

/// Peak resident memory of this process since the last reset (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resets the peak to the current resident memory (Linux) and returns the latter.
fn reset_peak_rss_mib() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
