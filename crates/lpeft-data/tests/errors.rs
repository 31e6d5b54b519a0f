//! Bad input gives an error that names the file, the line and what was expected.

mod common;

use common::write;
use lpeft_data::DataError;
use lpeft_data::build::{read_split, resolve};

fn read(task: &str, dir: &std::path::Path, split: &str) -> Result<usize, DataError> {
    let mut cfg = common::config(task, dir.to_owned());
    cfg.splits = Some(vec![split.to_owned()]);
    let r = resolve(&cfg)?;
    read_split(r.task, &r.splits[0]).map(|s| s.examples.len())
}

fn expect_err(res: Result<usize, DataError>, parts: &[&str]) -> String {
    let msg = res.expect_err("expected an error").to_string();
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` lacks `{p}`");
    }
    msg
}

#[test]
fn short_row_names_file_line_and_width() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "RTE/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n",
    );
    let msg = expect_err(
        read("glue/rte", d.path(), "dev"),
        &[
            "RTE/dev.tsv:3:",
            "expected 4 tab-separated columns, found 2",
        ],
    );
    assert!(msg.contains(&d.path().display().to_string()), "{msg}");
}

#[test]
fn cola_short_row() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "CoLA/train.tsv",
        "gj04\t1\t\tGood sentence.\ngj04\t0\n",
    );
    expect_err(
        read("glue/cola", d.path(), "train"),
        &[
            "CoLA/train.tsv:2:",
            "expected 4 tab-separated columns, found 2",
        ],
    );
}

#[test]
fn unknown_label_lists_the_expected_ones() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "RTE/train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
    );
    expect_err(
        read("glue/rte", d.path(), "train"),
        &[
            "RTE/train.tsv:2:",
            "unknown label 'maybe' (expected one of: entailment, not_entailment)",
        ],
    );
}

#[test]
fn bad_float_label() {
    let d = tempfile::tempdir().unwrap();
    let header =
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n";
    write(
        d.path(),
        "STS-B/train.tsv",
        &format!("{header}0\tmain\tf\t2012\t1\tnone\tnone\tA.\tB.\tfive\n"),
    );
    expect_err(
        read("glue/stsb", d.path(), "train"),
        &["STS-B/train.tsv:2:", "'five'", "expected a number"],
    );
}

#[test]
fn missing_file_names_the_path() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "SST-2/train.tsv", "sentence\tlabel\nok\t1\n");
    expect_err(
        read("glue/sst2", d.path(), "dev"),
        &["missing file", "SST-2/dev.tsv"],
    );
}

#[test]
fn missing_column_names_it_and_the_header() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "SST-2/train.tsv", "text\tlabel\nok\t1\n");
    expect_err(
        read("glue/sst2", d.path(), "train"),
        &[
            "SST-2/train.tsv:1:",
            "missing column 'sentence'",
            "header has: text, label",
        ],
    );
}

#[test]
fn test_files_read_without_labels() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "SST-2/test.tsv",
        "index\tsentence\n0\tgood\n1\tbad\n",
    );
    let mut cfg = common::config("glue/sst2", d.path().to_owned());
    cfg.splits = Some(vec!["test".to_owned()]);
    let r = resolve(&cfg).unwrap();
    let s = read_split(r.task, &r.splits[0]).unwrap();
    assert_eq!(s.examples.len(), 2);
    assert!(!s.labeled());
}

#[test]
fn bad_json_line_in_jsonl() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "CB/val.jsonl",
        "{\"premise\": \"p\", \"hypothesis\": \"h\", \"label\": \"neutral\", \"idx\": 0}\n{\"premise\": \"p\", \n",
    );
    expect_err(
        read("superglue/cb", d.path(), "dev"),
        &["CB/val.jsonl:2:", "bad JSON"],
    );
}

#[test]
fn missing_json_field_and_unknown_json_label() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "BoolQ/train.jsonl",
        "{\"question\": \"q\", \"label\": true, \"idx\": 0}\n",
    );
    expect_err(
        read("superglue/boolq", d.path(), "train"),
        &[
            "BoolQ/train.jsonl:1:",
            "missing field 'passage'",
            "a string",
        ],
    );
    write(
        d.path(),
        "CB/train.jsonl",
        "{\"premise\": \"p\", \"hypothesis\": \"h\", \"label\": \"maybe\", \"idx\": 0}\n",
    );
    expect_err(
        read("superglue/cb", d.path(), "train"),
        &[
            "CB/train.jsonl:1:",
            "unknown label 'maybe' (expected one of: entailment, contradiction, neutral)",
        ],
    );
}

#[test]
fn bad_squad_json_names_the_line() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "dev-v1.1.json",
        "{\"version\": \"1.1\",\n \"data\": [\n {\"title\": \"t\", \"paragraphs\": [}\n]}\n",
    );
    expect_err(
        read("squad/v1.1", d.path(), "dev"),
        &["dev-v1.1.json:3:", "bad JSON"],
    );
    write(
        d.path(),
        "dev-v1.1.json",
        "{\"version\": \"1.1\",\n \"data\": [\n {\"title\": \"t\"}\n]}\n",
    );
    expect_err(
        read("squad/v1.1", d.path(), "dev"),
        &["dev-v1.1.json:3:", "missing field `paragraphs`"],
    );
}

#[test]
fn unknown_task_and_split() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = common::config("glue/sst-2", d.path().to_owned());
    expect_err(
        resolve(&cfg).map(|_| 0),
        &["unknown task `glue/sst-2`", "glue/sst2"],
    );
    cfg.task = "glue/sst2".to_owned();
    cfg.splits = Some(vec!["validation".to_owned()]);
    expect_err(
        resolve(&cfg).map(|_| 0),
        &["no split `validation`", "train, dev, test"],
    );
}

#[test]
fn extra_columns_and_nul_bytes_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "RTE/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\textra\tentailment\n",
    );
    expect_err(
        read("glue/rte", d.path(), "dev"),
        &[
            "RTE/dev.tsv:3:",
            "5 tab-separated columns, more than the 4 expected",
        ],
    );
    write(d.path(), "CoLA/dev.tsv", "src\t1\t\tA tab\tinside.\n");
    expect_err(
        read("glue/cola", d.path(), "dev"),
        &["CoLA/dev.tsv:1:", "more than the 4 expected"],
    );
    write(
        d.path(),
        "RTE/train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\u{0}b\tc\tentailment\n",
    );
    expect_err(
        read("glue/rte", d.path(), "train"),
        &["RTE/train.tsv:2:", "column 2 holds a NUL byte"],
    );
}

#[test]
fn max_length_beyond_the_models_positions_is_refused_naming_the_limit() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "RTE/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
    );
    let model = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::model_dir().join("tokenizer.json"),
        model.path().join("tokenizer.json"),
    )
    .unwrap();
    let cfg = |model_type: &str, positions: u32, max_length: usize| {
        std::fs::write(
            model.path().join("config.json"),
            format!(r#"{{"model_type": "{model_type}", "max_position_embeddings": {positions}}}"#),
        )
        .unwrap();
        let mut c = common::config("glue/rte", d.path().to_owned());
        c.model = model.path().to_owned();
        c.max_length = Some(max_length);
        c.splits = Some(vec!["dev".to_owned()]);
        resolve(&c).map(|_| ())
    };
    assert!(cfg("bert", 512, 512).is_ok());
    let e = cfg("bert", 512, 600).unwrap_err().to_string();
    assert!(
        e.contains("max_length 600 is more than the model embeds: 512 positions"),
        "{e}"
    );
    let e = cfg("roberta", 514, 513).unwrap_err().to_string();
    assert!(e.contains("512 positions") && e.contains("514"), "{e}");
    assert!(cfg("roberta", 514, 512).is_ok());
}
