//! AdamW exactly as PyTorch/HF run it: decoupled weight decay (not on biases or LayerNorm),
//! bias-corrected moments, global-norm gradient clipping over all trainable tensors, and HF's
//! linear schedule with warm-up. Frozen tensors have no gradient and so no optimizer state.
//!
//! Multi-tensor: a step concatenates every tensor that has a gradient (and the gradients) into
//! one flat buffer, clips and updates that buffer with a fixed handful of element-wise ops, and
//! slices the result back into the tensors; the moments are kept in the same flat layout. The
//! gradient norm stays on the device until the whole update is issued, then is read once.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData};

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
    /// Layout of `moments`: the tensors that had a gradient at the last step, in visit order.
    slots: Vec<Slot>,
    /// First and second moments of `slots`, concatenated (`None` before the first update).
    moments: Option<(Tensor<1>, Tensor<1>)>,
    /// Moments of tensors that had a gradient at an earlier step but not at the last one.
    parked: HashMap<ParamId, (Tensor<1>, Tensor<1>)>,
    /// Per-element multipliers and the slots and weight decay they were built for.
    mults: Option<Multipliers>,
    /// Graph mode ([`AdamW::use_device_scalars`]): `[lr/(1−β₁ᵗ), 1/√(1−β₂ᵗ), lr]` on the device.
    scalars: Option<Tensor<1>>,
}

/// Whether decay applies to the tensor at this module path.
fn decays(path: &[String]) -> bool {
    !matches!(
        path.last().map(String::as_str),
        Some("bias" | "gamma" | "beta")
    )
}

/// Every gradient of `model`'s float tensors, flattened, in visit order.
struct FlatGrads<'a> {
    grads: &'a GradientsParams,
    flat: Vec<Tensor<1>>,
}

impl ModuleVisitor for FlatGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
        }
    }
}

/// `‖g‖₂` of a flat buffer, summed in f32 whatever `g`'s float type, left on the device.
fn l2_norm(g: Tensor<1>) -> Tensor<1> {
    to_dtype(g.square().sum(), DType::F32).sqrt()
}

/// Global L2 norm of all gradients (one device read).
pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = FlatGrads {
        grads,
        flat: Vec::new(),
    };
    model.visit(&mut v);
    if v.flat.is_empty() {
        return 0.0;
    }
    let dtype = v.flat[0].dtype();
    let g = Tensor::cat(v.flat.into_iter().map(|t| to_dtype(t, dtype)).collect(), 0);
    f64::from(l2_norm(g).into_scalar::<f32>())
}

/// One tensor of a step's flat buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    id: ParamId,
    numel: usize,
    /// `lr_scale(path)`: multiplier of the learning rate (and so of the decay) of this tensor.
    lr_scale: f64,
    /// Whether weight decay applies (not to `bias`, `gamma`, `beta`).
    decays: bool,
}

/// A multiplier of the flat buffers: one value for every element, or one value per element.
#[derive(Clone)]
enum Mult {
    Uniform(f64),
    PerElement(Box<Tensor<1>>),
}

impl Mult {
    /// `value(slot)` over each slot's elements; a scalar when all slots share it.
    fn new(slots: &[Slot], value: impl Fn(&Slot) -> f64, device: &Device, dtype: DType) -> Self {
        let first = slots.first().map(&value).unwrap_or(0.0);
        if slots.iter().all(|s| value(s) == first) {
            return Mult::Uniform(first);
        }
        let total = slots.iter().map(|s| s.numel).sum::<usize>();
        let mut data = Vec::with_capacity(total);
        for s in slots {
            data.extend(std::iter::repeat_n(value(s) as f32, s.numel));
        }
        Mult::PerElement(Box::new(Tensor::from_data(
            TensorData::new(data, [total]),
            (device, dtype),
        )))
    }
}

/// Constants of a layout: `lr_mult` = lr_scale, `decay_mult` = lr_scale · weight_decay where
/// decay applies (0 elsewhere); rebuilt only when the slots or the weight decay change.
struct Multipliers {
    slots: Vec<Slot>,
    weight_decay: f64,
    lr_mult: Mult,
    decay_mult: Mult,
}

/// Gathers, in visit order, each float tensor with a gradient: its slot, flat value, flat grad.
struct Collect<'a> {
    grads: &'a mut GradientsParams,
    lr_scale: &'a dyn Fn(&[String]) -> f64,
    path: Vec<String>,
    slots: Vec<Slot>,
    values: Vec<Tensor<1>>,
    grads_flat: Vec<Tensor<1>>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Removed, so a tensor reached twice is updated once (as the per-tensor mapper did).
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let value = param.val();
        let numel = value.shape().num_elements();
        if numel == 0 {
            // Nothing to update, and no state to keep.
            return;
        }
        self.slots.push(Slot {
            id: param.id,
            numel,
            lr_scale: (self.lr_scale)(&self.path),
            decays: decays(&self.path),
        });
        self.values.push(value.inner().reshape([numel]));
        self.grads_flat.push(grad.inner().reshape([numel]));
    }
}

/// Puts the updated flat pieces back into the tensors they came from.
struct Apply {
    updated: HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Apply {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(flat) = self.updated.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let dtype = tensor.dtype();
        let mut updated = Tensor::from_inner(to_dtype(flat, dtype).reshape(tensor.dims()));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// `t` cast to `dtype` (no op when it already has it).
fn to_dtype(t: Tensor<1>, dtype: DType) -> Tensor<1> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// Whether two slot lists lay the flat buffers out the same way (same tensors, same sizes).
fn same_layout(a: &[Slot], b: &[Slot]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && x.numel == y.numel)
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
            slots: Vec::new(),
            moments: None,
            parked: HashMap::new(),
            mults: None,
            scalars: None,
        }
    }

    /// Graph mode: the step's learning rate and bias corrections are read from `scalars`
    /// (`[3]` on the device, written by the caller before each step with
    /// [`AdamW::step_scalars`]) instead of being constants of the kernels, so that one
    /// captured step can be replayed at every learning rate and step count. Results differ from
    /// the constant form in the last bits (products formed in f32 on the device).
    pub fn use_device_scalars(&mut self, scalars: Tensor<1>) {
        self.scalars = Some(scalars);
    }

    /// The values graph mode reads for the next step at learning rate `lr`.
    pub fn step_scalars(&self, lr: f64) -> [f32; 3] {
        let t = self.step + 1;
        let c = self.config;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        [(lr / bias1) as f32, (1.0 / bias2.sqrt()) as f32, lr as f32]
    }

    /// Counts a step that ran without this code (a replayed graph of it).
    pub fn count_replayed_step(&mut self) {
        self.step += 1;
    }

    /// The flat first and second moments (`None` before the first update), sharing storage.
    pub fn moments(&self) -> Option<(Tensor<1>, Tensor<1>)> {
        self.moments.clone()
    }

    /// Replaces the flat moments (same layout): a graph's step wrote them back there.
    pub fn set_moments(&mut self, m: Tensor<1>, v: Tensor<1>) {
        self.moments = Some((m, v));
    }

    /// Number of tensors with optimizer state (== trainable tensors that received a gradient;
    /// a tensor of zero elements keeps none).
    pub fn state_len(&self) -> usize {
        self.slots.len() + self.parked.len()
    }

    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, lr: f64) -> (M, StepInfo) {
        self.step_grouped(model, grads, lr, &|_| 1.0)
    }

    /// [`AdamW::step`] with a learning rate of `lr · lr_scale(path)` for the tensor at each
    /// module path (e.g. the reference's mask groups, spec §2.4); decay uses the same rate.
    pub fn step_grouped<M: Module>(
        &mut self,
        model: M,
        grads: GradientsParams,
        lr: f64,
        lr_scale: &dyn Fn(&[String]) -> f64,
    ) -> (M, StepInfo) {
        let c = self.config;
        let info_for = |norm: f64| match c.max_grad_norm {
            Some(max) => StepInfo {
                grad_norm: norm,
                clipped: max / (norm + 1e-6) < 1.0,
            },
            None => StepInfo {
                grad_norm: f64::NAN,
                clipped: false,
            },
        };
        let (model, norm) = self.step_grouped_lazy(model, grads, lr, lr_scale);
        // The only read from the device, after the whole update is issued.
        let info = match norm {
            Some(norm) => info_for(f64::from(norm.into_scalar::<f32>())),
            None if c.max_grad_norm.is_some() => info_for(0.0),
            None => info_for(f64::NAN),
        };
        (model, info)
    }

    /// [`AdamW::step_grouped`] without reading anything back: the global gradient norm (before
    /// clipping) stays on the device, `[1]`; `None` without clipping or without gradients.
    pub fn step_grouped_lazy<M: Module>(
        &mut self,
        model: M,
        mut grads: GradientsParams,
        lr: f64,
        lr_scale: &dyn Fn(&[String]) -> f64,
    ) -> (M, Option<Tensor<1>>) {
        self.step += 1;
        let c = self.config;

        let mut found = Collect {
            grads: &mut grads,
            lr_scale,
            path: Vec::new(),
            slots: Vec::new(),
            values: Vec::new(),
            grads_flat: Vec::new(),
        };
        model.visit(&mut found);
        let Collect {
            slots,
            values,
            grads_flat,
            ..
        } = found;
        if slots.is_empty() {
            return (model, None);
        }

        // All tensors go into buffers of the first one's dtype (one dtype in practice).
        let dtype = values[0].dtype();
        let device = values[0].device();
        let p = Tensor::cat(values.into_iter().map(|t| to_dtype(t, dtype)).collect(), 0);
        let g = Tensor::cat(
            grads_flat.into_iter().map(|t| to_dtype(t, dtype)).collect(),
            0,
        );

        // Global-norm clipping on the device: g · min(1, max / (‖g‖ + 1e-6)), in f32.
        let (g, norm) = match c.max_grad_norm {
            Some(max) => {
                let norm = l2_norm(g.clone());
                let coef = norm.clone().add_scalar(1e-6).recip().mul_scalar(max);
                // A NaN norm leaves the gradients unscaled, as `f64::min(NaN, 1.0)` did.
                let coef = coef.clone().mask_fill(coef.is_nan(), 1.0).clamp_max(1.0);
                (g * to_dtype(coef, dtype), Some(norm))
            }
            None => (g, None),
        };

        self.relayout(&slots, &device, dtype);
        let (lr_mult, decay_mult) = self.multipliers(&slots, &device, dtype);
        let (m, v) = self.moments.take().expect("moments laid out");

        let t = self.step;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let m = m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
        let v = v.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2);
        let p = match &self.scalars {
            None => {
                let denom = v.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(c.eps);
                let update = m.clone().div(denom);
                // lr·lr_scale/bias1 · m/denom
                let update = match lr_mult {
                    Mult::Uniform(s) => update.mul_scalar(lr * s / bias1),
                    Mult::PerElement(s) => update.mul(s.mul_scalar(lr / bias1)),
                };
                // p·(1 - lr·lr_scale·wd), wd = 0 where decay does not apply
                let p = match decay_mult {
                    Mult::Uniform(0.0) => p,
                    Mult::Uniform(d) => p.mul_scalar(1.0 - lr * d),
                    Mult::PerElement(d) => p.mul(d.mul_scalar(-lr).add_scalar(1.0)),
                };
                p - update
            }
            Some(k) => {
                // The same update with lr/bias1, 1/√bias2 and lr read from the device.
                let k = to_dtype(k.clone(), dtype);
                let (lr_bias1, inv_bias2, lr_t) =
                    (k.clone().slice(0..1), k.clone().slice(1..2), k.slice(2..3));
                let denom = v.clone().sqrt().mul(inv_bias2).add_scalar(c.eps);
                let update = m.clone().div(denom);
                let update = match lr_mult {
                    Mult::Uniform(s) => update.mul(lr_bias1.mul_scalar(s)),
                    Mult::PerElement(s) => update.mul(s.mul(lr_bias1)),
                };
                let p = match decay_mult {
                    Mult::Uniform(0.0) => p,
                    Mult::Uniform(d) => p.mul(lr_t.mul_scalar(-d).add_scalar(1.0)),
                    Mult::PerElement(d) => p.mul(d.mul(lr_t.neg()).add_scalar(1.0)),
                };
                p - update
            }
        };
        self.moments = Some((m, v));

        let sizes = slots.iter().map(|s| s.numel).collect();
        let mut apply = Apply {
            updated: slots
                .iter()
                .map(|s| s.id)
                .zip(p.split_with_sizes(sizes, 0))
                .collect(),
        };
        let model = model.map(&mut apply);
        (model, norm.map(|n| n.reshape([1])))
    }

    /// Lays `moments` out as `slots`, keeping each tensor's state: pieces of the current flat
    /// moments and the parked ones are reassembled, tensors without state (or whose size
    /// changed) start from zeros, and state of tensors not in `slots` is parked.
    fn relayout(&mut self, slots: &[Slot], device: &Device, dtype: DType) {
        if self.moments.is_some() && same_layout(&self.slots, slots) {
            self.slots = slots.to_vec();
            return;
        }
        let mut pieces = std::mem::take(&mut self.parked);
        if let Some((m, v)) = self.moments.take() {
            let sizes: Vec<usize> = self.slots.iter().map(|s| s.numel).collect();
            let ms = m.split_with_sizes(sizes.clone(), 0);
            let vs = v.split_with_sizes(sizes, 0);
            for ((s, m), v) in self.slots.iter().zip(ms).zip(vs) {
                pieces.insert(s.id, (m, v));
            }
        }
        let total: usize = slots.iter().map(|s| s.numel).sum();
        let zeros = |n: usize| Tensor::<1>::zeros([n], (device, dtype));
        self.moments = Some(if slots.iter().any(|s| pieces.contains_key(&s.id)) {
            let (mut ms, mut vs) = (Vec::new(), Vec::new());
            for s in slots {
                let (m, v) = match pieces.remove(&s.id) {
                    Some((m, v)) if m.dims()[0] == s.numel => (m, v),
                    _ => (zeros(s.numel), zeros(s.numel)),
                };
                ms.push(m);
                vs.push(v);
            }
            (Tensor::cat(ms, 0), Tensor::cat(vs, 0))
        } else {
            (zeros(total), zeros(total))
        });
        self.parked = pieces;
        self.slots = slots.to_vec();
    }

    /// The cached `(lr_mult, decay_mult)` for `slots`, rebuilt if the slots or decay changed.
    fn multipliers(&mut self, slots: &[Slot], device: &Device, dtype: DType) -> (Mult, Mult) {
        let wd = self.config.weight_decay;
        let fresh = match &self.mults {
            Some(k) => k.slots != slots || k.weight_decay != wd,
            None => true,
        };
        if fresh {
            self.mults = Some(Multipliers {
                slots: slots.to_vec(),
                weight_decay: wd,
                lr_mult: Mult::new(slots, |s| s.lr_scale, device, dtype),
                decay_mult: Mult::new(
                    slots,
                    |s| if s.decays { s.lr_scale * wd } else { 0.0 },
                    device,
                    dtype,
                ),
            });
        }
        let k = self.mults.as_ref().expect("multipliers built");
        (k.lr_mult.clone(), k.decay_mult.clone())
    }
}
