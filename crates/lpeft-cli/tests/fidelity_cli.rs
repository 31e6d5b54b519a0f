//! The fidelity options through the real stages on the shared RTE files and MiniLM (tiny: 16
//! examples, a few steps): an estimation that writes its teacher outputs, surgeries with and
//! without folded masks at the `r2` cut (every module at rank 2), a fine-tune distilled towards
//! the teacher beside a plain one, and the errors of a distillation wired wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LPEFT: &str = env!("CARGO_BIN_EXE_lpeft");

fn lpeft(dir: &Path, args: &[&str]) -> Output {
    Command::new(LPEFT)
        .current_dir(dir)
        .args(["--store", "store", "--no-progress"])
        .args(args)
        .output()
        .unwrap()
}

fn shared() -> (PathBuf, PathBuf) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let (glue, model) = (
        shared.join("data/glue"),
        shared.join("models/all-MiniLM-L6-v2"),
    );
    assert!(
        glue.join("RTE/train.tsv").is_file() && model.join("config.json").is_file(),
        "../shared/data/glue or ../shared/models/all-MiniLM-L6-v2 is missing: put the shared files beside the clone"
    );
    (glue, model)
}

const STAGES: &str = r#"
    (name: "data", kind: "data",
     params: { "task": "glue/rte", "data_dir": "{glue}", "model": "{model}",
               "max_length": 32, "max_examples": 16, "seed": 0 }),
    (name: "est", kind: "estimate", inputs: { "dataset": "data" },
     params: { "model": "{model}", "peft": { "kind": "lora" }, "steps": { "steps": 3 },
               "batch_size": 8, "lr": 0.05, "seed": 1, "teacher_outputs": "{teacher}" }),
    (name: "cut-{fold}", kind: "surgery", sweep: { "fold": [false, true] },
     inputs: { "estimate": "est" },
     params: { "model": "{model}", "module_ratio": 0.0, "rank_ratio": 0.75,
               "rank_scope": "layerwise", "fold_masks": "{fold}" }),
    (name: "ft-{fold}", kind: "finetune", sweep: { "fold": [false, true] },
     inputs: { "dataset": "data", "init": "cut-{fold}" },
     params: { "method": "light-fold-{fold}", "epochs": 1, "max_steps": 2, "batch_size": 8 }),
"#;

fn pipeline(dir: &Path, teacher: bool, extra: &str) {
    let (glue, model) = shared();
    let text = format!(
        "Pipeline(name: \"f\", vars: {{ \"glue\": \"{}\", \"model\": \"{}\", \"teacher\": {teacher} }}, stages: [{STAGES}{extra}])",
        glue.display(),
        model.display()
    );
    std::fs::write(dir.join("p.ron"), text).unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DISTILLED: &str = r#"
    (name: "ft-kd", kind: "finetune",
     inputs: { "dataset": "data", "init": "cut-false", "teacher": "est" },
     params: { "method": "light-kd", "epochs": 1, "max_steps": 2, "batch_size": 8,
               "distill": { "weight": 0.5, "temperature": 2.0 } }),
"#;

#[test]
fn folded_masks_distillation_and_the_r2_cut_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), true, DISTILLED);
    let out = lpeft(dir.path(), &["run", "p.ron"]);
    assert!(out.status.success(), "{}", text(&out));

    let store = dir.path().join("store/objects");
    let find = |kind: &str, needle: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let m = std::fs::read_to_string(p.join("manifest.json")).unwrap();
                m.contains(&format!("\"kind\": \"{kind}\"")) && m.contains(needle)
            })
            .collect()
    };
    // The teacher covers every training row with one logit pair.
    let est = find("estimate", "teacher_outputs");
    assert_eq!(est.len(), 1);
    let bytes = std::fs::read(est[0].join("teacher.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("outputs").unwrap().shape(), &[16, 2]);

    // r2: every LoRA module kept, each at rank 2; folding changes the kept weights only.
    let plans: Vec<serde_json::Value> = find("surgery", "rank_scope")
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p.join("plan.json")).unwrap()))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plans.len(), 2);
    for plan in &plans {
        let report = &plan["report"];
        assert_eq!(report["peft_modules_after"], report["peft_modules_before"]);
        assert_eq!(
            report["rank_slots_after"],
            2 * report["peft_modules_before"].as_u64().unwrap()
        );
    }
    assert_eq!(
        plans[0]["plan"], plans[1]["plan"],
        "same decisions, folded or not"
    );
    let weights = |needle: &str| {
        let dirs = find("surgery", needle);
        std::fs::read(dirs[0].join("weights.safetensors")).unwrap()
    };
    assert_ne!(weights("\"fold_masks\": true"), {
        let plain: Vec<PathBuf> = find("surgery", "rank_scope")
            .into_iter()
            .filter(|p| {
                !std::fs::read_to_string(p.join("manifest.json"))
                    .unwrap()
                    .contains("fold_masks")
            })
            .collect();
        std::fs::read(plain[0].join("weights.safetensors")).unwrap()
    });

    // One convention: result.json's best epoch is the number `lpeft show` prints (from 1).
    for ft in find("finetune", "light-") {
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ft.join("result.json")).unwrap())
                .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ft.join("manifest.json")).unwrap())
                .unwrap();
        let best = result["best_epoch"].as_u64().unwrap();
        assert_eq!(best, 1, "one epoch, numbered 1");
        assert_eq!(result["epochs"][0]["epoch"], best);
        assert_eq!(manifest["figures"]["best_epoch"], best);
        // Where the stage's time went, each phase within the stage's own wall time.
        let phases = &manifest["figures"]["phase_seconds"];
        let wall = manifest["wall_seconds"].as_f64().unwrap();
        let mut sum = 0.0;
        for name in ["load", "steps", "eval", "write"] {
            let v = phases[name]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {phases}"));
            assert!(v >= 0.0, "{name}: {v}");
            sum += v;
        }
        assert!(phases["steps"].as_f64().unwrap() > 0.0, "{phases}");
        assert!(
            sum <= wall + 1e-3,
            "phases {sum} s over the wall time {wall} s"
        );
        let per_epoch = manifest["figures"]["eval_seconds_per_epoch"]
            .as_array()
            .unwrap();
        assert_eq!(per_epoch.len(), result["epochs"].as_array().unwrap().len());
    }

    let out = lpeft(dir.path(), &["report", "p.ron"]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("report: 3 of 3 fine-tuning runs found (0 missing)"),
        "{report}"
    );
    assert!(report.contains("light-kd"), "{report}");
}

#[test]
fn a_distillation_wired_wrong_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    // A teacher made without `teacher_outputs`.
    pipeline(dir.path(), false, DISTILLED);
    let out = lpeft(dir.path(), &["run", "p.ron"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("has no teacher.safetensors") && t.contains("teacher_outputs: true"),
        "{t}"
    );
    // `distill` without a teacher input, and a teacher input without `distill`.
    let no_teacher = DISTILLED.replace(r#", "teacher": "est""#, "");
    pipeline(dir.path(), true, &no_teacher);
    let t = text(&lpeft(dir.path(), &["run", "p.ron"]));
    assert!(t.contains("teacher"), "{t}");
    let no_distill = DISTILLED.replace(
        r#",
               "distill": { "weight": 0.5, "temperature": 2.0 }"#,
        "",
    );
    pipeline(dir.path(), true, &no_distill);
    let t = text(&lpeft(dir.path(), &["run", "p.ron"]));
    assert!(
        t.contains("field `distill`: required with a `teacher` input"),
        "{t}"
    );
}

#[test]
fn a_precision_the_backend_cannot_run_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // flex (the default backend here) runs fp32 only: the estimation says what it needs.
    let mixed = STAGES.replace(r#""seed": 1,"#, r#""seed": 1, "precision": "bf16-mixed","#);
    let (glue, model) = shared();
    let text_of = |stages: &str| {
        format!(
            "Pipeline(name: \"f\", vars: {{ \"glue\": \"{}\", \"model\": \"{}\", \"teacher\": false }}, stages: [{stages}])",
            glue.display(),
            model.display()
        )
    };
    std::fs::write(dir.path().join("p.ron"), text_of(&mixed)).unwrap();
    let plan = text(&lpeft(dir.path(), &["plan", "p.ron"]));
    let out = lpeft(
        dir.path(),
        &["run", "p.ron", "--only", "data", "--only", "est"],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("`precision: bf16-mixed` needs the libtorch backend"),
        "{t}"
    );
    // A precision is part of the key: fp32 (the default, left out) and bf16-mixed differ.
    std::fs::write(dir.path().join("p.ron"), text_of(STAGES)).unwrap();
    let default_plan = text(&lpeft(dir.path(), &["plan", "p.ron"]));
    let key = |plan: &str| {
        plan.lines()
            .find(|l| l.contains(" est "))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
    };
    assert!(key(&plan).is_some(), "{plan}");
    assert_ne!(key(&plan), key(&default_plan), "{plan}\n{default_plan}");
    // And a name that is not a precision is an error of the pipeline file.
    let bad = STAGES.replace(r#""seed": 1,"#, r#""seed": 1, "precision": "bf16","#);
    std::fs::write(dir.path().join("p.ron"), text_of(&bad)).unwrap();
    let t = text(&lpeft(dir.path(), &["plan", "p.ron"]));
    assert!(
        t.contains("unknown variant `bf16`") && t.contains("bf16-mixed"),
        "{t}"
    );
}

#[test]
fn lpeft_fused_off_gives_libtorch_stages_their_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (glue, model) = shared();
    let pipeline = format!(
        "Pipeline(name: \"f\", vars: {{ \"glue\": \"{}\", \"model\": \"{}\", \"teacher\": false }}, stages: [{STAGES}])",
        glue.display(),
        model.display()
    );
    std::fs::write(dir.path().join("p.ron"), pipeline).unwrap();
    let plan = |backend: &str, fused: Option<&str>| {
        let mut c = Command::new(LPEFT);
        c.current_dir(dir.path())
            .args([
                "--store",
                "store",
                "--no-progress",
                "plan",
                "p.ron",
                "--json",
            ])
            .args(["--backend", backend])
            .env_remove("LPEFT_CUDA_GRAPHS");
        match fused {
            Some(v) => c.env("LPEFT_FUSED", v),
            None => c.env_remove("LPEFT_FUSED"),
        };
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    for backend in ["tch", "tch-cuda"] {
        let (fused, plain) = (plan(backend, None), plan(backend, Some("off")));
        assert_eq!(fused["data"], plain["data"], "the data stage runs no model");
        assert_ne!(fused["est"], plain["est"], "{backend}");
        assert_ne!(fused["ft-false"], plain["ft-false"], "{backend}");
        assert_eq!(
            fused,
            plan(backend, Some("on")),
            "only `off` turns them off"
        );
    }
    // flex has no fused nodes: nothing changes there.
    assert_eq!(plan("flex", None), plan("flex", Some("off")));
}
