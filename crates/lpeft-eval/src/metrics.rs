//! Metric functions. All scores are fractions (accuracy 0.85, not 85); correlations lie in
//! [-1, 1]. Each function checks that predictions and labels have the same, non-zero length.
//!
//! Definitions follow the references the task results are compared against: scikit-learn for
//! F1, macro-F1 and Matthews correlation, SciPy for Pearson and Spearman, the official SQuAD
//! v1.1 / ReCoRD evaluation scripts for exact match and token F1.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::EvalError;

fn check<A, B>(what: &'static str, a: &[A], b: &[B]) -> Result<(), EvalError> {
    if a.len() != b.len() {
        return Err(EvalError::LengthMismatch {
            what,
            left: a.len(),
            right: b.len(),
        });
    }
    if a.is_empty() {
        return Err(EvalError::Empty { what });
    }
    Ok(())
}

/// Fraction of rows whose prediction equals the label.
pub fn accuracy(predicted: &[i64], labels: &[i64]) -> Result<f64, EvalError> {
    check("accuracy", predicted, labels)?;
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(right as f64 / labels.len() as f64)
}

/// True positives, false positives and false negatives of one class.
fn class_counts(predicted: &[i64], labels: &[i64], class: i64) -> (usize, usize, usize) {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (&p, &l) in predicted.iter().zip(labels) {
        match (p == class, l == class) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    (tp, fp, fn_)
}

/// `2 tp / (2 tp + fp + fn)`, 0 when the class never occurs in predictions or labels
/// (scikit-learn's `zero_division` default).
fn f1_of(tp: usize, fp: usize, fn_: usize) -> f64 {
    let denom = 2 * tp + fp + fn_;
    if denom == 0 {
        0.0
    } else {
        2.0 * tp as f64 / denom as f64
    }
}

/// Binary F1 of the positive class `1` (`sklearn.metrics.f1_score(labels, predicted)`).
pub fn binary_f1(predicted: &[i64], labels: &[i64]) -> Result<f64, EvalError> {
    check("f1", predicted, labels)?;
    let (tp, fp, fn_) = class_counts(predicted, labels, 1);
    Ok(f1_of(tp, fp, fn_))
}

/// Unweighted mean of per-class F1 over the classes that occur in labels or predictions
/// (`f1_score(..., average="macro")`).
pub fn macro_f1(predicted: &[i64], labels: &[i64]) -> Result<f64, EvalError> {
    check("macro_f1", predicted, labels)?;
    let classes: BTreeSet<i64> = predicted.iter().chain(labels).copied().collect();
    let sum: f64 = classes
        .iter()
        .map(|&c| {
            let (tp, fp, fn_) = class_counts(predicted, labels, c);
            f1_of(tp, fp, fn_)
        })
        .sum();
    Ok(sum / classes.len() as f64)
}

/// Matthews correlation coefficient, multiclass form as in scikit-learn:
/// `(c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))` with `c` correct rows, `s` rows,
/// `p_k`/`t_k` predicted/true counts of class k. 0 when the denominator is 0 (a constant
/// prediction or constant labels).
pub fn matthews(predicted: &[i64], labels: &[i64]) -> Result<f64, EvalError> {
    check("matthews", predicted, labels)?;
    let mut p: HashMap<i64, f64> = HashMap::new();
    let mut t: HashMap<i64, f64> = HashMap::new();
    let mut correct = 0.0;
    for (&pk, &tk) in predicted.iter().zip(labels) {
        *p.entry(pk).or_default() += 1.0;
        *t.entry(tk).or_default() += 1.0;
        if pk == tk {
            correct += 1.0;
        }
    }
    let s = labels.len() as f64;
    let pt: f64 = p
        .iter()
        .map(|(k, &pk)| pk * t.get(k).copied().unwrap_or(0.0))
        .sum();
    let pp: f64 = p.values().map(|v| v * v).sum();
    let tt: f64 = t.values().map(|v| v * v).sum();
    let denom = ((s * s - pp) * (s * s - tt)).sqrt();
    if denom == 0.0 {
        return Ok(0.0);
    }
    Ok((correct * s - pt) / denom)
}

/// Pearson correlation. 0 when either side is constant (SciPy returns NaN there; a NaN would
/// poison best-epoch selection and the mean over seeds).
pub fn pearson(predicted: &[f64], labels: &[f64]) -> Result<f64, EvalError> {
    check("pearson", predicted, labels)?;
    let n = predicted.len() as f64;
    let mx = predicted.iter().sum::<f64>() / n;
    let my = labels.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&x, &y) in predicted.iter().zip(labels) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return Ok(0.0);
    }
    Ok((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// 1-based ranks, ties getting the average of the ranks they span (`scipy.stats.rankdata`).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) hold ranks i+1..=j+1; their mean is (i+j)/2 + 1.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation: Pearson of the average ranks (`scipy.stats.spearmanr`).
pub fn spearman(predicted: &[f64], labels: &[f64]) -> Result<f64, EvalError> {
    check("spearman", predicted, labels)?;
    pearson(&average_ranks(predicted), &average_ranks(labels))
}

/// MultiRC exact match: the fraction of questions (rows sharing a group id) whose answer
/// options are all classified right.
pub fn group_exact_match(
    predicted: &[i64],
    labels: &[i64],
    groups: &[u32],
) -> Result<f64, EvalError> {
    check("exact_match", predicted, labels)?;
    check("exact_match groups", groups, labels)?;
    let mut all_right: BTreeMap<u32, bool> = BTreeMap::new();
    for ((p, l), g) in predicted.iter().zip(labels).zip(groups) {
        *all_right.entry(*g).or_insert(true) &= p == l;
    }
    let right = all_right.values().filter(|&&r| r).count();
    Ok(right as f64 / all_right.len() as f64)
}

/// SQuAD v1.1 answer normalisation, as the official script's `normalize_answer`: lowercase,
/// drop ASCII punctuation (Python's `string.punctuation`), replace the words `a`, `an`, `the`
/// by a space, and join the whitespace-separated tokens with single spaces.
pub fn normalize_answer(text: &str) -> String {
    let lowered = text.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // `\b(a|an|the)\b` matches exactly the maximal runs of word characters equal to an article.
    let mut no_articles = String::with_capacity(no_punct.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punct.chars() {
        if is_python_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    python_split(&no_articles).collect::<Vec<_>>().join(" ")
}

/// Python's `\w` on `str`: letters (L*), numbers (N*) and `_`. Rust's `is_alphanumeric` also
/// counts Other_Alphabetic marks and symbols (Devanagari vowel signs, circled letters), which
/// Python does not. (A character newer than `unicode_categories`' tables keeps Rust's answer.)
fn is_python_word_char(c: char) -> bool {
    use unicode_categories::UnicodeCategories;
    c == '_' || (c.is_alphanumeric() && !c.is_mark() && !c.is_symbol())
}

/// Python's `str.split()`: Unicode whitespace plus the separators U+001C..U+001F, which Python
/// counts as space and Rust does not.
fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|t| !t.is_empty())
}

/// 1 if the normalised texts are equal, else 0.
pub fn answer_exact_match(predicted: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(predicted) == normalize_answer(gold),
    ))
}

/// Token-overlap F1 of the normalised texts (multiset intersection of whitespace tokens);
/// 0 when nothing overlaps, including when either side is empty.
pub fn answer_f1(predicted: &str, gold: &str) -> f64 {
    let p = normalize_answer(predicted);
    let g = normalize_answer(gold);
    let p: Vec<&str> = python_split(&p).collect();
    let g: Vec<&str> = python_split(&g).collect();
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *gold_counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(c) = gold_counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Mean over questions of the best score against any gold answer; a question without gold
/// answers scores 0.
fn max_over_gold(
    what: &'static str,
    predicted: &[String],
    gold: &[Vec<String>],
    score: fn(&str, &str) -> f64,
) -> Result<f64, EvalError> {
    check(what, predicted, gold)?;
    let total: f64 = predicted
        .iter()
        .zip(gold)
        .map(|(p, golds)| golds.iter().map(|g| score(p, g)).fold(0.0, f64::max))
        .sum();
    Ok(total / predicted.len() as f64)
}

/// SQuAD / ReCoRD exact match: per question the max over gold answers, averaged.
pub fn squad_exact_match(predicted: &[String], gold: &[Vec<String>]) -> Result<f64, EvalError> {
    max_over_gold("exact_match", predicted, gold, answer_exact_match)
}

/// SQuAD / ReCoRD token F1: per question the max over gold answers, averaged.
pub fn squad_f1(predicted: &[String], gold: &[Vec<String>]) -> Result<f64, EvalError> {
    max_over_gold("squad_f1", predicted, gold, answer_f1)
}
