//! Caption and answer metrics: exact match, corpus BLEU-4 (Papineni et al., 2002) and
//! CIDEr-D (Vedantam et al., 2015) as the COCO caption evaluation computes them (lower-cased
//! words, punctuation removed; CIDEr-D with document frequencies over the test references,
//! clipped counts, a Gaussian length penalty with sigma 6, times 10).

use std::collections::HashMap;

/// Per n-gram order: tf-idf weights of a sentence's n-grams.
type NgramVectors = Vec<HashMap<Vec<String>, f64>>;

/// Lower-cased words with punctuation removed (the COCO evaluation's tokenisation, roughly).
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Answers equal up to case, spacing and punctuation.
pub fn exact_match(hyp: &str, reference: &str) -> bool {
    words(hyp) == words(reference)
}

fn ngrams(w: &[String], n: usize) -> HashMap<Vec<String>, usize> {
    let mut out = HashMap::new();
    if w.len() >= n {
        for g in w.windows(n) {
            *out.entry(g.to_vec()).or_insert(0) += 1;
        }
    }
    out
}

/// Corpus BLEU-4 of `hyps` against their `refs` (one or more each), in [0, 1].
pub fn bleu4(hyps: &[String], refs: &[Vec<String>]) -> f64 {
    let (mut matched, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    for (h, rs) in hyps.iter().zip(refs) {
        let h = words(h);
        let rs: Vec<Vec<String>> = rs.iter().map(|r| words(r)).collect();
        hyp_len += h.len();
        // The reference length closest to the hypothesis (the shorter on ties).
        ref_len += rs
            .iter()
            .map(|r| r.len())
            .min_by_key(|&l| ((l as i64 - h.len() as i64).abs(), l))
            .unwrap_or(0);
        for n in 1..=4 {
            let hg = ngrams(&h, n);
            let mut max_ref: HashMap<Vec<String>, usize> = HashMap::new();
            for r in &rs {
                for (g, c) in ngrams(r, n) {
                    let e = max_ref.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            for (g, c) in &hg {
                matched[n - 1] += (*c).min(max_ref.get(g).copied().unwrap_or(0));
                total[n - 1] += c;
            }
        }
    }
    if matched.contains(&0) || hyp_len == 0 {
        return 0.0;
    }
    let log_p: f64 = (0..4)
        .map(|i| (matched[i] as f64 / total[i] as f64).ln())
        .sum::<f64>()
        / 4.0;
    let bp = if hyp_len > ref_len {
        1.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    };
    bp * log_p.exp()
}

/// CIDEr-D of `hyps` against their `refs` (the corpus is the document set), as in the COCO
/// caption evaluation (its scores are ~0-10; COCO papers report it x100).
pub fn cider_d(hyps: &[String], refs: &[Vec<String>]) -> f64 {
    const SIGMA: f64 = 6.0;
    let n_docs = refs.len().max(1) as f64;
    let refs_w: Vec<Vec<Vec<String>>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| words(r)).collect())
        .collect();
    // Document frequency: in how many images' reference sets an n-gram appears.
    let mut df: HashMap<Vec<String>, f64> = HashMap::new();
    for rs in &refs_w {
        let mut seen = std::collections::HashSet::new();
        for r in rs {
            for n in 1..=4 {
                for g in ngrams(r, n).into_keys() {
                    seen.insert(g);
                }
            }
        }
        for g in seen {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let log_docs = n_docs.ln();
    // tf-idf vectors per n, with their norms and the sentence length.
    let vectors = |w: &[String]| -> (NgramVectors, Vec<f64>, usize) {
        let mut vecs = Vec::with_capacity(4);
        let mut norms = Vec::with_capacity(4);
        for n in 1..=4 {
            let v: HashMap<Vec<String>, f64> = ngrams(w, n)
                .into_iter()
                .map(|(g, tf)| {
                    let idf = log_docs - df.get(&g).copied().unwrap_or(0.0).max(1.0).ln();
                    (g, tf as f64 * idf)
                })
                .collect();
            norms.push(v.values().map(|x| x * x).sum::<f64>().sqrt());
            vecs.push(v);
        }
        (vecs, norms, w.len())
    };
    let mut total = 0.0;
    for (h, rs) in hyps.iter().zip(&refs_w) {
        let (hv, hn, hl) = vectors(&words(h));
        let mut score = 0.0;
        for r in rs {
            let (rv, rn, rl) = vectors(r);
            let delta = hl as f64 - rl as f64;
            for n in 0..4 {
                let mut sim: f64 = hv[n]
                    .iter()
                    .map(|(g, x)| rv[n].get(g).map_or(0.0, |y| x.min(*y) * y))
                    .sum();
                if hn[n] != 0.0 && rn[n] != 0.0 {
                    sim /= hn[n] * rn[n];
                }
                score += sim * (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
            }
        }
        total += score / 4.0 / rs.len().max(1) as f64 * 10.0;
    }
    total / hyps.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bleu_is_one_for_an_exact_match_and_zero_without_a_4gram() {
        let refs = vec![s(&["there is a red circle in the image."])];
        assert!((bleu4(&s(&["There is a red circle in the image"]), &refs) - 1.0).abs() < 1e-12);
        assert_eq!(bleu4(&s(&["a red circle"]), &refs), 0.0);
    }

    #[test]
    fn bleu_matches_a_hand_computation() {
        // hyp 6 words, ref 8: p1 = 5/6, p2 = 3/5, p3 = 2/4, p4 = 1/3, BP = exp(1 - 8/6).
        let hyp = s(&["a blue circle in the image"]);
        let refs = vec![s(&["there is a red circle in the image"])];
        let p = [5.0 / 6.0, 3.0 / 5.0, 2.0 / 4.0, 1.0 / 3.0f64];
        let want = (1.0f64 - 8.0 / 6.0).exp() * (p.iter().map(|x| x.ln()).sum::<f64>() / 4.0).exp();
        let got = bleu4(&hyp, &refs);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn cider_rewards_the_right_caption_over_a_wrong_one() {
        let refs = vec![
            s(&["a red circle.", "there is a red circle in the image."]),
            s(&["a blue triangle.", "there is a blue triangle in the image."]),
            s(&[
                "a green rectangle.",
                "there is a green rectangle in the image.",
            ]),
        ];
        let right = s(&["a red circle.", "a blue triangle.", "a green rectangle."]);
        let wrong = s(&["a blue triangle.", "a green rectangle.", "a red circle."]);
        let (good, bad) = (cider_d(&right, &refs), cider_d(&wrong, &refs));
        assert!(good > 3.0 * bad && good > 1.0, "right {good} wrong {bad}");
    }
}
