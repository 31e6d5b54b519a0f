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
//! Other backends, and forwards that record importance or apply estimation masks, take the
//! plain burn path.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::tensor::{Device, Tensor};

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

/// One fused computation; its inputs are passed alongside, in the order documented per variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Island {
    /// `[x, w, bias]` or `[x, w, bias, a, b]` with `x: [B, T, I]`, `w: [I, O]`, `a: [I, r]`,
    /// `b: [r, O]`: `act(x·W + bias + scale·drop(x)·A·B)`.
    ///
    /// The LoRA rank is padded inside the node as FFN widths are ([`ffn_padding`]: zero columns
    /// of A, zero rows of B): a rank of 2 or 4 gives GEMMs whose leading dimension is under 16
    /// bytes, which cuBLAS runs on slow unaligned kernels (a rank-2 pruned MiniLM stepped
    /// slower than the unpruned rank-8 one on the H200).
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
        record: bool,
    },
    /// `[q, k, v, score_bias]`, `q, k, v: [B, T, H·D]`, `score_bias: [B, 1, 1, T]` (added to the
    /// scores): per head `drop(softmax(q·kᵀ/√D + bias))·v`, back in `[B, T, H·D]`.
    Attention { heads: usize, dropout: f64 },
    /// `[x, residual, gamma, beta]`: `LayerNorm(drop(x) + residual)` over the last dimension.
    AddNorm { eps: f64, dropout: f64 },
}

static ENABLED: AtomicBool = AtomicBool::new(true);
/// FFN width alignment; 0 = automatic ([`ffn_padding`]).
static FFN_ALIGN: AtomicUsize = AtomicUsize::new(0);

/// Sets the multiple that fused FFN widths and LoRA ranks are padded to (`None`: automatic, 8
/// on CUDA and none elsewhere; `Some(1)`: never). For benchmarks and tests.
pub fn set_ffn_alignment(align: Option<usize>) {
    FFN_ALIGN.store(align.unwrap_or(0), Ordering::Relaxed);
}

/// The multiple GEMM dimensions are padded to on a device (see [`ffn_padding`]).
fn alignment(cuda: bool) -> usize {
    match FFN_ALIGN.load(Ordering::Relaxed) {
        0 if cuda => 8,
        0 => 1,
        n => n,
    }
}

/// Zero columns to append to an FFN of `width` neurons on `device`: tensor-core GEMM kernels
/// want every leading dimension a multiple of 16 bytes (8 bf16, 4 f32 values); an odd width
/// such as 2731 sends cuBLAS to kernels that ran 4–5× slower on the H200 (profiled with
/// `bench/profile_step.py`). CPU kernels do not care, so the default pads on CUDA only.
pub fn ffn_padding(width: usize, device: &Device) -> usize {
    let align = alignment(libtorch_cuda(device) == Some(true));
    width.next_multiple_of(align) - width
}

/// Turns the fused path on or off for the whole process (benchmarks compare both).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether islands run for tensors on `device`: libtorch (CPU or CUDA) builds only.
pub fn applies(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed) && libtorch_cuda(device).is_some()
}

/// For a libtorch device, whether it is a CUDA one; `None` for other backends (and always in
/// builds without libtorch).
#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it is our libtorch backend.
fn libtorch_cuda(device: &Device) -> Option<bool> {
    use burn::backend::DispatchDevice;
    use burn::backend::libtorch::LibTorchDevice;
    match device.clone().inner().as_dispatch() {
        DispatchDevice::LibTorch(d) => Some(matches!(d, LibTorchDevice::Cuda(_))),
        _ => None,
    }
}

#[cfg(not(feature = "tch"))]
fn libtorch_cuda(_device: &Device) -> Option<bool> {
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

/// Fused projection; `lora` is `(A, B)`. Call only where [`applies`] holds.
pub fn linear(
    x: Tensor<3>,
    w: Tensor<2>,
    bias: Tensor<1>,
    lora: Option<(Tensor<2>, Tensor<2>)>,
    island: Island,
) -> Tensor<3> {
    match lora {
        Some((a, b)) => run_island!(island; x, w, bias, a, b),
        None => run_island!(island; x, w, bias),
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
) -> Tensor<3> {
    run_island!(Island::Attention { heads, dropout }; q, k, v, score_bias)
}

/// Fused `LayerNorm(drop(x) + residual)`. Call only where [`applies`] holds.
pub fn add_norm(
    x: Tensor<3>,
    residual: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    dropout: f64,
) -> Tensor<3> {
    run_island!(Island::AddNorm { eps, dropout }; x, residual, gamma, beta)
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
    torch::RATIOS.with_borrow_mut(Vec::clear);
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
mod torch {
    use std::sync::{Arc, Mutex};

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::libtorch::TchTensor;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, LibTorch, backend_extension};
    use tch::Tensor as T;

    use super::{Act, Island};

    pub(super) fn run(
        inputs: Vec<burn::backend::DispatchTensor>,
        island: Island,
    ) -> burn::backend::DispatchTensor {
        type D = burn::backend::Dispatch;
        let n = inputs.len();
        let mut it = inputs.into_iter();
        let mut next = || it.next().expect("arity checked");
        match n {
            3 => <D as TorchIslands>::island3(next(), next(), next(), island),
            4 => <D as TorchIslands>::island4(next(), next(), next(), next(), island),
            5 => <D as TorchIslands>::island5(next(), next(), next(), next(), next(), island),
            _ => unreachable!("{island:?} with {n} inputs"),
        }
    }

    /// One method per arity: the extension macro routes fixed tensor arguments only.
    #[backend_extension(LibTorch, Autodiff)]
    pub trait TorchIslands: Backend {
        fn island3(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
            island: Island,
        ) -> FloatTensor<Self>;
        fn island4(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
            d: FloatTensor<Self>,
            island: Island,
        ) -> FloatTensor<Self>;
        #[allow(clippy::too_many_arguments)]
        fn island5(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
            d: FloatTensor<Self>,
            e: FloatTensor<Self>,
            island: Island,
        ) -> FloatTensor<Self>;
        /// See [`super::take_recorded_ratios`]; never part of a graph.
        fn recorded_ratios(weights: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    thread_local! {
        /// `[rows]` norm ratios of the recording projections run on this thread, in order.
        pub(super) static RATIOS: std::cell::RefCell<Vec<T>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    fn take_ratios(weights: &T) -> T {
        let rows = RATIOS.with_borrow_mut(std::mem::take);
        if rows.is_empty() {
            return T::zeros([0], (weights.kind(), weights.device()));
        }
        T::stack(&rows, 0).to_kind(weights.kind()).mv(weights)
    }

    impl Island {
        /// Whether input `i` can carry a gradient (the padding bias never does; marking it
        /// would also steer libtorch away from its fused attention kernels).
        fn differentiable(&self, i: usize) -> bool {
            !matches!(self, Island::Attention { .. } if i == 3)
        }

        /// The computation on libtorch tensors; `train` enables dropout.
        fn eval(&self, x: &[T], train: bool) -> T {
            let p = |p: f64| if train { p } else { 0.0 };
            match *self {
                // The training forward with nothing trained saves nothing worth keeping.
                Island::Linear { .. } => {
                    let mut island = *self;
                    if let Island::Linear { lora_dropout, .. } = &mut island {
                        *lora_dropout = p(*lora_dropout);
                    }
                    linear_forward(x, &island, &[false; 5]).0
                }
                Island::Attention { heads, dropout } => {
                    let (b, t, hd) = x[0].size3().expect("[B, T, H·D] query");
                    let h = heads as i64;
                    let split = |y: &T| y.view([b, t, h, hd / h]).transpose(1, 2);
                    let ctx = T::scaled_dot_product_attention(
                        &split(&x[0]),
                        &split(&x[1]),
                        &split(&x[2]),
                        Some(&x[3]),
                        p(dropout),
                        false,
                        None::<f64>,
                        false,
                    );
                    ctx.transpose(1, 2).reshape([b, t, hd])
                }
                Island::AddNorm { eps, dropout } => {
                    let y = dropout_with_mask(&x[0], p(dropout)).0 + &x[1];
                    let d = *y.size().last().expect("non-scalar");
                    y.layer_norm([d], Some(&x[2]), Some(&x[3]), eps, true)
                }
            }
        }
    }

    fn infer(inputs: &[&TchTensor], island: &Island) -> TchTensor {
        let xs: Vec<T> = inputs.iter().map(|t| t.tensor.shallow_clone()).collect();
        TchTensor::new(tch::no_grad(|| island.eval(&xs, false)))
    }

    impl TorchIslands for LibTorch {
        fn island3(a: TchTensor, b: TchTensor, c: TchTensor, island: Island) -> TchTensor {
            infer(&[&a, &b, &c], &island)
        }
        fn island4(
            a: TchTensor,
            b: TchTensor,
            c: TchTensor,
            d: TchTensor,
            island: Island,
        ) -> TchTensor {
            infer(&[&a, &b, &c, &d], &island)
        }
        fn island5(
            a: TchTensor,
            b: TchTensor,
            c: TchTensor,
            d: TchTensor,
            e: TchTensor,
            island: Island,
        ) -> TchTensor {
            infer(&[&a, &b, &c, &d, &e], &island)
        }
        fn recorded_ratios(weights: TchTensor) -> TchTensor {
            TchTensor::new(tch::no_grad(|| take_ratios(&weights.tensor)))
        }
    }

    /// What the backward of a LoRA term needs.
    struct LoraSaved {
        /// `drop(x)` `[N, I]`, kept only when A is trained (for ∂A).
        xd: Option<T>,
        /// Dropout keep-mask of x and `1 / (1 − p)`, when dropout acted.
        mask: Option<(T, f64)>,
        /// A and B padded as in the forward (`[I + pad_in, r + pad_rank]`,
        /// `[r + pad_rank, O + pad_out]`).
        a: T,
        b: T,
        pad_rank: i64,
        /// `drop(x)·A`, `[N, r]`, unscaled (for ∂B).
        h: T,
        scale: f64,
    }

    /// What an island's backward needs, saved by its forward.
    enum Saved {
        /// Projections: explicit kernels, as libtorch's own derivatives compute them.
        Linear {
            /// `x` as `[N, I]`, kept only when W is trained (for ∂W).
            x2: Option<T>,
            /// W as it was given (padded again in the backward: a copy kept for the whole
            /// step would cost the FFN weights' size once more).
            w: T,
            /// The node's `pad_in`, `pad_out`.
            pad: (i64, i64),
            lora: Option<LoraSaved>,
            /// Pre-activation output, when there is an activation.
            pre: Option<(T, Act)>,
            x_shape: Vec<i64>,
        },
        /// `LayerNorm(drop(x) + r)`: its input `s = drop(x) + r`, the row statistics, γ and the
        /// dropout mask (what libtorch's own layer-norm derivative saves).
        AddNorm {
            s: T,
            mean: T,
            rstd: T,
            gamma: T,
            mask: Option<(T, f64)>,
        },
        /// Attention on CUDA: libtorch's memory-efficient kernels, forward and backward, called
        /// directly (`[B, T, H, D]` views, the layout the kernels use).
        Attention {
            q: T,
            k: T,
            v: T,
            bias: T,
            out: T,
            lse: T,
            seed: T,
            offset: T,
            dropout: f64,
        },
        /// Attention elsewhere: libtorch's autograd graph of its SDPA.
        Graph { leaves: Vec<T>, output: T },
    }

    /// One island's saved tensors, taken by its backward step.
    struct Recorded {
        saved: Saved,
        /// Float type of the output.
        kind: tch::Kind,
        /// burn handles of the inputs and the output: while they live, burn-tch sees the storage
        /// as shared and never reuses it in place, which would corrupt what was saved.
        _pins: Vec<TchTensor>,
    }

    /// `Clone` because burn's backward state must be; all clones share the one recording.
    #[derive(Clone)]
    struct IslandState(Arc<Mutex<Option<Recorded>>>);

    impl std::fmt::Debug for IslandState {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IslandState")
        }
    }

    /// `drop(x)` with its keep-mask, or `x` itself when `p == 0`.
    fn dropout_with_mask(x: &T, p: f64) -> (T, Option<(T, f64)>) {
        if p > 0.0 {
            let (y, mask) = x.native_dropout(p, true);
            (y, Some((mask, 1.0 / (1.0 - p))))
        } else {
            (x.shallow_clone(), None)
        }
    }

    fn undo_dropout(g: T, mask: &Option<(T, f64)>) -> T {
        match mask {
            Some((m, scale)) => T::native_dropout_backward(&g, m, *scale),
            None => g,
        }
    }

    /// `t` with `rows` zero rows and `cols` zero columns appended (itself when both are 0).
    fn pad2(t: &T, rows: i64, cols: i64) -> T {
        if rows == 0 && cols == 0 {
            t.shallow_clone()
        } else {
            t.constant_pad_nd([0, cols, 0, rows])
        }
    }

    /// `t` with its padding (the last `drop` entries of `dim`) cut off, contiguous.
    fn unpad(t: T, dim: i64, drop: i64) -> T {
        if drop == 0 {
            t
        } else {
            let keep = t.size()[dim as usize] - drop;
            t.narrow(dim, 0, keep).contiguous()
        }
    }

    /// Training forward of a projection, keeping what its backward needs.
    fn linear_forward(x: &[T], island: &Island, trained: &[bool]) -> (T, Saved) {
        let Island::Linear {
            lora_scale,
            lora_dropout,
            act,
            pad_out,
            pad_in,
            record,
        } = *island
        else {
            unreachable!("linear island")
        };
        let (pi, po) = (pad_in as i64, pad_out as i64);
        let x_shape = x[0].size();
        let d_in = *x_shape.last().expect("3-D input");
        let w = pad2(&x[1], pi, po);
        let d_out = w.size()[1];
        let bias = if po == 0 {
            x[2].shallow_clone()
        } else {
            x[2].constant_pad_nd([0, po])
        };
        let x2 = x[0].reshape([-1, d_in]);
        let mut y = bias.addmm(&x2, &w);
        let lora = (x.len() == 5).then(|| {
            let r = x[3].size()[1] as usize;
            let pr = (r.next_multiple_of(super::alignment(x[0].device().is_cuda())) - r) as i64;
            let (a, b) = (pad2(&x[3], pi, pr), pad2(&x[4], pr, po));
            let (xd, mask) = dropout_with_mask(&x2, lora_dropout);
            let h = xd.mm(&a);
            if record {
                // As the plain path computes it: per row √Σv² of each term, then the quotient.
                let norm = |t: &T| {
                    (t * t)
                        .sum_dim_intlist([1i64].as_slice(), false, t.kind())
                        .sqrt()
                };
                let ratio = norm(&h.mm(&b)) * lora_scale.abs() / norm(&y);
                RATIOS.with_borrow_mut(|r| r.push(ratio));
            }
            y = y.addmm(&h, &(&b * lora_scale));
            LoraSaved {
                xd: trained[3].then_some(xd),
                mask,
                a,
                b,
                pad_rank: pr,
                h,
                scale: lora_scale,
            }
        });
        let (z, pre) = match act {
            None => (y, None),
            Some(a) => (activate(&y, a), Some((y, a))),
        };
        let mut out_shape = x_shape.clone();
        *out_shape.last_mut().expect("3-D input") = d_out;
        let saved = Saved::Linear {
            x2: trained[1].then_some(x2),
            w: x[1].shallow_clone(),
            pad: (pi, po),
            lora,
            pre,
            x_shape,
        };
        (z.reshape(out_shape), saved)
    }

    // The LoRA scale rides on the small factor (A or B, `[·, r]`) or on the small `[·, r]`
    // gradient, never in a batched GEMM's alpha: `baddbmm` on batch-1 views goes to cuBLAS's
    // batched kernels. With them (fused nodes v2) a roberta-base LoRA(all) step took 37.3 ms
    // (TF32) and 35.1 ms (bf16) on the H200; with `mm`/`addmm` 22.2 and 17.1 ms
    // (docs/results/speed/{b,c}-bench-shapes.jsonl, one round each).

    /// ∂s of `LayerNorm(s)` given the upstream `g`: `rstd·(dy − mean(dy) − x̂·mean(dy·x̂))`
    /// with `dy = g·γ` and `x̂ = (s − mean)·rstd`.
    fn layer_norm_input_grad(g: &T, s: &T, mean: &T, rstd: &T, gamma: &T) -> T {
        let dy = g * gamma;
        if s.device().is_cuda() {
            // Batch norm's backward kernels over a `[1, rows, D]` view (rows as channels) compute
            // exactly this from per-row statistics, in one reduction and one elementwise kernel
            // (the formula below costs eight, with broadcasts). They exist on CUDA only.
            let size = s.size();
            let d = *size.last().expect("non-scalar");
            let rows = s.numel() as i64 / d;
            let (dy3, s3) = (dy.view([1, rows, d]), s.view([1, rows, d]));
            let (m, r) = (mean.view([rows]), rstd.view([rows]));
            // tch's receiver is the input here, the first argument the gradient.
            let (sum_dy, sum_dy_xmu, _, _) =
                s3.batch_norm_backward_reduce(&dy3, &m, &r, None::<T>, true, false, false);
            let count = row_count(d, s.device());
            s3.batch_norm_backward_elemt(&dy3, &m, &r, None::<T>, &sum_dy, &sum_dy_xmu, &count)
                .view(size.as_slice())
        } else {
            let xhat = (s - mean) * rstd;
            let c1 = dy.mean_dim(-1, true, dy.kind());
            let c2 = (&dy * &xhat).mean_dim(-1, true, dy.kind());
            // The statistics are f32 for half-precision inputs: back to the input's type.
            ((dy - c1 - xhat * c2) * rstd).to_kind(s.kind())
        }
    }

    /// `[d]` as the int32 device tensor batch norm's backward reads its element count from;
    /// made once per thread, device and width rather than with a fill kernel per layer.
    fn row_count(d: i64, device: tch::Device) -> T {
        thread_local! {
            static COUNTS: std::cell::RefCell<Vec<(tch::Device, i64, T)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        COUNTS.with_borrow_mut(|counts| {
            if let Some((_, _, t)) = counts.iter().find(|(dev, n, _)| *dev == device && *n == d) {
                return t.shallow_clone();
            }
            let t = T::full([1], d, (tch::Kind::Int, device));
            counts.push((device, d, t.shallow_clone()));
            t
        })
    }

    fn activate(y: &T, act: Act) -> T {
        match act {
            Act::Gelu => y.gelu("none"),
            Act::GeluTanh => y.gelu("tanh"),
            Act::Relu => y.relu(),
        }
    }

    fn add_norm_forward(x: &[T], island: &Island) -> (T, Saved) {
        let Island::AddNorm { eps, dropout: p } = *island else {
            unreachable!("add-norm island")
        };
        let (h, mask) = dropout_with_mask(&x[0], p);
        let s = h + &x[1];
        let d = *s.size().last().expect("non-scalar");
        let (out, mean, rstd) = s.native_layer_norm([d], Some(&x[2]), Some(&x[3]), eps);
        let saved = Saved::AddNorm {
            s,
            mean,
            rstd,
            gamma: x[2].shallow_clone(),
            mask,
        };
        (out, saved)
    }

    /// Training forward of the attention core with the memory-efficient CUDA kernels, where they
    /// apply (CUDA, head size a multiple of 8); `None` elsewhere.
    fn attention_forward(x: &[T], island: &Island) -> Option<(T, Saved)> {
        let Island::Attention { heads, dropout } = *island else {
            unreachable!("attention island")
        };
        let (b, t, hd) = x[0].size3().ok()?;
        let h = heads as i64;
        if !x[0].device().is_cuda() || hd % h != 0 || (hd / h) % 8 != 0 {
            return None;
        }
        let split = |y: &T| y.view([b, t, h, hd / h]);
        let (q, k, v) = (split(&x[0]), split(&x[1]), split(&x[2]));
        // The kernels want every bias stride but the last aligned to 16 elements: pad the key
        // axis and view it back (as SDPA does), then broadcast over heads and queries.
        let t16 = (t + 15) / 16 * 16;
        let bias = if t16 == t {
            x[3].shallow_clone()
        } else {
            x[3].constant_pad_nd([0, t16 - t]).narrow(3, 0, t)
        }
        .expand([b, h, t, t], false);
        let (out, lse, seed, offset) = T::internal_scaled_dot_product_efficient_attention(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            Some(&bias),
            true,
            dropout,
            false,
            None::<f64>,
        );
        // [B, H, T, D] over [B, T, H, D] memory: back to the projections' layout.
        let out = out.transpose(1, 2);
        let ctx = out.reshape([b, t, hd]);
        let saved = Saved::Attention {
            q,
            k,
            v,
            bias,
            out,
            lse,
            seed,
            offset,
            dropout,
        };
        Some((ctx, saved))
    }

    /// Gradients of the inputs listed in `wanted` (input index), in that order.
    fn backward_of(saved: Saved, g: &T, wanted: &[usize]) -> Vec<Option<T>> {
        match saved {
            Saved::Linear {
                x2,
                w,
                pad: (pi, po),
                lora,
                pre,
                x_shape,
            } => {
                let w = pad2(&w, pi, po);
                let d_out = w.size()[1];
                let g2 = g.reshape([-1, d_out]);
                let gy = match &pre {
                    None => g2,
                    Some((y, Act::Gelu)) => y.gelu_backward(&g2, "none"),
                    Some((y, Act::GeluTanh)) => y.gelu_backward(&g2, "tanh"),
                    Some((y, Act::Relu)) => y.threshold_backward(&g2, 0.0),
                };
                // ∂(drop(x)·A) = (∂y)·Bᵀ up to the scale, shared by ∂x and ∂A; the scale
                // rides in the kernels that consume it.
                let dh = lora.as_ref().and_then(|l| {
                    wanted
                        .iter()
                        .any(|&i| i == 0 || i == 3)
                        .then(|| gy.mm(&l.b.tr()))
                });
                wanted
                    .iter()
                    .map(|&i| match i {
                        0 => {
                            let gx = match (&lora, &dh) {
                                (Some(l), Some(dh)) => match &l.mask {
                                    // The dropout's backward scales anyway: scale·mask/(1−p).
                                    Some((m, keep)) => {
                                        let mut gx = T::native_dropout_backward(
                                            &dh.mm(&l.a.tr()),
                                            m,
                                            keep * l.scale,
                                        );
                                        let _ = gx.addmm_(&gy, &w.tr());
                                        gx
                                    }
                                    None => gy.mm(&w.tr()).addmm(dh, &(l.a.tr() * l.scale)),
                                },
                                _ => gy.mm(&w.tr()),
                            };
                            Some(gx.reshape(x_shape.as_slice()))
                        }
                        // The forward saved x for ∂W (and drop(x) for ∂A) exactly when the
                        // parameter was trained; a gradient asked for otherwise is a bug.
                        1 => {
                            let x2 = x2.as_ref().expect("∂W of a frozen weight");
                            Some(unpad(unpad(x2.tr().mm(&gy), 0, pi), 1, po))
                        }
                        2 => {
                            let gb = gy.sum_dim_intlist([0i64].as_slice(), false, gy.kind());
                            Some(unpad(gb, 0, po))
                        }
                        3 => lora.as_ref().map(|l| {
                            let xd = l.xd.as_ref().expect("∂A of a frozen LoRA A");
                            let dh = dh.as_ref().expect("∂h computed when ∂A is wanted");
                            let ga = xd.tr().mm(dh) * l.scale;
                            unpad(unpad(ga, 0, pi), 1, l.pad_rank)
                        }),
                        4 => lora.as_ref().map(|l| {
                            let gb = l.h.tr().mm(&gy) * l.scale;
                            unpad(unpad(gb, 1, po), 0, l.pad_rank)
                        }),
                        _ => None,
                    })
                    .collect()
            }
            Saved::AddNorm {
                s,
                mean,
                rstd,
                gamma,
                mask,
            } => {
                let rows: Vec<i64> = (0..s.dim() as i64 - 1).collect();
                let need_s = wanted.iter().any(|&i| i < 2);
                let ds = need_s.then(|| layer_norm_input_grad(g, &s, &mean, &rstd, &gamma));
                wanted
                    .iter()
                    .map(|&i| match i {
                        0 => ds.as_ref().map(|d| undo_dropout(d.shallow_clone(), &mask)),
                        1 => ds.as_ref().map(T::shallow_clone),
                        2 => {
                            let xhat = (&s - &mean) * &rstd;
                            let gg = (g * xhat).sum_dim_intlist(
                                rows.as_slice(),
                                false,
                                None::<tch::Kind>,
                            );
                            Some(gg.to_kind(gamma.kind()))
                        }
                        3 => Some(g.sum_dim_intlist(rows.as_slice(), false, g.kind())),
                        _ => None,
                    })
                    .collect()
            }
            Saved::Attention {
                q,
                k,
                v,
                bias,
                out,
                lse,
                seed,
                offset,
                dropout,
            } => {
                let size = q.size();
                let (b, t, h, d) = (size[0], size[1], size[2], size[3]);
                let g = g.view([b, t, h, d]);
                let (dq, dk, dv, _) = T::internal_efficient_attention_backward(
                    &g,
                    &q,
                    &k,
                    &v,
                    Some(&bias),
                    &out,
                    None::<&T>,
                    None::<&T>,
                    t,
                    t,
                    &lse,
                    dropout,
                    &seed,
                    &offset,
                    0,
                    false,
                    None::<f64>,
                    None::<i64>,
                    None::<i64>,
                    false,
                );
                let flat = |y: T| Some(y.reshape([b, t, h * d]));
                let mut parts = [Some(dq), Some(dk), Some(dv)];
                wanted
                    .iter()
                    .map(|&i| parts.get_mut(i).and_then(Option::take).and_then(flat))
                    .collect()
            }
            Saved::Graph { leaves, output } => {
                let usable: Vec<&T> = wanted
                    .iter()
                    .filter(|&&i| leaves[i].requires_grad())
                    .map(|&i| &leaves[i])
                    .collect();
                let mut got = if usable.is_empty() {
                    Vec::new()
                } else {
                    // libtorch's C API seeds the backward with ones: ∂(Σ out⊙g)/∂out = g.
                    let root = (&output * g).sum(output.kind());
                    T::run_backward(&[root], &usable, false, false)
                }
                .into_iter();
                wanted
                    .iter()
                    .map(|&i| {
                        if leaves[i].requires_grad() {
                            got.next().filter(T::defined)
                        } else {
                            None
                        }
                    })
                    .collect()
            }
        }
    }

    /// Which inputs (and whether the output) share storage with the saved tensors. Parameters
    /// (from index 1 for projections, γ for add+norm) are always pinned: they live anyway.
    fn shared_storage(saved: &Saved, n: usize) -> (Vec<bool>, bool) {
        match saved {
            Saved::Linear { x2, lora, .. } => {
                // `drop(x)` is x itself when dropout does not act.
                let x_kept = x2.is_some()
                    || lora
                        .as_ref()
                        .is_some_and(|l| l.xd.is_some() && l.mask.is_none());
                ((0..n).map(|i| i > 0 || x_kept).collect(), false)
            }
            Saved::AddNorm { .. } => ((0..n).map(|i| i == 2).collect(), false),
            Saved::Attention { .. } | Saved::Graph { .. } => (vec![true; n], true),
        }
    }

    #[derive(Debug)]
    struct IslandBackward;

    impl<const N: usize> Backward<LibTorch, N> for IslandBackward {
        type State = IslandState;

        fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = grads.consume::<LibTorch>(&ops.node);
            let Some(rec) = ops.state.0.lock().expect("island state").take() else {
                return;
            };
            let (wanted, ids): (Vec<usize>, Vec<_>) = ops
                .parents
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|node| (i, node.id)))
                .unzip();
            if wanted.is_empty() {
                return;
            }
            // Upstream gradients may arrive in another float type (a loss computed in f32 over
            // bf16 logits); the island's kernels need its own.
            let g = if grad.tensor.kind() == rec.kind {
                grad.tensor
            } else {
                grad.tensor.to_kind(rec.kind)
            };
            let gs = backward_of(rec.saved, &g, &wanted);
            // Two gradients may be one tensor (∂x and ∂residual of add+norm without dropout):
            // they then share burn-tch's storage handle, so neither is reused in place.
            let mut made: Vec<TchTensor> = Vec::with_capacity(ids.len());
            for (id, g) in ids.into_iter().zip(gs) {
                let Some(g) = g else { continue };
                let ptr = g.data_ptr();
                let t = match made.iter().find(|m| m.tensor.data_ptr() == ptr) {
                    Some(twin) => TchTensor::from_existing(g, twin.storage.clone()),
                    None => TchTensor::new(g),
                };
                made.push(t.clone());
                grads.register::<LibTorch>(id, t);
            }
        }
    }

    fn record<C: CheckpointStrategy, const N: usize>(
        inputs: [FloatTensor<Autodiff<LibTorch, C>>; N],
        island: Island,
    ) -> FloatTensor<Autodiff<LibTorch, C>> {
        let guards = inputs.each_ref().map(|t| t.node());
        // Parameters that are trained (leaves needing a gradient): what they need is saved.
        let trained = inputs
            .each_ref()
            .map(Autodiff::<LibTorch, C>::float_is_require_grad);
        let prims: Vec<TchTensor> = inputs.into_iter().map(|t| t.into_primitive()).collect();
        match IslandBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xs: Vec<T> = prims.iter().map(|p| p.tensor.shallow_clone()).collect();
                let (output, saved) = match island {
                    Island::Linear { .. } => {
                        tch::no_grad(|| linear_forward(&xs, &island, &trained))
                    }
                    Island::AddNorm { .. } => tch::no_grad(|| add_norm_forward(&xs, &island)),
                    Island::Attention { .. } => {
                        match tch::no_grad(|| attention_forward(&xs, &island)) {
                            Some(done) => done,
                            None => {
                                let leaves: Vec<T> = xs
                                    .iter()
                                    .enumerate()
                                    .map(|(i, x)| {
                                        let leaf = x.detach();
                                        if island.differentiable(i) {
                                            leaf.set_requires_grad(true)
                                        } else {
                                            leaf
                                        }
                                    })
                                    .collect();
                                let output = tch::with_grad(|| island.eval(&leaves, true));
                                (output.detach(), Saved::Graph { leaves, output })
                            }
                        }
                    }
                };
                let kind = output.kind();
                let out = TchTensor::new(output);
                // Pin only what the saved tensors share storage with: pinning more would keep
                // activations alive until the backward (memory the peer does not spend).
                let (inputs, output_shared) = shared_storage(&saved, prims.len());
                let mut pins: Vec<TchTensor> = prims
                    .into_iter()
                    .zip(inputs)
                    .filter_map(|(p, keep)| keep.then_some(p))
                    .collect();
                if output_shared {
                    pins.push(out.clone());
                }
                let state = IslandState(Arc::new(Mutex::new(Some(Recorded {
                    saved,
                    kind,
                    _pins: pins,
                }))));
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                let xs: Vec<T> = prims.iter().map(|p| p.tensor.shallow_clone()).collect();
                prep.finish(TchTensor::new(tch::no_grad(|| island.eval(&xs, true))))
            }
        }
    }

    impl<C: CheckpointStrategy> TorchIslands for Autodiff<LibTorch, C> {
        fn island3(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
            island: Island,
        ) -> FloatTensor<Self> {
            record::<C, 3>([a, b, c], island)
        }
        fn island4(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
            d: FloatTensor<Self>,
            island: Island,
        ) -> FloatTensor<Self> {
            record::<C, 4>([a, b, c, d], island)
        }
        fn island5(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            c: FloatTensor<Self>,
            d: FloatTensor<Self>,
            e: FloatTensor<Self>,
            island: Island,
        ) -> FloatTensor<Self> {
            record::<C, 5>([a, b, c, d, e], island)
        }
        fn recorded_ratios(weights: FloatTensor<Self>) -> FloatTensor<Self> {
            use burn::backend::AutodiffBackend;
            let inner = <Self as AutodiffBackend>::inner(weights);
            <Self as AutodiffBackend>::from_inner(LibTorch::recorded_ratios(inner))
        }
    }
}
