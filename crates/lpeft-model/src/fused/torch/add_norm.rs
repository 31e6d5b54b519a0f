//! The island `LayerNorm(drop(x) + residual)`.

use tch::Tensor as T;

use super::{Saved, dropout_with_mask, undo_dropout};
use crate::fused::Island;

/// Input slots: `[x, residual, gamma, beta]`.
pub(super) const X: usize = 0;
pub(super) const RESIDUAL: usize = 1;
pub(super) const GAMMA: usize = 2;
pub(super) const BETA: usize = 3;

/// Its input `s = drop(x) + r`, the row statistics, γ and the dropout mask (what libtorch's
/// own layer-norm derivative saves).
pub(super) struct AddNormSaved {
    s: T,
    mean: T,
    rstd: T,
    gamma: T,
    mask: Option<(T, f64)>,
}

pub(super) fn forward(x: &[T], island: &Island) -> (T, Saved) {
    let Island::AddNorm { eps, dropout: p } = *island else {
        unreachable!("add-norm island")
    };
    let (h, mask) = dropout_with_mask(&x[X], p);
    let s = h + &x[RESIDUAL];
    let d = *s.size().last().expect("non-scalar");
    let (out, mean, rstd) = s.native_layer_norm([d], Some(&x[GAMMA]), Some(&x[BETA]), eps);
    let saved = Saved::AddNorm(AddNormSaved {
        s,
        mean,
        rstd,
        gamma: x[GAMMA].shallow_clone(),
        mask,
    });
    (out, saved)
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
    let AddNormSaved {
        s,
        mean,
        rstd,
        gamma,
        mask,
    } = saved;
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

/// Which inputs share storage with what was saved: γ only.
pub(super) fn shared_storage(n: usize) -> Vec<bool> {
    (0..n).map(|i| i == GAMMA).collect()
}
