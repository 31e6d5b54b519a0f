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
fn report_with_no_results_refuses_and_keeps_an_earlier_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), "x").unwrap();
    std::fs::write(
        dir.path().join("p.ron"),
        r#"Pipeline(name: "p", stages: [(name: "snap", kind: "snapshot", params: { "paths": ["x.txt"] })])"#,
    )
    .unwrap();
    let earlier = dir.path().join("results/p");
    std::fs::create_dir_all(&earlier).unwrap();
    std::fs::write(earlier.join("results.md"), "an earlier report").unwrap();
    let out = lpeft(dir.path(), &["report", "p.ron"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no fine-tuning results of this pipeline are in the store")
            && stderr.contains("nothing written"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(earlier.join("results.md")).unwrap(),
        "an earlier report"
    );
    assert!(!earlier.join("results.json").exists());
}

/// The real stages on the shared RTE files and MiniLM beside the clone (tiny: 16 examples,
/// one step each, ~20 s): data → estimate → surgery at two pruning levels → Light-PEFT LoRA
/// fine-tuning of each, two seeds; then `lpeft report` reads their `result.json` and masks.
#[test]
fn report_end_to_end_on_real_stages() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let model = shared.join("models/all-MiniLM-L6-v2");
    let glue = shared.join("data/glue");
    assert!(
        glue.join("RTE/train.tsv").is_file() && model.join("config.json").is_file(),
        "../shared/data/glue or ../shared/models/all-MiniLM-L6-v2 is missing: put the shared files beside the clone"
    );
    let dir = tempfile::tempdir().unwrap();
    let stages = r#"
        (name: "data", kind: "data",
         params: { "task": "glue/rte", "data_dir": "{glue}", "model": "{model}",
                   "max_length": 32, "max_examples": 16, "seed": 0 }),
        (name: "est", kind: "estimate", inputs: { "dataset": "data" },
         params: { "model": "{model}", "peft": { "kind": "lora" }, "steps": { "steps": 2 },
                   "batch_size": 8, "seed": 1 }),
        (name: "cut-{r}", kind: "surgery", sweep: { "r": [0.2, 0.5] }, inputs: { "estimate": "est" },
         params: { "model": "{model}", "head_ratio": 0.34, "ffn_ratio": "{r}",
                   "module_ratio": 0.5, "rank_ratio": 0.5 }),
        (name: "ft-{r}-s{seed}", kind: "finetune", sweep: { "r": [0.2, 0.5], "seed": [1, 2] },
         inputs: { "dataset": "data", "init": "cut-{r}" },
         params: { "method": "light-{r}", "epochs": 1, "max_steps": 1, "batch_size": 8,
                   "seed": "{seed}" }),
    "#;
    let pipeline = |extra: &str| {
        format!(
            "Pipeline(name: \"e2e\", vars: {{ \"glue\": \"{}\", \"model\": \"{}\" }}, stages: [{stages}{extra}])",
            glue.display(),
            model.display()
        )
    };
    std::fs::write(dir.path().join("p.ron"), pipeline("")).unwrap();
    let out = lpeft(dir.path(), &["run", "p.ron"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = lpeft(dir.path(), &["report", "p.ron"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| task | light-0.2 | light-0.5 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "report: 4 of 4 fine-tuning runs found (0 missing) in 2 task × method cells, 1 mask sets"
        ),
        "{stdout}"
    );
    let results = dir.path().join("results/e2e");
    let set: ResultSet =
        serde_json::from_str(&std::fs::read_to_string(results.join("results.json")).unwrap())
            .unwrap();
    let low = set.row("glue/rte", "light-0.2").unwrap();
    let high = set.row("glue/rte", "light-0.5").unwrap();
    assert_eq!((low.seeds.len(), high.seeds.len()), (2, 2));
    assert!(
        0.0 < low.backbone_pruned_pct && low.backbone_pruned_pct < high.backbone_pruned_pct,
        "{} vs {}",
        low.backbone_pruned_pct,
        high.backbone_pruned_pct
    );
    assert!(high.total_params < low.total_params);
    assert!(low.train_seconds_per_step > 0.0 && low.peak_memory_bytes > 0.0);
    assert!(low.metrics.contains_key("accuracy"));
    for svg in [
        "score_vs_pruned_glue-rte.svg",
        "masks_est_heads.svg",
        "masks_est_ffn.svg",
    ] {
        let text = std::fs::read_to_string(results.join(svg)).unwrap();
        lpeft_eval::svg::check_well_formed(&text).unwrap();
    }

    // A fine-tuning stage added to the pipeline but not run is listed as missing.
    let extra = r#"(name: "ft-0.2-s3", kind: "finetune", inputs: { "dataset": "data", "init": "cut-0.2" },
        params: { "method": "light-0.2", "epochs": 1, "max_steps": 1, "batch_size": 8, "seed": 3 }),"#;
    std::fs::write(dir.path().join("p.ron"), pipeline(extra)).unwrap();
    let out = lpeft(dir.path(), &["report", "p.ron"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Missing: 1 run not in the store: ft-0.2-s3."),
        "{stdout}"
    );
    assert!(
        stdout.contains("report: 4 of 5 fine-tuning runs found (1 missing)"),
        "{stdout}"
    );
}
