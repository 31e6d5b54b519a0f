//! `lpeft export` on the tiny random BERT and RoBERTa of `tiny/`: vanilla LoRA(q,v) and
//! LoRA(all) runs as PEFT adapters and merged transformers directories, a Light-PEFT run (heads,
//! neurons, modules and ranks pruned; one cut down to a layer without heads) as the
//! remote-code directory; and our own directory (`bundle`) for `lpeft predict`. Checked without Python:
//! file names, tensor names and shapes, config fields, refusals. With `LPEFT_EXPORT_PYTHON`
//! set to a Python that has torch, transformers and peft, each directory is also loaded by
//! `tools/export_check.py` and its logits compared with ours (≤ 1e-4).

mod tiny;

use std::collections::BTreeMap;
use std::path::Path;

use tiny::{Setup, lpeft, ok, setup_with, text};

const PIPELINE: &str = r#"Pipeline(name: "tiny", vars: { "model": "model" }, stages: [
    (name: "data-{m}", kind: "data", sweep: { "m": ["model", "roberta"] },
     params: { "task": "glue/rte", "data_dir": "glue", "model": "{m}", "max_length": 32 }),
    (name: "ft-{m}-qv", kind: "finetune", sweep: { "m": ["model", "roberta"] },
     inputs: { "dataset": "data-{m}" },
     params: { "method": "lora", "model": "{m}",
               "peft": { "kind": "lora", "rank": 4, "alpha": 8.0, "targets": ["query", "value"] },
               "epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 3 }),
    (name: "ft-{m}-all", kind: "finetune", sweep: { "m": ["model", "roberta"] },
     inputs: { "dataset": "data-{m}" },
     params: { "method": "lora", "model": "{m}", "peft": { "kind": "lora", "rank": 4, "alpha": 8.0 },
               "epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 3 }),
    (name: "est-{m}", kind: "estimate", sweep: { "m": ["model", "roberta"] },
     inputs: { "dataset": "data-{m}" },
     params: { "model": "{m}", "peft": { "kind": "lora", "rank": 4 }, "steps": { "steps": 3 },
               "batch_size": 8, "lr": 0.05, "seed": 1 }),
    (name: "cut-{m}", kind: "surgery", sweep: { "m": ["model", "roberta"] },
     inputs: { "estimate": "est-{m}" },
     params: { "model": "{m}", "head_ratio": 0.5, "ffn_ratio": 0.5, "module_ratio": 0.25, "rank_ratio": 0.5 }),
    (name: "cut0-model", kind: "surgery", inputs: { "estimate": "est-model" },
     params: { "model": "model", "head_ratio": 0.75, "head_scope": "global", "ffn_ratio": 0.75,
               "module_ratio": 0.25, "rank_ratio": 0.5 }),
    (name: "light0-model", kind: "finetune", inputs: { "dataset": "data-model", "init": "cut0-model" },
     params: { "method": "light", "epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 4 }),
    (name: "cutr-model", kind: "surgery", inputs: { "estimate": "est-model" },
     params: { "model": "model", "head_ratio": 0.0, "ffn_ratio": 0.0, "module_ratio": 0.25,
               "rank_ratio": 0.5 }),
    (name: "lightr-model", kind: "finetune", inputs: { "dataset": "data-model", "init": "cutr-model" },
     params: { "method": "light", "epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 4 }),
    (name: "light-{m}", kind: "finetune", sweep: { "m": ["model", "roberta"] },
     inputs: { "dataset": "data-{m}", "init": "cut-{m}" },
     params: { "method": "light", "epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05, "seed": 4 }),
])"#;

type Shapes = BTreeMap<String, Vec<usize>>;

fn shapes(file: &Path) -> Shapes {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec()))
        .collect()
}

fn json(file: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// Exports `stage` as `format` into `out/<stage>-<format>`, with our reference logits.
fn export(s: &Setup, stage: &str, format: &str) -> std::path::PathBuf {
    export_with(s, stage, format, &[])
}

fn export_with(s: &Setup, stage: &str, format: &str, extra: &[&str]) -> std::path::PathBuf {
    let dir = format!("out/{stage}-{format}");
    let reference = format!("out/{stage}-{format}.json");
    let args = [
        "export",
        "--model",
        &s.keys[stage],
        "--format",
        format,
        "--out",
        &dir,
        "--reference",
        &reference,
    ];
    ok(s.path(), &[&args[..], extra].concat());
    if let Some(python) = std::env::var_os("LPEFT_EXPORT_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/export_check.py");
        let out = std::process::Command::new(python)
            .current_dir(s.path())
            .arg(script)
            .args([&dir, &reference])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "export_check {stage} {format}:\n{said}"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "{}",
                said.lines().find(|l| l.contains("max |")).unwrap_or("")
            );
        }
    }
    s.path().join(dir)
}

fn check_peft(s: &Setup, stage: &str, family: &str, sites: &[&str]) {
    let dir = export(s, stage, "peft");
    let config = json(&dir.join("adapter_config.json"));
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(config["modules_to_save"], serde_json::json!(["classifier"]));
    assert_eq!(config["rank_pattern"], serde_json::json!({}));
    let base = config["base_model_name_or_path"].as_str().unwrap();
    assert!(Path::new(base).join("config.json").is_file(), "{base}");
    let target = config["target_modules"].as_str().unwrap();
    let st = shapes(&dir.join("adapter_model.safetensors"));
    let mut lora = 0;
    for l in 0..2 {
        for site in sites {
            let m = format!("{family}.encoder.layer.{l}.{site}");
            assert!(
                target.contains(&format!("^{}$", m.replace('.', "\\."))),
                "{target}"
            );
            let (d_in, d_out) = match *site {
                "intermediate.dense" => (16, 32),
                "output.dense" => (32, 16),
                _ => (16, 16),
            };
            let key = |f: &str| format!("base_model.model.{m}.{f}.weight");
            assert_eq!(st[&key("lora_A")], vec![4, d_in], "{m}");
            assert_eq!(st[&key("lora_B")], vec![d_out, 4], "{m}");
            lora += 2;
        }
    }
    let head: Vec<&String> = st.keys().filter(|k| !k.contains(".lora_")).collect();
    let expected: Vec<String> = if family == "roberta" {
        [
            "dense.bias",
            "dense.weight",
            "out_proj.bias",
            "out_proj.weight",
        ]
        .iter()
        .map(|p| format!("base_model.model.classifier.{p}"))
        .collect()
    } else {
        ["bias", "weight"]
            .iter()
            .map(|p| format!("base_model.model.classifier.{p}"))
            .collect()
    };
    assert_eq!(head, expected.iter().collect::<Vec<_>>());
    assert_eq!(st.len(), lora + expected.len());
    assert!(dir.join("tokenizer.json").is_file());
}

fn check_merged(s: &Setup, stage: &str, family: &str) {
    let dir = export(s, stage, "merged");
    let config = json(&dir.join("config.json"));
    assert_eq!(config["model_type"], family);
    assert_eq!(config["num_attention_heads"], 2);
    assert_eq!(config["intermediate_size"], 32);
    assert_eq!(config["num_labels"], serde_json::Value::Null);
    assert_eq!(config["id2label"].as_object().unwrap().len(), 2);
    let st = shapes(&dir.join("model.safetensors"));
    assert!(!st.keys().any(|k| k.contains("lora")));
    assert_eq!(
        st[&format!("{family}.encoder.layer.1.intermediate.dense.weight")],
        vec![32, 16]
    );
    let pooler = if family == "bert" {
        "bert.pooler.dense.weight"
    } else {
        "classifier.dense.weight"
    };
    assert_eq!(st[pooler], vec![16, 16]);
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
}

/// Exports `stage` in the pruned format; returns the heads it kept.
fn check_pruned(s: &Setup, stage: &str, family: &str) -> u64 {
    let dir = export(s, stage, "pruned");
    let config = json(&dir.join("config.json"));
    assert_eq!(config["model_type"], "lpeft-encoder");
    assert_eq!(config["lpeft_family"], family);
    assert!(
        config["auto_map"]["AutoModelForSequenceClassification"]
            .as_str()
            .unwrap()
            .starts_with("modeling_lpeft.")
    );
    assert!(dir.join("modeling_lpeft.py").is_file());
    let st = shapes(&dir.join("model.safetensors"));
    let layers = config["lpeft_layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (l, shape) in layers.iter().enumerate() {
        let (heads, ffn) = (
            shape["heads"].as_u64().unwrap() as usize,
            shape["ffn"].as_u64().unwrap() as usize,
        );
        let p = format!("{family}.encoder.layer.{l}");
        assert_eq!(
            st[&format!("{p}.attention.output.dense.weight")],
            vec![16, heads * 8]
        );
        assert_eq!(st[&format!("{p}.output.dense.weight")], vec![16, ffn]);
        if heads > 0 {
            assert_eq!(
                st[&format!("{p}.attention.self.query.weight")],
                vec![heads * 8, 16]
            );
        }
    }
    layers.iter().map(|l| l["heads"].as_u64().unwrap()).sum()
}

#[test]
fn export_formats() {
    let s = setup_with(PIPELINE);
    if let Some(keep) = std::env::var_os("LPEFT_EXPORT_KEEP") {
        // For a look at the store and the exported directories after the test.
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(s.path())
            .arg(keep)
            .status();
    }
    for (m, family) in [("model", "bert"), ("roberta", "roberta")] {
        check_peft(
            &s,
            &format!("ft-{m}-qv"),
            family,
            &["attention.self.query", "attention.self.value"],
        );
        check_peft(
            &s,
            &format!("ft-{m}-all"),
            family,
            &[
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            ],
        );
        check_merged(&s, &format!("ft-{m}-all"), family);
        assert_eq!(check_pruned(&s, &format!("ft-{m}-qv"), family), 4);
        let kept = check_pruned(&s, &format!("light-{m}"), family);
        assert!(kept < 4, "the cut removed heads: {kept} kept");
    }

    // A layer left without heads: its output projection is `[16, 0]`, its bias alone remains.
    assert_eq!(check_pruned(&s, "light0-model", "bert"), 1);

    // Modules and ranks cut, the backbone whole: an adapter over the pretrained model, with
    // rank_pattern / alpha_pattern for the pruned ranks.
    let dir = export_with(&s, "lightr-model", "peft", &["--base", "model"]);
    let config = json(&dir.join("adapter_config.json"));
    let ranks = config["rank_pattern"].as_object().unwrap();
    assert!(!ranks.is_empty(), "{config}");
    // The estimation's LoRA: rank 4, alpha 16 (the default): every module keeps scale 16/4.
    assert_eq!(
        config["lora_alpha"].as_f64().unwrap() / config["r"].as_f64().unwrap(),
        4.0
    );
    let common = config["r"].as_f64().unwrap();
    let mut pruned = common < 4.0;
    for (k, r) in ranks {
        let alpha = config["alpha_pattern"][k].as_f64().unwrap();
        let r = r.as_f64().unwrap();
        assert_ne!(r, common, "{k}: a pattern only where the rank differs");
        assert_eq!(alpha / r, 4.0, "{k}: the scale alpha/r_original");
        pruned |= r < 4.0;
    }
    assert!(pruned, "the cut pruned ranks: {config}");
    // Without --base, or over a model whose backbone differs, it is refused.
    let light = &s.keys["lightr-model"];
    let out = lpeft(
        s.path(),
        &["export", "--model", light, "--format", "peft", "--out", "x"],
    );
    assert!(text(&out).contains("--base"), "{}", text(&out));
    let args = [
        "export", "--model", light, "--format", "peft", "--out", "x", "--base", "roberta",
    ];
    assert!(!lpeft(s.path(), &args).status.success());

    // Refusals: a pruned model has no PEFT or plain form; an existing directory stays.
    for format in ["peft", "merged"] {
        let out = lpeft(
            s.path(),
            &[
                "export",
                "--model",
                &s.keys["light-model"],
                "--format",
                format,
                "--out",
                "x",
            ],
        );
        assert!(!out.status.success());
        assert!(text(&out).contains("--format pruned"), "{}", text(&out));
        assert!(!s.path().join("x").exists());
    }
    let again = [
        "export",
        "--model",
        &s.keys["ft-model-qv"],
        "--format",
        "merged",
        "--out",
        "out/ft-model-all-merged",
    ];
    let out = lpeft(s.path(), &again);
    assert!(!out.status.success());
    assert!(text(&out).contains("give --force"), "{}", text(&out));
    let mut forced = again.to_vec();
    forced.push("--force");
    ok(s.path(), &forced);

    // Our own directory, for `lpeft predict` away from the store: the same prediction.
    let light = &s.keys["light-model"];
    ok(
        s.path(),
        &[
            "export", "--model", light, "--format", "bundle", "--out", "out/b",
        ],
    );
    for f in [
        "model.json",
        "weights.safetensors",
        "tokenizer.json",
        "task.json",
    ] {
        assert!(s.path().join("out/b").join(f).is_file(), "{f}");
    }
    let one = ["--text", "the cat sat .", "--pair", "yes the dog ran ."];
    let from_store = ok(
        s.path(),
        &[&["predict", "--model", light][..], &one].concat(),
    );
    let from_dir = ok(
        s.path(),
        &[&["predict", "--model", "out/b"][..], &one].concat(),
    );
    assert_eq!(from_store, from_dir);
}

/// Span heads (SQuAD): `qa_outputs` under QUESTION_ANS / `*ForQuestionAnswering`.
#[test]
fn span_heads_export_as_question_answering() {
    let mut s = setup_with(PIPELINE);
    tiny::write(s.path(), "span.ron", tiny::SPAN_PIPELINE);
    ok(s.path(), &["--no-progress", "run", "span.ron"]);
    let plan: serde_json::Value =
        serde_json::from_str(&ok(s.path(), &["plan", "span.ron", "--json"])).unwrap();
    for stage in plan["stages"].as_array().unwrap() {
        s.keys.insert(
            stage["name"].as_str().unwrap().to_owned(),
            stage["key"].as_str().unwrap().to_owned(),
        );
    }
    for (m, family) in [("model", "bert"), ("roberta", "roberta")] {
        let stage = format!("ft-squad-{m}");
        let dir = export(&s, &stage, "peft");
        let config = json(&dir.join("adapter_config.json"));
        assert_eq!(config["task_type"], "QUESTION_ANS");
        assert_eq!(config["modules_to_save"], serde_json::json!(["qa_outputs"]));
        let st = shapes(&dir.join("adapter_model.safetensors"));
        assert_eq!(st["base_model.model.qa_outputs.weight"], vec![2, 16]);
        let dir = export(&s, &stage, "merged");
        let config = json(&dir.join("config.json"));
        let class = if family == "bert" { "Bert" } else { "Roberta" };
        assert_eq!(
            config["architectures"][0],
            format!("{class}ForQuestionAnswering")
        );
        let st = shapes(&dir.join("model.safetensors"));
        assert!(
            !st.keys()
                .any(|k| k.contains("pooler") || k.starts_with("classifier"))
        );
        let dir = export(&s, &stage, "pruned");
        let config = json(&dir.join("config.json"));
        assert_eq!(config["lpeft_head_style"], "span");
        assert!(config["auto_map"]["AutoModelForQuestionAnswering"].is_string());
        let reference = json(&s.path().join(format!("out/{stage}-pruned.json")));
        assert_eq!(reference["start_logits"].as_array().unwrap().len(), 4);
    }
}
