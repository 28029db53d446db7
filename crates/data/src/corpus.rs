//! Seeded synthetic corpora with known duplicates, for measuring deduplication.
//!
//! Text is generated from a fixed pseudo-language: 20,000 made-up words built from
//! syllables, where frequent words are short, drawn with a Zipf–Mandelbrot distribution
//! (weight `1 / (rank + 2.7)`) so that, as in real text, every document uses the same
//! handful of very common words. Documents also belong to *topics*: a topic has its own
//! sub-vocabulary of mid-frequency words and a few stock sentences (boilerplate such as
//! a recurring disclaimer). Two documents of one topic look alike to a bag-of-words or
//! embedding model but share few word sequences, which makes them hard negatives for
//! deduplication.
//!
//! Everything is a pure function of its seed: the same call returns the same corpus on
//! every machine (generation runs in parallel with one ChaCha stream per document).

use crate::hash::{combine, mix64, FixedState};
use rand::seq::{index, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::HashSet;

/// Words in the pseudo-language.
const VOCAB: usize = 20_000;
/// Fixed seed of the pseudo-language: every corpus speaks the same language.
const LANGUAGE_SEED: u64 = 0x6c61_6e67_7561_6765;
/// Salts separating the random streams of the corpus builders.
const BENCH_SALT: u64 = 0x6265_6e63_6873_616c;
const LABELLED_SALT: u64 = 0x6c61_6265_6c6c_6564;
const TOPICS_SALT: u64 = 0x746f_7069_6373_616c;
/// Words per topic sub-vocabulary.
const TOPIC_WORDS: usize = 150;
/// Stock sentences per topic.
const TOPIC_STOCK: usize = 4;

const ONSETS: &[&str] = &[
    "", "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
    "z", "br", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr", "ch", "sp", "kn", "wh",
];
const NUCLEI: &[&str] = &[
    "a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ee", "oo", "ou", "ie", "y",
];
const CODAS: &[&str] = &[
    "", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "rk", "ng", "ck", "x",
];

/// Label of an exact byte-for-byte copy.
pub const EXACT: &str = "exact";
/// Label of a copy that differs only in case, whitespace and punctuation.
pub const REFORMAT: &str = "reformat";
/// Label of a copy with 3–10% of its words replaced by other words.
pub const SUBSTITUTE: &str = "substitute";
/// Label of a copy with 5–10% of its words deleted or new words inserted.
pub const INDEL: &str = "indel";
/// Label of a copy with its sentences shuffled.
pub const REORDER: &str = "reorder";
/// Label of a copy that keeps only the first 70–85% of the words.
pub const TRUNCATE: &str = "truncate";
/// Label of a copy with shuffled sentences and 3–6% of words replaced.
pub const REORDER_SUBSTITUTE: &str = "reorder+substitute";
/// Label of a copy truncated to 75–85% with 3–6% of words deleted or inserted.
pub const TRUNCATE_INDEL: &str = "truncate+indel";
/// Label of a light (3–6%) substitution of another variant rather than of the base.
pub const CHAIN: &str = "chain";
/// Label of a heavy rewrite: 30–50% of the words replaced. Shingle similarity is low
/// (around 0.1–0.3), so MinHash is not expected to find these.
pub const HEAVY: &str = "heavy";

/// Every pair label [`labelled`] produces.
pub const KINDS: &[&str] = &[
    EXACT,
    REFORMAT,
    SUBSTITUTE,
    INDEL,
    REORDER,
    TRUNCATE,
    REORDER_SUBSTITUTE,
    TRUNCATE_INDEL,
    CHAIN,
    HEAVY,
];

/// Whether deduplication is expected to find pairs of this kind: everything except
/// [`HEAVY`].
pub fn must_find(kind: &str) -> bool {
    kind != HEAVY
}

/// A corpus with known duplicates.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    /// The texts, in a seeded random order.
    pub texts: Vec<String>,
    /// True duplicate pairs `(a, b)`, `a < b`, as indices into `texts`: each says that
    /// one text was derived from the other. Sorted.
    pub pairs: Vec<(u32, u32)>,
    /// How each pair was made, one of [`KINDS`], parallel to `pairs`.
    pub kinds: Vec<String>,
    /// Pairs of independently written base documents of the same topic, `a < b`,
    /// sorted: similar vocabulary and a shared stock sentence or two, but not
    /// duplicates.
    pub hard_negatives: Vec<(u32, u32)>,
}

impl Labelled {
    /// The true duplicate groups: for every text, the smallest index connected to it
    /// through `pairs` (the transitive closure, since two variants of one base are
    /// duplicates of each other too). Texts in no pair are their own group.
    pub fn groups(&self) -> Vec<u32> {
        let mut parent: Vec<u32> = (0..self.texts.len() as u32).collect();
        fn find(parent: &mut [u32], mut x: u32) -> u32 {
            while parent[x as usize] != x {
                parent[x as usize] = parent[parent[x as usize] as usize];
                x = parent[x as usize];
            }
            x
        }
        for &(a, b) in &self.pairs {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent[hi as usize] = lo;
        }
        (0..self.texts.len() as u32)
            .map(|i| find(&mut parent, i))
            .collect()
    }
}

/// `n` independent documents of 80–300 words, reproducible from `seed`.
///
/// They share the common words of the language and are spread over 100 topics, but
/// any two of them have almost no word trigram in common.
pub fn documents(n: usize, seed: u64) -> Vec<String> {
    let lang = Language::new();
    let docs = independent_docs(&lang, n, seed);
    docs.par_iter().map(|d| lang.render(d)).collect()
}

/// A throughput corpus: [`documents`]`(n, seed)` with about 10% of the documents
/// replaced by light edits (substitution, insertion/deletion, reordering or truncation)
/// of other documents, so that deduplication has near duplicates to find.
pub fn bench_corpus(n: usize, seed: u64) -> Vec<String> {
    let lang = Language::new();
    let mut docs = independent_docs(&lang, n, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ BENCH_SALT));
    let m = n / 10;
    if n >= 2 && m > 0 {
        let targets = index::sample(&mut rng, n, m).into_vec();
        let mut replaced = vec![false; n];
        for &t in &targets {
            replaced[t] = true;
        }
        for &t in &targets {
            let source = loop {
                let s = rng.gen_range(0..n);
                if !replaced[s] {
                    break s;
                }
            };
            let base = docs[source].clone();
            docs[t] = match rng.gen_range(0..4) {
                0 => substitute(&lang, &base, rng.gen_range(0.03..0.08), &mut rng),
                1 => indel(&lang, &base, rng.gen_range(0.03..0.08), &mut rng),
                2 => reorder(&base, &mut rng),
                _ => truncate(&base, rng.gen_range(0.75..0.9)),
            };
        }
    }
    docs.par_iter().map(|d| lang.render(d)).collect()
}

/// A labelled corpus built from `n_base` base documents.
///
/// Base documents belong to topics of about six documents each (the hard negatives).
/// About two thirds of the bases get one to three variants, each made with one of the
/// edits in [`KINDS`]; a [`CHAIN`] variant is derived from an earlier variant of the
/// same base. The texts are then shuffled, so originals and copies are interleaved.
pub fn labelled(n_base: usize, seed: u64) -> Labelled {
    let lang = Language::new();
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ LABELLED_SALT));
    let n_topics = (n_base / 6).max(1);
    let topics: Vec<Topic> = (0..n_topics).map(|_| Topic::new(&lang, &mut rng)).collect();
    let style = Style {
        topic_mix: 0.3,
        stock_prob: 0.4,
    };
    let bases: Vec<(usize, Doc)> = (0..n_base)
        .into_par_iter()
        .map(|i| {
            let mut r = doc_rng(seed, i as u64);
            let t = r.gen_range(0..n_topics);
            (t, lang.document(Some(&topics[t]), &style, &mut r))
        })
        .collect();

    let mut texts: Vec<String> = bases.par_iter().map(|(_, d)| lang.render(d)).collect();
    let mut pairs: Vec<(usize, usize, &'static str)> = Vec::new();
    // Weighted choice of variant kind.
    let weighted: &[(&str, u32)] = &[
        (EXACT, 2),
        (REFORMAT, 2),
        (SUBSTITUTE, 4),
        (INDEL, 4),
        (REORDER, 3),
        (TRUNCATE, 3),
        (REORDER_SUBSTITUTE, 3),
        (TRUNCATE_INDEL, 3),
        (CHAIN, 6),
        (HEAVY, 3),
    ];
    let total_weight: u32 = weighted.iter().map(|w| w.1).sum();
    for (b, (_, base)) in bases.iter().enumerate() {
        let count = match rng.gen_range(0..100) {
            0..=32 => 0,
            33..=69 => 1,
            70..=89 => 2,
            _ => 3,
        };
        let mut family: Vec<(usize, Doc)> = vec![(b, base.clone())];
        for _ in 0..count {
            let mut pick = rng.gen_range(0..total_weight);
            let mut kind = weighted[0].0;
            for &(k, w) in weighted {
                if pick < w {
                    kind = k;
                    break;
                }
                pick -= w;
            }
            if kind == CHAIN && family.len() < 2 {
                kind = SUBSTITUTE;
            }
            let (parent, pdoc) = if kind == CHAIN {
                family[family.len() - 1].clone()
            } else {
                (b, base.clone())
            };
            let (doc, text) = match kind {
                EXACT => (pdoc.clone(), texts[parent].clone()),
                REFORMAT => (pdoc.clone(), reformat(&texts[parent], &mut rng)),
                _ => {
                    let d = match kind {
                        SUBSTITUTE => {
                            substitute(&lang, &pdoc, rng.gen_range(0.03..=0.10), &mut rng)
                        }
                        INDEL => indel(&lang, &pdoc, rng.gen_range(0.05..=0.10), &mut rng),
                        REORDER => reorder(&pdoc, &mut rng),
                        TRUNCATE => truncate(&pdoc, rng.gen_range(0.70..=0.85)),
                        REORDER_SUBSTITUTE => {
                            let d = reorder(&pdoc, &mut rng);
                            substitute(&lang, &d, rng.gen_range(0.03..=0.06), &mut rng)
                        }
                        TRUNCATE_INDEL => {
                            let d = truncate(&pdoc, rng.gen_range(0.75..=0.85));
                            indel(&lang, &d, rng.gen_range(0.03..=0.06), &mut rng)
                        }
                        CHAIN => substitute(&lang, &pdoc, rng.gen_range(0.03..=0.06), &mut rng),
                        _ => substitute(&lang, &pdoc, rng.gen_range(0.30..=0.50), &mut rng),
                    };
                    let t = lang.render(&d);
                    (d, t)
                }
            };
            let idx = texts.len();
            texts.push(text);
            pairs.push((parent, idx, kind));
            family.push((idx, doc));
        }
    }

    let mut by_topic: Vec<Vec<usize>> = vec![Vec::new(); n_topics];
    for (b, (t, _)) in bases.iter().enumerate() {
        by_topic[*t].push(b);
    }

    // Shuffle: position[old] = new index.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.shuffle(&mut rng);
    let mut position = vec![0u32; texts.len()];
    for (new, &old) in order.iter().enumerate() {
        position[old] = new as u32;
    }
    let mut slots: Vec<Option<String>> = texts.into_iter().map(Some).collect();
    let texts: Vec<String> = order
        .iter()
        .map(|&old| slots[old].take().unwrap_or_default())
        .collect();
    let ordered = |a: usize, b: usize| {
        let (x, y) = (position[a], position[b]);
        if x < y {
            (x, y)
        } else {
            (y, x)
        }
    };
    let mut labelled_pairs: Vec<((u32, u32), &str)> =
        pairs.iter().map(|&(a, b, k)| (ordered(a, b), k)).collect();
    labelled_pairs.sort_unstable();
    let mut hard_negatives = Vec::new();
    for members in &by_topic {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                hard_negatives.push(ordered(a, b));
            }
        }
    }
    hard_negatives.sort_unstable();
    Labelled {
        texts,
        pairs: labelled_pairs.iter().map(|p| p.0).collect(),
        kinds: labelled_pairs.iter().map(|p| p.1.to_string()).collect(),
        hard_negatives,
    }
}

/// A document as sentences of word ranks; punctuation is added when rendering.
#[derive(Clone, Debug, PartialEq)]
struct Doc {
    sentences: Vec<Vec<u32>>,
}

impl Doc {
    fn words(&self) -> usize {
        self.sentences.iter().map(Vec::len).sum()
    }
}

/// How a document mixes its topic into the common language.
struct Style {
    /// Probability that a word comes from the topic's sub-vocabulary.
    topic_mix: f64,
    /// Probability that each of the topic's stock sentences appears in the document.
    stock_prob: f64,
}

/// The pseudo-language: words by frequency rank and their Zipf cumulative weights.
struct Language {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Language {
    fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(LANGUAGE_SEED);
        let mut seen: HashSet<String, FixedState> = HashSet::default();
        let mut words = Vec::with_capacity(VOCAB);
        while words.len() < VOCAB {
            let rank = words.len();
            let syllables = if rank < 150 {
                1
            } else if rank < 3000 {
                rng.gen_range(1..=2)
            } else if rng.gen_bool(0.05) {
                4
            } else {
                rng.gen_range(2..=3)
            };
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(ONSETS[rng.gen_range(0..ONSETS.len())]);
                w.push_str(NUCLEI[rng.gen_range(0..NUCLEI.len())]);
                w.push_str(CODAS[rng.gen_range(0..CODAS.len())]);
            }
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut acc = 0.0;
        let cdf = (0..VOCAB)
            .map(|r| {
                acc += 1.0 / (r as f64 + 2.7);
                acc
            })
            .collect();
        Language { words, cdf }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> u32 {
        sample_cdf(&self.cdf, rng) as u32
    }

    fn word(&self, style: &Style, topic: Option<&Topic>, rng: &mut ChaCha8Rng) -> u32 {
        match topic {
            Some(t) if rng.gen_bool(style.topic_mix) => t.words[sample_cdf(&t.cdf, rng)],
            _ => self.sample(rng),
        }
    }

    fn document(&self, topic: Option<&Topic>, style: &Style, rng: &mut ChaCha8Rng) -> Doc {
        let target: usize = rng.gen_range(80..=300);
        let mut stock: Vec<Vec<u32>> = Vec::new();
        if let Some(t) = topic {
            for s in &t.stock {
                if rng.gen_bool(style.stock_prob) {
                    stock.push(s.clone());
                }
            }
        }
        let mut total: usize = stock.iter().map(Vec::len).sum();
        let mut sentences = Vec::new();
        while total < target {
            let len = rng.gen_range(6..=22).min((target - total).max(4));
            let s: Vec<u32> = (0..len).map(|_| self.word(style, topic, rng)).collect();
            total += len;
            sentences.push(s);
        }
        for s in stock {
            let at = rng.gen_range(0..=sentences.len());
            sentences.insert(at, s);
        }
        Doc { sentences }
    }

    /// Renders sentences with capitals, commas, end marks and paragraph breaks. The
    /// punctuation is a function of the words, so an edit changes it only locally.
    fn render(&self, doc: &Doc) -> String {
        let mut out = String::with_capacity(doc.words() * 7);
        for (si, s) in doc.sentences.iter().enumerate() {
            let sh = s.iter().fold(0u64, |h, &w| combine(h, u64::from(w)));
            if si > 0 {
                out.push_str(if sh.is_multiple_of(5) { "\n\n" } else { " " });
            }
            for (k, &w) in s.iter().enumerate() {
                let word = &self.words[w as usize];
                if k == 0 {
                    let mut chars = word.chars();
                    if let Some(c) = chars.next() {
                        out.push(c.to_ascii_uppercase());
                        out.push_str(chars.as_str());
                    }
                } else {
                    out.push(' ');
                    out.push_str(word);
                }
                if let Some(&next) = s.get(k + 1) {
                    if mix64(u64::from(w) << 32 | u64::from(next)).is_multiple_of(11) {
                        out.push(',');
                    }
                }
            }
            out.push(match sh % 20 {
                0 => '?',
                1 => '!',
                _ => '.',
            });
        }
        out
    }
}

/// A topic: a sub-vocabulary of mid-frequency words and some stock sentences.
struct Topic {
    words: Vec<u32>,
    cdf: Vec<f64>,
    stock: Vec<Vec<u32>>,
}

impl Topic {
    fn new(lang: &Language, rng: &mut ChaCha8Rng) -> Self {
        let words: Vec<u32> = index::sample(rng, 12_000 - 300, TOPIC_WORDS)
            .into_iter()
            .map(|i| (i + 300) as u32)
            .collect();
        let mut acc = 0.0;
        let cdf = (0..TOPIC_WORDS)
            .map(|r| {
                acc += 1.0 / (r as f64 + 1.5);
                acc
            })
            .collect();
        let mut topic = Topic {
            words,
            cdf,
            stock: Vec::new(),
        };
        let style = Style {
            topic_mix: 0.5,
            stock_prob: 0.0,
        };
        topic.stock = (0..TOPIC_STOCK)
            .map(|_| {
                let len = rng.gen_range(8..=14);
                (0..len)
                    .map(|_| lang.word(&style, Some(&topic), rng))
                    .collect()
            })
            .collect();
        topic
    }
}

fn sample_cdf(cdf: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = cdf.last().copied().unwrap_or(0.0);
    let u = rng.gen::<f64>() * total;
    cdf.partition_point(|&c| c <= u)
        .min(cdf.len().saturating_sub(1))
}

/// The random stream of document `i` of a corpus.
fn doc_rng(seed: u64, i: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(combine(mix64(seed), i))
}

/// Independent documents spread over 100 topics (no stock sentences).
fn independent_docs(lang: &Language, n: usize, seed: u64) -> Vec<Doc> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ TOPICS_SALT));
    let topics: Vec<Topic> = (0..100).map(|_| Topic::new(lang, &mut rng)).collect();
    let style = Style {
        topic_mix: 0.2,
        stock_prob: 0.0,
    };
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut r = doc_rng(seed, i as u64);
            let t = r.gen_range(0..topics.len());
            lang.document(Some(&topics[t]), &style, &mut r)
        })
        .collect()
}

/// Replaces each word with probability `rate` by a different word of the language (at
/// least one word).
fn substitute(lang: &Language, doc: &Doc, rate: f64, rng: &mut ChaCha8Rng) -> Doc {
    let mut sentences: Vec<Vec<u32>> = doc
        .sentences
        .iter()
        .map(|s| {
            s.iter()
                .map(|&w| {
                    if rng.gen_bool(rate) {
                        loop {
                            let x = lang.sample(rng);
                            if x != w {
                                break x;
                            }
                        }
                    } else {
                        w
                    }
                })
                .collect()
        })
        .collect();
    if sentences == doc.sentences {
        replace_one(lang, &mut sentences, rng);
    }
    Doc { sentences }
}

/// Replaces one random word by a different one.
fn replace_one(lang: &Language, sentences: &mut [Vec<u32>], rng: &mut ChaCha8Rng) {
    let nonempty: Vec<usize> = (0..sentences.len())
        .filter(|&i| !sentences[i].is_empty())
        .collect();
    let Some(&si) = nonempty.choose(rng) else {
        return;
    };
    let wi = rng.gen_range(0..sentences[si].len());
    let old = sentences[si][wi];
    sentences[si][wi] = loop {
        let x = lang.sample(rng);
        if x != old {
            break x;
        }
    };
}

/// Deletes each word with probability `rate / 2` and inserts a new word before it with
/// probability `rate / 2`. No sentence becomes empty, and at least one word changes.
fn indel(lang: &Language, doc: &Doc, rate: f64, rng: &mut ChaCha8Rng) -> Doc {
    let mut sentences: Vec<Vec<u32>> = doc
        .sentences
        .iter()
        .map(|s| {
            let mut out = Vec::with_capacity(s.len() + 2);
            for &w in s {
                let r: f64 = rng.gen();
                if r < rate / 2.0 {
                    continue;
                }
                if r < rate {
                    out.push(lang.sample(rng));
                }
                out.push(w);
            }
            if out.is_empty() {
                out.extend(s.first().copied());
            }
            out
        })
        .collect();
    if sentences == doc.sentences {
        replace_one(lang, &mut sentences, rng);
    }
    Doc { sentences }
}

/// Shuffles the sentences (guaranteeing a different order when there are two or more).
fn reorder(doc: &Doc, rng: &mut ChaCha8Rng) -> Doc {
    let mut sentences = doc.sentences.clone();
    sentences.shuffle(rng);
    if sentences.len() >= 2 && sentences == doc.sentences {
        sentences.rotate_left(1);
    }
    Doc { sentences }
}

/// Keeps the first `keep` fraction of the words (at least one).
fn truncate(doc: &Doc, keep: f64) -> Doc {
    let mut budget = ((doc.words() as f64 * keep).round() as usize).max(1);
    let mut sentences = Vec::new();
    for s in &doc.sentences {
        if budget == 0 {
            break;
        }
        let take = s.len().min(budget);
        sentences.push(s[..take].to_vec());
        budget -= take;
    }
    Doc { sentences }
}

/// The same words with different case, spacing and punctuation.
fn reformat(text: &str, rng: &mut ChaCha8Rng) -> String {
    let lower = rng.gen_bool(0.5);
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '.' => out.push_str(if lower { " ;" } else { ".  " }),
            ',' => out.push_str(" -"),
            '\n' => out.push(' '),
            c if lower => out.push(c.to_ascii_lowercase()),
            c => out.push(c.to_ascii_uppercase()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize;

    #[test]
    fn language_is_zipfian_and_unique() {
        let lang = Language::new();
        assert_eq!(lang.words.len(), VOCAB);
        let set: HashSet<&String> = lang.words.iter().collect();
        assert_eq!(set.len(), VOCAB);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let top = (0..10_000).filter(|_| lang.sample(&mut rng) < 100).count();
        assert!((3_000..7_000).contains(&top), "top-100 share {top}");
    }

    #[test]
    fn documents_are_reproducible_and_sized() {
        let a = documents(50, 7);
        assert_eq!(a, documents(50, 7));
        assert_ne!(a, documents(50, 8));
        for d in &a {
            let words = normalize(d).split(' ').count();
            assert!((80..=304).contains(&words), "{words} words");
            assert!(d.ends_with(['.', '?', '!']));
        }
    }

    #[test]
    fn labelled_is_consistent() {
        let l = labelled(60, 3);
        assert_eq!(l, labelled(60, 3));
        assert_eq!(l.pairs.len(), l.kinds.len());
        assert!(l
            .pairs
            .iter()
            .all(|&(a, b)| a < b && (b as usize) < l.texts.len()));
        assert!(l.hard_negatives.iter().all(|&(a, b)| a < b));
        assert!(l.kinds.iter().all(|k| KINDS.contains(&k.as_str())));
        for ((a, b), k) in l.pairs.iter().zip(&l.kinds) {
            let (x, y) = (&l.texts[*a as usize], &l.texts[*b as usize]);
            match k.as_str() {
                EXACT => assert_eq!(x, y),
                REFORMAT => {
                    assert_ne!(x, y);
                    assert_eq!(normalize(x), normalize(y));
                }
                _ => assert_ne!(normalize(x), normalize(y)),
            }
        }
        let g = l.groups();
        for &(a, b) in &l.pairs {
            assert_eq!(g[a as usize], g[b as usize]);
        }
    }

    #[test]
    fn bench_corpus_replaces_a_tenth() {
        let docs = documents(200, 5);
        let bench = bench_corpus(200, 5);
        let changed = docs.iter().zip(&bench).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 20);
    }
}
