//! Plan and run real (builtin) stages against a temporary store.

use std::path::{Path, PathBuf};

use lpeft_pipeline::builtin::{DigestStage, SnapshotStage};
use lpeft_pipeline::file::load_str;
use lpeft_pipeline::plan::{RerunReason, resolve};
use lpeft_pipeline::run::{RunOptions, Silent, execute};
use lpeft_pipeline::{ExpandOptions, Plan, PlanOptions, Registry, Status};
use lpeft_store::{Store, VerifyMode};

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    store: Store,
    registry: Registry,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for t in ["a", "b"] {
        std::fs::create_dir_all(data.join(t)).unwrap();
        std::fs::write(data.join(t).join("x.tsv"), format!("{t}\n1\n2\n")).unwrap();
    }
    let store = Store::open(tmp.path().join("store")).unwrap();
    let registry = Registry::new(vec![Box::new(SnapshotStage), Box::new(DigestStage)]);
    Fixture {
        _tmp: tmp,
        data,
        store,
        registry,
    }
}

fn text(data: &Path, rounds: u32) -> String {
    format!(
        r#"Pipeline(
    name: "t",
    vars: {{ "data": "{}", "rounds": {rounds} }},
    stages: [
        (name: "snap-{{t}}", kind: "snapshot", sweep: {{ "t": ["a", "b"] }}, params: {{ "paths": ["{{data}}/{{t}}"] }}),
        (name: "digest-{{t}}", kind: "digest", sweep: {{ "t": ["a", "b"] }},
         params: {{ "rounds": "{{rounds}}" }}, inputs: {{ "src": "snap-{{t}}" }}),
    ],
)"#,
        data.display()
    )
}

fn plan(f: &Fixture, text: &str, opts: &PlanOptions) -> Plan {
    let no_env = |_: &str| None;
    let p = load_str(Path::new("t.ron"), text, &ExpandOptions::default(), &no_env).unwrap();
    resolve(&p, &f.registry, &f.store, opts).unwrap()
}

fn run(f: &Fixture, plan: &Plan) -> lpeft_pipeline::RunReport {
    execute(
        plan,
        &f.registry,
        &f.store,
        &Silent,
        RunOptions {
            jobs: 2,
            device_jobs: None,
            record_as: Some(&plan.pipeline),
        },
    )
    .unwrap()
}

fn statuses(plan: &Plan) -> Vec<(String, &'static str)> {
    plan.nodes
        .iter()
        .map(|n| (n.name.clone(), n.status.label()))
        .collect()
}

#[test]
fn second_run_hits_and_one_param_reruns_exactly_the_affected_stages() {
    let f = fixture();
    let opts = PlanOptions::new("flex");
    let p1 = plan(&f, &text(&f.data, 1), &opts);
    assert_eq!(p1.count("RUN"), 4);
    assert!(matches!(&p1.nodes[0].status, Status::Run(r) if r == &vec![RerunReason::Missing]));
    let report = run(&f, &p1);
    assert_eq!(report.ran(), 4);

    let p2 = plan(&f, &text(&f.data, 1), &opts);
    assert_eq!(p2.count("HIT"), 4, "{:?}", statuses(&p2));
    assert_eq!(run(&f, &p2).ran(), 0);

    let p3 = plan(&f, &text(&f.data, 2), &opts);
    assert_eq!(p3.count("RUN"), 2);
    let d = p3.node("digest-a").unwrap();
    match &d.status {
        Status::Run(reasons) => {
            assert_eq!(reasons.len(), 1);
            assert_eq!(reasons[0].to_string(), "params changed: rounds 1 → 2");
        }
        other => panic!("{other:?}"),
    }
    run(&f, &p3);
    // Back to 1: those artifacts still exist, so everything hits.
    assert_eq!(plan(&f, &text(&f.data, 1), &opts).count("HIT"), 4);
    let (n, issues) = f.store.verify_all(VerifyMode::Deep).unwrap();
    assert_eq!((n, issues.len()), (6, 0));
}

#[test]
fn changed_data_file_reruns_its_chain_with_reasons() {
    let f = fixture();
    let opts = PlanOptions::new("flex");
    run(&f, &plan(&f, &text(&f.data, 1), &opts));
    std::fs::write(f.data.join("b/x.tsv"), "b\n1\n3\n").unwrap();
    let p = plan(&f, &text(&f.data, 1), &opts);
    assert_eq!(
        statuses(&p),
        vec![
            ("snap-a".into(), "HIT"),
            ("snap-b".into(), "RUN"),
            ("digest-a".into(), "HIT"),
            ("digest-b".into(), "RUN")
        ]
    );
    let reasons = |n: &str| match &p.node(n).unwrap().status {
        Status::Run(r) => r.iter().map(ToString::to_string).collect::<Vec<_>>(),
        _ => vec![],
    };
    assert!(
        reasons("snap-b")[0].starts_with("file changed: "),
        "{:?}",
        reasons("snap-b")
    );
    assert_eq!(
        reasons("digest-b"),
        vec!["input `src` changed (from `snap-b`)"]
    );
}

#[test]
fn force_only_and_downstream() {
    let f = fixture();
    let t = text(&f.data, 1);
    run(&f, &plan(&f, &t, &PlanOptions::new("flex")));
    let mut opts = PlanOptions::new("flex");
    opts.force = vec!["snap-a".into()];
    let p = plan(&f, &t, &opts);
    assert_eq!(p.count("RUN"), 1);
    opts.downstream = true;
    let p = plan(&f, &t, &opts);
    assert_eq!(p.count("RUN"), 2);
    assert!(
        matches!(&p.node("digest-a").unwrap().status, Status::Run(r) if r == &vec![RerunReason::Forced])
    );
    assert_eq!(run(&f, &p).ran(), 2);

    // --only on a stale stage whose input is stale too: blocked, and the run refuses.
    let t2 = text(&f.data, 3);
    std::fs::write(f.data.join("a/x.tsv"), "changed\n").unwrap();
    let mut opts = PlanOptions::new("flex");
    opts.only = vec!["digest-*".into()];
    let p = plan(&f, &t2, &opts);
    assert_eq!(p.node("snap-a").unwrap().status.label(), "SKIP");
    assert_eq!(p.node("digest-a").unwrap().status.label(), "BLOCKED");
    assert_eq!(p.node("digest-b").unwrap().status.label(), "RUN");
    let err = execute(
        &p,
        &f.registry,
        &f.store,
        &Silent,
        RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        },
    );
    assert!(err.unwrap_err().to_string().contains("digest-a"));
}

#[test]
fn resolution_errors_name_the_stage_position() {
    let f = fixture();
    let no_env = |_: &str| None;
    let check = |text: &str, want: &str| {
        let line = if want == "cycle" {
            "t.ron:2:"
        } else {
            "t.ron:3:"
        };
        let p = load_str(Path::new("t.ron"), text, &ExpandOptions::default(), &no_env).unwrap();
        let e = resolve(&p, &f.registry, &f.store, &PlanOptions::new("flex"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(line), "{e}");
        assert!(e.contains(want), "{e}");
    };
    check(
        "Pipeline(name: \"t\", stages: [\n (name: \"a\", kind: \"snapshot\", params: { \"paths\": [\"/nonexistent\"] }),\n (name: \"b\", kind: \"nope\"),\n])",
        "unknown kind `nope`",
    );
    check(
        "Pipeline(name: \"t\", stages: [\n (name: \"a\", kind: \"digest\", inputs: { \"src\": \"b\" }),\n (name: \"b\", kind: \"digest\", inputs: { \"src\": \"a\" }),\n])",
        "cycle",
    );
    check(
        "Pipeline(name: \"t\", stages: [\n\n (name: \"b\", kind: \"digest\", inputs: { \"src\": \"zz\" }),\n])",
        "unknown stage `zz`",
    );
    check(
        "Pipeline(name: \"t\", stages: [\n\n (name: \"b\", kind: \"digest\"),\n])",
        "not wired",
    );
    check(
        "Pipeline(name: \"t\", stages: [\n\n (name: \"b\", kind: \"snapshot\", params: { \"paths\": [\"/nonexistent/x\"] }),\n])",
        "nonexistent",
    );
    check(
        "Pipeline(name: \"t\", stages: [\n\n (name: \"b\", kind: \"snapshot\", params: { \"pathz\": [] }),\n])",
        "pathz",
    );
}

/// A stage that writes half its output, then panics; the runner must report it, not hang, and
/// run it on a thread whose name the CLI's panic hook recognises.
struct Panics;

impl lpeft_pipeline::stage::Stage for Panics {
    fn kind(&self) -> &'static str {
        "panics"
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn input_slots(&self) -> &'static [&'static str] {
        &[]
    }
    fn prepare(
        &self,
        _params: &lpeft_pipeline::stage::Params,
    ) -> Result<lpeft_pipeline::stage::Prepared, lpeft_pipeline::stage::StageError> {
        Ok(lpeft_pipeline::stage::Prepared {
            canonical_params: serde_json::json!({}),
            external_files: vec![],
            backend_sensitive: true,
        })
    }
    fn run(
        &self,
        ctx: &lpeft_pipeline::stage::RunContext<'_>,
    ) -> Result<lpeft_pipeline::stage::RunSummary, lpeft_pipeline::stage::StageError> {
        std::fs::write(ctx.out_dir.join("half"), "partial")?;
        let name = std::thread::current().name().map(String::from);
        let prefix = lpeft_pipeline::run::STAGE_THREAD;
        assert!(
            name.as_deref().is_some_and(|n| n.starts_with(prefix)),
            "{name:?}"
        );
        panic!("boom")
    }
}

#[test]
fn a_panicking_stage_is_an_error_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let registry = Registry::new(vec![Box::new(Panics)]);
    let no_env = |_: &str| None;
    let text = r#"Pipeline(name: "x", stages: [(name: "a", kind: "panics"), (name: "b", kind: "panics")])"#;
    let p = load_str(Path::new("x.ron"), text, &ExpandOptions::default(), &no_env).unwrap();
    let plan = resolve(&p, &registry, &store, &PlanOptions::new("flex")).unwrap();
    // Backend-sensitive: the backend class is in the key, the device index is not.
    assert_eq!(plan.nodes[0].backend_class.as_deref(), Some("flex"));
    let cuda0 = resolve(&p, &registry, &store, &PlanOptions::new("tch-cuda:0")).unwrap();
    let cuda1 = resolve(&p, &registry, &store, &PlanOptions::new("tch-cuda:1")).unwrap();
    assert_eq!(cuda0.nodes[0].key, cuda1.nodes[0].key);
    assert_ne!(cuda0.nodes[0].key, plan.nodes[0].key);
    let err = execute(
        &plan,
        &registry,
        &store,
        &Silent,
        RunOptions {
            jobs: 2,
            device_jobs: None,
            record_as: None,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("panicked: boom"), "{err}");
    assert!(store.keys().unwrap().is_empty());
    let staging = std::fs::read_dir(tmp.path().join("tmp")).unwrap().count();
    assert_eq!(
        staging, 0,
        "the half-written staging directories are removed"
    );
}

/// A stage with an optional input slot may leave it unwired.
struct Optional;

impl lpeft_pipeline::stage::Stage for Optional {
    fn kind(&self) -> &'static str {
        "optional"
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn input_slots(&self) -> &'static [&'static str] {
        &["init"]
    }
    fn optional_slots(&self) -> &'static [&'static str] {
        &["init"]
    }
    fn prepare(
        &self,
        _params: &lpeft_pipeline::stage::Params,
    ) -> Result<lpeft_pipeline::stage::Prepared, lpeft_pipeline::stage::StageError> {
        Ok(lpeft_pipeline::stage::Prepared {
            canonical_params: serde_json::json!({}),
            external_files: vec![],
            backend_sensitive: false,
        })
    }
    fn run(
        &self,
        ctx: &lpeft_pipeline::stage::RunContext<'_>,
    ) -> Result<lpeft_pipeline::stage::RunSummary, lpeft_pipeline::stage::StageError> {
        std::fs::write(ctx.out_dir.join("n"), ctx.inputs.len().to_string())?;
        Ok(lpeft_pipeline::stage::RunSummary::default())
    }
}

#[test]
fn optional_slots_may_be_left_unwired() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let registry = Registry::new(vec![Box::new(Optional)]);
    let no_env = |_: &str| None;
    let text = r#"Pipeline(name: "o", stages: [
        (name: "a", kind: "optional"),
        (name: "b", kind: "optional", inputs: { "init": "a" }),
    ])"#;
    let p = load_str(Path::new("o.ron"), text, &ExpandOptions::default(), &no_env).unwrap();
    let plan = resolve(&p, &registry, &store, &PlanOptions::new("flex")).unwrap();
    assert_ne!(plan.nodes[0].key, plan.nodes[1].key);
    execute(
        &plan,
        &registry,
        &store,
        &Silent,
        RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        },
    )
    .unwrap();
    let read = |k: &str| std::fs::read_to_string(store.object_dir(k).join("n")).unwrap();
    assert_eq!(
        (read(&plan.nodes[0].key), read(&plan.nodes[1].key)),
        ("0".into(), "1".into())
    );
    let spec = &p.stages[0];
    let single =
        lpeft_pipeline::plan::single(spec, &registry, &store, Default::default(), "flex", false)
            .unwrap();
    assert_eq!(single.nodes[0].status, Status::Hit);
}

mod device_slots {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use lpeft_pipeline::file::load_str;
    use lpeft_pipeline::plan::resolve;
    use lpeft_pipeline::run::{RunOptions, Silent, execute};
    use lpeft_pipeline::stage::{Params, Prepared, RunContext, RunSummary, Stage, StageError};
    use lpeft_pipeline::{ExpandOptions, PlanOptions, Registry};
    use lpeft_store::Store;

    /// Now and at most, how many stages of each kind ran at once.
    static DEVICE: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));
    static HOST: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));

    /// Sleeps a little, counting how many like it run at the same time; `device: true`
    /// makes it backend-sensitive, as estimation and fine-tuning are.
    struct Busy;
    impl Stage for Busy {
        fn kind(&self) -> &'static str {
            "busy"
        }
        fn code_version(&self) -> u32 {
            1
        }
        fn input_slots(&self) -> &'static [&'static str] {
            &[]
        }
        fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
            Ok(Prepared {
                canonical_params: params.clone(),
                external_files: vec![],
                backend_sensitive: params["device"] == serde_json::json!(true),
            })
        }
        fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
            let (now, max) = if ctx.params["device"] == serde_json::json!(true) {
                &DEVICE
            } else {
                &HOST
            };
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(60));
            now.fetch_sub(1, Ordering::SeqCst);
            std::fs::write(ctx.out_dir.join("done"), "1")?;
            Ok(RunSummary {
                figures: serde_json::json!({}),
            })
        }
    }

    #[test]
    fn device_stages_take_one_slot_while_host_stages_run_beside_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let registry = Registry::new(vec![Box::new(Busy)]);
        let text = r#"Pipeline(name: "d", stages: [
            (name: "gpu-{i}", kind: "busy", sweep: { "i": [1, 2, 3, 4] }, params: { "device": true, "i": "{i}" }),
            (name: "cpu-{i}", kind: "busy", sweep: { "i": [1, 2, 3] }, params: { "device": false, "i": "{i}" }),
        ])"#;
        let no_env = |_: &str| None;
        let p = load_str(Path::new("d.ron"), text, &ExpandOptions::default(), &no_env).unwrap();
        let plan = resolve(&p, &registry, &store, &PlanOptions::new("tch-cuda")).unwrap();
        let opts = RunOptions {
            jobs: 4,
            device_jobs: Some(1),
            record_as: None,
        };
        let report = execute(&plan, &registry, &store, &Silent, opts).unwrap();
        assert_eq!(report.ran(), 7);
        assert_eq!(
            DEVICE.1.load(Ordering::SeqCst),
            1,
            "one device stage at a time"
        );
        assert!(
            HOST.1.load(Ordering::SeqCst) >= 2,
            "host stages still run side by side"
        );
    }
}
