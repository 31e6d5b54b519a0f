//! Slot checks and statuses as pipelines and single stages (`lpeft stage KIND`) see them: the
//! exact messages, which of two problems is reported, and a single stage's HIT/RUN reasons.

use std::collections::BTreeMap;
use std::path::Path;

use lpeft_pipeline::builtin::{DigestStage, SnapshotStage};
use lpeft_pipeline::file::load_str;
use lpeft_pipeline::plan::{RerunReason, resolve, single};
use lpeft_pipeline::run::{RunOptions, Silent, execute};
use lpeft_pipeline::{ExpandOptions, Location, PlanOptions, Registry, StageSpec, Status};
use lpeft_store::Store;

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    registry: Registry,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x.tsv"), "1\n2\n").unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let registry = Registry::new(vec![Box::new(SnapshotStage), Box::new(DigestStage)]);
    Fixture {
        tmp,
        store,
        registry,
    }
}

fn spec(kind: &str, params: serde_json::Value) -> StageSpec {
    StageSpec {
        name: kind.to_string(),
        kind: kind.to_string(),
        params,
        inputs: BTreeMap::new(),
        origin: Location::file_only("(command line)"),
    }
}

fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(s, k)| (s.to_string(), k.to_string()))
        .collect()
}

/// Runs a single-stage plan; returns its key.
fn run_single(f: &Fixture, spec: &StageSpec, wired: &[(&str, &str)], force: bool) -> String {
    let plan = single(spec, &f.registry, &f.store, inputs(wired), "flex", force).unwrap();
    let opts = RunOptions {
        jobs: 1,
        device_jobs: None,
        record_as: None,
    };
    execute(&plan, &f.registry, &f.store, &Silent, opts).unwrap();
    plan.nodes[0].key.clone()
}

#[test]
fn a_single_stage_names_its_slots_and_the_input_it_needs() {
    let f = fixture();
    let path = f.tmp.path().join("x.tsv").display().to_string();
    let snap = spec("snapshot", serde_json::json!({ "paths": [path] }));
    let digest = spec("digest", serde_json::json!({}));
    let key = run_single(&f, &snap, &[], false);
    let error = |spec: &StageSpec, wired: &[(&str, &str)]| {
        single(spec, &f.registry, &f.store, inputs(wired), "flex", false)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(error(&digest, &[]), "kind `digest` needs `--input src=KEY`");
    assert_eq!(
        error(&digest, &[("zz", &key)]),
        "kind `digest` has no input slot `zz` (slots: src)"
    );
    // An unknown slot comes before a missing one.
    assert_eq!(
        error(&digest, &[("aa", &key), ("zz", &key)]),
        "kind `digest` has no input slot `aa` (slots: src)"
    );
    assert_eq!(
        error(&snap, &[("src", &key)]),
        "kind `snapshot` has no input slot `src` (slots: none)"
    );
}

#[test]
fn a_single_stage_runs_when_missing_or_forced_and_hits_otherwise() {
    let f = fixture();
    let path = f.tmp.path().join("x.tsv").display().to_string();
    let snap = spec("snapshot", serde_json::json!({ "paths": [path] }));
    let key = run_single(&f, &snap, &[], false);
    let status = |rounds: u32, force: bool| {
        let digest = spec("digest", serde_json::json!({ "rounds": rounds }));
        let plan = single(
            &digest,
            &f.registry,
            &f.store,
            inputs(&[("src", &key)]),
            "flex",
            force,
        )
        .unwrap();
        assert_eq!(plan.nodes[0].forced, force);
        plan.nodes[0].status.clone()
    };
    assert_eq!(status(1, false), Status::Run(vec![RerunReason::Missing]));
    // Forcing what was never produced is a plain miss.
    assert_eq!(status(1, true), Status::Run(vec![RerunReason::Missing]));
    let digest = spec("digest", serde_json::json!({ "rounds": 1 }));
    run_single(&f, &digest, &[("src", &key)], false);
    assert_eq!(status(1, false), Status::Hit);
    assert_eq!(status(1, true), Status::Run(vec![RerunReason::Forced]));
    assert_eq!(status(2, false), Status::Run(vec![RerunReason::Missing]));
}

#[test]
fn a_pipeline_reports_its_first_wiring_problem_in_input_order() {
    let f = fixture();
    let no_env = |_: &str| None;
    let error = |inputs: &str| {
        let text = format!(
            "Pipeline(name: \"t\", stages: [\n (name: \"a\", kind: \"snapshot\", params: {{ \"paths\": [\"/x\"] }}),\n (name: \"b\", kind: \"digest\", inputs: {inputs}),\n])"
        );
        let p = load_str(
            Path::new("t.ron"),
            &text,
            &ExpandOptions::default(),
            &no_env,
        )
        .unwrap();
        resolve(&p, &f.registry, &f.store, &PlanOptions::new("flex"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error("{ \"src\": \"nope\", \"zz\": \"a\" }"),
        "t.ron:3:3: stage `b`: input `src` refers to unknown stage `nope`"
    );
    assert_eq!(
        error("{ \"aa\": \"a\", \"src\": \"nope\" }"),
        "t.ron:3:3: stage `b`: kind `digest` has no input slot `aa` (slots: src)"
    );
    assert_eq!(
        error("{ \"aa\": \"a\" }"),
        "t.ron:3:3: stage `b`: kind `digest` has no input slot `aa` (slots: src)"
    );
    assert_eq!(
        error("{}"),
        "t.ron:3:3: stage `b`: input slot `src` is not wired"
    );
}
