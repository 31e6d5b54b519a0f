//! Building GLUE artifacts: contents, seeded samples, determinism, validation on reading back.

mod common;

use std::time::Instant;

use lpeft_data::build::{build, resolve};
use lpeft_data::{Dataset, Labels};

fn build_sst2(
    max_examples: Option<usize>,
    seed: u64,
    out: &std::path::Path,
) -> lpeft_data::build::BuildReport {
    let mut cfg = common::config("glue/sst2", common::glue_dir());
    cfg.max_examples = max_examples;
    cfg.seed = seed;
    build(&resolve(&cfg).unwrap(), out, &|_| {}).unwrap()
}

#[test]
fn sampled_sst2_artifact_reads_back() {
    let out = tempfile::tempdir().unwrap();
    let report = build_sst2(Some(200), 3, out.path());
    let meta = &report.meta;
    assert_eq!(meta.task.name, "glue/sst2");
    assert_eq!(meta.tokenizer.family, "bert");
    assert_eq!(meta.max_length, 128);
    let train = &meta.splits[0];
    assert_eq!(
        (
            train.name.as_str(),
            train.num_examples,
            train.num_source_examples
        ),
        ("train", 200, 67349)
    );
    assert_eq!(train.sources[0].name, "SST-2/train.tsv");
    assert_eq!(
        train.sources[0].blake3,
        blake3::hash(&std::fs::read(common::glue_dir().join("SST-2/train.tsv")).unwrap())
            .to_hex()
            .to_string()
    );
    assert_eq!(meta.splits[1].num_examples, 200);

    let ds = Dataset::open(out.path()).unwrap();
    let t = ds.split("train").unwrap();
    assert_eq!(t.num_rows(), 200);
    assert_eq!(t.num_groups(), 200);
    assert!(t.example_ids.windows(2).all(|w| w[0] < w[1]));
    assert!(*t.example_ids.last().unwrap() < 67349);
    let cls = 101;
    for r in 0..t.num_rows() {
        let row = t.row(r);
        assert!(row.len() <= 128 && row.len() >= 2);
        assert_eq!(t.input_ids[row.start], cls);
    }
    let Labels::Class(labels) = &t.labels else {
        panic!("class labels")
    };
    assert!(labels.iter().all(|&l| l == 0 || l == 1));
    assert!(labels.contains(&0) && labels.contains(&1));
}

#[test]
fn same_inputs_same_bytes_other_seed_other_sample() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    build_sst2(Some(50), 1, a.path());
    build_sst2(Some(50), 1, b.path());
    build_sst2(Some(50), 2, c.path());
    for f in ["dataset.json", "train.safetensors", "dev.safetensors"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
    let ids = |d: &std::path::Path| {
        Dataset::open(d)
            .unwrap()
            .split("train")
            .unwrap()
            .example_ids
    };
    assert_ne!(ids(a.path()), ids(c.path()));
}

#[test]
fn pairs_and_regression_labels() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = common::config("glue/stsb", common::glue_dir());
    cfg.max_examples = Some(30);
    cfg.max_length = Some(16);
    let report = build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    assert!(report.meta.splits[0].num_truncated > 0);
    let t = Dataset::open(out.path()).unwrap().split("train").unwrap();
    let Labels::Float(l) = &t.labels else {
        panic!("float labels")
    };
    assert_eq!(l.len(), 30);
    // Pairs: type ids 0 then 1 (BERT), every row at most 16 tokens.
    for r in 0..t.num_rows() {
        let ty = &t.type_ids[t.row(r)];
        assert!(ty.len() <= 16);
        assert_eq!(ty[0], 0);
        assert_eq!(*ty.last().unwrap(), 1);
    }
}

#[test]
fn corrupt_artifacts_are_reported() {
    let out = tempfile::tempdir().unwrap();
    build_sst2(Some(20), 0, out.path());
    let ds = Dataset::open(out.path()).unwrap();
    let msg = ds.split("test").unwrap_err().to_string();
    assert!(msg.contains("no split `test` (has: train, dev)"), "{msg}");
    // Swap the dev tensors for the train ones: the counts no longer match dataset.json.
    let mut ds2 = ds.clone();
    ds2.meta.splits[1].file = "train.safetensors".to_owned();
    ds2.meta.splits[1].num_rows = 19;
    let msg = ds2.split("dev").unwrap_err().to_string();
    assert!(
        msg.contains("train.safetensors") && msg.contains("20 rows"),
        "{msg}"
    );
    std::fs::write(out.path().join("train.safetensors"), b"not safetensors").unwrap();
    let msg = ds.split("train").unwrap_err().to_string();
    assert!(msg.contains("train.safetensors"), "{msg}");
    std::fs::write(
        out.path().join("dataset.json"),
        "{\n  \"format_version\": 1,\n  oops",
    )
    .unwrap();
    let msg = Dataset::open(out.path()).unwrap_err().to_string();
    assert!(msg.contains("dataset.json:3:"), "{msg}");
}

/// Tokenizing all of SST-2 train (67,349 sentences) takes seconds; the figure is printed
/// (`cargo test -p lpeft-data --test artifact -- --nocapture`).
#[test]
fn full_sst2_train_tokenizes_in_seconds() {
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let report = build_sst2(None, 0, out.path());
    let total = start.elapsed().as_secs_f64();
    assert_eq!(report.meta.splits[0].num_rows, 67349);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "SST-2 train+dev: read {:.2} s, tokenize {:.2} s, total {total:.2} s",
            report.read_seconds, report.tokenize_seconds
        );
    }
    assert!(
        report.tokenize_seconds < 60.0,
        "tokenizing took {:.1} s",
        report.tokenize_seconds
    );
}
