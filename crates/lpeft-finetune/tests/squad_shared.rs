//! The span path on real SQuAD text: the shared dev part tokenized by the data stage (MiniLM's
//! tokenizer, 384 tokens, doc stride 128), logits that point at the labelled answer tokens,
//! decoded and scored by `run::score`, and the same answers through the official evaluation.
//! Skipped when ../shared has no SQuAD file or model.

use std::path::PathBuf;

use lpeft_data::build::{build, resolve};
use lpeft_data::{Dataset, Labels, Texts};
use lpeft_eval::span::official_predictions;
use lpeft_eval::squad::{evaluate_squad, read_gold};

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

#[test]
fn gold_positions_decode_to_the_gold_answers_on_shared_dev() {
    let dev_file = shared().join("data/squad/dev-v1.1-part-a.json");
    let model = shared().join("models/all-MiniLM-L6-v2");
    if !dev_file.is_file() || !model.join("tokenizer.json").is_file() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(&dev_file, data.path().join("dev-v1.1.json")).unwrap();
    let cfg: lpeft_data::DataConfig = serde_json::from_value(serde_json::json!({
        "task": "squad/v1.1", "data_dir": data.path(), "model": model,
        "splits": ["dev"], "max_examples": 800, "seed": 15,
    }))
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let ds = Dataset::open(out.path()).unwrap();
    let (dev, texts) = (ds.split("dev").unwrap(), ds.texts("dev").unwrap());
    let Labels::Span(positions) = &dev.labels else {
        panic!("span labels")
    };
    let (mut starts, mut ends) = (vec![], vec![]);
    for r in 0..dev.num_rows() {
        // (0, 0) marks a window without the answer: [CLS] is no context token, so it loses.
        let (mut s, mut e) = (
            vec![0.0f32; dev.row(r).len()],
            vec![0.0f32; dev.row(r).len()],
        );
        s[positions[2 * r] as usize] = 5.0;
        e[positions[2 * r + 1] as usize] = 5.0;
        starts.push(s);
        ends.push(e);
    }
    let predictions = lpeft_train::Predictions::Span {
        start_logits: starts.clone(),
        end_logits: ends.clone(),
    };
    let task = ds.meta.task.clone();
    let e = lpeft_finetune::run::score(&task, &dev, texts.as_ref(), &predictions, &[]).unwrap();
    // Not every answer comes back: a gold answer inside a word piece widens to the piece
    // ("4" in "49"), and one longer than 30 tokens cannot be decoded (5 of these 800).
    assert!(e.metrics["exact_match"] > 0.99, "{:?}", e.metrics);
    assert!(e.metrics["squad_f1"] > 0.99, "{:?}", e.metrics);

    // The same answers through the official evaluation (all gold answers of each question).
    let Some(Texts::Span(span_texts)) = &texts else {
        panic!("span texts")
    };
    let decoded = lpeft_eval::span::decode_split(&dev, span_texts, &starts, &ends).unwrap();
    let answers = official_predictions(span_texts, &decoded);
    let gold: Vec<_> = read_gold(&dev_file)
        .unwrap()
        .into_iter()
        .filter(|q| answers.contains_key(&q.id))
        .collect();
    assert_eq!(gold.len(), span_texts.questions.len());
    let official = evaluate_squad(&gold, &answers).unwrap();
    assert!((official.exact_match - 100.0 * e.metrics["exact_match"]).abs() < 1e-9);
    assert!((official.f1 - 100.0 * e.metrics["squad_f1"]).abs() < 1e-9);
}
