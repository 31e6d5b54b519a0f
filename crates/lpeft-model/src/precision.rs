//! How a training stage computes: its `precision` parameter (part of the artifact key when it
//! is not the default, since the results differ).
//!
//! - `fp32`: every kernel in f32 (libtorch's default: no TF32).
//! - `tf32`: f32 tensors, TF32 tensor-core matmuls (a libtorch CUDA device only). libtorch keeps
//!   this switch in one process-wide context, so a stage holds a [`PrecisionScope`] while it
//!   trains and evaluates: stages of one process that want the other setting wait. Its residual
//!   stream (add, dropout, LayerNorm) runs in the shim's kernels, as bf16-mixed's does.
//! - `bf16-mixed`: the projections' GEMMs and the attention run in bf16 inside the fused nodes,
//!   with f32 master weights, optimizer state, LayerNorm and losses (what PyTorch's autocast
//!   does for these operations; [`crate::fused::Compute`]). Needs the libtorch backend.
//!
//! The benchmark's pure bf16 (every tensor, weights and AdamW state included) is not a stage
//! precision: `lpeft-bench --precision bf16-pure`.

use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};

use burn::module::Param;
use burn::tensor::{FloatDType, Tensor};

use crate::ModelError;
use crate::fused::Compute;
use crate::layers::Dense;
use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
    Bf16Mixed,
}

impl Precision {
    pub fn is_default(&self) -> bool {
        *self == Precision::Fp32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16Mixed => "bf16-mixed",
        }
    }

    /// The `precision` field of a stage's canonical params (absent: the default, fp32).
    pub fn of_canonical(params: &serde_json::Value) -> Self {
        params
            .get("precision")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default()
    }

    /// The fused nodes' compute type under this precision.
    pub fn compute(self) -> Compute {
        match self {
            Precision::Bf16Mixed => Compute::Bf16,
            Precision::Fp32 | Precision::Tf32 => Compute::F32,
        }
    }

    /// Whether `device` can run this precision; an error names what it needs.
    pub fn check(self, device: &burn::tensor::Device) -> Result<(), ModelError> {
        let cuda = crate::fused::libtorch_cuda(device);
        let why = match self {
            Precision::Fp32 => None,
            Precision::Tf32 if cuda != Some(true) => {
                Some("needs a libtorch CUDA device (backend tch-cuda): TF32 is a GPU format")
            }
            Precision::Tf32 if !crate::graph::available() => Some(
                "needs a build with the CUDA shim (libtorch with CUDA and its headers at build \
                 time; see crates/lpeft-model/build.rs)",
            ),
            Precision::Bf16Mixed if cuda.is_none() => Some(
                "needs the libtorch backend (tch or tch-cuda): mixed precision runs in its fused \
                 nodes",
            ),
            Precision::Bf16Mixed if !crate::fused::enabled_by_env() => Some(
                "runs in the fused nodes, which LPEFT_FUSED=off turns off (unset it, or use fp32)",
            ),
            _ => None,
        };
        let why = match why {
            Some(why) => Some(why.to_string()),
            // On CUDA their residual stream runs in the shim's kernels, which the keys count on
            // (`fused::key_tag`): a run that could not use them would compute other bits.
            // (TF32 with LPEFT_FUSED=off runs burn's operations, keyed `plain`: no kernels.)
            None if cuda == Some(true)
                && (self == Precision::Bf16Mixed
                    || (self == Precision::Tf32 && crate::fused::enabled_by_env())) =>
            {
                crate::fused::require_norm_kernel(device).err().map(|e| {
                    format!(
                        "on CUDA needs the shim's add-norm kernels (compiled by NVRTC at run \
                         time), which cannot run here: {e}"
                    )
                })
            }
            None => None,
        };
        match why {
            Some(why) => Err(ModelError::Precision {
                precision: self.as_str().into(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Puts `model` under this precision (its fused nodes' compute type; under `tf32` the
    /// add-norm kernels over f32, [`crate::fused::FusedPolicy::norm_kernel_in_f32`]). Under
    /// `bf16-mixed` the frozen projection weights and biases are also stored in bf16 once
    /// ([`frozen_projections_in_bf16`]).
    pub fn apply(self, model: &mut Model) {
        model.encoder.fused.compute = self.compute();
        model.encoder.fused.norm_kernel_in_f32 = self == Precision::Tf32;
        if self.compute() == Compute::Bf16 {
            frozen_projections_in_bf16(model);
        }
    }

    /// Checks the device and, on a libtorch CUDA device, sets libtorch's TF32 switch for this
    /// precision, holding it until the scope is dropped (see the module docs).
    pub fn enter(self, device: &burn::tensor::Device) -> Result<PrecisionScope, ModelError> {
        self.check(device)?;
        if crate::fused::libtorch_cuda(device) != Some(true) || !crate::graph::available() {
            return Ok(PrecisionScope { tf32: None });
        }
        let tf32 = self == Precision::Tf32;
        let mut state = TF32.lock().expect("TF32 state");
        while state.holders > 0 && state.on != Some(tf32) {
            state = TF32_FREED.wait(state).expect("TF32 state");
        }
        if state.on != Some(tf32) {
            crate::graph::set_tf32(tf32)?;
            state.on = Some(tf32);
        }
        state.holders += 1;
        Ok(PrecisionScope { tf32: Some(tf32) })
    }
}

/// Stores every frozen weight and bias of the encoder's projections in bf16, where a fused node
/// takes the projection (a weight and a bias, on a libtorch device with the fused nodes on).
///
/// Under `bf16-mixed` the fused projection casts its inputs to bf16 on every call; a frozen
/// tensor never changes, so its cast gives the same bf16 values every time and an f32 master
/// copy serves nothing. Cast once here, the nodes skip it: the same results to the bit, two
/// cast kernels fewer per projection and step (144 of a roberta-base step's ~2,150), and 2
/// bytes a frozen weight instead of 4 held plus 2 saved for the backward. Trained tensors
/// (LoRA, a trained bias) stay f32: their optimizer needs the master copy.
pub fn frozen_projections_in_bf16(model: &mut Model) {
    let Some(device) = model
        .encoder
        .layers
        .first()
        .map(|l| l.attention.norm.gamma.val().device())
    else {
        return;
    };
    if model.encoder.fused.on(&device).is_none() {
        return;
    }
    for layer in &mut model.encoder.layers {
        let (a, f) = (&mut layer.attention, &mut layer.ffn);
        for dense in [
            a.query.as_mut(),
            a.key.as_mut(),
            a.value.as_mut(),
            Some(&mut a.output),
        ]
        .into_iter()
        .chain([f.input.as_mut(), Some(&mut f.output)])
        .flatten()
        {
            frozen_in_bf16(dense);
        }
    }
}

/// One projection's frozen weight and bias in bf16, when it has both (without a weight or a
/// bias it takes the plain path, whose burn operations want one float type).
fn frozen_in_bf16(dense: &mut Dense) {
    if dense.weight.is_none() || dense.bias.is_none() {
        return;
    }
    dense.weight = dense.weight.take().map(frozen_bf16);
    dense.bias = dense.bias.take().map(frozen_bf16);
}

fn frozen_bf16<const D: usize>(p: Param<Tensor<D>>) -> Param<Tensor<D>> {
    if p.val().is_require_grad() {
        return p;
    }
    p.map(|t| t.cast(FloatDType::BF16))
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libtorch's TF32 switch as this process set it (`None` before the first stage: it is then
/// set explicitly, whatever `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE` made of it), and how many
/// stages rely on it now.
struct Tf32State {
    on: Option<bool>,
    holders: usize,
}

static TF32: Mutex<Tf32State> = Mutex::new(Tf32State {
    on: None,
    holders: 0,
});
static TF32_FREED: Condvar = Condvar::new();

/// Held while a stage trains under a precision; dropped, it lets stages that want the other
/// TF32 setting go on.
#[derive(Debug)]
#[must_use = "the precision holds only while the scope lives"]
pub struct PrecisionScope {
    /// The TF32 setting held, on a libtorch CUDA device.
    tf32: Option<bool>,
}

impl Drop for PrecisionScope {
    fn drop(&mut self) {
        if self.tf32.is_some() {
            let mut state = TF32.lock().expect("TF32 state");
            state.holders -= 1;
            if state.holders == 0 {
                TF32_FREED.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fp32_is_the_default() {
        for p in [Precision::Fp32, Precision::Tf32, Precision::Bf16Mixed] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
        }
        assert!(Precision::default().is_default());
        assert!(serde_json::from_str::<Precision>("\"bf16\"").is_err());
    }

    #[test]
    fn the_default_backend_refuses_what_it_cannot_run() {
        let device = burn::tensor::Device::default();
        if crate::fused::libtorch_cuda(&device).is_some() {
            return; // a libtorch default device (tch builds): covered by tests/fused.rs
        }
        assert!(Precision::Fp32.enter(&device).is_ok());
        for p in [Precision::Tf32, Precision::Bf16Mixed] {
            let err = p.enter(&device).unwrap_err().to_string();
            assert!(err.starts_with(&format!("`precision: {p}` needs")), "{err}");
        }
    }
}
