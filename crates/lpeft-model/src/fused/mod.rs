//! Fused training operations for the libtorch backend.
//!
//! Under autodiff, burn 0.22 records every elementary operation of the encoder (≈110 per layer
//! forward, each with its own backward step) and has no backward for its fused attention or
//! LayerNorm, so a training step on libtorch is bound by per-operation overhead rather than by the
//! GPU. Here, three groups of operations run as one burn node each ("islands"): the projection
//! `act(x·W + b + s·drop(x)·A·B)`, the attention core (padding bias, dropout on the
//! probabilities), and `LayerNorm(drop(x) + residual)`. A node's forward calls libtorch kernels
//! directly and saves what its backward needs; the backward calls the kernels PyTorch's own
//! derivatives use (matmuls, `native_dropout_backward`, `gelu_backward`, on CUDA the
//! memory-efficient attention backward). Off CUDA the attention node runs libtorch's autograd on
//! its SDPA instead (a thread hand-off per call: slower, so only there).
//!
//! Invariant: an island computes the same function and gradients as the burn operations it
//! replaces (checked against them in `tests/fused.rs`); only the dropout random stream differs.
//! It saves only what PyTorch would save (no `[B, H, T, T]` scores, no frozen layer's input).
//! Other backends take the plain burn path. Estimation runs on the islands too: its masks
//! multiply their outputs, and projections record their norm ratios themselves
//! ([`take_recorded_ratios`]).
//!
//! Layout: this file is the API the encoder calls; `torch/mod.rs` is the burn autodiff node
//! shared by all islands; `torch/{linear,attention,add_norm}.rs` hold each island's forward,
//! what it saves, its backward, and its named input slots.

use burn::tensor::{Device, Tensor};

use crate::precision::Precision;

/// Activation applied at the end of a fused projection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Gelu,
    GeluTanh,
    Relu,
}

impl From<lpeft_schema::model::Activation> for Act {
    fn from(a: lpeft_schema::model::Activation) -> Self {
        use lpeft_schema::model::Activation;
        match a {
            Activation::Gelu => Act::Gelu,
            Activation::GeluTanh => Act::GeluTanh,
            Activation::Relu => Act::Relu,
        }
    }
}

/// The float type an island computes its GEMMs (and attention) in.
///
/// `Bf16` is mixed precision as PyTorch's autocast does it: the island casts its inputs to
/// bf16, runs its kernels there (cuBLAS and the attention kernels accumulate in f32) and hands
/// back f32, so master weights, the optimizer state, LayerNorm, losses and everything between
/// islands stay f32; gradients leave the backward in their inputs' own float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    #[default]
    F32,
    Bf16,
}

/// One fused computation; its inputs are passed alongside, in the order documented per variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Island {
    /// `[x, w, bias]` or `[x, w, bias, a, b]` with `x: [B, T, I]`, `w: [I, O]`, `a: [I, r]`,
    /// `b: [r, O]`: `act(x·W + bias + scale·drop(x)·A·B)`.
    ///
    /// The LoRA rank is padded inside the node as FFN widths are ([`Fusing::padding`]: zero columns
    /// of A, zero rows of B): a rank of 2 or 4 gives GEMMs whose leading dimension is under 16
    /// bytes, which cuBLAS may run on unaligned kernels. Timed apart from the FFN padding on
    /// the H200 (`lpeft-bench --rank-align 1`), it is within 5 % of no padding either way; it
    /// costs two pad operations per module (docs/benchmarks.md).
    ///
    /// `pad_out` zero columns are appended to W, the bias and B, so the output is
    /// `[B, T, O + pad_out]` with zeros there (every activation maps 0 to 0); `pad_in` says
    /// that `x` arrives with that many such zero columns, and zero rows are appended to W and A
    /// to match. The padding lives inside the node (gradients come back at the parameters'
    /// own shapes): it lets an FFN of odd width (Light-PEFT's 2731) run on aligned GEMMs.
    ///
    /// With `record` (and a LoRA term), the node also keeps each row's output-norm ratio
    /// `‖scale·drop(x)·A·B‖ / ‖x·W + bias‖` (before the activation) for
    /// [`take_recorded_ratios`]: estimation's importance capture, computed from what the node
    /// has at hand instead of a second, unfused forward.
    Linear {
        lora_scale: f64,
        lora_dropout: f64,
        act: Option<Act>,
        pad_out: usize,
        pad_in: usize,
        /// The multiple the LoRA rank is padded to ([`Fusing::padding`]).
        rank_align: usize,
        record: bool,
        compute: Compute,
        /// The output stays in the compute type for the island that alone consumes it
        /// ([`Fusing::handing_off`]).
        hand_off: bool,
        /// A last input `s: [1, 1, I]` scales x's columns before anything else (an estimation
        /// mask on the heads' context or on FC1's activations): `x·s` is formed in f32 and
        /// written once in the compute type, exactly the values of burn's product cast there, so
        /// the island producing x can hand it over in bf16 ([`FusedPolicy::masks_in_islands`]).
        /// Requires `pad_in == 0`.
        in_scale: bool,
        /// x is the f32 residual stream (a norm's output, never a hand-over), and without a
        /// LoRA term ∂x comes out of its GEMM in f32 under bf16 compute on CUDA, unrounded
        /// ([`FusedPolicy::norm_kernel`]'s numerics), instead of in bf16 widened after.
        f32_grad: bool,
    },
    /// `[q, k, v, score_bias]`, `q, k, v: [B, T, H·D]`, `score_bias: [B, 1, 1, T]` (added to the
    /// scores): per head `drop(softmax(q·kᵀ/√D + bias))·v`, back in `[B, T, H·D]`.
    Attention {
        heads: usize,
        dropout: f64,
        compute: Compute,
        /// As [`Island::Linear`]'s.
        hand_off: bool,
    },
    /// `[x, residual, gamma, beta]`: `LayerNorm(drop(x) + residual)` over the last dimension
    /// (in the residual's float type: f32 under mixed precision, as autocast keeps it; x may
    /// come in bf16 there, handed over by the projection before).
    AddNorm {
        eps: f64,
        dropout: f64,
        /// Run in the shim's CUDA kernels where they can ([`FusedPolicy::norm_kernel`]).
        kernel: bool,
    },
}

/// How a model uses the fused nodes, carried with the model (`Encoder::fused`) rather than
/// in process-wide state, so that two models in one process (a test's fused and plain runs, a
/// benchmark's rows) never disturb each other. Stages always run the default; the backend
/// class in artifact keys (`+fused3`) stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusedPolicy {
    /// Off: the plain burn operations everywhere (for comparison).
    pub enabled: bool,
    /// The multiple FFN widths and LoRA ranks are padded to inside the nodes; `None`: 8 on
    /// CUDA, none elsewhere (see [`Fusing::padding`]); `Some(1)`: never.
    pub align: Option<usize>,
    /// The multiple LoRA ranks alone are padded to, where it differs from `align` (`None`:
    /// `align`'s), so that the benchmark can time the two paddings apart.
    pub rank_align: Option<usize>,
    /// Float type of the projections' and attention's kernels (a stage's `precision`).
    pub compute: Compute,
    /// Under [`Compute::Bf16`], an island whose output goes only to another island hands it
    /// over in bf16 instead of converting it to f32 for the next island to convert back (and
    /// so for its gradient): the same values, four conversion kernels fewer a hand-off. Off:
    /// every output back in f32, for comparison.
    pub hand_off: bool,
    /// An estimation mask between two fused islands (on the heads' context, on FC1's
    /// activations) is applied by the consuming projection island ([`Island::Linear`]'s
    /// `in_scale`) instead of by a burn product between them: the same values to the bit, and
    /// under bf16 the producer hands its output over. Off: the product between, for comparison.
    pub masks_in_islands: bool,
    /// Under [`Compute::Bf16`] on CUDA, `LayerNorm(drop(x) + residual)` runs in the shim's
    /// kernels (one forward, one backward) instead of libtorch's eight to ten operations over
    /// the f32 residual stream, and takes x in bf16 from the projection before; and the
    /// projections reading that stream without a LoRA term give ∂x in f32 straight from their
    /// GEMM (`Island::Linear`'s `f32_grad`). Not libtorch's bits (the norm's statistics are
    /// summed in another order, ∂x is not rounded to bf16), so bf16-mixed keys say it
    /// ([`key_tag`]). Under TF32 the same kernels take f32 x ([`Self::norm_kernel_in_f32`]).
    /// Off: libtorch's operations and bf16 ∂x as before, for comparison.
    pub norm_kernel: bool,
    /// [`FusedPolicy::norm_kernel`] under f32 compute too, where x and ∂x are f32: precision
    /// `tf32` sets it ([`crate::precision::Precision::apply`]; its keys say it, [`key_tag`]),
    /// fp32 keeps libtorch's operations and their bits.
    pub norm_kernel_in_f32: bool,
}

/// `LPEFT_FUSED=off`: the stages run burn's elementary operations on libtorch too (for
/// comparison with the fused nodes: their dropout draws and last bits differ), and on CUDA the
/// plain step, without graphs (captured graphs are checked for the fused nodes only). Keys
/// follow ([`key_tag`]).
pub const ENV: &str = "LPEFT_FUSED";

/// Whether this process's stages use the fused nodes ([`ENV`] not `off`).
pub fn enabled_by_env() -> bool {
    std::env::var(ENV).as_deref() != Ok("off")
}

impl Default for FusedPolicy {
    fn default() -> Self {
        Self {
            enabled: enabled_by_env(),
            align: None,
            rank_align: None,
            compute: Compute::F32,
            hand_off: true,
            masks_in_islands: true,
            norm_kernel: true,
            norm_kernel_in_f32: false,
        }
    }
}

impl FusedPolicy {
    /// The settings on `device`, or `None` where the plain path runs (policy off, or not a
    /// libtorch device).
    pub fn on(&self, device: &Device) -> Option<Fusing> {
        let cuda = libtorch_cuda(device)?;
        let align = match self.align {
            Some(n) => n.max(1),
            None if cuda => 8,
            None => 1,
        };
        self.enabled.then(|| self.resolved(align))
    }

    /// The settings with this FFN alignment (what [`FusedPolicy::on`] resolves per device).
    fn resolved(&self, align: usize) -> Fusing {
        Fusing {
            align,
            rank_align: self.rank_align.map_or(align, |n| n.max(1)),
            compute: self.compute,
            may_hand_off: self.hand_off && self.compute == Compute::Bf16,
            hand_off: false,
            masks_in_islands: self.masks_in_islands,
            norm_kernel: self.norm_kernel
                && (self.compute == Compute::Bf16 || self.norm_kernel_in_f32),
        }
    }
}

/// A [`FusedPolicy`] resolved for one device: the fused nodes run, with this GEMM alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fusing {
    /// FFN widths are padded to a multiple of this ([`Fusing::padding`]).
    pub align: usize,
    /// LoRA ranks are padded to a multiple of this inside the projection nodes.
    pub rank_align: usize,
    pub compute: Compute,
    /// Whether the policy lets islands hand their outputs over in bf16 ([`FusedPolicy::hand_off`]).
    pub may_hand_off: bool,
    /// Whether the call made with these settings hands its output over (never by default:
    /// [`Fusing::handing_off`] says where).
    pub hand_off: bool,
    /// [`FusedPolicy::masks_in_islands`].
    pub masks_in_islands: bool,
    /// [`FusedPolicy::norm_kernel`], under bf16 compute, or f32 with
    /// [`FusedPolicy::norm_kernel_in_f32`].
    pub norm_kernel: bool,
}

impl Fusing {
    /// Zero columns to append to a width of `width` (an FFN's neurons, a LoRA rank):
    /// tensor-core GEMM kernels want every leading dimension a multiple of 16 bytes (8 bf16, 4
    /// f32 values); an odd width such as 2731 sends cuBLAS to kernels that ran 4–5× slower on
    /// the H200 (profiled with `bench/profile_step.py`). CPU kernels do not care, so the
    /// default pads on CUDA only.
    pub fn padding(&self, width: usize) -> usize {
        width.next_multiple_of(self.align) - width
    }

    /// These settings for a call whose output goes, when `only_to_an_island`, to one fused
    /// island and nowhere else (no mask, no plain operation between): it then stays bf16.
    pub fn handing_off(self, only_to_an_island: bool) -> Self {
        Self {
            hand_off: only_to_an_island && self.may_hand_off,
            ..self
        }
    }

    /// [`Fusing::handing_off`] for a projection whose output feeds the next add-norm island,
    /// `directly` (no adapter, no pre-norm residual between): handed over where the add-norm
    /// kernels take it.
    pub fn to_add_norm(self, directly: bool) -> Self {
        self.handing_off(self.norm_kernel && directly)
    }
}

/// The tag of the fused nodes' version in artifact keys, for a backend class (`tch`,
/// `tch-cuda`; none elsewhere): training there runs these nodes, whose dropout stream differs
/// from the elementary operations'. Version 2 (layer-norm backward kernels, the LoRA scale inside
/// the GEMMs, FFN widths padded on CUDA, which draws LoRA dropout over the padded width) changed
/// the last bits, and version 3 runs estimation (masks, recorded norm ratios) on them too, pads
/// LoRA ranks on CUDA and computes the LoRA GEMMs with `mm`/`addmm`: so `+fused` and `+fused2`
/// artifacts are not reused. Bump it whenever the nodes' results change.
///
/// On a libtorch CUDA device, unless `LPEFT_CUDA_GRAPHS=off` ([`crate::graph::on_for_class`]),
/// the tag is `fused3-graph1`: the graphed step reads its learning rate and bias corrections
/// from the device, which changes the last bits (a fine-tune with distillation, whose teacher
/// rows are uploaded inside the step, still runs plainly there).
/// With `LPEFT_FUSED=off` ([`ENV`]) the tag is `plain` on every libtorch class.
/// Under bf16 compute on a CUDA class the tags end in `-mixed2`, bf16-mixed's second numerics
/// there ([`FusedPolicy::norm_kernel`]): the add-norm kernels, and ∂x of the projections that
/// read the f32 stream computed in f32 where they have no LoRA term (`Island::Linear`'s
/// `f32_grad`). Both give other bits than before, so earlier bf16-mixed artifacts are not
/// reused (fp32 keeps its keys; on the CPU nothing changed). Under TF32 on a CUDA class the
/// tags end in `-norm1`: the same kernels over f32 x ([`FusedPolicy::norm_kernel_in_f32`]).
pub fn key_tag(backend_class: &str, precision: Precision) -> Option<&'static str> {
    tag_for(
        backend_class,
        enabled_by_env(),
        crate::graph::on_for_class(backend_class),
        false,
        norm_kernel_for(backend_class, precision),
    )
}

/// [`key_tag`] for the estimation stage, whose fused projections also record norm ratios:
/// `-ratio2` after the fused tags since the ratios are taken from the r×r Gram matrix of the
/// LoRA factor and one norm reduction instead of the `[rows, d_out]` product (the same values
/// to the last bits or so, which can flip a tie in surgery), so older estimations are not reused.
/// Fine-tunes record nothing and keep [`key_tag`]; `plain` records on burn's operations.
pub fn estimation_key_tag(backend_class: &str, precision: Precision) -> Option<&'static str> {
    tag_for(
        backend_class,
        enabled_by_env(),
        crate::graph::on_for_class(backend_class),
        true,
        norm_kernel_for(backend_class, precision),
    )
}

/// Which numerics of the add-norm kernels a stage of this class and precision runs, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NormKernels {
    /// bf16-mixed: x and ∂x in bf16, f32 ∂x straight from the stream's GEMMs (`-mixed2`).
    Mixed,
    /// TF32: x and ∂x in f32 (`-norm1`).
    F32,
}

fn norm_kernel_for(backend_class: &str, precision: Precision) -> Option<NormKernels> {
    if !backend_class.starts_with("tch-cuda") {
        return None;
    }
    match precision {
        Precision::Bf16Mixed => Some(NormKernels::Mixed),
        Precision::Tf32 => Some(NormKernels::F32),
        Precision::Fp32 => None,
    }
}

/// The tag of a libtorch class: which nodes run, whether steps are graphs, (`records`) whether
/// the stage records norm ratios inside the fused projections, and which add-norm kernels run.
fn tag_for(
    backend_class: &str,
    fused: bool,
    graphed: bool,
    records: bool,
    norm: Option<NormKernels>,
) -> Option<&'static str> {
    use NormKernels::{F32, Mixed};
    if !backend_class.starts_with("tch") {
        return None;
    }
    if !fused {
        return Some("plain");
    }
    Some(match (graphed, records, norm) {
        (true, false, None) => "fused3-graph1",
        (false, false, None) => "fused3",
        (true, true, None) => "fused3-graph1-ratio2",
        (false, true, None) => "fused3-ratio2",
        (true, false, Some(Mixed)) => "fused3-graph1-mixed2",
        (false, false, Some(Mixed)) => "fused3-mixed2",
        (true, true, Some(Mixed)) => "fused3-graph1-ratio2-mixed2",
        (false, true, Some(Mixed)) => "fused3-ratio2-mixed2",
        (true, false, Some(F32)) => "fused3-graph1-norm1",
        (false, false, Some(F32)) => "fused3-norm1",
        (true, true, Some(F32)) => "fused3-graph1-ratio2-norm1",
        (false, true, Some(F32)) => "fused3-ratio2-norm1",
    })
}

/// Whether islands can run for tensors on `device`: libtorch (CPU or CUDA) builds only.
pub fn applies(device: &Device) -> bool {
    libtorch_cuda(device).is_some()
}

/// For a libtorch device, whether it is a CUDA one; `None` for other backends (and always in
/// builds without libtorch).
#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it is our libtorch backend.
pub(crate) fn libtorch_cuda(device: &Device) -> Option<bool> {
    use burn::backend::DispatchDevice;
    use burn::backend::libtorch::LibTorchDevice;
    match device.clone().inner().as_dispatch() {
        DispatchDevice::LibTorch(d) => Some(matches!(d, LibTorchDevice::Cuda(_))),
        _ => None,
    }
}

#[cfg(not(feature = "tch"))]
pub(crate) fn libtorch_cuda(_device: &Device) -> Option<bool> {
    None
}

/// The CUDA index of a libtorch CUDA device; `None` for every other device.
#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it is our libtorch backend.
pub(crate) fn libtorch_cuda_index(device: &Device) -> Option<usize> {
    use burn::backend::DispatchDevice;
    use burn::backend::libtorch::LibTorchDevice;
    match device.clone().inner().as_dispatch() {
        DispatchDevice::LibTorch(LibTorchDevice::Cuda(i)) => Some(*i),
        _ => None,
    }
}

#[cfg(not(feature = "tch"))]
pub(crate) fn libtorch_cuda_index(_device: &Device) -> Option<usize> {
    None
}

/// Runs `island` on the given tensors as one node (libtorch builds); elsewhere it is never
/// reached, because [`applies`] is false there.
macro_rules! run_island {
    ($island:expr; $($t:expr),+) => {{
        #[cfg(feature = "tch")]
        {
            Tensor::from_dispatch(torch::run(vec![$($t.into_dispatch()),+], $island))
        }
        #[cfg(not(feature = "tch"))]
        {
            let _ = ($($t),+);
            unreachable!("fused {:?} without libtorch; `applies` is false there", $island)
        }
    }};
}

/// Fused projection; `lora` is `(A, B)`, `in_scale` the `[1, 1, I]` scale of x's columns
/// (given exactly when the island's `in_scale` is set). Call only where [`applies`] holds.
pub fn linear(
    x: Tensor<3>,
    w: Tensor<2>,
    bias: Tensor<1>,
    lora: Option<(Tensor<2>, Tensor<2>)>,
    in_scale: Option<Tensor<3>>,
    island: Island,
) -> Tensor<3> {
    debug_assert_eq!(
        matches!(
            island,
            Island::Linear {
                in_scale: true,
                pad_in: 0,
                ..
            }
        ),
        in_scale.is_some(),
        "an input scale needs the island's in_scale (and no input padding)"
    );
    match (lora, in_scale) {
        (Some((a, b)), Some(s)) => run_island!(island; x, w, bias, a, b, s),
        (Some((a, b)), None) => run_island!(island; x, w, bias, a, b),
        (None, Some(s)) => run_island!(island; x, w, bias, s),
        (None, None) => run_island!(island; x, w, bias),
    }
}

/// Fused attention core. Call only where [`applies`] holds.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    score_bias: Tensor<4>,
    heads: usize,
    dropout: f64,
    f: Fusing,
) -> Tensor<3> {
    let island = Island::Attention {
        heads,
        dropout,
        compute: f.compute,
        hand_off: f.hand_off,
    };
    run_island!(island; q, k, v, score_bias)
}

/// Fused `LayerNorm(drop(x) + residual)`. Call only where [`applies`] holds.
pub fn add_norm(
    x: Tensor<3>,
    residual: Tensor<3>,
    (gamma, beta): (Tensor<1>, Tensor<1>),
    eps: f64,
    dropout: f64,
    f: Fusing,
) -> Tensor<3> {
    let kernel = f.norm_kernel;
    run_island!(Island::AddNorm { eps, dropout, kernel }; x, residual, gamma, beta)
}

/// The row ratios that recording projections ([`Island::Linear`]'s `record`) kept on this
/// thread since the last call, each reduced with `weights` (`[rows]`: the batch's B·T rows,
/// 1/tokens on real tokens and 0 on padding) to one value: `[projections]`, in call order, on
/// the device (nothing is read back). Call only where [`applies`] holds.
pub fn take_recorded_ratios(weights: Tensor<1>) -> Tensor<1> {
    #[cfg(feature = "tch")]
    {
        use torch::TorchIslands;
        Tensor::from_dispatch(<burn::backend::Dispatch as TorchIslands>::recorded_ratios(
            weights.into_dispatch(),
        ))
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = weights;
        unreachable!("recorded ratios without libtorch; `applies` is false there")
    }
}

/// Forgets ratios a forward kept but nobody took (one that failed half-way), so that the
/// next [`take_recorded_ratios`] pairs values with the right projections.
pub fn discard_recorded_ratios() {
    #[cfg(feature = "tch")]
    torch::ratios::clear();
}

/// Dropout probability a burn `Dropout` module would apply to tensors on `device`.
pub fn effective_dropout(dropout: &burn::nn::Dropout, device: &Device) -> f64 {
    if dropout.training.is_enabled() && device.is_autodiff() {
        dropout.prob
    } else {
        0.0
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it is our libtorch backend.
mod torch;

/// Compiles the estimation masks' bf16 scaling kernels for `device` on a background thread
/// (a libtorch CUDA device; nothing elsewhere), ahead of the first step that launches them.
pub fn prepare_scale_kernel(device: &Device) {
    #[cfg(feature = "tch")]
    if let Some(index) = libtorch_cuda_index(device) {
        torch::scale_kernel::prepare_in_background(index);
    }
    #[cfg(not(feature = "tch"))]
    let _ = device;
}

/// Compiles (or loads) the shim's kernels for a libtorch CUDA device now and says whether the
/// add-norm kernels ([`FusedPolicy::norm_kernel`]) can run there; Ok on other devices, where
/// they never run.
pub fn require_norm_kernel(device: &Device) -> Result<(), String> {
    #[cfg(feature = "tch")]
    if let Some(index) = libtorch_cuda_index(device) {
        return torch::scale_kernel::prepare_now(index);
    }
    #[cfg(not(feature = "tch"))]
    let _ = device;
    Ok(())
}

/// How many add-norm forwards ran in the shim's kernels in this process (0 without `tch`).
pub fn norm_kernel_runs() -> u64 {
    #[cfg(feature = "tch")]
    return torch::norm_kernel::runs();
    #[cfg(not(feature = "tch"))]
    0
}

/// The estimation masks' bf16 scaling kernels (CUDA, `fused/torch/scale_kernel.rs`): how many
/// times they ran in this process, and the first reason a call could not use them (then
/// libtorch's products ran, to the same bits). `(0, None)` without `tch`.
pub fn scale_kernel_report() -> (u64, Option<String>) {
    #[cfg(feature = "tch")]
    return torch::scale_kernel::report();
    #[cfg(not(feature = "tch"))]
    (0, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_resolves_per_device() {
        // Not a libtorch device (or no libtorch in this build): never fused.
        let flex = Device::default();
        if libtorch_cuda(&flex).is_none() {
            assert_eq!(FusedPolicy::default().on(&flex), None);
        }
        let graphed = crate::graph::on_for_class("tch-cuda");
        let cuda_tag = if graphed { "fused3-graph1" } else { "fused3" };
        let (fp32, tf32, bf16) = (Precision::Fp32, Precision::Tf32, Precision::Bf16Mixed);
        assert_eq!(key_tag("tch-cuda", fp32), Some(cuda_tag));
        assert_eq!(
            (
                key_tag("tch", fp32),
                key_tag("flex", fp32),
                key_tag("cuda", fp32)
            ),
            (Some("fused3"), None, None)
        );
        // bf16-mixed and TF32: the add-norm kernels on CUDA (each its own numerics), nothing
        // new on the CPU.
        let norm_tag = format!("{cuda_tag}-mixed2");
        assert_eq!(key_tag("tch-cuda", bf16), Some(norm_tag.as_str()));
        let tf32_tag = format!("{cuda_tag}-norm1");
        assert_eq!(key_tag("tch-cuda", tf32), Some(tf32_tag.as_str()));
        assert_eq!(
            (
                key_tag("tch", bf16),
                key_tag("tch", tf32),
                key_tag("flex", bf16)
            ),
            (Some("fused3"), Some("fused3"), None)
        );
        assert_eq!(
            [(true, true), (true, false), (false, true), (false, false)]
                .map(|(fused, graphed)| tag_for("tch-cuda", fused, graphed, false, None)),
            [
                Some("fused3-graph1"),
                Some("fused3"),
                Some("plain"),
                Some("plain")
            ]
        );
        assert_eq!(tag_for("flex", false, false, false, None), None);
        assert_eq!(
            tag_for("tch-cuda", false, true, true, Some(NormKernels::F32)),
            Some("plain")
        );
        let est = if graphed {
            "fused3-graph1-ratio2"
        } else {
            "fused3-ratio2"
        };
        assert_eq!(estimation_key_tag("tch-cuda", fp32), Some(est));
        let est_norm = format!("{est}-mixed2");
        assert_eq!(
            estimation_key_tag("tch-cuda", bf16),
            Some(est_norm.as_str())
        );
        let est_tf32 = format!("{est}-norm1");
        assert_eq!(
            estimation_key_tag("tch-cuda", tf32),
            Some(est_tf32.as_str())
        );
        assert_eq!(
            (
                estimation_key_tag("tch", fp32),
                estimation_key_tag("tch", bf16),
                estimation_key_tag("flex", fp32)
            ),
            (Some("fused3-ratio2"), Some("fused3-ratio2"), None)
        );
        // Every combination has its own tag.
        let mut tags = vec![];
        for graphed in [false, true] {
            for records in [false, true] {
                for norm in [None, Some(NormKernels::Mixed), Some(NormKernels::F32)] {
                    tags.push(tag_for("tch-cuda", true, graphed, records, norm));
                }
            }
        }
        let n = tags.len();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), n);
        // The policy: kernels under bf16 compute, and under f32 only where TF32 asks.
        let on = |compute, in_f32| {
            FusedPolicy {
                compute,
                norm_kernel_in_f32: in_f32,
                ..FusedPolicy::default()
            }
            .resolved(8)
            .norm_kernel
        };
        assert_eq!(
            [
                on(Compute::Bf16, false),
                on(Compute::F32, false),
                on(Compute::F32, true)
            ],
            [true, false, true]
        );
        let f = Fusing {
            align: 8,
            rank_align: 8,
            compute: Compute::F32,
            may_hand_off: false,
            hand_off: false,
            masks_in_islands: true,
            norm_kernel: false,
        };
        assert_eq!((f.padding(2731), f.padding(2048), f.padding(2)), (5, 0, 6));
        let f = Fusing { align: 1, ..f };
        assert_eq!(f.padding(2731), 0);
    }
}
