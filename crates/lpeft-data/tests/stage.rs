//! The data stage through the pipeline runner and the store: a second run is a cache hit,
//! parameters and file contents enter the key, paths do not.

mod common;

use std::path::Path;

use lpeft_data::{DataStage, Dataset};
use lpeft_pipeline::file::{ExpandOptions, load_str};
use lpeft_pipeline::plan::resolve;
use lpeft_pipeline::run::{Outcome, RunOptions, Silent, execute};
use lpeft_pipeline::stage::Stage;
use lpeft_pipeline::{PlanOptions, Registry, Status};
use lpeft_store::Store;

fn pipeline(data_dir: &Path, max_examples: usize) -> lpeft_pipeline::Pipeline {
    let text = format!(
        r#"Pipeline(name: "p", stages: [(name: "data-sst2", kind: "data", params: {{
            "task": "glue/sst2", "data_dir": "{}", "model": "{}", "max_examples": {max_examples} }})])"#,
        data_dir.display(),
        common::model_dir().display()
    );
    let env = |_: &str| None;
    load_str(Path::new("p.ron"), &text, &ExpandOptions::default(), &env).unwrap()
}

fn registry() -> Registry {
    Registry::new(vec![Box::new(DataStage)])
}

#[test]
fn second_run_is_a_hit_and_params_change_the_key() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let reg = registry();
    let opts = PlanOptions::new("flex");

    let plan = resolve(&pipeline(&common::glue_dir(), 100), &reg, &store, &opts).unwrap();
    assert!(plan.nodes[0].is_run());
    // Two source files and the tokenizer enter the key.
    assert_eq!(plan.nodes[0].external.len(), 3);
    let run = |plan: &lpeft_pipeline::Plan| {
        execute(
            plan,
            &reg,
            &store,
            &Silent,
            RunOptions {
                jobs: 1,
                device_jobs: None,
                record_as: None,
            },
        )
        .unwrap()
    };
    let report = run(&plan);
    let Outcome::Ran { figures, .. } = &report.outcomes[0].1 else {
        panic!("expected a run")
    };
    assert_eq!(figures["splits"]["train"]["examples"], 100);
    assert_eq!(figures["splits"]["dev"]["source_examples"], 872);
    let key = plan.nodes[0].key.clone();

    let again = resolve(&pipeline(&common::glue_dir(), 100), &reg, &store, &opts).unwrap();
    assert_eq!(again.nodes[0].key, key);
    assert_eq!(again.nodes[0].status, Status::Hit);
    assert!(matches!(run(&again).outcomes[0].1, Outcome::Hit));

    let other = resolve(&pipeline(&common::glue_dir(), 101), &reg, &store, &opts).unwrap();
    assert_ne!(other.nodes[0].key, key);

    // The artifact in the store opens as a dataset.
    let artifact = store.open_artifact(&key).unwrap();
    let ds = Dataset::open(&artifact.dir).unwrap();
    assert_eq!(ds.split("train").unwrap().num_rows(), 100);
}

#[test]
fn copied_files_give_the_same_key_edited_files_another() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let reg = registry();
    let opts = PlanOptions::new("flex");
    let key_of = |dir: &Path| {
        resolve(&pipeline(dir, 10), &reg, &store, &opts)
            .unwrap()
            .nodes[0]
            .key
            .clone()
    };

    let copy = tempfile::tempdir().unwrap();
    for f in ["train.tsv", "dev.tsv"] {
        std::fs::create_dir_all(copy.path().join("SST-2")).unwrap();
        std::fs::copy(
            common::glue_dir().join("SST-2").join(f),
            copy.path().join("SST-2").join(f),
        )
        .unwrap();
    }
    assert_eq!(key_of(copy.path()), key_of(&common::glue_dir()));
    let dev = copy.path().join("SST-2/dev.tsv");
    let mut text = std::fs::read_to_string(&dev).unwrap();
    text.push_str("an extra sentence\t1\n");
    std::fs::write(&dev, text).unwrap();
    assert_ne!(key_of(copy.path()), key_of(&common::glue_dir()));
}

#[test]
fn prepare_fills_defaults_and_rejects_unknown_params() {
    let stage = DataStage;
    let params = serde_json::json!({
        "task": "glue/rte", "data_dir": common::glue_dir(), "model": common::model_dir(),
    });
    let prepared = stage.prepare(&params).unwrap();
    assert_eq!(
        prepared.canonical_params,
        serde_json::json!({"task": "glue/rte", "splits": ["train", "dev"], "max_length": 128,
                           "max_examples": null, "seed": 0, "source": "local"})
    );
    assert!(!prepared.backend_sensitive);
    let mut explicit = params.clone();
    explicit["max_length"] = 128.into();
    explicit["splits"] = serde_json::json!(["train", "dev"]);
    assert_eq!(
        stage.prepare(&explicit).unwrap().canonical_params,
        prepared.canonical_params
    );

    let mut bad = params.clone();
    bad["max_len"] = 64.into();
    let msg = stage.prepare(&bad).unwrap_err().to_string();
    assert!(msg.contains("unknown field `max_len`"), "{msg}");
    let mut missing = params;
    missing["data_dir"] = "/nonexistent".into();
    let msg = stage.prepare(&missing).unwrap_err().to_string();
    // Named where the official layout puts it, with the task and split.
    assert!(
        msg.contains("missing file /nonexistent/RTE/train.tsv (glue/rte split `train`"),
        "{msg}"
    );
}
