//! First-order Taylor importance of each PEFT rank (spec §3.3), computed right after backward:
//! `s_j = |mean_i(A[i,j]·∂L/∂A[i,j])| + |mean_o(B[j,o]·∂L/∂B[j,o])|` with `A: [d_in, r]`,
//! `B: [r, d_out]` (burn layout; the mean runs over the non-rank axis, the absolute value after
//! the mean, as in the reference).

use burn::tensor::{Gradients, Tensor};

use lpeft_schema::model::PeftModuleId;

use crate::model::Model;

/// Per-module rank scores `[r]`, lazy (read them together).
pub fn rank_taylor_scores(model: &Model, grads: &Gradients) -> Vec<(PeftModuleId, Tensor<1>)> {
    model
        .peft_modules()
        .into_iter()
        .map(|(id, f)| {
            let a = f.a.val();
            let b = f.b.val();
            let [_, r] = a.dims();
            let side = |w: Tensor<2>, dim: usize| -> Tensor<1> {
                match w.grad(grads) {
                    Some(g) => (w.inner() * g).mean_dim(dim).abs().reshape([r]),
                    None => Tensor::zeros([r], &w.device().inner()),
                }
            };
            (id, side(a, 0) + side(b, 1))
        })
        .collect()
}
