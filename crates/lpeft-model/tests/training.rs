//! Training-step behaviour: only PEFT, masks and head train; gradients match finite
//! differences; AdamW/clipping/schedule follow PyTorch's definitions.

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use common::*;
use lpeft_model::checkpoint::named_tensors;
use lpeft_model::model::Model;
use lpeft_model::optim::{AdamW, AdamWConfig, linear_schedule};
use lpeft_model::source::{MapSource, RandomSource, TensorMap};
use lpeft_model::testing::*;
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};

fn rebuild(
    spec: &ModelSpec,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    device: &Device,
) -> Model {
    let map = TensorMap {
        tensors: tensors.into_iter().collect(),
    };
    let mut src = MapSource {
        file: "memory".into(),
        map,
        fill: vec![],
        seed: 0,
        used: vec![],
    };
    Model::build(spec, &mut src, device).unwrap()
}

fn check_gradients(spec: &ModelSpec) {
    let plain = device();
    let ad = plain.clone().autodiff();
    let model = Model::build(spec, &mut AllRandom(5), &ad).unwrap();
    let input = random_input(&spec.encoder, 4, 6, 9, &ad);
    let y = labels(4, &ad);
    let grads = loss(&model, &input, &y).backward();
    let base = named_tensors(&model);

    // (tensor name, flat index) to probe, with its analytic gradient.
    let l0 = &model.encoder.layers[0];
    let l1 = &model.encoder.layers[1];
    let g = |t: Tensor<2>| values(t.grad(&grads).expect("gradient"));
    let g1 = |t: Tensor<1>| values(t.grad(&grads).expect("gradient"));
    let mut probes: Vec<(&str, usize, f32)> = vec![
        (
            "encoder.layers.0.attention.lora_query.a",
            5,
            g(l0.attention.lora_query.as_ref().unwrap().a.val())[5],
        ),
        (
            "encoder.layers.0.attention.lora_query.b",
            7,
            g(l0.attention.lora_query.as_ref().unwrap().b.val())[7],
        ),
        (
            "encoder.layers.1.attention.lora_output.a",
            2,
            g(l1.attention.lora_output.as_ref().unwrap().a.val())[2],
        ),
        (
            "encoder.layers.1.ffn.lora_output.b",
            11,
            g(l1.ffn.lora_output.as_ref().unwrap().b.val())[11],
        ),
        (
            "encoder.layers.0.ffn.adapter.a",
            3,
            g(l0.ffn.adapter.as_ref().unwrap().a.val())[3],
        ),
        (
            "encoder.layers.0.attention.head_mask",
            1,
            g1(l0.attention.head_mask.as_ref().unwrap().val())[1],
        ),
        (
            "encoder.layers.1.ffn.neuron_mask",
            4,
            g1(l1.ffn.neuron_mask.as_ref().unwrap().val())[4],
        ),
        (
            "head.out.weight",
            4,
            g(model.head.out.weight.as_ref().unwrap().val())[4],
        ),
    ];
    // OPT's `score` has no bias.
    if let Some(bias) = &model.head.out.bias {
        probes.push(("head.out.bias", 2, g1(bias.val())[2]));
    }
    let eps = 1e-2f32;
    for (name, idx, analytic) in probes {
        let at = |delta: f32| -> f64 {
            let mut t = base.clone();
            t.get_mut(name).unwrap().1[idx] += delta;
            let m = rebuild(spec, t, &plain);
            let input = random_input(&spec.encoder, 4, 6, 9, &plain);
            f64::from(loss(&m, &input, &labels(4, &plain)).into_scalar::<f32>())
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
        let err = (numeric - f64::from(analytic)).abs();
        assert!(
            err < 2e-3 + 2e-2 * numeric.abs(),
            "{name}[{idx}]: analytic {analytic} vs numeric {numeric}"
        );
    }
}

#[test]
fn gradients_match_finite_differences_bert() {
    check_gradients(&fd_spec(HeadStyle::BertPooler, Family::Bert));
}

#[test]
fn gradients_match_finite_differences_roberta() {
    check_gradients(&fd_spec(HeadStyle::RobertaDenseTanh, Family::Roberta));
}

/// Through MPNet's relative position bias (frozen, like the rest of the backbone).
#[test]
fn gradients_match_finite_differences_mpnet() {
    check_gradients(&fd_spec(HeadStyle::RobertaDenseTanh, Family::Mpnet));
}

/// Through OPT's pre-LayerNorm layers, causal attention and last-token head.
#[test]
fn gradients_match_finite_differences_opt() {
    check_gradients(&fd_spec(HeadStyle::LastToken, Family::Opt));
}

fn is_trainable_name(name: &str) -> bool {
    name.contains("lora_")
        || name.contains("adapter")
        || name.contains("_mask")
        || name.starts_with("head.out")
}

#[test]
fn training_step_trains_only_peft_masks_and_head() {
    let ad = device().autodiff();
    let spec = tiny_spec(
        Family::Bert,
        &[(4, 12), (0, 5), (2, 0)],
        TaskHeadSpec::Classification {
            num_labels: 3,
            style: HeadStyle::BertPooler,
        },
        lora_everywhere(3, 2, 0.1),
        true,
    );
    let mut model = Model::build(&spec, &mut RandomSource { seed: 3 }, &ad).unwrap();
    let before = named_tensors(&model);
    let trainable = before.keys().filter(|k| is_trainable_name(k)).count();
    let input = random_input(&spec.encoder, 4, 8, 1, &ad);
    let y = labels(4, &ad);
    let mut opt = AdamW::new(AdamWConfig::reference(0.0));
    let mut losses = Vec::new();
    for step in 0..25 {
        let l = loss(&model, &input, &y);
        losses.push(l.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(l.backward(), &model);
        assert_eq!(
            grads.len(),
            trainable,
            "gradients exist exactly for the trainable tensors"
        );
        let lr = 5e-2 * linear_schedule(step, 25, 0);
        model = opt.step(model, grads, lr).0;
    }
    assert_eq!(
        opt.state_len(),
        trainable,
        "optimizer state only for trainable tensors"
    );
    let after = named_tensors(&model);
    for (name, (_, v)) in &before {
        let changed = after[name].1 != *v;
        assert_eq!(
            changed,
            is_trainable_name(name),
            "{name}: changed={changed}"
        );
    }
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.7),
        "loss should fall: {losses:?}"
    );
}

#[test]
fn adamw_matches_pytorch_on_one_scalar() {
    // torch.optim.AdamW(lr=0.1, betas=(0.9,0.999), eps=1e-8, weight_decay=0.01) on p=1.0,
    // loss = p^2 (grad 2p), two steps, as printed by torch 2.11: 0.8990000486, 0.7985190749.
    let ad = device().autodiff();
    #[derive(burn::module::Module, Debug)]
    struct One {
        w: burn::module::Param<Tensor<1>>,
    }
    let mut m = One {
        w: burn::module::Param::from_tensor(Tensor::<1>::from_floats([1.0], &ad)),
    };
    let mut opt = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        max_grad_norm: None,
    });
    let mut seen = Vec::new();
    for _ in 0..2 {
        let l = m.w.val().square().sum();
        let g = GradientsParams::from_grads(l.backward(), &m);
        m = opt.step(m, g, 0.1).0;
        seen.push(m.w.val().into_scalar::<f32>());
    }
    assert!((seen[0] - 0.899).abs() < 1e-6, "{seen:?}");
    assert!((seen[1] - 0.798_519_1).abs() < 1e-6, "{seen:?}");
}

#[test]
fn clipping_uses_the_global_norm() {
    let ad = device().autodiff();
    let m = Two::new([3.0], [4.0], &ad);
    // loss = (a^2 + b^2)/2: grads (3, 4), global norm 5.
    let l = (m.a.val().square() + m.b.val().square())
        .sum()
        .div_scalar(2.0);
    let g = GradientsParams::from_grads(l.backward(), &m);
    assert!((lpeft_model::optim::grad_norm(&m, &g) - 5.0).abs() < 1e-5);
    let mut opt = AdamW::new(AdamWConfig::reference(0.0));
    let (_, info) = opt.step(m, g, 0.1);
    assert!(info.clipped && (info.grad_norm - 5.0).abs() < 1e-5);
}

#[test]
fn linear_schedule_is_hf_linear_with_warmup() {
    assert_eq!(linear_schedule(0, 10, 0), 1.0);
    assert_eq!(linear_schedule(5, 10, 0), 0.5);
    assert_eq!(linear_schedule(0, 10, 2), 0.0);
    assert_eq!(linear_schedule(1, 10, 2), 0.5);
    assert_eq!(linear_schedule(2, 10, 2), 1.0);
    assert_eq!(linear_schedule(6, 10, 2), 0.5);
    assert_eq!(linear_schedule(10, 10, 2), 0.0);
}

#[test]
fn trainable_set_of_roberta_head_includes_its_dense() {
    let spec = tiny_spec(
        Family::Roberta,
        &[(2, 8)],
        TaskHeadSpec::Classification {
            num_labels: 2,
            style: HeadStyle::RobertaDenseTanh,
        },
        vec![],
        false,
    );
    let m = Model::build(&spec, &mut RandomSource { seed: 1 }, &device().autodiff()).unwrap();
    let input = random_input(&spec.encoder, 2, 5, 2, &device().autodiff());
    let out = m.forward(&input);
    let lpeft_model::head::HeadOutput::Logits(logits) = out.head else {
        panic!()
    };
    let grads = GradientsParams::from_grads(logits.sum().backward(), &m);
    assert_eq!(
        grads.len(),
        4,
        "head.pooler.{{weight,bias}} and head.out.{{weight,bias}}"
    );
    let _ = m.num_params();
}
