//! The flat multi-tensor AdamW against a per-tensor reference implementation (moved out of
//! training.rs, which had grown past one sitting).

mod common;

use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use common::*;
use lpeft_model::checkpoint::named_tensors;
use lpeft_model::model::Model;
use lpeft_model::optim::{AdamW, AdamWConfig};
use lpeft_model::testing::*;
use lpeft_schema::model::{Family, HeadStyle};

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
