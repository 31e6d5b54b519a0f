//! SuperGLUE readers on small files written in the official JSONL formats, built end to end
//! into artifacts and read back.

mod common;

use common::write;
use lpeft_data::build::{build, read_split, resolve};
use lpeft_data::example::{Inputs, Label};
use lpeft_data::{Dataset, Labels, Texts};
use lpeft_schema::dataset::TaskKind;

type Rows = Vec<(String, Option<String>)>;

fn rows(task: &str, dir: &std::path::Path, split: &str) -> Vec<(Rows, Label)> {
    let mut cfg = common::config(task, dir.to_owned());
    cfg.splits = Some(vec![split.to_owned()]);
    let r = resolve(&cfg).unwrap();
    read_split(r.task, &r.splits[0])
        .unwrap()
        .examples
        .into_iter()
        .map(|e| match e.inputs {
            Inputs::Rows(rows) => (rows, e.label),
            Inputs::Span { .. } => panic!("span"),
        })
        .collect()
}

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn boolq_cb_rte() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "BoolQ/train.jsonl",
        concat!(
            r#"{"question": "do iran and afghanistan speak the same language", "passage": "Persian language -- Persian is spoken in Iran and Afghanistan.", "idx": 0, "label": true}"#,
            "\n",
            r#"{"question": "is the sky green", "passage": "The sky is blue.", "idx": 1, "label": false}"#,
            "\n"
        ),
    );
    let r = rows("superglue/boolq", d.path(), "train");
    assert_eq!(
        r[0].0,
        vec![(
            s("do iran and afghanistan speak the same language"),
            Some(s(
                "Persian language -- Persian is spoken in Iran and Afghanistan."
            ))
        )]
    );
    assert_eq!(
        (r[0].1.clone(), r[1].1.clone()),
        (Label::Class(1), Label::Class(0))
    );

    write(
        d.path(),
        "CB/val.jsonl",
        concat!(
            r#"{"premise": "It was a complex language.", "hypothesis": "the language was peeled down", "label": "contradiction", "idx": 0}"#,
            "\n",
            r#"{"premise": "A", "hypothesis": "B", "label": "neutral", "idx": 1}"#,
            "\n"
        ),
    );
    let r = rows("superglue/cb", d.path(), "dev");
    assert_eq!(r[0].1, Label::Class(1));
    assert_eq!(r[1].1, Label::Class(2));

    write(
        d.path(),
        "RTE/test.jsonl",
        r#"{"premise": "P.", "hypothesis": "H.", "idx": 0}"#,
    );
    let r = rows("superglue/rte", d.path(), "test");
    assert_eq!(r[0], (vec![(s("P."), Some(s("H.")))], Label::None));
}

#[test]
fn wic_and_wsc_templates() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "WiC/train.jsonl",
        r#"{"word": "place", "sentence1": "Do you want to come over to my place later?", "sentence2": "A political system with no place for the less prominent groups.", "idx": 0, "label": false, "start1": 31, "start2": 27, "end1": 36, "end2": 32, "version": 1.1}"#,
    );
    let r = rows("superglue/wic", d.path(), "train");
    assert_eq!(
        r[0].0,
        vec![(
            s(
                "Do you want to come over to my place later? A political system with no place for the less prominent groups. Does place have the same meaning in both sentences?"
            ),
            None
        )]
    );
    assert_eq!(r[0].1, Label::Class(0));

    write(
        d.path(),
        "WSC/train.jsonl",
        r#"{"text": "Mark told Pete many lies about himself, which Pete included in his book. He should have been more skeptical.", "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"}, "idx": 0, "label": false}"#,
    );
    let r = rows("superglue/wsc", d.path(), "train");
    assert_eq!(
        r[0].0,
        vec![(
            s(
                "He: Mark told Pete many lies about himself, which Pete included in his book. He should have been more skeptical."
            ),
            Some(s("Mark"))
        )]
    );
}

#[test]
fn copa_is_multiple_choice() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "COPA/train.jsonl",
        concat!(
            r#"{"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.", "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 0}"#,
            "\n",
            r#"{"premise": "The woman tolerated her friend's difficult behavior.", "choice1": "The woman knew her friend was going through a hard time.", "choice2": "The woman felt that her friend took advantage of her kindness.", "question": "effect", "label": 1, "idx": 1}"#,
            "\n"
        ),
    );
    write(
        d.path(),
        "COPA/val.jsonl",
        r#"{"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.", "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0}"#,
    );
    let r = rows("superglue/copa", d.path(), "train");
    assert_eq!(
        r[0].0,
        vec![
            (
                s("My body cast a shadow over the grass. because"),
                Some(s("The sun was rising."))
            ),
            (
                s("My body cast a shadow over the grass. because"),
                Some(s("The grass was cut."))
            ),
        ]
    );
    assert_eq!(r[0].1, Label::Choice(0));
    assert!(r[1].0[0].0.ends_with(" so"));

    let out = tempfile::tempdir().unwrap();
    let cfg = common::config("superglue/copa", d.path().to_owned());
    let report = build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    assert_eq!(
        report.meta.task.kind,
        TaskKind::MultipleChoice { num_choices: 2 }
    );
    let ds = Dataset::open(out.path()).unwrap();
    let train = ds.split("train").unwrap();
    assert_eq!((train.num_rows(), train.num_groups()), (4, 2));
    assert_eq!(train.group_ids, vec![0, 0, 1, 1]);
    assert_eq!(train.labels, Labels::Class(vec![0, 1]));
}

const MULTIRC: &str = r#"{"idx": 0, "version": 1.1, "passage": {"text": "Sent 1: The Mars rover landed. Sent 2: It sent pictures back.", "questions": [{"question": "What landed?", "answers": [{"text": "The Mars rover", "idx": 0, "label": 1}, {"text": "A plane", "idx": 1, "label": 0}, {"text": "The rover", "idx": 2, "label": 1}], "idx": 0}, {"question": "What did it send?", "answers": [{"text": "Pictures", "idx": 3, "label": 1}, {"text": "Letters", "idx": 4, "label": 0}], "idx": 1}]}}"#;

#[test]
fn multirc_groups_answer_options_by_question() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "MultiRC/train.jsonl", MULTIRC);
    write(d.path(), "MultiRC/val.jsonl", MULTIRC);
    let r = rows("superglue/multirc", d.path(), "train");
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].0[0],
        (
            s("Sent 1: The Mars rover landed. Sent 2: It sent pictures back."),
            Some(s("What landed? The Mars rover"))
        )
    );
    assert_eq!(r[0].1, Label::PerRow(vec![1, 0, 1]));
    assert_eq!(r[1].1, Label::PerRow(vec![1, 0]));

    let out = tempfile::tempdir().unwrap();
    let cfg = common::config("superglue/multirc", d.path().to_owned());
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let ds = Dataset::open(out.path()).unwrap();
    assert_eq!(ds.meta.task.grouping.as_deref(), Some("question"));
    let dev = ds.split("dev").unwrap();
    assert_eq!(dev.group_ids, vec![0, 0, 0, 1, 1]);
    assert_eq!(dev.example_ids, vec![0, 0]);
    assert_eq!(dev.labels, Labels::Class(vec![1, 0, 1, 1, 0]));
}

#[test]
fn record_one_row_per_distinct_entity() {
    let d = tempfile::tempdir().unwrap();
    // Entity spans are inclusive character ranges; "Obama" appears twice.
    let passage = "Obama met Merkel in Berlin.@highlight\nObama visits Berlin";
    let ent = |w: &str, nth: usize| {
        let start = passage.match_indices(w).nth(nth).unwrap().0;
        format!(r#"{{"start": {start}, "end": {}}}"#, start + w.len() - 1)
    };
    let line = format!(
        r#"{{"source": "Daily mail", "passage": {{"text": {}, "entities": [{}, {}, {}, {}]}}, "qas": [{{"query": "@placeholder hosted the meeting.", "answers": [{{"start": 20, "end": 25, "text": "Berlin"}}], "idx": "q-0"}}], "idx": 0}}"#,
        serde_json::to_string(passage).unwrap(),
        ent("Obama", 0),
        ent("Merkel", 0),
        ent("Berlin", 0),
        ent("Obama", 1),
    );
    write(d.path(), "ReCoRD/train.jsonl", &line);
    write(d.path(), "ReCoRD/val.jsonl", &line);
    let r = rows("superglue/record", d.path(), "train");
    assert_eq!(r.len(), 1);
    let expected_passage = "Obama met Merkel in Berlin.- Obama visits Berlin";
    assert_eq!(
        r[0].0,
        vec![
            (s(expected_passage), Some(s("Obama hosted the meeting."))),
            (s(expected_passage), Some(s("Merkel hosted the meeting."))),
            (s(expected_passage), Some(s("Berlin hosted the meeting."))),
        ]
    );
    assert_eq!(r[0].1, Label::PerRow(vec![0, 0, 1]));

    let out = tempfile::tempdir().unwrap();
    let cfg = common::config("superglue/record", d.path().to_owned());
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let ds = Dataset::open(out.path()).unwrap();
    let Some(Texts::Record(t)) = ds.texts("dev").unwrap() else {
        panic!("no ReCoRD texts")
    };
    assert_eq!(
        t.queries[0].entities,
        vec![s("Obama"), s("Merkel"), s("Berlin")]
    );
    assert_eq!(t.queries[0].answers, vec![s("Berlin")]);
    assert_eq!(t.queries[0].id, "q-0");
}
