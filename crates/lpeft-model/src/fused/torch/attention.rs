//! The attention-core island: per head `drop(softmax(q·kᵀ/√D + bias))·v`.

use tch::Tensor as T;

use super::Saved;
use crate::fused::Island;

/// Input slots: `[q, k, v, score_bias]` (the bias never carries a gradient).
pub(super) const Q: usize = 0;
pub(super) const K: usize = 1;
pub(super) const V: usize = 2;
pub(super) const SCORE_BIAS: usize = 3;

/// On CUDA: libtorch's memory-efficient kernels, forward and backward, called directly
/// (`[B, T, H, D]` views, the layout the kernels use).
pub(super) struct AttentionSaved {
    q: T,
    k: T,
    v: T,
    bias: T,
    out: T,
    lse: T,
    seed: T,
    offset: T,
    dropout: f64,
}

/// Elsewhere: libtorch's autograd graph of its SDPA.
pub(super) struct GraphSaved {
    pub(super) leaves: Vec<T>,
    pub(super) output: T,
}

/// Training forward of the attention core with the memory-efficient CUDA kernels, where they
/// apply (CUDA, head size a multiple of 8); `None` elsewhere.
pub(super) fn forward(x: &[T], island: &Island) -> Option<(T, Saved)> {
    let Island::Attention { heads, dropout, .. } = *island else {
        unreachable!("attention island")
    };
    let (b, t, hd) = x[Q].size3().ok()?;
    let h = heads as i64;
    if !x[Q].device().is_cuda() || hd % h != 0 || (hd / h) % 8 != 0 {
        return None;
    }
    let split = |y: &T| y.view([b, t, h, hd / h]);
    let (q, k, v) = (split(&x[Q]), split(&x[K]), split(&x[V]));
    // The kernels want every bias stride but the last aligned to 16 elements: pad the key
    // axis and view it back (as SDPA does), then broadcast over heads and queries.
    let t16 = (t + 15) / 16 * 16;
    let bias = if t16 == t {
        x[SCORE_BIAS].shallow_clone()
    } else {
        x[SCORE_BIAS].constant_pad_nd([0, t16 - t]).narrow(3, 0, t)
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
    let saved = Saved::Attention(AttentionSaved {
        q,
        k,
        v,
        bias,
        out,
        lse,
        seed,
        offset,
        dropout,
    });
    Some((ctx, saved))
}

/// Gradients of the inputs listed in `wanted` (of q, k, v), in that order.
pub(super) fn backward(saved: AttentionSaved, g: &T, wanted: &[usize]) -> Vec<Option<T>> {
    let AttentionSaved {
        q,
        k,
        v,
        bias,
        out,
        lse,
        seed,
        offset,
        dropout,
    } = saved;
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

/// Gradients through the saved autograd graph.
pub(super) fn graph_backward(saved: GraphSaved, g: &T, wanted: &[usize]) -> Vec<Option<T>> {
    let GraphSaved { leaves, output } = saved;
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
