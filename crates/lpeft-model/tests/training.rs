//! Training-step behaviour: only PEFT, masks and head train; gradients match finite
//! differences; AdamW/clipping/schedule follow PyTorch's definitions.

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use lpeft_model::EncoderInput;
use lpeft_model::checkpoint::named_tensors;
use lpeft_model::head::{Labels, task_loss};
use lpeft_model::model::Model;
use lpeft_model::optim::{AdamW, AdamWConfig, linear_schedule};
use lpeft_model::rng::SeededRng;
use lpeft_model::source::{Init, MapSource, RandomSource, Role, TensorMap, WeightSource};
use lpeft_model::testing::*;
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};

const LAMBDA: f64 = 0.05;

fn labels(n: usize, device: &Device) -> Labels {
    let v: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    Labels::Class(Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device))
}

fn loss(model: &Model, input: &EncoderInput, labels: &Labels) -> Tensor<1> {
    let out = model.forward(input);
    let mut l = task_loss(&out.head, labels);
    if let Some(l1) = model.mask_l1() {
        l = l + l1.mul_scalar(LAMBDA);
    }
    l
}

/// Every tensor random (LoRA B too), so every gradient path is exercised.
struct AllRandom(u64);
impl WeightSource for AllRandom {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        _role: Role,
    ) -> Result<Vec<f32>, lpeft_model::ModelError> {
        let n: usize = shape.iter().product();
        let mut rng = SeededRng::derive(self.0, name);
        Ok(match init {
            Init::Ones => rng.normal(n, 1.0, 0.2),
            _ => rng.normal(n, 0.0, 0.4),
        })
    }
}

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

fn fd_spec(style: HeadStyle, family: Family) -> ModelSpec {
    let mut peft = lora_everywhere(2, 3, 0.0);
    peft.extend(adapters_everywhere(2, 2, 0.0));
    tiny_spec(
        family,
        &[(4, 12), (2, 7)],
        TaskHeadSpec::Classification {
            num_labels: 3,
            style,
        },
        peft,
        true,
    )
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
    let probes: Vec<(&str, usize, f32)> = vec![
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
        (
            "head.out.bias",
            2,
            g1(model.head.out.bias.as_ref().unwrap().val())[2],
        ),
    ];
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

/// Two free vectors: the smallest module for optimizer checks.
#[derive(burn::module::Module, Debug)]
struct Two {
    a: burn::module::Param<Tensor<1>>,
    b: burn::module::Param<Tensor<1>>,
}

impl Two {
    fn new<const A: usize, const B: usize>(
        a: [f32; A],
        b: [f32; B],
        device: &burn::tensor::Device,
    ) -> Self {
        let p = |v: Tensor<1>| burn::module::Param::from_tensor(v);
        Two {
            a: p(Tensor::<1>::from_floats(a, device)),
            b: p(Tensor::<1>::from_floats(b, device)),
        }
    }
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

/// The per-tensor AdamW this crate ran before the flat multi-tensor one (state per ParamId,
/// ~15 ops per tensor, norm read to the host before the update): the reference it must equal.
mod per_tensor {
    use std::collections::HashMap;

    use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
    use burn::optim::GradientsParams;
    use burn::tensor::Tensor;
    use lpeft_model::optim::{AdamWConfig, StepInfo};

    pub struct RefAdamW {
        pub config: AdamWConfig,
        step: i32,
        moments: HashMap<ParamId, (Tensor<1>, Tensor<1>)>,
    }

    fn decays(path: &[String]) -> bool {
        !matches!(
            path.last().map(String::as_str),
            Some("bias" | "gamma" | "beta")
        )
    }

    struct GradNorm<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }

    impl ModuleVisitor for GradNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }

    fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
        let mut v = GradNorm { grads, total: None };
        model.visit(&mut v);
        v.total
            .map(|t| f64::from(t.sqrt().into_scalar::<f32>()))
            .unwrap_or(0.0)
    }

    struct Update<'a> {
        opt: &'a mut RefAdamW,
        grads: &'a mut GradientsParams,
        lr: f64,
        grad_scale: f64,
        path: Vec<String>,
        lr_scale: &'a dyn Fn(&[String]) -> f64,
    }

    impl ModuleMapper for Update<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let Some(grad) = self.grads.remove::<D>(id) else {
                return Param::from_mapped_value(id, tensor, mapper);
            };
            let c = self.opt.config;
            let shape = tensor.dims();
            let n: usize = shape.iter().product();
            let require_grad = tensor.is_require_grad();
            let p = tensor.inner().reshape([n]);
            let g = grad.reshape([n]).mul_scalar(self.grad_scale);
            let (m, v) = self
                .opt
                .moments
                .remove(&id)
                .unwrap_or_else(|| (p.zeros_like(), p.zeros_like()));
            let m = m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
            let v = v.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2);
            let t = self.opt.step;
            let bias1 = 1.0 - c.beta1.powi(t);
            let bias2 = 1.0 - c.beta2.powi(t);
            let wd = if decays(&self.path) {
                c.weight_decay
            } else {
                0.0
            };
            let lr = self.lr * (self.lr_scale)(&self.path);
            let denom = v.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(c.eps);
            let p = p.mul_scalar(1.0 - lr * wd) - m.clone().div(denom).mul_scalar(lr / bias1);
            self.opt.moments.insert(id, (m, v));
            let mut updated = Tensor::from_inner(p.reshape(shape));
            if require_grad {
                updated = updated.require_grad();
            }
            Param::from_mapped_value(id, updated, mapper)
        }
    }

    impl RefAdamW {
        pub fn new(config: AdamWConfig) -> Self {
            Self {
                config,
                step: 0,
                moments: HashMap::new(),
            }
        }

        pub fn state_len(&self) -> usize {
            self.moments.len()
        }

        pub fn step_grouped<M: Module>(
            &mut self,
            model: M,
            mut grads: GradientsParams,
            lr: f64,
            lr_scale: &dyn Fn(&[String]) -> f64,
        ) -> (M, StepInfo) {
            self.step += 1;
            let (scale, info) = match self.config.max_grad_norm {
                Some(max) => {
                    let norm = grad_norm(&model, &grads);
                    let coef = max / (norm + 1e-6);
                    (
                        coef.min(1.0),
                        StepInfo {
                            grad_norm: norm,
                            clipped: coef < 1.0,
                        },
                    )
                }
                None => (
                    1.0,
                    StepInfo {
                        grad_norm: f64::NAN,
                        clipped: false,
                    },
                ),
            };
            let mut up = Update {
                opt: self,
                grads: &mut grads,
                lr,
                grad_scale: scale,
                path: Vec::new(),
                lr_scale,
            };
            let model = model.map(&mut up);
            (model, info)
        }
    }

    /// A copy of the gradients of the tensors whose module path `keep` accepts, and those paths.
    pub fn copy_grads<M: Module>(
        model: &M,
        grads: &GradientsParams,
        keep: &dyn Fn(&[String]) -> bool,
    ) -> (GradientsParams, Vec<String>) {
        struct Copy<'a> {
            from: &'a GradientsParams,
            keep: &'a dyn Fn(&[String]) -> bool,
            path: Vec<String>,
            out: GradientsParams,
            paths: Vec<String>,
        }
        impl ModuleVisitor for Copy<'_> {
            fn enter_module(&mut self, name: &str, _container: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.from.get::<D>(param.id)
                    && (self.keep)(&self.path)
                {
                    self.out.register(param.id, g);
                    self.paths.push(self.path.join("."));
                }
            }
        }
        let mut c = Copy {
            from: grads,
            keep,
            path: Vec::new(),
            out: GradientsParams::new(),
            paths: Vec::new(),
        };
        model.visit(&mut c);
        (c.out, c.paths)
    }
}

/// Largest |flat − reference| / max(|reference|, 1e-2) over every tensor of the two models.
fn max_rel_diff(flat: &Model, reference: &Model) -> f64 {
    let (a, b) = (named_tensors(flat), named_tensors(reference));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for (name, (shape, va)) in &a {
        let (shape_b, vb) = &b[name];
        assert_eq!(shape, shape_b, "{name}");
        for (x, y) in va.iter().zip(vb) {
            let (x, y) = (f64::from(*x), f64::from(*y));
            worst = worst.max((x - y).abs() / y.abs().max(1e-2));
        }
    }
    worst
}

#[test]
fn flat_adamw_equals_per_tensor_reference() {
    use per_tensor::{RefAdamW, copy_grads};

    let ad = device().autodiff();
    let spec = fd_spec(HeadStyle::BertPooler, Family::Bert);
    let mut model = Model::build(&spec, &mut AllRandom(5), &ad).unwrap();
    let mut model_ref = model.clone();
    // A second model (other ParamIds) passed to the same optimizers in between.
    let mut other = Model::build(&spec, &mut AllRandom(11), &ad).unwrap();
    let mut other_ref = other.clone();
    let input = random_input(&spec.encoder, 4, 6, 9, &ad);
    let y = labels(4, &ad);

    let config = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        max_grad_norm: None,
    };
    let mut opt = AdamW::new(config);
    let mut opt_ref = RefAdamW::new(config);
    let groups = |head: f64| {
        move |path: &[String]| match path.last().map(String::as_str) {
            Some("head_mask") => head,
            Some("neuron_mask") => 0.5,
            _ => 1.0,
        }
    };
    let all = |_: &[String]| true;
    let no_value_lora_no_head_mask = |path: &[String]| {
        !path.iter().any(|p| p == "lora_value") && path.last().unwrap() != "head_mask"
    };
    // (on the second model, gradients kept, clipping threshold, weight decay, head_mask lr
    //  scale, expected `clipped`)
    type Step<'a> = (
        bool,
        &'a dyn Fn(&[String]) -> bool,
        Option<f64>,
        f64,
        f64,
        bool,
    );
    let none = |_: &[String]| false;
    let plan: Vec<Step> = vec![
        (false, &all, Some(1e-3), 0.1, 3.0, true),
        (false, &all, Some(1e6), 0.1, 3.0, false),
        // Some tensors without gradient: their state waits.
        (false, &no_value_lora_no_head_mask, None, 0.1, 3.0, false),
        (false, &all, Some(0.05), 0.1, 3.0, true),
        // Another model: new tensors; the first model's state waits.
        (true, &all, Some(1e6), 0.1, 3.0, false),
        (false, &all, Some(1e6), 0.3, 2.0, false),
        (
            true,
            &no_value_lora_no_head_mask,
            Some(1e-3),
            0.0,
            2.0,
            true,
        ),
        // No gradient at all: nothing moves.
        (false, &none, Some(1.0), 0.3, 2.0, false),
        (false, &all, Some(1e6), 0.3, 2.0, false),
        // Same layout as the step before, other group, then other decay: the constants follow.
        (false, &all, Some(1e6), 0.05, 4.0, false),
        (false, &all, Some(1e6), 0.2, 4.0, false),
    ];
    let mut seen_paths = Vec::new();
    for (i, &(on_other, keep, max_norm, wd, head_scale, clipped)) in plan.iter().enumerate() {
        opt.config.max_grad_norm = max_norm;
        opt.config.weight_decay = wd;
        opt_ref.config = opt.config;
        let (m, m_ref) = if on_other {
            (&mut other, &mut other_ref)
        } else {
            (&mut model, &mut model_ref)
        };
        let grads = GradientsParams::from_grads(loss(m, &input, &y).backward(), &*m);
        let (g, paths) = copy_grads(&*m, &grads, keep);
        let (g_ref, _) = copy_grads(&*m, &grads, keep);
        seen_paths.extend(paths);
        let lr = 1e-2 * (1.0 + i as f64 / 4.0);
        let (new_m, info) = opt.step_grouped(m.clone(), g, lr, &groups(head_scale));
        let (new_ref, info_ref) =
            opt_ref.step_grouped(m_ref.clone(), g_ref, lr, &groups(head_scale));
        *m = new_m;
        *m_ref = new_ref;

        assert_eq!(info.clipped, info_ref.clipped, "step {i}");
        assert_eq!(info.clipped, clipped, "step {i}: clipping as planned");
        if info_ref.grad_norm.is_nan() {
            assert!(info.grad_norm.is_nan(), "step {i}: {info:?}");
        } else {
            let rel = (info.grad_norm - info_ref.grad_norm).abs() / info_ref.grad_norm.max(1e-12);
            assert!(rel < 1e-5, "step {i}: {info:?} vs {info_ref:?}");
        }
        assert_eq!(opt.state_len(), opt_ref.state_len(), "step {i}");
        for (name, a, b) in [("model", &model, &model_ref), ("other", &other, &other_ref)] {
            let d = max_rel_diff(a, b);
            assert!(
                d < 1e-6,
                "step {i}: {name} differs from the reference by {d:e}"
            );
        }
    }
    // The plan covered decayed and undecayed tensors and a scaled group.
    let last = |p: &String| p.rsplit('.').next().unwrap().to_string();
    assert!(
        seen_paths.iter().any(|p| last(p) == "bias"),
        "{seen_paths:?}"
    );
    assert!(seen_paths.iter().any(|p| last(p) == "head_mask"));
    assert!(seen_paths.iter().any(|p| p.contains("lora_query")));
    // The models moved: the comparison is not between untouched copies.
    let start = Model::build(&spec, &mut AllRandom(5), &ad).unwrap();
    assert!(max_rel_diff(&model, &start) > 1e-3);
}

#[test]
fn flat_adamw_handles_a_nan_gradient_like_the_reference() {
    // A NaN norm: the reference scaled by min(NaN, 1) = 1, so only the NaN element is lost.
    use per_tensor::RefAdamW;
    let ad = device().autodiff();
    let m = Two::new([1.0, 2.0], [3.0], &ad);
    let (id_a, id_b) = (m.a.id, m.b.id);
    let grads = || {
        let mut g = GradientsParams::new();
        g.register(id_a, Tensor::<1>::from_floats([f32::NAN, 0.5], &device()));
        g.register(id_b, Tensor::<1>::from_floats([2.0], &device()));
        g
    };
    let config = AdamWConfig::reference(0.01);
    let (flat, info) = AdamW::new(config).step(m.clone(), grads(), 0.1);
    let (reference, info_ref) = RefAdamW::new(config).step_grouped(m, grads(), 0.1, &|_| 1.0);
    assert!(info.grad_norm.is_nan() && info_ref.grad_norm.is_nan());
    assert_eq!(info.clipped, info_ref.clipped);
    let v = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    for (x, y) in [
        (flat.a.val(), reference.a.val()),
        (flat.b.val(), reference.b.val()),
    ] {
        let (x, y) = (v(x), v(y));
        for (p, q) in x.iter().zip(&y) {
            assert!(
                p.is_nan() == q.is_nan() && (p.is_nan() || p == q),
                "{x:?} vs {y:?}"
            );
        }
    }
}
