//! The fused libtorch training nodes (`lpeft_model::fused`) against the plain burn operations they
//! replace, on libtorch CPU: the same outputs and the same gradients for every trainable tensor,
//! through pruned shapes (a layer without heads, one without FFN neurons), LoRA on the six
//! projections, adapters, both model families, padding. Run with
//! `cargo test -p lpeft-model --features tch --test fused` (part of `make test-tch`); with
//! `LPEFT_TEST_DEVICE=tch-cuda` on a GPU, which also covers the CUDA attention kernels.
#![cfg(feature = "tch")]

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use common::{max_diff, values};
use lpeft_model::fused::{self, FusedPolicy};
use lpeft_model::head::{HeadOutput, Labels, task_loss};
use lpeft_model::model::Model;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::*;
use lpeft_schema::model::{Activation, Family, HeadStyle, ModelSpec, TaskHeadSpec};

fn spec(family: Family, act: Activation, dropout: f64) -> ModelSpec {
    let layers = [(4, 12), (0, 8), (2, 0)];
    let mut peft = lora_everywhere(layers.len(), 3, dropout);
    peft.extend(adapters_everywhere(1, 2, dropout));
    let mut spec = tiny_spec(
        family,
        &layers,
        TaskHeadSpec::Classification {
            num_labels: 3,
            style: match family {
                Family::Roberta => HeadStyle::RobertaDenseTanh,
                Family::Opt => HeadStyle::LastToken,
                _ => HeadStyle::BertPooler,
            },
        },
        peft,
        false,
    );
    // Head size 8: the size the CUDA attention kernels take.
    spec.encoder.hidden_size = 32;
    spec.encoder.head_dim = 8;
    spec.encoder.hidden_act = act;
    spec.encoder.hidden_dropout = dropout;
    spec.encoder.attention_dropout = dropout;
    spec
}

/// Every gradient, in module order, flattened.
struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let v = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            self.out.push((format!("{:?}", param.id), v));
        }
    }
}

fn logits(out: HeadOutput) -> Tensor<2> {
    let HeadOutput::Logits(l) = out else {
        unreachable!("classification head")
    };
    l
}

/// Loss, logits and all gradients of one training forward/backward.
/// Loss, logits, and every gradient by parameter.
type Step = (f32, Vec<f32>, Vec<(String, Vec<f32>)>);

/// With `all`, the backbone trains too (its weight, bias and LayerNorm gradients are checked).
fn train_step(spec: &ModelSpec, device: &Device, all: bool, policy: FusedPolicy) -> Step {
    let (model, ad) = seeded_model(spec, device, all, policy);
    let (head, loss) = forward_loss(&model, spec, &ad);
    let l = logits(head);
    let loss_v = loss.clone().into_scalar::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut c = Collect {
        grads: &grads,
        out: vec![],
    };
    model.visit(&mut c);
    (loss_v, values(l), c.out)
}

/// Every run's model (seed 3; with `all` the backbone trains too) on an autodiff device whose
/// random stream (dropout) is seeded.
fn seeded_model(
    spec: &ModelSpec,
    device: &Device,
    all: bool,
    policy: FusedPolicy,
) -> (Model, Device) {
    let ad = device.clone().autodiff();
    ad.seed(5);
    let mut model = Model::build(spec, &mut RandomSource { seed: 3 }, &ad).unwrap();
    model.encoder.fused = policy;
    // LoRA B starts at zero; give it values so gradients reach A.
    let model = perturb_lora_b(model);
    let model = if all { train_everything(model) } else { model };
    (model, ad)
}

/// Head output and loss on every run's batch.
fn forward_loss(model: &Model, spec: &ModelSpec, ad: &Device) -> (HeadOutput, Tensor<1>) {
    let input = random_input(&spec.encoder, 4, 9, 2, ad);
    let out = model.forward(&input);
    let labels = Labels::Class(Tensor::<1, Int>::from_ints([0, 1, 2, 1], ad));
    let loss = task_loss(&out.head, &labels);
    (out.head, loss)
}

fn perturb_lora_b(model: Model) -> Model {
    struct Fill;
    impl burn::module::ModuleMapper for Fill {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let t = if t.is_require_grad() && t.to_data().iter::<f32>().all(|v| v == 0.0) {
                let n = t.shape().num_elements();
                let vals: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05).collect();
                Tensor::<D>::from_data(burn::tensor::TensorData::new(vals, t.shape()), &t.device())
                    .require_grad()
            } else {
                t
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    model.map(&mut Fill)
}

fn train_everything(model: Model) -> Model {
    struct All;
    impl burn::module::ModuleMapper for All {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            Param::from_mapped_value(id, t.require_grad(), mapper)
        }
    }
    model.map(&mut All)
}

/// Logits of a forward without autodiff (the inference nodes).
fn inference_logits(spec: &ModelSpec, device: &Device, policy: FusedPolicy) -> Vec<f32> {
    let mut m = Model::build(spec, &mut RandomSource { seed: 3 }, device).unwrap();
    m.encoder.fused = policy;
    values(logits(
        m.forward(&random_input(&spec.encoder, 4, 9, 2, device))
            .head,
    ))
}

/// Each run carries its own [`FusedPolicy`]: plain (`enabled: false`) against fused, at the
/// given GEMM alignment.
#[test]
fn fused_nodes_match_the_plain_operations() {
    // LPEFT_TEST_DEVICE=tch-cuda runs it on a GPU (the CUDA attention kernels).
    let name = std::env::var("LPEFT_TEST_DEVICE").unwrap_or_else(|_| "tch".into());
    let device = lpeft_model::device::device(&name).unwrap();
    assert!(fused::applies(&device));
    // The plain runs really are plain, and the fused ones fused, at the alignment asked for.
    assert_eq!(policy(false, 8).on(&device), None);
    assert_eq!(policy(true, 8).on(&device).map(|f| f.padding(12)), Some(4));
    assert_eq!(policy(true, 1).on(&device).map(|f| f.padding(12)), Some(0));
    // FFN alignment 8 pads the 12-wide FFN to 16 inside the fused nodes (as on CUDA); 1 never.
    for (family, act, all, align) in [
        (Family::Bert, Activation::Gelu, false, 8),
        (Family::Bert, Activation::Gelu, false, 1),
        (Family::Roberta, Activation::Relu, false, 8),
        (Family::Bert, Activation::GeluTanh, false, 1),
        (Family::Roberta, Activation::Gelu, true, 8),
        (Family::Roberta, Activation::Gelu, true, 1),
        // Pre-LayerNorm, causal attention, last-token head: the plain attention core and
        // norms beside fused projections.
        (Family::Opt, Activation::Relu, false, 8),
        (Family::Opt, Activation::Relu, true, 1),
    ] {
        let spec = spec(family, act, 0.0);
        let (plain, on) = (policy(false, align), policy(true, align));
        let (loss_p, logits_p, grads_p) = train_step(&spec, &device, all, plain);
        let plain_inference = inference_logits(&spec, &device, plain);
        let (loss_f, logits_f, grads_f) = train_step(&spec, &device, all, on);
        let fused_inference = inference_logits(&spec, &device, on);
        assert!(
            (loss_p - loss_f).abs() < 1e-5,
            "{family:?}: loss {loss_p} vs {loss_f}"
        );
        assert!(max_diff(&logits_p, &logits_f) < 1e-5, "{family:?}: logits");
        assert!(
            max_diff(&plain_inference, &fused_inference) < 1e-5,
            "{family:?}: inference logits"
        );
        // LoRA (6 per layer with weights; none on the head-less layer's q/k/v), adapter, head.
        assert_eq!(
            grads_p.len(),
            grads_f.len(),
            "{family:?}: tensors with a gradient"
        );
        assert!(
            grads_p.len() >= 16,
            "{family:?}: {} gradients",
            grads_p.len()
        );
        let differing: Vec<String> = grads_p
            .iter()
            .zip(&grads_f)
            .enumerate()
            .filter_map(|(i, ((name, gp), (_, gf)))| {
                let scale = gp.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                let d = max_diff(gp, gf);
                (d / scale >= 1e-4)
                    .then(|| format!("#{i} {name} ({} values): by {d} (max {scale})", gp.len()))
            })
            .collect();
        assert!(
            differing.is_empty(),
            "{family:?}, backbone trained {all}, FFN alignment {align}: {} of {} gradients \
             differ: {differing:#?}",
            differing.len(),
            grads_p.len()
        );
        for (name, gp) in &grads_p {
            assert!(
                gp.iter().any(|v| *v != 0.0),
                "{family:?} {name}: zero gradient"
            );
        }
    }

    masks_and_recording_match(&device);

    // With dropout the stream differs from burn's, but a seed fixes it and dropout acts.
    let on = policy(true, 8);
    let spec = spec(Family::Bert, Activation::Gelu, 0.3);
    let (a, la, _) = train_step(&spec, &device, false, on);
    let (b, lb, gb) = train_step(&spec, &device, false, on);
    assert_eq!((a, &la), (b, &lb), "same seed, same dropout masks");
    let (c, _, _) = train_step(
        &self::spec(Family::Bert, Activation::Gelu, 0.0),
        &device,
        false,
        on,
    );
    assert_ne!(a, c, "dropout changed nothing");
    assert!(gb.iter().all(|(_, g)| g.iter().all(|v| v.is_finite())));

    // Under dropout there is no plain run to compare with (another random stream), so every
    // gradient is checked against the loss itself: with the masks fixed by the seed, the loss's
    // derivative along one tensor's gradient direction u is that gradient's norm (central
    // differences; the absolute floor covers f32 rounding of tiny gradients).
    for all in [false, true] {
        let (_, _, grads) = train_step(&spec, &device, all, on);
        let flat: Vec<Vec<f32>> = grads.iter().map(|(_, g)| g.clone()).collect();
        for (k, (name, g)) in grads.iter().enumerate() {
            let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
            let dir: Vec<Vec<f32>> = flat
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    t.iter()
                        .map(|v| if i == k { v / norm } else { 0.0 })
                        .collect()
                })
                .collect();
            let h = 1e-2;
            let up = loss_shifted(&spec, &device, all, &dir, h, on);
            let down = loss_shifted(&spec, &device, all, &dir, -h, on);
            let slope = (up - down) / (2.0 * h);
            assert!(
                (slope - norm).abs() < 0.02 * norm + 2e-4,
                "dropout, backbone trained {all}, {name}: |∂L| {norm} but the loss changes at {slope}"
            );
        }
    }
}

/// The loss of `train_step`'s model and batch with `t · dir` added to the trainable tensors
/// (module order, as `Collect` lists their gradients).
fn loss_shifted(
    spec: &ModelSpec,
    device: &Device,
    all: bool,
    dir: &[Vec<f32>],
    t: f32,
    policy: FusedPolicy,
) -> f32 {
    struct Shift<'a> {
        dir: &'a [Vec<f32>],
        t: f32,
        next: usize,
    }
    impl burn::module::ModuleMapper for Shift<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, x, mapper) = param.consume();
            if !x.is_require_grad() {
                return Param::from_mapped_value(id, x, mapper);
            }
            let d = &self.dir[self.next];
            self.next += 1;
            let step = burn::tensor::TensorData::new(
                d.iter().map(|v| v * self.t).collect::<Vec<f32>>(),
                x.shape(),
            );
            let device = x.device();
            let moved = (x + Tensor::<D>::from_data(step, &device)).detach();
            Param::from_mapped_value(id, moved.require_grad(), mapper)
        }
    }
    let (model, ad) = seeded_model(spec, device, all, policy);
    let mut shift = Shift { dir, t, next: 0 };
    let model = model.map(&mut shift);
    assert_eq!(shift.next, dir.len(), "one direction per trainable tensor");
    forward_loss(&model, spec, &ad).1.into_scalar::<f32>()
}

/// Estimation's forward (head and neuron masks, norm ratios recorded) through the fused nodes
/// against the plain path: loss, every gradient (the masks' too) and every recorded ratio.
fn masks_and_recording_match(device: &Device) {
    use lpeft_model::peft::NormRatioRecorder;
    let mut spec = spec(Family::Bert, Activation::Gelu, 0.0);
    spec.masks = true;
    let run = |on: bool| {
        let (model, ad) = seeded_model(&spec, device, false, policy(on, 8));
        let model = spread_masks(model);
        let input = random_input(&spec.encoder, 4, 9, 2, &ad);
        let mut rec = NormRatioRecorder::new(&input.attention_mask);
        let out = model.forward_recording(&input, &mut rec);
        let labels = Labels::Class(Tensor::<1, Int>::from_ints([0, 1, 2, 1], &ad));
        let loss = task_loss(&out.head, &labels);
        let loss_v = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut c = Collect {
            grads: &grads,
            out: vec![],
        };
        model.visit(&mut c);
        let ratios: Vec<(String, f32)> = rec
            .ratios()
            .iter()
            .map(|(id, t)| (id.to_string(), t.clone().into_scalar::<f32>()))
            .collect();
        (loss_v, c.out, ratios)
    };
    let (loss_p, grads_p, mut ratios_p) = run(false);
    let (loss_f, grads_f, mut ratios_f) = run(true);
    assert!(
        (loss_p - loss_f).abs() < 1e-5,
        "masked loss {loss_p} vs {loss_f}"
    );
    assert_eq!(
        grads_p.len(),
        grads_f.len(),
        "tensors with a gradient under masks"
    );
    let masks = grads_p
        .iter()
        .filter(|(_, g)| g.len() == 4 || g.len() == 8)
        .count();
    assert!(masks >= 2, "mask gradients present ({masks})");
    for ((name, gp), (_, gf)) in grads_p.iter().zip(&grads_f) {
        let scale = gp.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        assert!(
            max_diff(gp, gf) / scale < 1e-4,
            "masked {name}: gradients differ"
        );
    }
    // The fused path collects its ratios at the end of the forward: compare by module.
    ratios_p.sort_by(|a, b| a.0.cmp(&b.0));
    ratios_f.sort_by(|a, b| a.0.cmp(&b.0));
    let names = |r: &[(String, f32)]| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ratios_p), names(&ratios_f), "modules recorded");
    assert!(ratios_p.len() >= 12, "{} ratios", ratios_p.len());
    for ((name, p), (_, f)) in ratios_p.iter().zip(&ratios_f) {
        assert!(p.is_finite() && *p > 0.0, "{name}: ratio {p}");
        assert!(
            (p - f).abs() <= 1e-5 * (1.0 + p.abs()),
            "{name}: ratio {p} vs {f}"
        );
    }
}

/// Masks away from their initial ones (one value per head and neuron), so that a wrong
/// placement shows in the loss and gradients.
fn spread_masks(model: Model) -> Model {
    struct Spread;
    impl burn::module::ModuleMapper for Spread {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let ones = D == 1 && t.is_require_grad() && t.to_data().iter::<f32>().all(|v| v == 1.0);
            let t = if ones {
                let n = t.shape().num_elements();
                let vals: Vec<f32> = (0..n).map(|i| 0.4 + 0.15 * (i % 5) as f32).collect();
                Tensor::<D>::from_data(burn::tensor::TensorData::new(vals, t.shape()), &t.device())
                    .require_grad()
            } else {
                t
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    model.map(&mut Spread)
}

fn policy(enabled: bool, align: usize) -> FusedPolicy {
    FusedPolicy {
        enabled,
        align: Some(align),
        ..FusedPolicy::default()
    }
}
