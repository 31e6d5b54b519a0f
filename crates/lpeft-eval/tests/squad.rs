//! The official SQuAD v1.1 evaluation on the shared fixture (tests/fixtures/squad_eval),
//! whose expected.json tools/test_squad_eval.py also checks against the official logic; the
//! readers' errors; properties of the normalisation and the scores.

use std::path::{Path, PathBuf};

use lpeft_eval::metrics::{answer_exact_match, answer_f1, normalize_answer};
use lpeft_eval::squad::{
    evaluate_squad, evaluate_squad_files, read_gold, read_predictions, write_predictions,
};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/squad_eval")
        .join(name)
}

#[test]
fn fixture_scores_equal_the_official_scripts() {
    let scores = evaluate_squad_files(&fixture("dev.json"), &fixture("predictions.json")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
    let want = expected["questions"].as_array().unwrap();
    assert_eq!(scores.questions.len(), want.len());
    for (got, want) in scores.questions.iter().zip(want) {
        assert_eq!(got.id, want["id"].as_str().unwrap());
        assert_eq!(
            got.exact_match,
            want["exact_match"].as_f64().unwrap(),
            "{}",
            got.id
        );
        assert!(
            (got.f1 - want["f1"].as_f64().unwrap()).abs() < 1e-12,
            "{}",
            got.id
        );
    }
    assert!((scores.exact_match - expected["exact_match"].as_f64().unwrap()).abs() < 1e-9);
    assert!((scores.f1 - expected["f1"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(scores.total, want.len());
    assert_eq!(scores.unanswered, ["p-unanswered"]);
}

#[test]
fn predictions_round_trip_in_the_official_format() {
    let predictions = read_predictions(&fixture("predictions.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("predictions.json");
    write_predictions(&path, &predictions).unwrap();
    assert_eq!(read_predictions(&path).unwrap(), predictions);
    let gold = read_gold(&fixture("dev.json")).unwrap();
    // Gold answers as predictions: every question is an exact match, and F1 is full except
    // on the answer "The", which normalises to nothing (no token in common).
    let perfect = gold
        .iter()
        .map(|q| (q.id.clone(), q.answers[0].clone()))
        .collect();
    let s = evaluate_squad(&gold, &perfect).unwrap();
    let n = gold.len() as f64;
    assert_eq!(s.exact_match, 100.0);
    assert!((s.f1 - 100.0 * (n - 1.0) / n).abs() < 1e-9, "{}", s.f1);
}

fn error_of(file_text: &str, read: impl Fn(&Path) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, file_text).unwrap();
    read(&path)
}

#[test]
fn bad_files_are_refused_naming_file_field_and_line() {
    let gold_error = |p: &Path| read_gold(p).unwrap_err().to_string();
    let e = error_of(
        "{\"version\": \"1.1\", \"data\": [{\"paragraphs\": [{\"qas\": [\n{\"id\": \"q1\"}]}]}]}",
        gold_error,
    );
    assert!(
        e.contains("bad.json") && e.contains("missing field `answers`") && e.contains("line 2"),
        "{e}"
    );
    let e = error_of(
        r#"{"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": []}]}]}]}"#,
        gold_error,
    );
    assert!(
        e.contains("bad.json") && e.contains("question q1") && e.contains("`answers`"),
        "{e}"
    );
    let e = error_of("{\"q1\": \"x\",\n\"q2\": 3}", |p| {
        read_predictions(p).unwrap_err().to_string()
    });
    assert!(e.contains("bad.json") && e.contains("line 2"), "{e}");
}

#[test]
fn normalisation_follows_python() {
    for (raw, want) in [
        ("the\u{93e}", "\u{93e}"),     // a vowel sign is not `\w`: "the" is a word
        ("The\u{24b6}", "\u{24d0}"),   // nor is a circled letter
        ("a_b the_end", "ab theend"),  // `_` is punctuation, removed before articles
        ("new\u{1c}york", "new york"), // str.split() splits on U+001C
        (
            "\u{39f}\u{394}\u{39f}\u{3a3}",
            "\u{3bf}\u{3b4}\u{3bf}\u{3c2}",
        ), // final sigma
        ("\u{201c}Halo\u{201d}", "\u{201c}halo\u{201d}"), // only ASCII punctuation goes
    ] {
        assert_eq!(normalize_answer(raw), want, "{raw:?}");
    }
}

proptest! {
    #[test]
    fn normalisation_is_idempotent(text in "\\PC{0,24}") {
        let once = normalize_answer(&text);
        prop_assert_eq!(normalize_answer(&once), once);
    }

    #[test]
    fn scores_are_fractions_and_exact_match_implies_full_f1(
        p in "(the |a |An |x|y|Z|\\.|,| |\u{e9}){0,8}",
        g in "(the |a |An |x|y|Z|\\.|,| |\u{e9}){0,8}",
    ) {
        let (em, f1) = (answer_exact_match(&p, &g), answer_f1(&p, &g));
        prop_assert!((0.0..=1.0).contains(&f1));
        prop_assert!(em == 0.0 || em == 1.0);
        prop_assert!((f1 - answer_f1(&g, &p)).abs() < 1e-12);
        // EM ≤ F1, except when both sides normalise to nothing (EM 1, no common token).
        if !normalize_answer(&p).is_empty() {
            prop_assert!(em <= f1);
            if em == 1.0 { prop_assert_eq!(f1, 1.0); }
        }
    }
}
