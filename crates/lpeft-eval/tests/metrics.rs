//! Metrics on hand-computed cases. The expected numbers are derived in the comments from the
//! definitions; the classification and correlation cases were also checked against
//! scikit-learn 1.x / SciPy (values quoted), which CI does not need.

use lpeft_eval::metrics::*;
use lpeft_eval::{EvalError, Outputs, evaluate, metric_name, score};
use lpeft_schema::dataset::{MainScore, Metric};

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

// Binary case: pred [1,1,0,1,0,0,1,0] vs gold [1,0,0,1,1,0,1,1]
// tp = 3 (rows 0, 3, 6), fp = 1 (row 1), fn = 2 (rows 4, 7), tn = 2 (rows 2, 5).
const BP: [i64; 8] = [1, 1, 0, 1, 0, 0, 1, 0];
const BL: [i64; 8] = [1, 0, 0, 1, 1, 0, 1, 1];

#[test]
fn binary_classification() {
    close(accuracy(&BP, &BL).unwrap(), 5.0 / 8.0);
    // 2·3 / (2·3 + 1 + 2); sklearn f1_score: 0.6666666666666666
    close(binary_f1(&BP, &BL).unwrap(), 2.0 / 3.0);
    // (tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (6 − 2) / sqrt(4·5·3·4);
    // sklearn matthews_corrcoef: 0.2581988897471611
    close(matthews(&BP, &BL).unwrap(), 4.0 / 240f64.sqrt());
}

// Three classes: pred [0,1,2,2,1,0,2] vs gold [0,2,2,1,1,0,0].
const MP: [i64; 7] = [0, 1, 2, 2, 1, 0, 2];
const ML: [i64; 7] = [0, 2, 2, 1, 1, 0, 0];

#[test]
fn multiclass() {
    // correct c = 4 of s = 7; predicted counts (2, 2, 3), true counts (3, 2, 2);
    // Σ p_k t_k = 6 + 4 + 6 = 16; (4·7 − 16) / sqrt((49 − 17)(49 − 17)) = 12 / 32.
    // sklearn: 0.375
    close(matthews(&MP, &ML).unwrap(), 0.375);
    // class 0: tp 2, fp 0, fn 1 → 4/5; class 1: tp 1, fp 1, fn 1 → 2/4;
    // class 2: tp 1, fp 2, fn 1 → 2/5. Mean 1.7 / 3; sklearn macro: 0.5666666666666668
    close(macro_f1(&MP, &ML).unwrap(), 1.7 / 3.0);
    // Only classes seen in labels or predictions count: {0, 2} here.
    // class 0: tp 2, fp 1, fn 0 → 4/5; class 2: tp 1, fp 0, fn 1 → 2/3; sklearn: 0.7333…
    close(
        macro_f1(&[0, 2, 0, 0], &[0, 2, 2, 0]).unwrap(),
        (0.8 + 2.0 / 3.0) / 2.0,
    );
}

#[test]
fn undefined_cases_follow_sklearn() {
    // Constant prediction: MCC denominator 0 → 0.
    close(matthews(&[1, 1, 1], &[0, 1, 0]).unwrap(), 0.0);
    // No positive in predictions or labels: F1 is 0 (zero_division).
    close(binary_f1(&[0, 0], &[0, 0]).unwrap(), 0.0);
    // Perfect and inverted binary predictions.
    close(matthews(&[0, 1, 0, 1], &[0, 1, 0, 1]).unwrap(), 1.0);
    close(matthews(&[1, 0, 1, 0], &[0, 1, 0, 1]).unwrap(), -1.0);
}

#[test]
fn correlations() {
    let x = [1.0, 2.0, 2.0, 4.0, 5.0, 3.5];
    let y = [2.0, 1.0, 3.0, 3.0, 5.0, 4.0];
    // mean x = 17.5/6, mean y = 3; Σdxdy = 8.5; Σdx² = 62.25 − 17.5²/6 = 269/24; Σdy² = 10.
    // scipy pearsonr: 0.8028758717432661
    close(
        pearson(&x, &y).unwrap(),
        8.5 / (269.0f64 / 24.0 * 10.0).sqrt(),
    );
    // average ranks: x → [1, 2.5, 2.5, 5, 6, 4], y → [2, 1, 3.5, 3.5, 6, 5];
    // Σdxdy = 13.25, Σdx² = Σdy² = 17. scipy spearmanr: 0.7794117647058825
    assert_eq!(average_ranks(&x), vec![1.0, 2.5, 2.5, 5.0, 6.0, 4.0]);
    close(spearman(&x, &y).unwrap(), 13.25 / 17.0);
    // scipy rankdata([3,1,3,2,3,1]) = [5, 1.5, 5, 3, 5, 1.5]
    assert_eq!(
        average_ranks(&[3.0, 1.0, 3.0, 2.0, 3.0, 1.0]),
        vec![5.0, 1.5, 5.0, 3.0, 5.0, 1.5]
    );
    // Monotone but not linear: Spearman 1, Pearson below 1.
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [1.0, 4.0, 9.0, 100.0];
    close(spearman(&a, &b).unwrap(), 1.0);
    assert!(pearson(&a, &b).unwrap() < 0.95);
    // Constant side: 0 instead of NaN.
    close(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap(), 0.0);
}

#[test]
fn multirc_groups() {
    let pred = [1, 0, 1, 0, 0, 1];
    let gold = [1, 0, 1, 0, 1, 1];
    let groups = [0, 0, 0, 1, 1, 2];
    // question 0 all right, question 1 wrong at row 4, question 2 right → 2/3.
    close(group_exact_match(&pred, &gold, &groups).unwrap(), 2.0 / 3.0);
    // F1a over rows: tp 3, fp 0, fn 1 → 6/7.
    let out = Outputs::Classes {
        predicted: &pred,
        labels: &gold,
        groups: Some(&groups),
    };
    let e = evaluate(
        &[Metric::F1a, Metric::ExactMatch],
        &MainScore::Mean(vec![Metric::F1a, Metric::ExactMatch]),
        &out,
    )
    .unwrap();
    close(e.metrics["f1a"], 6.0 / 7.0);
    close(e.metrics["exact_match"], 2.0 / 3.0);
    close(e.main_score, (6.0 / 7.0 + 2.0 / 3.0) / 2.0);
}

#[test]
fn answer_normalisation() {
    for (raw, want) in [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theatre and anthem", "theatre and anthem"),
        ("A.B.C.", "abc"),
        ("Don't stop", "dont stop"),
        ("Ångström, the unit", "ångström unit"),
        ("the", ""),
        ("  \tDenver\nBroncos ", "denver broncos"),
    ] {
        assert_eq!(normalize_answer(raw), want, "{raw:?}");
    }
}

#[test]
fn answer_scores() {
    // "cat sat on mat" vs "cat on mat": 3 common; P = 3/4, R = 1 → 6/7.
    close(
        answer_f1("the cat sat on the mat", "a cat on a mat"),
        6.0 / 7.0,
    );
    // multiset overlap: x x y vs x y y → 2 common; P = R = 2/3.
    close(answer_f1("x x y", "x y y"), 2.0 / 3.0);
    close(answer_f1("", "x"), 0.0);
    close(answer_f1("the", "a"), 0.0);
    close(
        answer_exact_match("The Denver Broncos.", "denver broncos"),
        1.0,
    );
    close(answer_exact_match("Denver", "Denver Broncos"), 0.0);

    let pred = vec![
        "Denver Broncos".to_owned(),
        "Carolina".to_owned(),
        String::new(),
    ];
    let gold = vec![
        vec!["Broncos".to_owned(), "Denver Broncos".to_owned()],
        vec!["Carolina Panthers".to_owned()],
        vec!["x".to_owned()],
    ];
    // EM: 1, 0, 0 → 1/3. F1: 1 (max over gold), 2·1·½/(1+½) = 2/3, 0 → 5/9.
    close(squad_exact_match(&pred, &gold).unwrap(), 1.0 / 3.0);
    close(squad_f1(&pred, &gold).unwrap(), 5.0 / 9.0);
    let e = evaluate(
        &[Metric::ExactMatch, Metric::SquadF1],
        &MainScore::Mean(vec![Metric::ExactMatch, Metric::SquadF1]),
        &Outputs::Answers {
            predicted: &pred,
            gold: &gold,
        },
    )
    .unwrap();
    close(e.main_score, (1.0 / 3.0 + 5.0 / 9.0) / 2.0);
}

#[test]
fn dispatch_and_main_score() {
    // COPA: per group choice index.
    let copa = Outputs::Choices {
        predicted: &[0, 1, 1, 0],
        labels: &[0, 1, 0, 0],
    };
    let e = evaluate(
        &[Metric::Accuracy],
        &MainScore::Metric(Metric::Accuracy),
        &copa,
    )
    .unwrap();
    close(e.main_score, 0.75);
    assert_eq!(e.metrics.len(), 1);

    // STS-B: main = mean of pearson and spearman.
    let x = [1.0, 2.0, 3.0, 4.0];
    let y = [1.0, 4.0, 9.0, 100.0];
    let stsb = Outputs::Scores {
        predicted: &x,
        labels: &y,
    };
    let e = evaluate(
        &[Metric::Pearson, Metric::Spearman],
        &MainScore::Mean(vec![Metric::Pearson, Metric::Spearman]),
        &stsb,
    )
    .unwrap();
    close(e.main_score, (e.metrics["pearson"] + 1.0) / 2.0);

    // A main metric missing from the list is computed and reported.
    let cls = Outputs::Classes {
        predicted: &BP,
        labels: &BL,
        groups: None,
    };
    let e = evaluate(&[Metric::F1], &MainScore::Metric(Metric::Accuracy), &cls).unwrap();
    close(e.main_score, 5.0 / 8.0);
    assert_eq!(e.metrics.keys().collect::<Vec<_>>(), ["accuracy", "f1"]);
}

#[test]
fn errors_name_the_problem() {
    let cls = Outputs::Classes {
        predicted: &[1, 0],
        labels: &[1, 0],
        groups: None,
    };
    let e = score(Metric::Pearson, &cls).unwrap_err();
    assert!(
        matches!(
            e,
            EvalError::NotApplicable {
                metric: "pearson",
                ..
            }
        ),
        "{e}"
    );
    let e = score(Metric::ExactMatch, &cls).unwrap_err();
    assert!(matches!(e, EvalError::MissingGroups { .. }), "{e}");
    let e = accuracy(&[1, 0, 1], &[1, 0]).unwrap_err();
    assert_eq!(e.to_string(), "accuracy: 3 predictions but 2 labels");
    assert!(matches!(accuracy(&[], &[]), Err(EvalError::Empty { .. })));
    let e = group_exact_match(&[1, 0], &[1, 0], &[0]).unwrap_err();
    assert!(matches!(e, EvalError::LengthMismatch { .. }), "{e}");
}

#[test]
fn metric_names_are_the_serde_names() {
    for m in [
        Metric::Accuracy,
        Metric::F1,
        Metric::Matthews,
        Metric::Pearson,
        Metric::Spearman,
        Metric::MacroF1,
        Metric::F1a,
        Metric::ExactMatch,
        Metric::SquadF1,
    ] {
        let serde = serde_json::to_string(&m).unwrap();
        assert_eq!(serde, format!("\"{}\"", metric_name(m)));
    }
}

#[test]
fn argmax_within_groups() {
    // group 1: rows 0-2 (best at position 1); group 0: rows 3-4 (tie → first, position 0).
    let scores = [0.1, 0.9, 0.3, 0.5, 0.5];
    let groups = [1, 1, 1, 0, 0];
    assert_eq!(
        lpeft_eval::argmax_per_group(&scores, &groups).unwrap(),
        [(0, 0), (1, 1)]
    );
    assert!(lpeft_eval::argmax_per_group(&scores, &groups[..2]).is_err());
}

#[test]
fn record_picks_the_best_entity_per_query() {
    use lpeft_schema::dataset::{RecordQuery, RecordTexts};
    let texts = RecordTexts {
        queries: vec![
            RecordQuery {
                id: "q0".into(),
                entities: vec!["Obama".into(), "the White House".into()],
                answers: vec!["White House".into()],
            },
            RecordQuery {
                id: "q1".into(),
                entities: vec!["Paris".into(), "London".into(), "Rome".into()],
                answers: vec!["Rome".into()],
            },
        ],
    };
    // q0 picks "the White House" (EM 1 after normalisation); q1 picks "London" (0).
    let scores = [-1.0, 2.0, 0.0, 3.0, 1.0];
    let groups = [0, 0, 1, 1, 1];
    let (pred, gold) = lpeft_eval::record_answers(&scores, &groups, &texts).unwrap();
    assert_eq!(pred, ["the White House", "London"]);
    let e = lpeft_eval::evaluate(
        &[Metric::ExactMatch, Metric::SquadF1],
        &MainScore::Mean(vec![Metric::ExactMatch, Metric::SquadF1]),
        &Outputs::Answers {
            predicted: &pred,
            gold: &gold,
        },
    )
    .unwrap();
    close(e.metrics["exact_match"], 0.5);
    close(e.metrics["squad_f1"], 0.5);
    // A group beyond the texts, or more rows than entities, is an error.
    assert!(lpeft_eval::record_answers(&[1.0], &[2], &texts).is_err());
    let e = lpeft_eval::record_answers(&[0.0, 0.0, 5.0], &[0, 0, 0], &texts).unwrap_err();
    assert!(
        e.to_string().contains("q0: candidate row 2 but 2 entities"),
        "{e}"
    );
}
