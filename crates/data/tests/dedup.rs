//! End-to-end tests of deduplication: ids, estimates, exact and near duplicates,
//! determinism, precision and recall on a labelled corpus, the confirmation hook and
//! deduplication of a new batch against an existing collection.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
use vouch_data::{
    corpus, dedup, item_id, normalize, Collection, DataError, DedupParams, MinHasher, Report,
    ITEM_DOMAIN,
};
use vouch_types::Hash32;

fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

/// Exact shingle set, computed independently of the crate's hashing: word strings of
/// the normalised text joined in windows.
fn shingle_strings(text: &str, k: usize) -> HashSet<String> {
    let norm = normalize(text);
    if norm.is_empty() {
        return HashSet::new();
    }
    let words: Vec<&str> = norm.split(' ').collect();
    if words.len() <= k {
        return HashSet::from([words.join(" ")]);
    }
    words.windows(k).map(|w| w.join(" ")).collect()
}

fn exact_jaccard(a: &str, b: &str, k: usize) -> f64 {
    let (x, y) = (shingle_strings(a, k), shingle_strings(b, k));
    let inter = x.intersection(&y).count();
    let union = x.len() + y.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Replaces every `every`-th word of `text` by a made-up word.
fn edit_words(text: &str, every: usize) -> String {
    text.split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i % every == every - 1 {
                format!("qq{i}x")
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The original (lowest index) of each item's cluster, or the item itself.
fn originals(r: &Report) -> Vec<u32> {
    let mut orig: Vec<u32> = (0..r.items as u32).collect();
    for c in &r.clusters {
        for &i in c {
            orig[i as usize] = c[0];
        }
    }
    orig
}

#[test]
fn item_ids_are_stable_and_distinct() {
    // Content ids are part of the protocol: this value must never change.
    assert_eq!(
        item_id("hello").to_hex(),
        Hash32::digest(ITEM_DOMAIN, &[b"hello"]).to_hex()
    );
    assert_eq!(item_id("hello").to_hex(), PINNED_HELLO_ID);
    let texts = corpus::documents(200, 1);
    let ids: HashSet<Hash32> = texts.iter().map(|t| item_id(t)).collect();
    assert_eq!(ids.len(), texts.len());
    assert_ne!(item_id(""), item_id(" "));
    assert_ne!(item_id("Hello"), item_id("hello"));
}

const PINNED_HELLO_ID: &str = "043b1129e18f7356d5a89f17d93d7096a3216ea1dfedaa044c0ef310a78af672";

#[test]
fn normalize_examples() {
    assert_eq!(normalize("The  Cat, the HAT!"), "the cat the hat");
    assert_eq!(normalize("\n\t x1 -- y2 \n"), "x1 y2");
    assert_eq!(normalize("Ünïcödé—words"), "ünïcödé words");
    assert_eq!(normalize("  ... "), "");
}

#[test]
fn params_validation() {
    let ok = DedupParams::default();
    assert!(ok.validate().is_ok());
    let bad = |f: fn(&mut DedupParams)| {
        let mut p = DedupParams::default();
        f(&mut p);
        p.validate().unwrap_err()
    };
    assert_eq!(bad(|p| p.shingle_words = 0), DataError::ShingleWords);
    assert!(matches!(bad(|p| p.rows = 3), DataError::Banding { .. }));
    assert!(matches!(bad(|p| p.perms = 100), DataError::Banding { .. }));
    assert!(matches!(bad(|p| p.bands = 0), DataError::ZeroSize { .. }));
    assert!(matches!(bad(|p| p.jaccard = 0.0), DataError::Jaccard(_)));
    assert!(matches!(bad(|p| p.jaccard = 1.01), DataError::Jaccard(_)));
    let msg = bad(|p| p.rows = 3).to_string();
    assert!(msg.contains("bands * rows must equal perms"), "{msg}");
    let p = DedupParams {
        rows: 3,
        ..Default::default()
    };
    assert!(dedup(&["a"], &p, None).is_err());
    assert!(Collection::new(&p).is_err());
}

#[test]
fn signature_estimates_exact_jaccard() {
    let p = DedupParams::default();
    let h = MinHasher::new(&p);
    let l = corpus::labelled(250, 11);
    let mut pairs: Vec<(u32, u32)> = l.pairs.clone();
    pairs.extend(l.hard_negatives.iter().take(100));
    // Some random pairs too.
    let n = l.texts.len() as u32;
    pairs.extend((0..100u32).map(|i| ((i * 7) % n, (i * 13 + 5) % n)));
    let sigs: Vec<_> = l.texts.iter().map(|t| h.signature(t)).collect();
    let mut errors = Vec::new();
    for &(a, b) in &pairs {
        if a == b {
            continue;
        }
        let (ta, tb) = (&l.texts[a as usize], &l.texts[b as usize]);
        let exact = exact_jaccard(ta, tb, p.shingle_words);
        let est = sigs[a as usize].jaccard(&sigs[b as usize]);
        errors.push(est - exact);
    }
    let m = errors.len() as f64;
    let within = errors.iter().filter(|e| e.abs() <= 0.1).count() as f64 / m;
    let worst = errors.iter().fold(0.0f64, |w, e| w.max(e.abs()));
    let bias = errors.iter().sum::<f64>() / m;
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / m;
    eprintln!(
        "jaccard estimate over {m} pairs: within 0.1: {:.1}%, mean abs error {mae:.4}, bias {bias:+.4}, worst {worst:.3}",
        within * 100.0
    );
    assert!(within >= 0.97, "only {within} within 0.1");
    assert!(worst <= 0.16, "worst error {worst}");
    assert!(bias.abs() <= 0.01, "bias {bias}");
}

#[test]
fn exact_duplicates_collapse_to_first_occurrence() {
    let docs = corpus::documents(5, 3);
    let texts = [
        docs[0].as_str(),
        docs[1].as_str(),
        docs[0].as_str(),
        docs[2].as_str(),
        docs[1].as_str(),
        docs[0].as_str(),
    ];
    let r = dedup(&texts, &DedupParams::default(), None).unwrap();
    assert_eq!(r.items, 6);
    assert_eq!(r.exact, vec![(2, 0), (4, 1), (5, 0)]);
    assert!(r.near.is_empty());
    assert_eq!(r.clusters, vec![vec![0, 2, 5], vec![1, 4]]);
    assert_eq!(r.unique, vec![0, 1, 3]);
    assert_eq!(r.ids[0], r.ids[5]);
    assert_ne!(r.ids[0], r.ids[1]);
}

#[test]
fn texts_without_words_never_near_match() {
    let texts = [
        "",
        "   ",
        "",
        "!!",
        "?? ..",
        "one",
        "one.",
        "One!",
        "",
        "two words",
    ];
    let r = dedup(&texts, &DedupParams::default(), None).unwrap();
    assert_eq!(r.exact, vec![(2, 0), (8, 0)]);
    // "one", "one." and "One!" are different contents with the same words.
    let near: Vec<(u32, u32)> = r.near.iter().map(|n| (n.a, n.b)).collect();
    assert_eq!(near, vec![(5, 6), (5, 7), (6, 7)]);
    assert!(r.near.iter().all(|n| n.jaccard == 1.0));
    assert_eq!(r.clusters, vec![vec![0, 2, 8], vec![5, 6, 7]]);
    assert_eq!(r.unique, vec![0, 1, 3, 4, 5, 9]);
    let h = MinHasher::new(&DedupParams::default());
    assert!(h.signature("  ").is_blank());
    assert_eq!(h.signature("").jaccard(&h.signature("")), 0.0);
}

#[test]
fn report_does_not_depend_on_thread_count() {
    let texts = corpus::bench_corpus(3000, 4);
    let texts = refs(&texts);
    let p = DedupParams::default();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut calls = Vec::new();
                let mut confirm = |a: u32, b: u32, _j: f64| {
                    calls.push((a, b));
                    Some((a ^ b) as f32 / 8.0)
                };
                let r = dedup(&texts, &p, Some(&mut confirm)).unwrap();
                (r, calls)
            })
    };
    let (one, calls_one) = run(1);
    let (two, calls_two) = run(2);
    assert!(one.near.len() > 200, "{} near pairs", one.near.len());
    assert_eq!(one, two);
    assert_eq!(calls_one, calls_two);
    assert_eq!(
        serde_json::to_string(&one).unwrap(),
        serde_json::to_string(&two).unwrap()
    );
    // And across processes/machines: nothing random beyond the seed.
    assert_eq!(
        one,
        dedup(&texts, &p, Some(&mut |a, b, _| Some((a ^ b) as f32 / 8.0))).unwrap()
    );
}

#[test]
fn precision_and_recall_on_labelled_corpus() {
    let p = DedupParams::default();
    let l = corpus::labelled(2000, 2026);
    let texts = refs(&l.texts);
    let t = Instant::now();
    let r = dedup(&texts, &p, None).unwrap();
    let elapsed = t.elapsed();
    let truth = l.groups();
    let orig = originals(&r);

    // Representative of each item: the first occurrence of its content.
    let mut rep: Vec<u32> = (0..r.items as u32).collect();
    for &(d, o) in &r.exact {
        rep[d as usize] = o;
    }
    let near: HashSet<(u32, u32)> = r.near.iter().map(|n| (n.a, n.b)).collect();

    // Recall per kind: "clustered" = both items in one reported cluster (what credit
    // depends on); "direct" = the pair itself was reported (exact, or near between the
    // first occurrences of the two contents).
    let mut per_kind: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (&(a, b), kind) in l.pairs.iter().zip(&l.kinds) {
        let e = per_kind.entry(kind.as_str()).or_default();
        e.0 += 1;
        if orig[a as usize] == orig[b as usize] {
            e.1 += 1;
        }
        let (x, y) = (rep[a as usize], rep[b as usize]);
        if x == y || near.contains(&(x.min(y), x.max(y))) {
            e.2 += 1;
        }
    }
    let (mut n, mut clustered, mut direct) = (0, 0, 0);
    eprintln!(
        "labelled corpus: {} texts, {} true pairs, dedup {:.1?}, {} candidates",
        l.texts.len(),
        l.pairs.len(),
        elapsed,
        r.candidates_checked
    );
    eprintln!(
        "{:<20} {:>5} {:>10} {:>8}",
        "kind", "pairs", "clustered", "direct"
    );
    for (kind, &(k, c, d)) in &per_kind {
        let must = corpus::must_find(kind);
        eprintln!(
            "{:<20} {:>5} {:>10.4} {:>8.4}{}",
            kind,
            k,
            c as f64 / k as f64,
            d as f64 / k as f64,
            if must { "" } else { "   (allowed to miss)" }
        );
        if must {
            n += k;
            clustered += c;
            direct += d;
            assert!(
                c as f64 / k as f64 >= 0.9,
                "kind {kind}: clustered recall {}",
                c as f64 / k as f64
            );
        }
    }
    let recall_clustered = clustered as f64 / n as f64;
    let recall_direct = direct as f64 / n as f64;

    // Precision over reported pairs and over cluster membership.
    let reported: Vec<(u32, u32)> = r
        .exact
        .iter()
        .map(|&(d, o)| (o, d))
        .chain(r.near.iter().map(|x| (x.a, x.b)))
        .collect();
    let good = reported
        .iter()
        .filter(|&&(a, b)| truth[a as usize] == truth[b as usize])
        .count();
    let precision_pairs = good as f64 / reported.len() as f64;
    let members: Vec<(u32, u32)> = r
        .clusters
        .iter()
        .flat_map(|c| c[1..].iter().map(move |&i| (c[0], i)))
        .collect();
    let good_members = members
        .iter()
        .filter(|&&(a, b)| truth[a as usize] == truth[b as usize])
        .count();
    let precision_clusters = good_members as f64 / members.len() as f64;
    let hard_fp = l
        .hard_negatives
        .iter()
        .filter(|&&(a, b)| orig[a as usize] == orig[b as usize])
        .count();
    eprintln!(
        "must-find kinds: recall clustered {recall_clustered:.4}, direct {recall_direct:.4}; \
         precision pairs {precision_pairs:.4} ({good}/{}), cluster members {precision_clusters:.4}; \
         hard negatives clustered {hard_fp}/{}",
        reported.len(),
        l.hard_negatives.len()
    );
    assert!(precision_pairs >= 0.99, "precision {precision_pairs}");
    assert!(precision_clusters >= 0.99, "precision {precision_clusters}");
    assert!(recall_clustered >= 0.95, "recall {recall_clustered}");
    assert!(recall_direct >= 0.95, "direct recall {recall_direct}");
    assert_eq!(hard_fp, 0, "hard negatives reported as duplicates");
}

#[test]
fn confirm_hook_sees_only_pairs_above_threshold() {
    let p = DedupParams::default();
    let l = corpus::labelled(150, 5);
    let texts = refs(&l.texts);
    let plain = dedup(&texts, &p, None).unwrap();
    assert!(!plain.exact.is_empty() && !plain.near.is_empty());

    // Reject everything: exact duplicates remain, near pairs vanish.
    let mut calls = Vec::new();
    let mut reject = |a: u32, b: u32, j: f64| {
        calls.push((a, b));
        assert!(
            j >= DedupParams::default().jaccard,
            "the hook sees the estimate"
        );
        None
    };
    let r = dedup(&texts, &p, Some(&mut reject)).unwrap();
    assert!(r.near.is_empty());
    assert_eq!(r.exact, plain.exact);
    let exact_clusters: usize = r.clusters.iter().map(|c| c.len() - 1).sum();
    assert_eq!(exact_clusters, r.exact.len());
    // Called exactly for the pairs that pass the threshold, in ascending order.
    let expected: Vec<(u32, u32)> = plain.near.iter().map(|n| (n.a, n.b)).collect();
    assert_eq!(calls, expected);
    let h = MinHasher::new(&p);
    for &(a, b) in &calls {
        let j = h
            .signature(texts[a as usize])
            .jaccard(&h.signature(texts[b as usize]));
        assert!(j >= p.jaccard);
    }
    assert!(calls.len() < plain.candidates_checked || plain.candidates_checked == calls.len());

    // Accept with a score: the same pairs, carrying the score.
    let score = |a: u32, b: u32| ((a * 31 + b) % 7) as f32 / 7.0;
    let mut accept = |a: u32, b: u32, _j: f64| Some(score(a, b));
    let r = dedup(&texts, &p, Some(&mut accept)).unwrap();
    assert_eq!(r.near.len(), plain.near.len());
    for (x, y) in r.near.iter().zip(&plain.near) {
        assert_eq!((x.a, x.b, x.jaccard), (y.a, y.b, y.jaccard));
        assert_eq!(y.confirm, None);
        assert_eq!(x.confirm, Some(score(x.a, x.b)));
    }
    assert_eq!(r.clusters, plain.clusters);
}

#[test]
fn new_batch_is_checked_against_existing_collection() {
    let p = DedupParams::default();
    let existing = corpus::documents(400, 21);
    let fresh = corpus::documents(30, 22);
    let n = existing.len() as u32;
    let new_batch: Vec<String> = vec![
        existing[5].clone(),           // n + 0: exact copy of an existing item
        edit_words(&existing[17], 15), // n + 1: light edit of an existing item
        fresh[0].clone(),              // n + 2: new content
        existing[33].to_uppercase(),   // n + 3: reformatted copy
        fresh[1].clone(),              // n + 4: new content ...
        fresh[1].clone(),              // n + 5: ... submitted twice in the batch
        edit_words(&fresh[2], 12),     // n + 6: edit of ...
        fresh[2].clone(),              // n + 7: ... new content seen later in the batch
        edit_words(&existing[17], 9),  // n + 8: another edit of existing 17
    ];
    let mut all = existing.clone();
    all.extend(new_batch.iter().cloned());
    let r = dedup(&refs(&all), &p, None).unwrap();
    let orig = originals(&r);
    let o = |i: u32| orig[i as usize];
    assert!(r.exact.contains(&(n, 5)));
    assert_eq!(o(n), 5);
    assert_eq!(o(n + 1), 17);
    assert_eq!(o(n + 8), 17);
    assert_eq!(o(n + 3), 33);
    assert_eq!(o(n + 2), n + 2);
    assert_eq!(o(n + 4), n + 4);
    assert!(r.exact.contains(&(n + 5, n + 4)));
    // The edit came first, so it is the original of the later clean copy.
    assert_eq!(o(n + 7), n + 6);
    for i in 0..n {
        assert!(r.unique.contains(&i), "existing item {i} lost credit");
    }
    let credited: Vec<u32> = r.unique.iter().copied().filter(|&i| i >= n).collect();
    assert_eq!(credited, vec![n + 2, n + 4, n + 6]);

    // The incremental collection agrees with the one-shot report.
    let mut c = Collection::new(&p).unwrap();
    let first = c.add(&refs(&existing), None).unwrap();
    assert!(first.iter().all(|v| v.original == v.index));
    let verdicts = c.add(&refs(&new_batch), None).unwrap();
    assert_eq!(c.len(), all.len());
    assert_eq!(c.report(), r);
    assert_eq!(verdicts[0].exact_of, Some(5));
    assert_eq!(verdicts[1].near.len(), 1);
    assert_eq!(verdicts[1].near[0].a, 17);
    assert_eq!(verdicts[1].original, 17);
    assert_eq!(verdicts[2].original, n + 2);
    assert_eq!(verdicts[5].exact_of, Some(n + 4));
}

#[test]
fn collection_matches_dedup_in_any_batching() {
    let p = DedupParams::default();
    let l = corpus::labelled(300, 8);
    let texts = refs(&l.texts);
    let whole = dedup(&texts, &p, None).unwrap();
    for cuts in [vec![texts.len()], vec![1, 100, 101, 250], vec![500, 501]] {
        let mut c = Collection::new(&p).unwrap();
        let mut start = 0;
        for &end in cuts.iter().chain([texts.len()].iter()) {
            let end = end.min(texts.len());
            if end > start {
                c.add(&texts[start..end], None).unwrap();
                start = end;
            }
        }
        assert_eq!(c.report(), whole);
    }
}

#[test]
fn report_round_trips_through_json() {
    let l = corpus::labelled(40, 9);
    let r = dedup(
        &refs(&l.texts),
        &DedupParams::default(),
        Some(&mut |_, _, _| Some(0.5)),
    )
    .unwrap();
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn throughput_10k_documents() {
    // A timing printout for the record (no assertion: machines differ).
    let texts = corpus::bench_corpus(10_000, 1);
    let texts = refs(&texts);
    let t = Instant::now();
    let r = dedup(&texts, &DedupParams::default(), None).unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "dedup of 10k bench documents: {:.3} s = {:.0} docs/s on {} threads ({} near pairs, {} candidates)",
        s,
        texts.len() as f64 / s,
        rayon::current_num_threads(),
        r.near.len(),
        r.candidates_checked
    );
    assert!(r.near.len() >= 900);
}
