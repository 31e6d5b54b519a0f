//! The data stage on an OPT model directory as the hub ships it: `vocab.json`, `merges.txt`,
//! `tokenizer_config.json`, `special_tokens_map.json` and `config.json`, no `tokenizer.json`
//! (lpeft-model's tiny-opt-bpe fixture, a toy GPT-2 BPE vocabulary). Rows are `</s> A` and
//! `</s> A </s> B`, padding is `<pad>` = 1, every file read enters the key, and span windows
//! keep their offsets.

mod common;

use std::path::{Path, PathBuf};

use common::write;
use lpeft_data::build::{build, resolve};
use lpeft_data::{DataStage, Dataset, Labels, Texts};
use lpeft_pipeline::file::{ExpandOptions, load_str};
use lpeft_pipeline::plan::resolve as plan;
use lpeft_pipeline::run::{Outcome, RunOptions, Silent, execute};
use lpeft_pipeline::{PlanOptions, Registry};
use lpeft_store::Store;

const BOS: u32 = 2;

fn opt_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lpeft-model/tests/fixtures/tiny-opt-bpe")
}

/// The fixture's tokenizer files and config (not its weights) in a directory of their own.
fn copy_opt_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
    ] {
        std::fs::copy(opt_dir().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn pipeline(model: &Path) -> lpeft_pipeline::Pipeline {
    let text = format!(
        r#"Pipeline(name: "p", stages: [(name: "data-rte", kind: "data", params: {{
            "task": "glue/rte", "data_dir": "{}", "model": "{}", "max_examples": 24,
            "max_length": 48 }})])"#,
        common::glue_dir().display(),
        model.display()
    );
    let env = |_: &str| None;
    load_str(Path::new("p.ron"), &text, &ExpandOptions::default(), &env).unwrap()
}

#[test]
fn rte_pairs_through_the_stage_with_opts_tokenizer() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let reg = Registry::new(vec![Box::new(DataStage)]);
    let opts = PlanOptions::new("flex");
    let model = copy_opt_dir();
    let p = plan(&pipeline(model.path()), &reg, &store, &opts).unwrap();
    // Two split files and the five tokenizer files (config.json: no tokenizer_class).
    let external: Vec<String> = p.nodes[0]
        .external
        .iter()
        .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        external,
        [
            "train.tsv",
            "dev.tsv",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "config.json"
        ]
    );
    let report = execute(
        &p,
        &reg,
        &store,
        &Silent,
        RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        },
    )
    .unwrap();
    assert!(matches!(report.outcomes[0].1, Outcome::Ran { .. }));
    let ds = Dataset::open(store.open_artifact(&p.nodes[0].key).unwrap().dir).unwrap();
    assert_eq!(ds.meta.tokenizer.family, "opt");
    assert_eq!(ds.meta.tokenizer.pad_id, 1);
    let tok = lpeft_tokenizer::Tokenizer::from_file(model.path()).unwrap();
    assert_eq!(ds.meta.tokenizer.blake3, tok.content_hash());
    let dev = ds.split("dev").unwrap();
    assert_eq!(dev.num_rows(), 24);
    let mut cut = 0;
    for r in 0..dev.num_rows() {
        let ids = &dev.input_ids[dev.row(r)];
        let types = &dev.type_ids[dev.row(r)];
        assert!(ids.len() <= 48);
        // </s> A </s> B: the second </s> starts the type-1 part; nothing after B.
        let second = types.iter().position(|&t| t == 1).expect("a pair");
        assert_eq!((ids[0], ids[second]), (BOS, BOS), "row {r}: {ids:?}");
        assert!(types[..second].iter().all(|&t| t == 0));
        assert!(types[second..].iter().all(|&t| t == 1));
        assert_ne!(*ids.last().unwrap(), BOS);
        cut += usize::from(ids.len() == 48);
    }
    assert!(cut > 0, "RTE's premises are longer than 48 toy tokens");
    assert!(ds.meta.splits[1].num_truncated >= cut);

    // The same files elsewhere give the same key; one merge fewer another.
    let copy = copy_opt_dir();
    let key = |dir: &Path| {
        plan(&pipeline(dir), &reg, &store, &opts).unwrap().nodes[0]
            .key
            .clone()
    };
    assert_eq!(key(copy.path()), p.nodes[0].key);
    let merges = copy.path().join("merges.txt");
    let text = std::fs::read_to_string(&merges).unwrap();
    let end = text.trim_end().rfind('\n').unwrap();
    std::fs::write(&merges, &text[..=end]).unwrap();
    assert_ne!(key(copy.path()), p.nodes[0].key);
}

#[test]
fn a_directory_without_its_merges_is_refused_naming_what_is_expected() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "RTE/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
    );
    let model = copy_opt_dir();
    std::fs::remove_file(model.path().join("merges.txt")).unwrap();
    let mut cfg = common::config("glue/rte", d.path().to_owned());
    cfg.model = model.path().to_owned();
    cfg.splits = Some(vec!["dev".to_owned()]);
    let e = resolve(&cfg).unwrap_err().to_string();
    for part in [
        model.path().display().to_string().as_str(),
        "merges.txt",
        "vocab.json",
        "tokenizer.json",
    ] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    // An empty directory: the data stage's own error, naming both layouts.
    let empty = tempfile::tempdir().unwrap();
    cfg.model = empty.path().to_owned();
    let e = resolve(&cfg).unwrap_err();
    assert!(
        matches!(e, lpeft_data::DataError::MissingModel { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("vocab.json + merges.txt"), "{e}");
}

/// SQuAD windows with OPT's tokenizer: `</s> question </s> context`, and the answer positions
/// map back to the answer through the kept byte offsets (a byte-level token's offsets include
/// its leading space, as transformers reports them for OPT).
#[test]
fn squad_windows_keep_their_offsets() {
    let d = tempfile::tempdir().unwrap();
    let filler = "The committee met again in the afternoon to discuss the budget. ".repeat(6);
    let context =
        format!("Café owners in Zürich said {filler}Finally the mayor Anna Keller spoke.");
    let start = context.chars().count() - "Anna Keller spoke.".chars().count();
    let file = serde_json::json!({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": [
            {"id": "q1", "question": "Who spoke?", "answers": [{"answer_start": start, "text": "Anna Keller"}]},
            {"id": "q2", "question": "Who said it?", "answers": [{"answer_start": 0, "text": "Café owners"}]}]}]}]});
    write(d.path(), "dev-v1.1.json", &file.to_string());
    let mut cfg = common::config("squad/v1.1", d.path().to_owned());
    cfg.model = opt_dir();
    cfg.splits = Some(vec!["dev".to_owned()]);
    cfg.max_length = Some(48);
    cfg.doc_stride = 8;
    let out = tempfile::tempdir().unwrap();
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let ds = Dataset::open(out.path()).unwrap();
    let split = ds.split("dev").unwrap();
    let Some(Texts::Span(texts)) = ds.texts("dev").unwrap() else {
        panic!("span texts")
    };
    let Labels::Span(labels) = &split.labels else {
        panic!("span labels")
    };
    let spans = split.token_spans.as_ref().unwrap();
    assert!(split.num_rows() > 2, "several windows");
    for (g, q) in texts.questions.iter().enumerate() {
        let mut found = 0;
        for r in (0..split.num_rows()).filter(|&r| split.group_ids[r] as usize == g) {
            let row = split.row(r);
            let ids = &split.input_ids[row.clone()];
            assert_eq!(ids[0], BOS);
            assert_eq!(ids.iter().filter(|&&i| i == BOS).count(), 2, "{ids:?}");
            assert!(row.len() <= 48);
            let (s, e) = (labels[2 * r] as usize, labels[2 * r + 1] as usize);
            if (s, e) == (0, 0) {
                continue;
            }
            let (bs, be) = (
                spans[2 * (row.start + s)] as usize,
                spans[2 * (row.start + e) + 1] as usize,
            );
            assert_eq!(context[bs..be].trim_start(), q.answers[0].text, "{}", q.id);
            found += 1;
        }
        assert!(found >= 1, "{} answered in no window", q.id);
    }
}
