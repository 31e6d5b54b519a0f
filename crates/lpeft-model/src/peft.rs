//! PEFT modules: LoRA (`x·A·B·scale` beside the frozen `W x + b`, never a dense `W + ΔW`, so
//! ranks can be pruned) and serial bottleneck adapters. Both expose their low-rank factors as
//! `A: [d_in, r]` and `B: [r, d_out]` in burn layout, so rank scores and rank surgery treat
//! them alike.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::linear;
use burn::tensor::{Bool, Tensor};

use lpeft_schema::model::{ModelSpec, PeftModuleId, PeftModuleSpec};

use crate::error::ModelError;
use crate::layers::Builder;
use crate::model::INIT_STD;
use crate::names::{PeftFactor, TensorName};
use crate::source::{Init, Role};

/// LoRA on one projection: `Δ(x) = dropout(x) · A · B · scale`.
#[derive(Module, Debug)]
pub struct Lora {
    /// `[d_in, r]`, kaiming-uniform.
    pub a: Param<Tensor<2>>,
    /// `[r, d_out]`, zero.
    pub b: Param<Tensor<2>>,
    pub dropout: Dropout,
    /// `alpha / r_original`; unchanged by rank pruning.
    pub scale: f64,
}

impl Lora {
    /// LoRA `id` on a `[d_in, d_out]` projection, or `None` when the spec has none there, its
    /// rank is 0 or the projection is zero-width.
    pub fn build(
        bld: &mut Builder,
        spec: &ModelSpec,
        id: PeftModuleId,
        d_in: usize,
        d_out: usize,
    ) -> Result<Option<Lora>, ModelError> {
        let Some(m) = module_spec(spec, id) else {
            return Ok(None);
        };
        if m.rank == 0 || d_in == 0 || d_out == 0 {
            return Ok(None);
        }
        Ok(Some(Lora {
            a: bld.param2(
                TensorName::peft(id, PeftFactor::A),
                [d_in, m.rank],
                Init::KaimingUniform { fan_in: d_in },
                Role::Peft,
                true,
            )?,
            b: bld.param2(
                TensorName::peft(id, PeftFactor::B),
                [m.rank, d_out],
                Init::Zeros,
                Role::Peft,
                true,
            )?,
            dropout: dropout(m.dropout),
            scale: m.scale,
        }))
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear(self.dropout.forward(x), self.a.val(), None);
        linear(h, self.b.val(), None).mul_scalar(self.scale)
    }
}

/// Serial bottleneck adapter: `Δ(h) = up(ReLU(down(dropout(h)))) · scale`, added to `h`.
#[derive(Module, Debug)]
pub struct Adapter {
    /// `down: [hidden, r]`.
    pub a: Param<Tensor<2>>,
    /// `up: [r, hidden]`.
    pub b: Param<Tensor<2>>,
    pub dropout: Dropout,
    pub scale: f64,
}

impl Adapter {
    /// Adapter `id` on a `hidden`-wide residual stream, or `None` when the spec has none there
    /// or its size is 0.
    pub fn build(
        bld: &mut Builder,
        spec: &ModelSpec,
        id: PeftModuleId,
        hidden: usize,
    ) -> Result<Option<Adapter>, ModelError> {
        let Some(m) = module_spec(spec, id) else {
            return Ok(None);
        };
        if m.rank == 0 {
            return Ok(None);
        }
        Ok(Some(Adapter {
            a: bld.param2(
                TensorName::peft(id, PeftFactor::A),
                [hidden, m.rank],
                Init::Normal { std: INIT_STD },
                Role::Peft,
                true,
            )?,
            b: bld.param2(
                TensorName::peft(id, PeftFactor::B),
                [m.rank, hidden],
                Init::Normal { std: INIT_STD },
                Role::Peft,
                true,
            )?,
            dropout: dropout(m.dropout),
            scale: m.scale,
        }))
    }

    pub fn forward(&self, h: Tensor<3>) -> Tensor<3> {
        let z = relu(linear(self.dropout.forward(h), self.a.val(), None));
        linear(z, self.b.val(), None).mul_scalar(self.scale)
    }
}

fn module_spec(spec: &ModelSpec, id: PeftModuleId) -> Option<&PeftModuleSpec> {
    spec.peft.iter().find(|m| m.id == id)
}

pub fn dropout(prob: f64) -> Dropout {
    DropoutConfig::new(prob).init()
}

/// Collects, during a training forward, each PEFT module's output-norm ratio
/// `‖Δ(x)‖ / ‖W x + b‖` per token, averaged over non-padding tokens of the batch (spec §3.2).
/// Values stay lazy tensors; the caller reads them all at once after the step.
pub struct NormRatioRecorder {
    /// `[B, T, 1]`, true on padding tokens.
    padding: Tensor<3, Bool>,
    /// `[1]`: non-padding tokens of the batch (at least 1), on the device: never read back.
    tokens: Tensor<1>,
    /// `[B·T]`: `1/tokens` on real tokens, 0 on padding (the mean as one dot product).
    weights: Tensor<1>,
    /// Modules whose ratios fused projections kept, in call order, not yet collected.
    fused: Vec<PeftModuleId>,
    /// What was recorded: modules and their means `[modules]` (one tensor for all fused
    /// projections of a forward, one per module recorded on the plain path).
    parts: Vec<(Vec<PeftModuleId>, Tensor<1>)>,
}

impl NormRatioRecorder {
    pub fn new(attention_mask: &Tensor<2, burn::tensor::Int>) -> Self {
        let mask = attention_mask.clone().inner();
        let [b, t] = mask.dims();
        let real = mask.clone().not_equal_elem(0).float();
        let tokens = real.clone().sum().clamp_min(1.0);
        let weights = real.reshape([b * t]) / tokens.clone();
        let padding = mask.equal_elem(0).reshape([b, t, 1]);
        Self {
            padding,
            tokens,
            weights,
            fused: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// Records `‖delta‖ / ‖base‖` for module `id`; both `[B, T, d]`, graph-free.
    pub fn record(&mut self, id: PeftModuleId, delta: &Tensor<3>, base: &Tensor<3>) {
        let norm = |t: &Tensor<3>| t.clone().inner().square().sum_dim(2).sqrt();
        let ratio = norm(delta) / norm(base);
        let ratio = ratio.mask_fill(self.padding.clone(), 0.0);
        let mean = ratio.sum() / self.tokens.clone();
        self.parts.push((vec![id], mean));
    }

    /// The recorded means as modules and tensors (read them together).
    pub fn parts(&self) -> &[(Vec<PeftModuleId>, Tensor<1>)] {
        &self.parts
    }

    /// One `[1]` tensor per recorded module, in recording order.
    pub fn ratios(&self) -> Vec<(PeftModuleId, Tensor<1>)> {
        let mut out = Vec::new();
        for (ids, t) in &self.parts {
            for (i, id) in ids.iter().enumerate() {
                out.push((*id, t.clone().slice(i..i + 1)));
            }
        }
        out
    }

    /// Notes that a fused projection recorded module `id`'s row ratios (fetched by
    /// [`NormRatioRecorder::collect_fused`]).
    pub fn note_fused(&mut self, id: PeftModuleId) {
        self.fused.push(id);
    }

    /// Takes the fused projections' ratios of this forward, as means over real tokens.
    pub fn collect_fused(&mut self) {
        if self.fused.is_empty() {
            return;
        }
        let means = crate::fused::take_recorded_ratios(self.weights.clone());
        debug_assert_eq!(
            means.dims()[0],
            self.fused.len(),
            "one ratio per noted module"
        );
        self.parts.push((std::mem::take(&mut self.fused), means));
    }
}
