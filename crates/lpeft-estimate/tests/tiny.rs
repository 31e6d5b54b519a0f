//! End-to-end estimation on a tiny random model and a tiny dataset written here: the artifact
//! files exist and read back, masks move under L1, scores have the documented shapes, and a
//! pruned model drawn from the artifact loads back identically.

use burn::tensor::Device;

use lpeft_data::encode::{Labels as DataLabels, SplitTensors};
use lpeft_data::{BatchConfig, Batcher, Padding};
use lpeft_estimate::artifact::{self, EstimateArtifact, Window};
use lpeft_estimate::config::{EstimateConfig, PaddingSpec, PeftConfig, StepsSpec};
use lpeft_estimate::run::{estimate, estimation_spec};
use lpeft_estimate::stage::write_artifact;
use lpeft_model::model::Model;
use lpeft_model::rng::SeededRng;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::tiny_encoder;
use lpeft_schema::dataset::TaskKind;
use lpeft_schema::model::Family;

/// 24 rows of 3..9 random tokens; the label is whether token 5 occurs (learnable).
fn tiny_split() -> SplitTensors {
    let mut rng = SeededRng::new(3);
    let (mut ids, mut types, mut offsets, mut labels) = (vec![], vec![], vec![0u64], vec![]);
    for _ in 0..24 {
        let len = 3 + (rng.next_u64() % 7) as usize;
        let row: Vec<u32> = (0..len).map(|_| 2 + (rng.next_u64() % 30) as u32).collect();
        labels.push(i64::from(row.contains(&5)));
        ids.extend(&row);
        types.extend(std::iter::repeat_n(0u8, len));
        offsets.push(ids.len() as u64);
    }
    let n = labels.len();
    SplitTensors {
        input_ids: ids,
        type_ids: types,
        offsets,
        group_ids: (0..n as u32).collect(),
        example_ids: (0..n as u32).collect(),
        labels: DataLabels::Class(labels),
        token_spans: None,
        num_truncated: 0,
    }
}

fn config(peft: PeftConfig) -> EstimateConfig {
    serde_json::from_value::<EstimateConfig>(serde_json::json!({ "model": "unused" }))
        .map(|c| EstimateConfig {
            peft,
            steps: StepsSpec::EpochFraction(4.0),
            batch_size: 8,
            lr: 2e-2,
            l1: 1e-2,
            record_every: 4,
            padding: PaddingSpec::Longest,
            ..c
        })
        .unwrap()
}

fn run(peft: PeftConfig, dir: &std::path::Path) -> (EstimateArtifact, Model) {
    let split = tiny_split();
    let kind = TaskKind::Classification { num_labels: 2 };
    let cfg = config(peft);
    cfg.validate().unwrap();
    let bcfg = BatchConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        seed: 1,
        drop_last: false,
        padding: Padding::Longest,
        pad_id: 0,
    };
    let batcher = Batcher::new(&split, &kind, bcfg).unwrap();
    let steps = cfg.steps.resolve(batcher.num_batches());
    assert_eq!(steps, 12, "4 epochs of 3 batches");
    let device = Device::flex().autodiff();
    device.seed(5);
    let spec = estimation_spec(
        tiny_encoder(Family::Bert, &[(4, 8), (4, 8)]),
        &kind,
        &cfg.peft,
    );
    let model = Model::build(&spec, &mut RandomSource { seed: 1 }, &device).unwrap();
    let mut seen = 0;
    let out = estimate(model, &batcher, &cfg, steps, &device, &mut |_| seen += 1).unwrap();
    assert_eq!(seen, steps);
    let (summary, agg) =
        write_artifact(dir, &cfg, &out, batcher.num_batches(), "hash".into()).unwrap();
    assert_eq!(summary.steps, 12);
    assert_eq!((agg.from, agg.to), (6, 12), "second half of 12 steps");
    (EstimateArtifact::open(dir).unwrap(), out.model)
}

#[test]
fn lora_estimation_writes_a_complete_artifact_and_masks_move() {
    let dir = tempfile::tempdir().unwrap();
    let lora = PeftConfig::Lora {
        rank: 4,
        alpha: 8.0,
        dropout: 0.05,
        targets: lpeft_schema::model::LoraTarget::ALL.to_vec(),
    };
    let (art, model) = run(lora, dir.path());
    for f in [
        artifact::MASKS_FILE,
        artifact::SCORES_FILE,
        artifact::SCORES_INDEX_FILE,
        artifact::SCORES_JSON,
        artifact::PEFT_STATE_FILE,
        artifact::CURVE_FILE,
        artifact::SUMMARY_FILE,
        artifact::CONFIG_FILE,
        "model.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} is written");
    }
    // Records at step 0, every 4 steps and at the end.
    assert_eq!(art.masks.record_steps, vec![0, 4, 8, 12]);
    assert_eq!(
        (art.masks.layers, art.masks.heads, art.masks.ffn),
        (2, 4, 8)
    );
    assert!(
        art.masks.head[..8].iter().all(|&m| m == 1.0),
        "masks start at 1"
    );
    let last = art.masks.records() - 1;
    let moved = |v: Vec<Vec<f32>>| {
        v.into_iter()
            .flatten()
            .map(|m| (m - 1.0).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(moved(art.masks.heads_at(last)) > 1e-2, "head masks move");
    assert!(moved(art.masks.ffn_at(last)) > 1e-2, "FFN masks move");
    // The summary's mask statistics agree with the trajectory.
    assert_eq!(art.summary.masks.len(), 4);
    assert!(art.summary.masks[3].head_mean_abs_change > 0.0);

    // 12 modules (6 per layer), rank 4, one row per step.
    assert_eq!(art.scores.index.modules.len(), 12);
    assert_eq!(art.scores.index.rank, 4);
    assert_eq!(art.scores.p2.len(), 12 * 12);
    assert_eq!(art.scores.taylor.len(), 12 * 12 * 4);
    // LoRA B starts at 0: step 0 has p2 = 0 and A's Taylor term 0; later steps do not.
    assert!(art.scores.p2[..12].iter().all(|&v| v == 0.0));
    assert!(art.scores.p2[12 * 11..].iter().all(|&v| v > 0.0));
    let agg = lpeft_estimate::aggregate(&art.scores, Window::Range { from: 0, to: 12 }).unwrap();
    assert!(
        agg.modules
            .iter()
            .all(|m| m.module_score > 0.0 && m.rank_scores.len() == 4)
    );
    assert!(lpeft_estimate::aggregate(&art.scores, Window::Range { from: 5, to: 13 }).is_err());

    // Warm-start state: PEFT, head classifier and masks, no frozen backbone.
    assert!(art.warm.contains_key("encoder.layers.1.ffn.lora_output.b"));
    assert!(art.warm.contains_key("head.out.weight"));
    assert!(
        art.warm
            .contains_key("encoder.layers.0.attention.head_mask")
    );
    assert!(
        !art.warm
            .keys()
            .any(|k| k.contains("attention.query.weight") || k.starts_with("head.pooler"))
    );
    assert_eq!(art.spec, model.spec);

    // Curve: one entry per step, finite losses, lr decaying linearly to 0.
    let curve: Vec<serde_json::Value> =
        artifact::read_json(&dir.path().join(artifact::CURVE_FILE)).unwrap();
    assert_eq!(curve.len(), 12);
    assert!((curve[0]["lr"].as_f64().unwrap() - 2e-2).abs() < 1e-12);
    assert!(curve[11]["lr"].as_f64().unwrap() < 2e-2 / 10.0);
}

#[test]
fn adapter_estimation_records_two_modules_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let adapters = PeftConfig::Adapter {
        size: 3,
        dropout: 0.1,
        scale: 1.0,
        sites: vec![
            lpeft_schema::model::AdapterSite::Attention,
            lpeft_schema::model::AdapterSite::Ffn,
        ],
    };
    let (art, _) = run(adapters, dir.path());
    assert_eq!(art.scores.index.modules.len(), 4);
    assert_eq!(art.scores.index.rank, 3);
    assert!(
        art.scores.p2.iter().all(|v| v.is_finite() && *v > 0.0),
        "adapters start non-zero"
    );
}

#[test]
fn bad_params_name_the_field() {
    use lpeft_pipeline::stage::Stage;
    let stage = lpeft_estimate::EstimateStage;
    let err = |p: serde_json::Value| stage.prepare(&p).unwrap_err().to_string();
    let model = "../../../shared/models/all-MiniLM-L6-v2";
    assert!(err(serde_json::json!({"model": model, "batch_size": 0})).contains("batch_size"));
    assert!(err(serde_json::json!({"model": model, "steps": {"steps": 0}})).contains("steps"));
    assert!(
        err(serde_json::json!({"model": model, "attn_mask_lr_coef": -1.0}))
            .contains("attn_mask_lr_coef")
    );
    assert!(err(serde_json::json!({"model": model, "lr_typo": 1})).contains("lr_typo"));
    assert!(err(serde_json::json!({"model": "/nonexistent"})).contains("model"));
    assert!(
        err(serde_json::json!({"model": model, "peft": {"kind": "lora", "rank": 0}}))
            .contains("peft.rank")
    );
    let fraction = |f: f64, e: f64| serde_json::json!({"model": model, "steps": {"finetune_fraction": {"fraction": f, "epochs": e}}});
    assert!(err(fraction(1.5, 10.0)).contains("steps.finetune_fraction.fraction"));
    assert!(err(fraction(0.1, 0.0)).contains("steps.finetune_fraction.epochs"));
    assert!(stage.prepare(&fraction(0.1, 10.0)).is_ok());
}

#[test]
fn estimation_length_resolves_against_the_epoch() {
    use lpeft_estimate::config::StepsSpec;
    assert_eq!(StepsSpec::Steps(800).resolve(180), 800);
    assert_eq!(StepsSpec::EpochFraction(0.5).resolve(181), 91);
    // A tenth of a 10-epoch fine-tune is one epoch; of a 3-epoch one, 0.3 of an epoch.
    let f = |fraction, epochs| StepsSpec::FinetuneFraction { fraction, epochs };
    assert_eq!(f(0.1, 10.0).resolve(180), 180);
    assert_eq!(f(0.1, 3.0).resolve(2105), 632);
    // pipelines/speed.ron's `roberta-base-sst2-paper`: the reference's 800 steps of SST-2
    // (2,105 batches of 32 an epoch) before its 10-epoch fine-tune.
    assert_eq!(f(0.038, 10.0).resolve(2105), 800);
    assert_eq!(f(0.01, 1.0).resolve(3), 1, "at least one step");
}

#[test]
fn keys_on_libtorch_carry_the_fused_nodes_version() {
    use lpeft_pipeline::plan::stage_backend_class;
    let stage = lpeft_estimate::EstimateStage;
    // CUDA runs capture their steps as graphs unless LPEFT_CUDA_GRAPHS=off (whatever this build
    // can do, so that a report planned here resolves the keys of GPU runs).
    // Estimation also says how its fused projections record norm ratios (`-ratio2`).
    let cuda = if std::env::var("LPEFT_CUDA_GRAPHS").as_deref() == Ok("off") {
        "tch-cuda+fused3-ratio2"
    } else {
        "tch-cuda+fused3-graph1-ratio2"
    };
    let fp32 = serde_json::json!({ "steps": 10 });
    assert_eq!(stage_backend_class(&stage, "tch-cuda:1", &fp32), cuda);
    assert_eq!(
        stage_backend_class(&stage, "tch", &fp32),
        "tch+fused3-ratio2"
    );
    assert_eq!(stage_backend_class(&stage, "flex", &fp32), "flex");
    // bf16-mixed on CUDA runs the add-norm kernels, whose bits differ: its own tag.
    let bf16 = serde_json::json!({ "steps": 10, "precision": "bf16-mixed" });
    let cuda_bf16 = format!("{cuda}-mixed2");
    assert_eq!(stage_backend_class(&stage, "tch-cuda", &bf16), cuda_bf16);
    assert_eq!(
        stage_backend_class(&stage, "tch", &bf16),
        "tch+fused3-ratio2"
    );
    // So does TF32 (the kernels over f32 x), and fp32 keeps libtorch's operations.
    let tf32 = serde_json::json!({ "precision": "tf32" });
    let cuda_tf32 = format!("{cuda}-norm1");
    assert_eq!(stage_backend_class(&stage, "tch-cuda", &tf32), cuda_tf32);
}
