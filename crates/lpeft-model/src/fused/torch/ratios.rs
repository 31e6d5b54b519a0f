//! Estimation's norm ratios `‖Δ‖ / ‖W x + b‖` per row, recorded by the fused projections
//! (spec §3.2) with few kernels: a projection keeps its LoRA input `h = dropout(x)·A` (which
//! its backward keeps anyway), its scaled factor `sB` and the row norms of its base output (one
//! reduction); `‖Δ‖² = Σ (h·G) ⊙ h` with the r×r Gram matrix `G = sB·(sB)ᵀ` is then computed
//! once per forward for all projections of one factor shape with batched GEMMs, instead of
//! materialising each `[rows, d_out]` product Δ.

use std::cell::RefCell;

use tch::{Kind, Tensor as T};

struct Recorded {
    /// `[rows, r]`, the projection's compute type.
    h: T,
    /// `[r, d_out]`: B times the LoRA scale (padded ranks and widths are zero).
    b_scaled: T,
    /// `[rows]`: `‖W x + b‖` per row.
    base_norm: T,
}

thread_local! {
    /// The recording projections run on this thread since the last [`take`], in call order.
    static RECORDED: RefCell<Vec<Recorded>> = const { RefCell::new(Vec::new()) };
}

/// Keeps what [`take`] needs of one projection; `y` is its base output `[rows, d_out]`.
pub(super) fn record(h: &T, b_scaled: &T, y: &T) {
    let base_norm = y.linalg_norm(2.0, [1i64].as_slice(), false, None::<Kind>);
    RECORDED.with_borrow_mut(|r| {
        r.push(Recorded {
            h: h.shallow_clone(),
            b_scaled: b_scaled.shallow_clone(),
            base_norm,
        })
    });
}

/// Forgets what was recorded and not taken.
pub(crate) fn clear() {
    RECORDED.with_borrow_mut(Vec::clear);
}

/// `[projections]`: each recorded projection's row ratios reduced with `weights` (`[rows]`),
/// in call order, in `weights`' float type; graph-free.
pub(super) fn take(weights: &T) -> T {
    let recorded = RECORDED.with_borrow_mut(std::mem::take);
    let kind = weights.kind();
    if recorded.is_empty() {
        return T::zeros([0], (kind, weights.device()));
    }
    // Projections whose factors have one shape go through the GEMMs together.
    let mut groups: Vec<(Vec<i64>, Vec<usize>)> = Vec::new();
    for (i, r) in recorded.iter().enumerate() {
        let shape = r.b_scaled.size();
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, members)) => members.push(i),
            None => groups.push((shape, vec![i])),
        }
    }
    let weights_f32 = weights.to_kind(Kind::Float);
    // Per group, the means `[members]`; then every projection's value picked in call order.
    let mut at = vec![(0usize, 0i64); recorded.len()];
    let mut means = Vec::with_capacity(groups.len());
    for (g, (_, members)) in groups.iter().enumerate() {
        let stack = |f: &dyn Fn(&Recorded) -> &T| {
            let parts: Vec<&T> = members.iter().map(|&i| f(&recorded[i])).collect();
            T::stack(&parts, 0).to_kind(Kind::Float)
        };
        let (h, b, base) = (
            stack(&|r| &r.h),
            stack(&|r| &r.b_scaled),
            stack(&|r| &r.base_norm),
        );
        let gram = b.bmm(&b.transpose(1, 2));
        let delta_sq = (h.bmm(&gram) * &h).sum_dim_intlist([2i64].as_slice(), false, Kind::Float);
        means.push((delta_sq.sqrt() / base).mv(&weights_f32));
        for (k, &i) in members.iter().enumerate() {
            at[i] = (g, k as i64);
        }
    }
    // Views, not an index tensor: nothing is copied from the host (steps may be captured).
    let picked: Vec<T> = at.iter().map(|&(g, k)| means[g].narrow(0, k, 1)).collect();
    T::cat(&picked, 0).to_kind(kind)
}
