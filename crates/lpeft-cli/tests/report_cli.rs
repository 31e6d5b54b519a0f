//! `lpeft report` and `lpeft compare` through the binary. The fine-tuning stage itself is
//! exercised by the unit tests of `src/report.rs` (a stand-in stage over a real store); here a
//! pipeline without fine-tuning stages and two hand-made result sets.

use std::process::{Command, Output};

use lpeft_eval::report::{ResultSet, Row, Stat};

const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

fn lpeft(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(LPEFT)
        .current_dir(dir)
        .args(["--store", "store", "--no-progress"])
        .args(args)
        .output()
        .unwrap()
}

fn row(method: &str, main: f64, step_s: f64) -> Row {
    Row {
        task: "glue/rte".to_owned(),
        method: method.to_owned(),
        seeds: vec![1],
        main_score: Stat {
            mean: main,
            std: None,
        },
        metrics: Default::default(),
        total_params: 1000.0,
        trainable_params: 10.0,
        backbone_pruned_pct: 0.0,
        train_seconds_per_step: step_s,
        train_examples_per_second: 64.0,
        inference_examples_per_second: 100.0,
        peak_memory_bytes: 1024.0,
        memory_kind: "process_rss".to_owned(),
        hardware: vec![],
    }
}

#[test]
fn compare_prints_differences_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let a = ResultSet {
        pipeline: "a".to_owned(),
        rows: vec![row("lora", 0.75, 0.5)],
        missing: vec![],
    };
    let b = ResultSet {
        pipeline: "b".to_owned(),
        rows: vec![row("lora", 0.7, 0.25), row("light", 0.7, 0.25)],
        missing: vec![],
    };
    std::fs::write(dir.path().join("a.json"), a.to_json()).unwrap();
    std::fs::write(dir.path().join("b.json"), b.to_json()).unwrap();
    let out = lpeft(dir.path(), &["compare", "a.json", "b.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| glue/rte | lora | 75.00 | 70.00 | -5.00 | ×1.00 | ×0.50 | ×1.00 |"),
        "{stdout}"
    );
    assert!(stdout.contains("Only in B: glue/rte × light."), "{stdout}");

    let out = lpeft(dir.path(), &["compare", "a.json", "b.json", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0]["train_seconds_per_step_ratio"], 0.5);

    std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
    let out = lpeft(dir.path(), &["compare", "a.json", "bad.json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.json: not a results.json"), "{stderr}");
}

#[test]
fn report_on_a_pipeline_without_results_writes_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), "x").unwrap();
    std::fs::write(
        dir.path().join("p.ron"),
        r#"Pipeline(name: "p", stages: [(name: "snap", kind: "snapshot", params: { "paths": ["x.txt"] })])"#,
    )
    .unwrap();
    let out = lpeft(dir.path(), &["report", "p.ron"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# Results: p"), "{stdout}");
    assert!(
        stdout.contains("report: 0 of 0 fine-tuning runs found (0 missing)"),
        "{stdout}"
    );
    let json = std::fs::read_to_string(dir.path().join("results/p/results.json")).unwrap();
    let set: ResultSet = serde_json::from_str(&json).unwrap();
    assert!(set.rows.is_empty());

    let out = lpeft(dir.path(), &["report", "p.ron", "--out", "elsewhere"]);
    assert!(out.status.success());
    assert!(dir.path().join("elsewhere/results.csv").is_file());
}
