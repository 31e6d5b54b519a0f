//! AdamW exactly as PyTorch/HF run it: decoupled weight decay (not on biases or LayerNorm),
//! bias-corrected moments, global-norm gradient clipping over all trainable tensors, and HF's
//! linear schedule with warm-up. Frozen tensors have no gradient and so no optimizer state.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global-norm clipping threshold (HF `max_grad_norm`); `None` disables clipping.
    pub max_grad_norm: Option<f64>,
}

impl AdamWConfig {
    /// The reference's settings: β (0.9, 0.999), ε 1e-8, clipping at 1.0.
    pub fn reference(weight_decay: f64) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            max_grad_norm: Some(1.0),
        }
    }
}

/// HF `get_linear_schedule_with_warmup`: factor for the update that follows `step` completed ones.
pub fn linear_schedule(step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    (total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64
}

pub struct AdamW {
    pub config: AdamWConfig,
    step: i32,
    moments: HashMap<ParamId, (Tensor<1>, Tensor<1>)>,
}

/// Whether decay applies to the tensor at this module path.
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

/// Global L2 norm of all gradients (one device read).
pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = GradNorm { grads, total: None };
    model.visit(&mut v);
    v.total
        .map(|t| f64::from(t.sqrt().into_scalar::<f32>()))
        .unwrap_or(0.0)
}

struct Update<'a> {
    opt: &'a mut AdamW,
    grads: &'a mut GradientsParams,
    lr: f64,
    grad_scale: f64,
    path: Vec<String>,
    /// Multiplier of `lr` for the tensor at a module path (PyTorch parameter groups).
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

/// What one optimizer step saw.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    pub grad_norm: f64,
    pub clipped: bool,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// Number of tensors with optimizer state (== trainable tensors that received a gradient).
    pub fn state_len(&self) -> usize {
        self.moments.len()
    }

    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, lr: f64) -> (M, StepInfo) {
        self.step_grouped(model, grads, lr, &|_| 1.0)
    }

    /// [`AdamW::step`] with a learning rate of `lr · lr_scale(path)` for the tensor at each
    /// module path (e.g. the reference's mask groups, spec §2.4); decay uses the same rate.
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
