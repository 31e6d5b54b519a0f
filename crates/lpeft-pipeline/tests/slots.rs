//! Device slots on fake devices: a recording stage logs which slot (its `ctx.backend`) ran it
//! and when, so scheduling is checked without a GPU.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lpeft_pipeline::file::load_str;
use lpeft_pipeline::plan::resolve;
use lpeft_pipeline::run::{
    DeviceSlots, NoProgress, Observer, Outcome, RunOptions, Silent, execute_on,
};
use lpeft_pipeline::stage::{
    Params, Prepared, Progress, RunContext, RunSummary, Stage, StageError,
};
use lpeft_pipeline::{ExpandOptions, Plan, PlanNode, PlanOptions, Registry, Status};
use lpeft_store::{Store, VerifyMode};
use proptest::prelude::*;

/// One stage's run as the recorder saw it.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    slot: String,
    device: bool,
    start: Instant,
    end: Instant,
}

/// Sleeps `ms`, records its run, writes one file; `fail: true` writes half its output, then
/// fails. `device: true` makes it backend-sensitive, as estimation and fine-tuning are.
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Stage for Recorder {
    fn kind(&self) -> &'static str {
        "rec"
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn input_slots(&self) -> &'static [&'static str] {
        &["a", "b", "c"]
    }
    fn optional_slots(&self) -> &'static [&'static str] {
        &["a", "b", "c"]
    }
    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        Ok(Prepared {
            canonical_params: params.clone(),
            external_files: vec![],
            backend_sensitive: params["device"] == serde_json::json!(true),
        })
    }
    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let start = Instant::now();
        let ms = ctx.params["ms"].as_u64().unwrap_or(20);
        std::fs::write(ctx.out_dir.join("half"), "partial")?;
        std::thread::sleep(Duration::from_millis(ms));
        let end = Instant::now();
        self.0.lock().unwrap().push(Event {
            name: ctx.params["name"].as_str().unwrap_or_default().to_string(),
            slot: ctx.backend.to_string(),
            device: ctx.params["device"] == serde_json::json!(true),
            start,
            end,
        });
        if ctx.params["fail"] == serde_json::json!(true) {
            return Err(StageError::failed("rec", "asked to fail"));
        }
        std::fs::write(ctx.out_dir.join("done"), ctx.backend)?;
        Ok(RunSummary::default())
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: Store,
    registry: Registry,
    log: Arc<Mutex<Vec<Event>>>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let registry = Registry::new(vec![Box::new(Recorder(log.clone()))]);
    Fixture {
        _tmp: tmp,
        store,
        registry,
        log,
    }
}

/// A stage line: `name`, on the device or not, its inputs (slots a, b, c), extra params.
fn stage(name: &str, device: bool, inputs: &[&str], extra: &str) -> String {
    let wired: Vec<String> = inputs
        .iter()
        .zip(["a", "b", "c"])
        .map(|(from, slot)| format!("\"{slot}\": \"{from}\""))
        .collect();
    format!(
        "(name: \"{name}\", kind: \"rec\", params: {{ \"name\": \"{name}\", \"device\": {device}{extra} }}, inputs: {{ {} }}),",
        wired.join(", ")
    )
}

fn plan(f: &Fixture, stages: &[String], backend: &str) -> Plan {
    let text = format!("Pipeline(name: \"s\", stages: [{}])", stages.join("\n"));
    let no_env = |_: &str| None;
    let p = load_str(
        Path::new("s.ron"),
        &text,
        &ExpandOptions::default(),
        &no_env,
    )
    .unwrap();
    resolve(&p, &f.registry, &f.store, &PlanOptions::new(backend)).unwrap()
}

fn slots(names: &[&str], per_slot: usize) -> DeviceSlots {
    DeviceSlots {
        names: names.iter().map(|s| s.to_string()).collect(),
        per_slot: Some(per_slot),
        on_host: false,
    }
}

fn opts(jobs: usize) -> RunOptions<'static> {
    RunOptions {
        jobs,
        device_jobs: None,
        record_as: Some("s"),
    }
}

/// The most stages that overlapped in time among `events`.
fn max_overlap(events: &[&Event]) -> usize {
    events
        .iter()
        .map(|e| {
            events
                .iter()
                .filter(|o| o.start <= e.start && e.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Checks the log against the plan: on every slot at most `per_slot` device stages at once,
/// host stages get the plan's backend, and every stage started after its inputs ended.
fn check_log(plan: &Plan, log: &[Event], slot_names: &[&str], per_slot: usize) {
    for slot in slot_names {
        let on: Vec<&Event> = log.iter().filter(|e| e.device && e.slot == *slot).collect();
        assert!(
            max_overlap(&on) <= per_slot,
            "{slot} ran {} device stages at once: {on:?}",
            max_overlap(&on)
        );
    }
    for e in log {
        if e.device {
            assert!(slot_names.contains(&e.slot.as_str()), "{e:?}");
        } else {
            assert_eq!(e.slot, plan.backend, "host stages get the plan's backend");
        }
        let node = plan.node(&e.name).unwrap();
        for input in node.inputs.values() {
            let from = input.from.as_deref().unwrap();
            let dep = log.iter().find(|d| d.name == from).expect("input ran");
            assert!(
                dep.end <= e.start,
                "{} started before its input {from} ended",
                e.name
            );
        }
    }
}

#[test]
fn device_stages_spread_over_the_slots_one_at_a_time_and_keys_ignore_the_slot() {
    let f = fixture();
    let mut stages: Vec<String> = (0..4)
        .map(|i| stage(&format!("gpu-{i}"), true, &[], ", \"ms\": 60"))
        .collect();
    stages.push(stage("cpu-0", false, &[], ", \"ms\": 60"));
    stages.push(stage("gpu-after", true, &["cpu-0", "gpu-0"], ""));
    let p = plan(&f, &stages, "tch-cuda");
    let names = ["tch-cuda:0", "tch-cuda:1"];
    let report = execute_on(
        &p,
        &f.registry,
        &f.store,
        &Silent,
        opts(1),
        &slots(&names, 1),
    )
    .unwrap();
    assert_eq!(report.ran(), 6);
    let log = f.log.lock().unwrap().clone();
    check_log(&p, &log, &names, 1);
    let first_four: Vec<&Event> = log
        .iter()
        .filter(|e| e.name.starts_with("gpu-") && e.name != "gpu-after")
        .collect();
    for slot in names {
        assert!(
            first_four.iter().any(|e| e.slot == slot),
            "both slots take work: {log:?}"
        );
    }
    // The manifest and the outcome say where each stage ran; the key does not.
    for (name, outcome) in &report.outcomes {
        let node = p.node(name).unwrap();
        let manifest = f.store.open_artifact(&node.key).unwrap().manifest;
        let ran_on = &log.iter().find(|e| &e.name == name).unwrap().slot;
        assert_eq!(&manifest.backend, ran_on, "{name}");
        let Outcome::Ran { device, .. } = outcome else {
            panic!("{name}: {outcome:?}")
        };
        assert_eq!(
            device.as_deref(),
            node.backend_class.as_ref().map(|_| ran_on.as_str())
        );
    }
    for other in ["tch-cuda:1", "tch-cuda:7", "tch-cuda"] {
        let again = plan(&f, &stages, other);
        assert_eq!(
            again.count("HIT"),
            6,
            "a run on the slots is a hit for {other}"
        );
    }
    assert_eq!(
        plan(&f, &stages, "flex").count("HIT"),
        1,
        "only the host stage"
    );
}

#[test]
fn per_slot_lets_stages_share_a_device_up_to_the_limit() {
    let f = fixture();
    let stages: Vec<String> = (0..6)
        .map(|i| stage(&format!("gpu-{i}"), true, &[], ", \"ms\": 80"))
        .collect();
    let p = plan(&f, &stages, "tch-cuda");
    let names = ["tch-cuda:0"];
    execute_on(
        &p,
        &f.registry,
        &f.store,
        &Silent,
        opts(1),
        &slots(&names, 2),
    )
    .unwrap();
    let log = f.log.lock().unwrap().clone();
    check_log(&p, &log, &names, 2);
    let all: Vec<&Event> = log.iter().collect();
    assert_eq!(
        max_overlap(&all),
        2,
        "two at once on the one device: {log:?}"
    );
}

/// Counts `waiting_for_device` calls.
#[derive(Default)]
struct Waits(Mutex<Vec<String>>);

impl Observer for Waits {
    fn started(&self, _node: &PlanNode, _device: Option<&str>) {}
    fn finished(&self, _node: &PlanNode, _outcome: &Outcome) {}
    fn progress(&self, _node: &PlanNode) -> Box<dyn Progress + '_> {
        Box::new(NoProgress)
    }
    fn waiting_for_device(&self, node: &PlanNode, slots: &DeviceSlots) {
        assert_eq!(slots.names, ["tch-cuda:0"]);
        self.0.lock().unwrap().push(node.name.clone());
    }
}

#[test]
fn the_runner_says_when_stages_wait_for_a_device() {
    let f = fixture();
    let stages: Vec<String> = (0..3)
        .map(|i| stage(&format!("gpu-{i}"), true, &[], ""))
        .collect();
    let p = plan(&f, &stages, "tch-cuda");
    let waits = Waits::default();
    let names = ["tch-cuda:0"];
    execute_on(
        &p,
        &f.registry,
        &f.store,
        &waits,
        opts(4),
        &slots(&names, 1),
    )
    .unwrap();
    let mut waited = waits.0.into_inner().unwrap();
    waited.sort();
    assert_eq!(waited, ["gpu-1", "gpu-2"], "said once per stage held back");
}

#[test]
fn a_failing_stage_leaves_nothing_while_the_others_publish() {
    let f = fixture();
    let stages = vec![
        stage("bad", true, &[], ", \"ms\": 20, \"fail\": true"),
        stage("good", true, &[], ", \"ms\": 150"),
        stage("host", false, &[], ", \"ms\": 150"),
        stage("after-bad", false, &["bad"], ""),
    ];
    let p = plan(&f, &stages, "tch-cuda");
    let names = ["tch-cuda:0", "tch-cuda:1"];
    let err = execute_on(
        &p,
        &f.registry,
        &f.store,
        &Silent,
        opts(2),
        &slots(&names, 1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("asked to fail"), "{err}");
    let published = |n: &str| f.store.contains(&p.node(n).unwrap().key);
    assert!(!published("bad") && !published("after-bad"));
    assert!(
        published("good") && published("host"),
        "the running ones still publish"
    );
    let tmp = std::fs::read_dir(f.store.root().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "no half-written staging directory stays");
    let (n, issues) = f.store.verify_all(VerifyMode::Deep).unwrap();
    assert_eq!((n, issues.len()), (2, 0));
    // The rerun runs what is missing only.
    let again = plan(&f, &stages, "tch-cuda");
    assert!(matches!(again.node("good").unwrap().status, Status::Hit));
    assert_eq!(again.count("RUN"), 2);
}

/// A random DAG of up to 8 stages: (on the device, inputs among the earlier stages).
fn dag() -> impl Strategy<Value = Vec<(bool, Vec<usize>)>> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        ),
        1..8,
    )
    .prop_map(|spec| {
        spec.into_iter()
            .enumerate()
            .map(|(i, (device, deps))| {
                let mut deps: Vec<usize> = match i {
                    0 => vec![],
                    _ => deps.iter().map(|d| d.index(i)).collect(),
                };
                deps.sort_unstable();
                deps.dedup();
                (device, deps)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    /// Real threads and a real store on random pipelines: at no time more than `per_slot`
    /// device stages on one slot, every stage after its inputs, everything published.
    #[test]
    fn random_pipelines_keep_slots_and_edges(
        dag in dag(),
        n_slots in 1usize..4,
        per_slot in 1usize..3,
        jobs in 1usize..3,
    ) {
        let f = fixture();
        let stages: Vec<String> = dag
            .iter()
            .enumerate()
            .map(|(i, (device, deps))| {
                let names: Vec<String> = deps.iter().map(|d| format!("s{d}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                stage(&format!("s{i}"), *device, &names, ", \"ms\": 8")
            })
            .collect();
        let p = plan(&f, &stages, "tch-cuda");
        let names: Vec<String> = (0..n_slots).map(|s| format!("tch-cuda:{s}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let report = execute_on(&p, &f.registry, &f.store, &Silent, opts(jobs), &slots(&names, per_slot)).unwrap();
        prop_assert_eq!(report.ran(), dag.len());
        let log = f.log.lock().unwrap().clone();
        check_log(&p, &log, &names, per_slot);
        let host: Vec<&Event> = log.iter().filter(|e| !e.device).collect();
        prop_assert!(max_overlap(&host) <= jobs);
    }
}
