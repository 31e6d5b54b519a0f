//! The projection island `act(x·W + bias + scale·drop(x)·A·B)`.

use tch::Tensor as T;

use super::{Saved, activate, dropout_with_mask, pad2, unpad};
use crate::fused::{Act, Island};

/// Input slots (gradient slots alike): `[x, w, bias]` or `[x, w, bias, a, b]`.
pub(super) const X: usize = 0;
pub(super) const W: usize = 1;
pub(super) const BIAS: usize = 2;
pub(super) const A: usize = 3;
pub(super) const B: usize = 4;

/// What the backward of a LoRA term needs.
pub(super) struct LoraSaved {
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

/// What a projection's backward needs: explicit kernels, as libtorch's own derivatives compute
/// them.
pub(super) struct LinearSaved {
    /// [`Island::Linear`]'s `f32_grad`.
    f32_grad: bool,
    /// `x` as `[N, I]`, kept only when W is trained (for ∂W).
    x2: Option<T>,
    /// W as it was given (padded again in the backward: a copy kept for the whole step would
    /// cost the FFN weights' size once more).
    w: T,
    /// The node's `pad_in`, `pad_out`.
    pad: (i64, i64),
    lora: Option<LoraSaved>,
    /// Pre-activation output, when there is an activation.
    pre: Option<(T, Act)>,
    x_shape: Vec<i64>,
}

/// Training forward of a projection, keeping what its backward needs.
pub(super) fn forward(x: &[T], island: &Island, trained: &[bool]) -> (T, Saved) {
    let Island::Linear {
        lora_scale,
        lora_dropout,
        act,
        pad_out,
        pad_in,
        rank_align,
        record,
        f32_grad,
        ..
    } = *island
    else {
        unreachable!("linear island")
    };
    let (pi, po) = (pad_in as i64, pad_out as i64);
    let x_shape = x[X].size();
    let d_in = *x_shape.last().expect("3-D input");
    let w = pad2(&x[W], pi, po);
    let d_out = w.size()[1];
    let bias = if po == 0 {
        x[BIAS].shallow_clone()
    } else {
        x[BIAS].constant_pad_nd([0, po])
    };
    let x2 = x[X].reshape([-1, d_in]);
    let mut y = bias.addmm(&x2, &w);
    let lora = (x.len() == 5).then(|| {
        let r = x[A].size()[1] as usize;
        let pr = (r.next_multiple_of(rank_align.max(1)) - r) as i64;
        let (a, b) = (pad2(&x[A], pi, pr), pad2(&x[B], pr, po));
        let (xd, mask) = dropout_with_mask(&x2, lora_dropout);
        let h = xd.mm(&a);
        let b_scaled = &b * lora_scale;
        if record {
            super::ratios::record(&h, &b_scaled, &y);
        }
        y = y.addmm(&h, &b_scaled);
        LoraSaved {
            xd: trained[A].then_some(xd),
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
    let saved = Saved::Linear(LinearSaved {
        f32_grad,
        x2: trained[W].then_some(x2),
        w: x[W].shallow_clone(),
        pad: (pi, po),
        lora,
        pre,
        x_shape,
    });
    (z.reshape(out_shape), saved)
}

// The LoRA scale rides on the small factor (A or B, `[·, r]`) or on the small `[·, r]`
// gradient, never in a batched GEMM's alpha: `baddbmm` on batch-1 views goes to cuBLAS's
// batched kernels. With them (fused nodes v2) a roberta-base LoRA(all) step took 37.3 ms
// (TF32) and 35.1 ms (bf16) on the H200; with `mm`/`addmm` 22.2 and 17.1 ms
// (docs/results/speed/{b,c}-bench-shapes.jsonl, one round each).

/// Gradients of the inputs listed in `wanted`, in that order. Without a LoRA term and with
/// `f32_grad`, ∂x comes straight out of its GEMM in `x_kind` where that is f32 over bf16
/// compute on CUDA (mixed precision's hand-back: cuBLAS accumulates in f32 anyway; rounding to
/// bf16 and widening again would cost a copy). With one, the LoRA part is added to it in the
/// compute type, as before (an f32 sum would cost more than the widening it saves).
pub(super) fn backward(
    saved: LinearSaved,
    g: &T,
    wanted: &[usize],
    x_kind: Option<tch::Kind>,
) -> Vec<Option<T>> {
    let LinearSaved {
        f32_grad,
        x2,
        w,
        pad: (pi, po),
        lora,
        pre,
        x_shape,
    } = saved;
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
            .any(|&i| i == X || i == A)
            .then(|| gy.mm(&l.b.tr()))
    });
    wanted
        .iter()
        .map(|&i| match i {
            X => {
                let gx = match (&lora, &dh) {
                    (Some(l), Some(dh)) => match &l.mask {
                        // The dropout's backward scales anyway: scale·mask/(1−p).
                        Some((m, keep)) => {
                            let mut gx =
                                T::native_dropout_backward(&dh.mm(&l.a.tr()), m, keep * l.scale);
                            let _ = gx.addmm_(&gy, &w.tr());
                            gx
                        }
                        None => gy.mm(&w.tr()).addmm(dh, &(l.a.tr() * l.scale)),
                    },
                    _ => match x_kind {
                        Some(k @ tch::Kind::Float)
                            if f32_grad
                                && gy.kind() == tch::Kind::BFloat16
                                && gy.device().is_cuda() =>
                        {
                            gy.mm_dtype(&w.tr(), k)
                        }
                        _ => gy.mm(&w.tr()),
                    },
                };
                Some(gx.reshape(x_shape.as_slice()))
            }
            // The forward saved x for ∂W (and drop(x) for ∂A) exactly when the
            // parameter was trained; a gradient asked for otherwise is a bug.
            W => {
                let x2 = x2.as_ref().expect("∂W of a frozen weight");
                Some(unpad(unpad(x2.tr().mm(&gy), 0, pi), 1, po))
            }
            BIAS => {
                let gb = gy.sum_dim_intlist([0i64].as_slice(), false, gy.kind());
                Some(unpad(gb, 0, po))
            }
            A => lora.as_ref().map(|l| {
                let xd = l.xd.as_ref().expect("∂A of a frozen LoRA A");
                let dh = dh.as_ref().expect("∂h computed when ∂A is wanted");
                let ga = xd.tr().mm(dh) * l.scale;
                unpad(unpad(ga, 0, pi), 1, l.pad_rank)
            }),
            B => lora.as_ref().map(|l| {
                let gb = l.h.tr().mm(&gy) * l.scale;
                unpad(unpad(gb, 1, po), 0, l.pad_rank)
            }),
            _ => None,
        })
        .collect()
}

/// Which inputs share storage with what was saved: parameters always (they live anyway), x
/// when it or `drop(x) = x` was kept.
pub(super) fn shared_storage(saved: &LinearSaved, n: usize) -> Vec<bool> {
    // `drop(x)` is x itself when dropout does not act.
    let x_kept = saved.x2.is_some()
        || saved
            .lora
            .as_ref()
            .is_some_and(|l| l.xd.is_some() && l.mask.is_none());
    (0..n).map(|i| i != X || x_kept).collect()
}
