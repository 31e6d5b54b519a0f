//! SQuAD v1.1: span extraction with a doc stride, answers mapped to token positions and back.

mod common;

use common::write;
use lpeft_data::build::{build, resolve};
use lpeft_data::{Dataset, Labels, Texts};
use lpeft_schema::dataset::TaskKind;

fn squad_file() -> String {
    // One long paragraph (so it needs several windows) with a non-ASCII character before the
    // answers (char offsets differ from byte offsets), one short paragraph.
    let filler = "The committee met again in the afternoon to discuss the budget. ".repeat(12);
    let context = format!(
        "Café owners in Zürich said {filler}Finally the mayor Anna Keller announced a new park."
    );
    let answer_start =
        context.chars().count() - "Anna Keller announced a new park.".chars().count();
    serde_json::json!({
        "version": "1.1",
        "data": [{
            "title": "Zürich",
            "paragraphs": [
                {"context": context, "qas": [
                    {"id": "q1", "question": "Who announced a new park?",
                     "answers": [{"answer_start": answer_start, "text": "Anna Keller"},
                                 {"answer_start": answer_start + 5, "text": "Keller"}]},
                    {"id": "q2", "question": "Who said something?",
                     "answers": [{"answer_start": 0, "text": "Café owners"}]}
                ]},
                {"context": "Paris is the capital of France.", "qas": [
                    {"id": "q3", "question": "What is the capital of France?",
                     "answers": [{"answer_start": 0, "text": "Paris"}]}
                ]}
            ]
        }]
    })
    .to_string()
}

#[test]
fn windows_positions_and_texts_round_trip() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "train-v1.1.json", &squad_file());
    write(d.path(), "dev-v1.1.json", &squad_file());
    let mut cfg = common::config("squad/v1.1", d.path().to_owned());
    cfg.max_length = Some(64);
    cfg.doc_stride = 16;
    let out = tempfile::tempdir().unwrap();
    let report = build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    assert_eq!(report.meta.task.kind, TaskKind::Span);
    assert_eq!(report.meta.doc_stride, Some(16));

    let ds = Dataset::open(out.path()).unwrap();
    let split = ds.split("dev").unwrap();
    let Some(Texts::Span(texts)) = ds.texts("dev").unwrap() else {
        panic!("no span texts")
    };
    assert_eq!(texts.questions.len(), 3);
    assert_eq!(split.num_groups(), 3);
    // The long paragraph needs several windows per question; the short one a single window.
    let windows = |g: u32| split.group_ids.iter().filter(|&&x| x == g).count();
    assert!(
        windows(0) > 1 && windows(0) == windows(1),
        "{:?}",
        split.group_ids
    );
    assert_eq!(windows(2), 1);
    assert!((0..split.num_rows()).all(|r| split.row(r).len() <= 64));

    let Labels::Span(labels) = &split.labels else {
        panic!("span labels")
    };
    let spans = split.token_spans.as_ref().unwrap();
    // Every question's answer is found in at least one window, and the positions map back to
    // exactly the answer text through the kept offsets.
    for (g, q) in texts.questions.iter().enumerate() {
        let context = &texts.contexts[q.context];
        let gold = &q.answers[0];
        let mut found = 0;
        for r in (0..split.num_rows()).filter(|&r| split.group_ids[r] as usize == g) {
            let (s, e) = (labels[2 * r] as usize, labels[2 * r + 1] as usize);
            if (s, e) == (0, 0) {
                continue;
            }
            let base = split.row(r).start;
            let (bs, be) = (
                spans[2 * (base + s)] as usize,
                spans[2 * (base + e) + 1] as usize,
            );
            assert_eq!(&context[bs..be], gold.text, "question {}", q.id);
            found += 1;
        }
        assert!(found >= 1, "answer of {} not in any window", q.id);
    }
    // Answer starts are stored as byte offsets: "Café" makes them differ from char offsets.
    let q1 = &texts.questions[0];
    assert_eq!(
        &texts.contexts[0][q1.answers[0].byte_start..][..11],
        "Anna Keller"
    );
    assert_eq!(q1.answers.len(), 2);
    // Question and special tokens have no context span.
    let first_row = split.row(0);
    assert_eq!(spans[2 * first_row.start], u32::MAX);
}

#[test]
fn answer_start_outside_context_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let text = r#"{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "short",
  "qas": [{"id": "bad-q", "question": "q?", "answers": [{"answer_start": 99, "text": "x"}]}]}]}]}"#;
    write(d.path(), "dev-v1.1.json", text);
    let mut cfg = common::config("squad/v1.1", d.path().to_owned());
    cfg.splits = Some(vec!["dev".to_owned()]);
    let r = resolve(&cfg).unwrap();
    let msg = lpeft_data::build::read_split(r.task, &r.splits[0])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("dev-v1.1.json:2:") && msg.contains("answer_start of question bad-q"),
        "{msg}"
    );
}

fn dev_error(text: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "dev-v1.1.json", text);
    let mut cfg = common::config("squad/v1.1", d.path().to_owned());
    cfg.splits = Some(vec!["dev".to_owned()]);
    let r = resolve(&cfg).unwrap();
    lpeft_data::build::read_split(r.task, &r.splits[0])
        .unwrap_err()
        .to_string()
}

#[test]
fn answer_start_not_at_the_answer_text_is_an_error() {
    // Character offset 5 is "Keller" in "Café Keller"; the first answer claims "Café" there.
    let msg = dev_error(
        r#"{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Café Keller",
  "qas": [{"id": "ok-q", "question": "q?", "answers": [{"answer_start": 5, "text": "Keller"}]},
{"id": "shifted-q", "question": "q?", "answers": [{"answer_start": 5, "text": "Keller"},
  {"answer_start": 5, "text": "Café"}]}]}]}]}"#,
    );
    assert!(
        msg.contains("dev-v1.1.json:3:")
            && msg.contains("answers[1].answer_start of question shifted-q")
            && msg.contains("\"Café\"")
            && msg.contains("reads \"Kell\""),
        "{msg}"
    );
}

#[test]
fn answer_without_text_names_the_field_and_line() {
    let msg = dev_error(
        r#"{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Café Keller",
  "qas": [{"id": "q", "question": "q?",
  "answers": [{"answer_start": 5}]}]}]}]}"#,
    );
    assert!(
        msg.contains("dev-v1.1.json:3:") && msg.contains("missing field `text`"),
        "{msg}"
    );
}

#[test]
fn sampling_keeps_only_the_contexts_in_use() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "dev-v1.1.json", &squad_file());
    let mut cfg = common::config("squad/v1.1", d.path().to_owned());
    cfg.splits = Some(vec!["dev".to_owned()]);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..8 {
        cfg.max_examples = Some(1);
        cfg.seed = seed;
        let out = tempfile::tempdir().unwrap();
        build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
        let ds = Dataset::open(out.path()).unwrap();
        let Some(Texts::Span(t)) = ds.texts("dev").unwrap() else {
            panic!("span texts")
        };
        assert_eq!((t.questions.len(), t.contexts.len()), (1, 1));
        assert_eq!(t.questions[0].context, 0);
        let q = &t.questions[0];
        assert!(t.contexts[0][q.answers[0].byte_start..].starts_with(&q.answers[0].text));
        seen.insert(q.id.clone());
    }
    assert!(seen.len() > 1, "the seed changes the sample: {seen:?}");
}
