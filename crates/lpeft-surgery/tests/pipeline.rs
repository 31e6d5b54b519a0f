//! data → estimate → surgery through the pipeline runner and the store, on MiniLM and a few
//! SST-2 sentences from ../shared: changing only ratios or the draw step reruns surgery and
//! hits estimation; the pruned checkpoint loads back; bad params name their field.

use std::path::{Path, PathBuf};

use lpeft_data::DataStage;
use lpeft_estimate::EstimateStage;
use lpeft_pipeline::file::{ExpandOptions, load_str};
use lpeft_pipeline::plan::resolve;
use lpeft_pipeline::run::{Outcome, RunOptions, Silent, execute};
use lpeft_pipeline::stage::Stage;
use lpeft_pipeline::{PlanOptions, Registry, Status};
use lpeft_store::Store;
use lpeft_surgery::stage::{PLAN_FILE, PlanFile, SurgeryStage};

fn shared() -> PathBuf {
    std::env::var_os("LPEFT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn minilm() -> PathBuf {
    let model = shared().join("models/all-MiniLM-L6-v2");
    assert!(
        model.join("model.safetensors").is_file(),
        "MiniLM not found in {}",
        model.display()
    );
    model
}

fn pipeline(head_ratio: f64, draw: &str) -> lpeft_pipeline::Pipeline {
    pipeline_for(&minilm(), head_ratio, draw, "")
}

/// `extra`: more surgery parameters, each followed by a comma.
fn pipeline_for(
    model: &Path,
    head_ratio: f64,
    draw: &str,
    extra: &str,
) -> lpeft_pipeline::Pipeline {
    let glue = shared().join("data/glue");
    let text = format!(
        r#"Pipeline(name: "p", stages: [
            (name: "data", kind: "data", params: {{ "task": "glue/sst2", "data_dir": "{glue}", "model": "{model}", "max_examples": 12 }}),
            (name: "est", kind: "estimate", inputs: {{ "dataset": "data" }},
             params: {{ "model": "{model}", "steps": {{ "steps": 2 }}, "batch_size": 4, "record_every": 1 }}),
            (name: "cut", kind: "surgery", inputs: {{ "estimate": "est" }},
             params: {{ {extra} "model": "{model}", "head_ratio": {head_ratio}, "draw_step": {draw} }}),
        ])"#,
        glue = glue.display(),
        model = model.display(),
    );
    let env = |_: &str| None;
    load_str(Path::new("p.ron"), &text, &ExpandOptions::default(), &env).unwrap()
}

fn registry() -> Registry {
    Registry::new(vec![
        Box::new(DataStage),
        Box::new(EstimateStage),
        Box::new(SurgeryStage),
    ])
}

#[test]
fn ratio_and_draw_changes_rerun_only_surgery() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let reg = registry();
    let opts = PlanOptions::new("flex");
    let run = |p: &lpeft_pipeline::Plan| {
        execute(
            p,
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

    let first = resolve(&pipeline(0.5, "\"last\""), &reg, &store, &opts).unwrap();
    let report = run(&first);
    for (name, outcome) in &report.outcomes {
        assert!(matches!(outcome, Outcome::Ran { .. }), "{name} ran");
    }
    let Outcome::Ran { figures, .. } = &report.outcomes[2].1 else {
        unreachable!()
    };
    assert_eq!(figures["kept_heads"].as_array().unwrap().len(), 6);
    // The surgery's and the estimation's time, by phase.
    for name in ["load", "prune", "write"] {
        assert!(
            figures["phase_seconds"][name].as_f64().unwrap() >= 0.0,
            "{name}: {figures}"
        );
    }
    let Outcome::Ran { figures: est, .. } = &report.outcomes[1].1 else {
        unreachable!()
    };
    for name in ["load", "steps", "write"] {
        assert!(
            est["phase_seconds"][name].as_f64().unwrap() >= 0.0,
            "{name}: {est}"
        );
    }
    assert!(
        est["phase_seconds"]["steps"].as_f64().unwrap() > 0.0,
        "{est}"
    );
    assert!(
        figures["kept_heads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h == 6),
        "6 of 12 heads kept per layer at 0.5: {figures}"
    );

    // Only the ratio changes: data and estimation hit, surgery reruns.
    let second = resolve(&pipeline(0.25, "\"last\""), &reg, &store, &opts).unwrap();
    let status: Vec<&Status> = second.nodes.iter().map(|n| &n.status).collect();
    assert_eq!(status[0], &Status::Hit);
    assert_eq!(
        status[1],
        &Status::Hit,
        "estimation is not rerun for a ratio change"
    );
    assert!(second.nodes[2].is_run());
    run(&second);

    // Only the draw step changes: same.
    let third = resolve(&pipeline(0.25, "{\"step\": 1}"), &reg, &store, &opts).unwrap();
    assert_eq!(third.nodes[1].status, Status::Hit);
    assert!(third.nodes[2].is_run());
    let report = run(&third);
    assert!(matches!(report.outcomes[1].1, Outcome::Hit));

    // The pruned checkpoint is self-describing and loads back; the plan file is readable.
    let art = store.open_artifact(&third.nodes[2].key).unwrap();
    let plan: PlanFile =
        serde_json::from_str(&std::fs::read_to_string(art.dir.join(PLAN_FILE)).unwrap()).unwrap();
    assert_eq!(plan.draw_step, 1);
    assert_eq!(plan.estimate, third.nodes[1].key);
    let model = lpeft_model::checkpoint::load(&art.dir, &burn::tensor::Device::flex()).unwrap();
    assert!(!model.spec.masks);
    assert_eq!(
        model
            .spec
            .encoder
            .layers
            .iter()
            .map(|l| l.heads)
            .collect::<Vec<_>>(),
        plan.report.kept_heads_per_layer
    );
    assert!(plan.report.backbone_after < plan.report.backbone_before);
    assert!(plan.report.peft_after < plan.report.peft_before);

    // FFN widths rounded up to multiples of 8: only the surgery reruns, and every layer's
    // width is one (the global cut of the rule leaves widths that are not).
    let widths = |node: &lpeft_pipeline::plan::PlanNode| {
        let art = store.open_artifact(&node.key).unwrap();
        let model = lpeft_model::checkpoint::load(&art.dir, &burn::tensor::Device::flex()).unwrap();
        model
            .spec
            .encoder
            .layers
            .iter()
            .map(|l| l.ffn)
            .collect::<Vec<_>>()
    };
    let rule = widths(&third.nodes[2]);
    assert!(rule.iter().any(|w| w % 8 != 0), "{rule:?}");
    let rounded = resolve(
        &pipeline_for(&minilm(), 0.25, "{\"step\": 1}", r#""ffn_multiple": 8,"#),
        &reg,
        &store,
        &opts,
    )
    .unwrap();
    assert_eq!(rounded.nodes[1].status, Status::Hit);
    assert!(rounded.nodes[2].is_run());
    run(&rounded);
    let got = widths(&rounded.nodes[2]);
    let want: Vec<usize> = rule.iter().map(|w| w.next_multiple_of(8)).collect();
    assert_eq!(got, want);

    // A draw step that was not recorded is refused, naming the field.
    let bad = resolve(&pipeline(0.25, "{\"step\": 7}"), &reg, &store, &opts).unwrap();
    let err = execute(
        &bad,
        &reg,
        &store,
        &Silent,
        RunOptions {
            jobs: 1,
            device_jobs: None,
            record_as: None,
        },
    );
    let msg = match err {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?}", r.outcomes),
    };
    assert!(msg.contains("draw_step"), "{msg}");
}

/// A random pre-LayerNorm OPT in `OPTModel`'s layout (hidden 16, 4 heads, 2 layers, FFN 24)
/// with OPT's own tokenizer files as the hub ships them (no `tokenizer.json`: GPT-2 BPE's
/// `vocab.json` + `merges.txt` + configs, the toy vocabulary of lpeft-model's tiny-opt-bpe).
fn tiny_opt(dir: &Path) {
    let bpe =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lpeft-model/tests/fixtures/tiny-opt-bpe");
    for f in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(bpe.join(f), dir.join(f)).unwrap();
    }
    let vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(bpe.join("vocab.json")).unwrap()).unwrap();
    let vocab = vocab.len();
    // 128 positions: the data stage's default length (the toy vocabulary spends many tokens).
    let (h, ffn, layers, positions) = (16usize, 24usize, 2usize, 128usize);
    let config = serde_json::json!({
        "model_type": "opt", "hidden_size": h, "num_attention_heads": 4,
        "num_hidden_layers": layers, "ffn_dim": ffn, "vocab_size": vocab,
        "max_position_embeddings": positions, "word_embed_proj_dim": h, "pad_token_id": 1,
        "do_layer_norm_before": true, "activation_function": "relu", "dropout": 0.1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = lpeft_model::rng::SeededRng::new(7);
    let mut tensors = std::collections::BTreeMap::new();
    let mut random = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| ((rng.next_u64() % 2001) as f32 / 1000.0 - 1.0) * 0.1)
            .collect();
        tensors.insert(name, (shape, v));
    };
    random("decoder.embed_tokens.weight".into(), vec![vocab, h]);
    random(
        "decoder.embed_positions.weight".into(),
        vec![positions + 2, h],
    );
    let mut norms = vec!["decoder.final_layer_norm".to_string()];
    for l in 0..layers {
        let p = format!("decoder.layers.{l}");
        for (name, out, inp) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, h),
            ("self_attn.v_proj", h, h),
            ("self_attn.out_proj", h, h),
            ("fc1", ffn, h),
            ("fc2", h, ffn),
        ] {
            random(format!("{p}.{name}.weight"), vec![out, inp]);
            random(format!("{p}.{name}.bias"), vec![out]);
        }
        norms.push(format!("{p}.self_attn_layer_norm"));
        norms.push(format!("{p}.final_layer_norm"));
    }
    for n in norms {
        tensors.insert(format!("{n}.weight"), (vec![h], vec![1.0; h]));
        tensors.insert(format!("{n}.bias"), (vec![h], vec![0.0; h]));
    }
    lpeft_model::checkpoint::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
}

/// OPT through data → estimate → surgery with its own tokenizer: the dataset's rows are
/// `</s> A` (padding `<pad>` = 1), the estimation model is OPT's (pre-LN, last-token head),
/// surgery cuts it, and the pruned checkpoint loads back and runs.
#[test]
fn an_opt_model_goes_through_estimate_and_surgery() {
    let model_dir = tempfile::tempdir().unwrap();
    tiny_opt(model_dir.path());
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let reg = registry();
    let plan = resolve(
        &pipeline_for(model_dir.path(), 0.5, "\"last\"", ""),
        &reg,
        &store,
        &PlanOptions::new("flex"),
    )
    .unwrap();
    let options = RunOptions {
        jobs: 1,
        device_jobs: None,
        record_as: None,
    };
    let report = execute(&plan, &reg, &store, &Silent, options).unwrap();
    for (name, outcome) in &report.outcomes {
        assert!(matches!(outcome, Outcome::Ran { .. }), "{name} ran");
    }
    let data = lpeft_artifacts::dataset::artifact::Dataset::open(
        store.open_artifact(&plan.nodes[0].key).unwrap().dir,
    )
    .unwrap();
    assert_eq!(
        (
            data.meta.tokenizer.family.as_str(),
            data.meta.tokenizer.pad_id
        ),
        ("opt", 1)
    );
    let train = data.split("train").unwrap();
    assert!((0..train.num_rows()).all(|r| train.input_ids[train.row(r)][0] == 2));
    let art = store.open_artifact(&plan.nodes[2].key).unwrap();
    let device = burn::tensor::Device::flex();
    let pruned = lpeft_model::checkpoint::load(&art.dir, &device).unwrap();
    let e = &pruned.spec.encoder;
    assert_eq!(e.family, lpeft_schema::model::Family::Opt);
    assert!(e.pre_norm && pruned.encoder.final_norm.is_some());
    let heads: usize = e.layers.iter().map(|l| l.heads).sum();
    assert!(heads < 8, "half the heads cut: {:?}", e.layers);
    assert!(matches!(
        pruned.spec.head,
        lpeft_schema::model::TaskHeadSpec::Classification {
            style: lpeft_schema::model::HeadStyle::LastToken,
            ..
        }
    ));
    let input = lpeft_model::testing::random_input(e, 2, 5, 1, &device);
    let lpeft_model::head::HeadOutput::Logits(logits) = pruned.forward(&input).head else {
        panic!("a classification head gives logits")
    };
    assert_eq!(logits.dims(), [2, 2]);
}

#[test]
fn surgery_params_are_checked_and_named() {
    let stage = SurgeryStage;
    let model = shared().join("models/all-MiniLM-L6-v2");
    let err = |p: serde_json::Value| stage.prepare(&p).unwrap_err().to_string();
    assert!(err(serde_json::json!({"model": model, "head_ratio": 1.5})).contains("head_ratio"));
    assert!(err(serde_json::json!({"model": model, "rank_ratio": -0.1})).contains("rank_ratio"));
    assert!(err(serde_json::json!({"model": model, "ffn_scope": "diagonal"})).contains("diagonal"));
    assert!(err(serde_json::json!({"model": model, "ratio": 0.5})).contains("ratio"));
    assert!(err(serde_json::json!({"model": "/nonexistent"})).contains("model"));
    let ok = stage.prepare(&serde_json::json!({"model": model})).unwrap();
    assert!(!ok.backend_sensitive);
    assert_eq!(ok.canonical_params["head_ratio"], 0.333333333);
    assert_eq!(ok.canonical_params["draw_step"], "last");
    assert!(
        ok.canonical_params.get("model").is_none(),
        "paths do not enter the key"
    );
}
