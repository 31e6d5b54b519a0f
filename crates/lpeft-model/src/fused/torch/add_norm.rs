//! The island `LayerNorm(drop(x) + residual)`: libtorch's operations, or on CUDA where the
//! policy asks (bf16 compute, TF32) the shim's kernels ([`super::norm_kernel`]), which take x
//! in its own type (bf16 as the projection before hands it over, or f32) and give its gradient
//! back in that type.

use tch::{Kind, Tensor as T};

use super::norm_kernel::{self, Forward};
use super::{Saved, dropout_with_mask, undo_dropout};
use crate::fused::Island;

/// Input slots: `[x, residual, gamma, beta]`.
pub(super) const X: usize = 0;
pub(super) const RESIDUAL: usize = 1;
pub(super) const GAMMA: usize = 2;
pub(super) const BETA: usize = 3;

/// What the backward needs.
pub(super) enum AddNormSaved {
    /// libtorch's path: the input `s = drop(x) + r`, the row statistics, γ and the dropout
    /// mask (what libtorch's own layer-norm derivative saves).
    Ops {
        s: T,
        mean: T,
        rstd: T,
        gamma: T,
        mask: Option<(T, f64)>,
    },
    /// The kernels' path: the same, the mask as uint8 with its scale, and x's float type.
    Kernel {
        saved: Forward,
        gamma: T,
        mask: Option<T>,
        scale: f64,
        x_kind: Kind,
    },
}

fn settings(island: &Island) -> (f64, f64, bool) {
    let Island::AddNorm {
        eps,
        dropout,
        kernel,
    } = *island
    else {
        unreachable!("add-norm island")
    };
    (eps, dropout, kernel)
}

/// x as libtorch's path adds it: widened to f32 where it came in bf16 over an f32 residual
/// (mixed precision's hand-over; exact).
fn addend(x: &[T]) -> T {
    if x[X].kind() == Kind::BFloat16 && x[RESIDUAL].kind() == Kind::Float {
        super::scale_kernel::to_kind(&x[X], Kind::Float)
    } else {
        x[X].shallow_clone()
    }
}

/// The kernels' forward with dropout `p` (0: none), or None (nothing drawn) where they cannot
/// run.
fn kernel_forward(x: &[T], eps: f64, p: f64) -> Option<(Forward, Option<T>, f64)> {
    norm_kernel::forward(&x[X], &x[RESIDUAL], p, &x[GAMMA], &x[BETA], eps)
}

pub(super) fn forward(x: &[T], island: &Island) -> (T, Saved) {
    let (eps, p, kernel) = settings(island);
    if kernel && let Some((mut saved, mask, scale)) = kernel_forward(x, eps, p) {
        let out = std::mem::replace(&mut saved.y, T::new());
        let saved = Saved::AddNorm(AddNormSaved::Kernel {
            saved,
            gamma: x[GAMMA].shallow_clone(),
            mask,
            scale,
            x_kind: x[X].kind(),
        });
        return (out, saved);
    }
    let (h, mask) = dropout_with_mask(&addend(x), p);
    let s = h + &x[RESIDUAL];
    let d = *s.size().last().expect("non-scalar");
    let (out, mean, rstd) = s.native_layer_norm([d], Some(&x[GAMMA]), Some(&x[BETA]), eps);
    let saved = Saved::AddNorm(AddNormSaved::Ops {
        s,
        mean,
        rstd,
        gamma: x[GAMMA].shallow_clone(),
        mask,
    });
    (out, saved)
}

/// The computation without a backward (inference, or training with nothing to train): the
/// kernels where the training forward would run them, so both give the same values.
pub(super) fn eval(x: &[T], island: &Island, p: f64) -> T {
    let (eps, _, kernel) = settings(island);
    if kernel && let Some((fwd, _, _)) = kernel_forward(x, eps, p) {
        return fwd.y;
    }
    let y = dropout_with_mask(&addend(x), p).0 + &x[RESIDUAL];
    let d = *y.size().last().expect("non-scalar");
    y.layer_norm([d], Some(&x[GAMMA]), Some(&x[BETA]), eps, true)
}

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

/// Gradients of the inputs listed in `wanted`, in that order.
pub(super) fn backward(saved: AddNormSaved, g: &T, wanted: &[usize]) -> Vec<Option<T>> {
    let (s, mean, rstd, gamma, mask) = match saved {
        AddNormSaved::Ops {
            s,
            mean,
            rstd,
            gamma,
            mask,
        } => (s, mean, rstd, gamma, mask),
        AddNormSaved::Kernel {
            saved,
            gamma,
            mask,
            scale,
            x_kind,
        } => return kernel_backward(saved, gamma, mask, scale, x_kind, g, wanted),
    };
    let rows: Vec<i64> = (0..s.dim() as i64 - 1).collect();
    let need_s = wanted.iter().any(|&i| i == X || i == RESIDUAL);
    let ds = need_s.then(|| layer_norm_input_grad(g, &s, &mean, &rstd, &gamma));
    wanted
        .iter()
        .map(|&i| match i {
            X => ds.as_ref().map(|d| undo_dropout(d.shallow_clone(), &mask)),
            RESIDUAL => ds.as_ref().map(T::shallow_clone),
            GAMMA => {
                let xhat = (&s - &mean) * &rstd;
                let gg = (g * xhat).sum_dim_intlist(rows.as_slice(), false, None::<tch::Kind>);
                Some(gg.to_kind(gamma.kind()))
            }
            BETA => Some(g.sum_dim_intlist(rows.as_slice(), false, g.kind())),
            _ => None,
        })
        .collect()
}

/// The kernels' backward (they took the forward, so they take these tensors).
fn kernel_backward(
    saved: Forward,
    gamma: T,
    mask: Option<T>,
    scale: f64,
    x_kind: Kind,
    g: &T,
    wanted: &[usize],
) -> Vec<Option<T>> {
    let want = |i| wanted.contains(&i);
    // Without dropout, an f32 x has the residual's gradient: computed once, given twice.
    let same = mask.is_none() && x_kind == Kind::Float;
    let dr = want(RESIDUAL) || (same && want(X));
    let dx_kind = (want(X) && !same).then_some(x_kind);
    let params = want(GAMMA) || want(BETA);
    let Some((dr, dx, dparams)) =
        norm_kernel::backward(g, &saved, &gamma, mask.as_ref(), scale, dr, dx_kind, params)
    else {
        // The shim failed since the forward: libtorch's backward from the same saved values.
        let size = saved.s.size();
        let stats = [&size[..size.len() - 1], &[1]].concat();
        let ops = AddNormSaved::Ops {
            mean: saved.mean.view(stats.as_slice()),
            rstd: saved.rstd.view(stats.as_slice()),
            s: saved.s,
            gamma,
            mask: mask.map(|m| (m.to_kind(Kind::Bool), scale)),
        };
        return backward(ops, g, wanted);
    };
    wanted
        .iter()
        .map(|&i| match i {
            X if same => dr.as_ref().map(T::shallow_clone),
            X => dx.as_ref().map(T::shallow_clone),
            RESIDUAL => dr.as_ref().map(T::shallow_clone),
            GAMMA => dparams
                .as_ref()
                .map(|p| p.select(0, 0).to_kind(gamma.kind())),
            BETA => dparams
                .as_ref()
                .map(|p| p.select(0, 1).to_kind(gamma.kind())),
            _ => None,
        })
        .collect()
}

/// Which inputs share storage with what was saved: γ only.
pub(super) fn shared_storage(n: usize) -> Vec<bool> {
    (0..n).map(|i| i == GAMMA).collect()
}
