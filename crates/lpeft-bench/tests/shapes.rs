//! The bench's shape table and its OPT rows: the OPT shapes are the facebook/opt-* configs,
//! a parameter count worked out from the spec matches the built model on opt-tiny (so it can
//! say what opt-6.7b holds in bf16 without building it), and opt-tiny's sequence
//! classification and causal-LM rows run end to end on flex.

use burn::module::Module;
use lpeft_bench::{FfnWidths, encoder, model_spec, run};
use lpeft_schema::model::{Activation, Family, LoraTarget, ModelSpec, PeftSite, TaskHeadSpec};

/// Parameters of `spec`, counted from the shapes (OPT: learned positions, pre-LN with a final
/// LayerNorm, biased projections, last-token `score` without bias, LoRA `r · (in + out)`).
fn opt_params(spec: &ModelSpec) -> usize {
    let e = &spec.encoder;
    let h = e.hidden_size;
    let mut n = e.vocab_size * h + e.max_position_embeddings * h + 2 * h;
    for l in &e.layers {
        let a = l.heads * e.head_dim;
        n += 3 * (h * a + a) + (a * h + h) + (h * l.ffn + l.ffn) + (l.ffn * h + h) + 4 * h;
    }
    if let TaskHeadSpec::Classification { num_labels, .. } = spec.head {
        n += num_labels * h;
    }
    for m in &spec.peft {
        let l = &e.layers[m.id.layer];
        let a = l.heads * e.head_dim;
        let (d_in, d_out) = match m.id.site {
            PeftSite::Lora(LoraTarget::Query | LoraTarget::Key | LoraTarget::Value) => (h, a),
            PeftSite::Lora(LoraTarget::AttnOut) => (a, h),
            PeftSite::Lora(LoraTarget::FfnIn) => (h, l.ffn),
            PeftSite::Lora(LoraTarget::FfnOut) => (l.ffn, h),
            PeftSite::Adapter(_) => unreachable!("LoRA only"),
        };
        n += m.rank * (d_in + d_out);
    }
    n
}

#[test]
fn opt_shapes_are_the_hub_configs() {
    for (name, layers, hidden, ffn) in [("opt-1.3b", 24, 2048, 8192), ("opt-6.7b", 32, 4096, 16384)]
    {
        let e = encoder(name).unwrap();
        assert_eq!(e.family, Family::Opt);
        assert_eq!(
            (e.layers.len(), e.hidden_size, e.vocab_size),
            (layers, hidden, 50272)
        );
        assert!(e.layers.iter().all(|l| l.heads == 32 && l.ffn == ffn));
        assert_eq!(e.head_dim * 32, hidden);
        assert_eq!(
            e.max_position_embeddings,
            2048 + 2,
            "learned positions offset by 2"
        );
        assert!(e.pre_norm);
        assert_eq!(e.hidden_act, Activation::Relu);
        assert_eq!((e.type_vocab_size, e.pad_token_id), (0, 1));
        assert_eq!((e.hidden_dropout, e.attention_dropout), (0.1, 0.0));
    }
    assert!(
        encoder("opt-13b")
            .unwrap_err()
            .to_string()
            .contains("opt-6.7b")
    );
}

#[test]
fn the_counted_parameters_are_the_built_models_and_say_what_opt_6_7b_holds() {
    let device = burn::tensor::Device::flex();
    for peft in ["lora-all", "light-lora", "light-r2", "none"] {
        let spec = model_spec("opt-tiny", peft, FfnWidths::Uniform).unwrap();
        let model = lpeft_model::model::Model::build(
            &spec,
            &mut lpeft_bench::BenchSource { seed: 0 },
            &device,
        )
        .unwrap();
        assert_eq!(model.num_params(), opt_params(&spec), "{peft}");
    }
    // The pruned shape: a third of the heads and FFN neurons off every layer.
    let light = model_spec("opt-6.7b", "light-lora", FfnWidths::Uniform).unwrap();
    assert!(
        light
            .encoder
            .layers
            .iter()
            .all(|l| l.heads == 22 && l.ffn == 10923)
    );
    assert_eq!(light.peft.len(), 32 * 6 / 4);
    let full = opt_params(&model_spec("opt-6.7b", "lora-all", FfnWidths::Uniform).unwrap());
    let small = opt_params(&model_spec("opt-1.3b", "lora-all", FfnWidths::Uniform).unwrap());
    assert!((6.6e9..6.8e9).contains(&(full as f64)), "{full}");
    assert!((1.3e9..1.4e9).contains(&(small as f64)), "{small}");
    // bf16-pure: 2 bytes a weight on the device, 12.4 GiB of an H200's 139.
    let gib = (2 * full) as f64 / (1u64 << 30) as f64;
    assert!(gib < 12.5, "{gib}");
}

fn rows(args: &[&str]) -> Vec<serde_json::Value> {
    let argv = [
        "lpeft-bench",
        "--backend",
        "flex",
        "--batch",
        "2",
        "--seq",
        "12",
    ];
    let argv = argv.iter().chain(args).copied();
    run(argv, &mut |_| {}).unwrap()
}

#[test]
fn opt_tiny_rows_run_for_both_tasks() {
    let base = [
        "--shape",
        "opt-tiny",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--inference",
    ];
    let lm = rows(&[&base[..], &["--task", "causal-lm", "--peft", "lora-all"]].concat());
    assert_eq!(lm.len(), 2);
    assert_eq!(
        (lm[0]["phase"].as_str(), lm[1]["phase"].as_str()),
        (Some("train"), Some("inference"))
    );
    assert_eq!(lm[0]["task"], "causal-lm");
    // 2 layers x 6 modules x (A, B); the classification head gets no gradient.
    assert_eq!(lm[0]["trainable_tensors"], 24);
    // Random weights: next-token loss near ln(512).
    let loss = lm[0]["params"]["last_loss"].as_f64().unwrap();
    assert!((loss - 512f64.ln()).abs() < 1.0, "{loss}");
    let spec = model_spec("opt-tiny", "lora-all", FfnWidths::Uniform).unwrap();
    assert_eq!(lm[0]["params"]["total"], opt_params(&spec));

    let cls = rows(&[&base[..], &["--peft", "light-lora"]].concat());
    assert_eq!(cls[0]["task"], "seq-cls");
    // Three of the twelve modules, and the last-token score.
    assert_eq!(cls[0]["trainable_tensors"], 3 * 2 + 1);
    let loss = cls[0]["params"]["last_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
}

#[test]
fn rows_that_cannot_run_are_refused_by_name() {
    let argv = |extra: &[&str]| {
        let mut v = vec![
            "lpeft-bench",
            "--backend",
            "flex",
            "--iters",
            "1",
            "--warmup",
            "0",
        ];
        v.extend_from_slice(extra);
        run(v, &mut |_| {}).unwrap_err().to_string()
    };
    let e = argv(&["--shape", "minilm", "--task", "causal-lm"]);
    assert!(e.contains("causal-lm") && e.contains("opt-1.3b"), "{e}");
    let e = argv(&["--shape", "opt-tiny", "--seq", "2049"]);
    assert!(e.contains("2048 positions"), "{e}");
    let e = argv(&[
        "--shape",
        "opt-tiny",
        "--task",
        "causal-lm",
        "--graphs",
        "on",
    ]);
    assert!(e.contains("causal-LM"), "{e}");
    let e = argv(&[
        "--shape",
        "opt-tiny",
        "--task",
        "causal-lm",
        "--step",
        "estimate",
    ]);
    assert!(e.contains("causal-LM"), "{e}");
}

/// `--step estimate` times the estimation stage's step: the same shape with a mask on every
/// head and FFN neuron, through the pipeline's trainer; `--step finetune` the trainer's
/// fine-tune step, and no `--step` the bench's own loop.
#[test]
fn the_estimation_step_carries_a_mask_on_every_head_and_neuron() {
    let base = [
        "--shape", "opt-tiny", "--peft", "lora-all", "--iters", "2", "--warmup", "0",
    ];
    let step = |s: Option<&str>| {
        let extra: Vec<&str> = s.map(|s| vec!["--step", s]).unwrap_or_default();
        let r = rows(&[&base[..], &extra].concat());
        assert_eq!(r.len(), 1);
        r[0].clone()
    };
    let (own, ft, est) = (step(None), step(Some("finetune")), step(Some("estimate")));
    assert_eq!(
        (own["step"].clone(), ft["step"].clone(), est["step"].clone()),
        (
            serde_json::Value::Null,
            "finetune".into(),
            "estimate".into()
        )
    );
    // opt-tiny: 2 layers of 4 heads and 256 neurons.
    let total = |r: &serde_json::Value| r["params"]["total"].as_u64().unwrap();
    assert_eq!(total(&est) - total(&ft), 2 * (4 + 256));
    assert_eq!(total(&ft), total(&own));
    for r in [&ft, &est] {
        let times = r["times_s"].as_array().unwrap();
        assert_eq!(times.len(), 2);
        assert!(times.iter().all(|t| t.as_f64().unwrap() > 0.0));
    }
}

#[test]
fn pruned_ffn_widths_uniform_irregular_and_multiple_of_8() {
    let widths = |w| -> Vec<usize> {
        model_spec("opt-1.3b", "light-lora", w)
            .unwrap()
            .encoder
            .layers
            .iter()
            .map(|l| l.ffn)
            .collect()
    };
    assert!(widths(FfnWidths::Uniform).iter().all(|&f| f == 5462));
    assert!(widths(FfnWidths::Multiple8).iter().all(|&f| f == 5464));
    let irregular = widths(FfnWidths::Irregular);
    assert_eq!(&irregular[..4], &[5461, 5458, 5455, 5452]);
    assert!(irregular.iter().all(|f| f % 8 != 0));
    // roberta-base's uniform cut is a multiple of 8 already.
    let base = model_spec("roberta-base", "light-lora", FfnWidths::Multiple8).unwrap();
    assert!(base.encoder.layers.iter().all(|l| l.ffn == 2048));
}
