//! A projection island whose input enters scaled by a last input `s: [1, 1, I]`
//! ([`Island::Linear`]'s `in_scale`): an estimation mask applied where the projection takes its
//! input instead of by a product between two islands, so that the producer may hand its output
//! over in bf16. The values are burn's, to the bit: `x·s` is formed in f32 and written once in
//! the compute type (burn's product in f32, then the island's cast), and the gradients are
//! burn's product rule with its broadcast reduction (one `sum_dim` per broadcast dimension).
//! On CUDA in bf16 the products run in [`super::scale_kernel`]'s kernels, to the same bits.

use tch::Tensor as T;

use super::{Saved, linear::X, scale_kernel};

/// What the scaling's backward needs beside the projection's own.
pub(super) struct ScaledSaved {
    pub(super) inner: Saved,
    /// x as it arrived (f32, or bf16 handed over), for ∂s.
    x: T,
    s: T,
    /// The input slot of `s` (the last).
    slot: usize,
}

/// The projection's own inputs: `x·s` in `kind` (x's own type where none) in x's slot, `s`
/// dropped.
pub(super) fn inputs(x: &[T], kind: Option<tch::Kind>) -> Vec<T> {
    let (s, rest) = x.split_last().expect("an input scale");
    let out = T::empty(
        rest[X].size(),
        (kind.unwrap_or(rest[X].kind()), rest[X].device()),
    );
    // One kernel: the product in f32 (the common type), rounded once into `out`.
    let scaled = if scale_kernel::scale(&rest[X], s, &out) {
        out
    } else {
        rest[X].mul_out(&out, s)
    };
    std::iter::once(scaled)
        .chain(rest[X + 1..].iter().map(T::shallow_clone))
        .collect()
}

/// Wraps the projection's saved state with what the scaling needs (`raw`: the island's inputs).
pub(super) fn saved(inner: Saved, raw: &[T]) -> ScaledSaved {
    let slot = raw.len() - 1;
    ScaledSaved {
        inner,
        x: raw[X].shallow_clone(),
        s: raw[slot].shallow_clone(),
        slot,
    }
}

/// Gradients of the inputs in `wanted`, in that order: ∂x = (∂(x·s))·s in x's type, ∂s = Σ
/// over batch and positions of (∂(x·s))·x in f32, the rest the projection's.
pub(super) fn backward(saved: ScaledSaved, g: &T, wanted: &[usize]) -> Vec<Option<T>> {
    let ScaledSaved { inner, x, s, slot } = saved;
    let want_s = wanted.contains(&slot);
    let mut inner_wanted: Vec<usize> = wanted.iter().copied().filter(|&i| i != slot).collect();
    if want_s && !inner_wanted.contains(&X) {
        inner_wanted.push(X);
    }
    let mut inner_grads: Vec<(usize, Option<T>)> = inner_wanted
        .iter()
        .copied()
        .zip(super::backward_of(inner, g, &inner_wanted, None))
        .collect();
    let mut take = |i: usize| {
        inner_grads
            .iter_mut()
            .find(|(j, _)| *j == i)
            .and_then(|(_, g)| g.take())
    };
    let gx_scaled = take(X);
    let want_x = wanted.contains(&X);
    let fused = gx_scaled
        .as_ref()
        .filter(|_| want_x || want_s)
        .and_then(|gx| scale_kernel::scale_backward(gx, &x, &s, want_x, want_s));
    let (mut dx, product) = match fused {
        Some(done) => done,
        None => {
            let gx = || {
                gx_scaled
                    .as_ref()
                    .expect("∂(x·s) computed when ∂x or ∂s is wanted")
            };
            let dx = want_x.then(|| {
                let out = T::empty(gx().size(), (x.kind(), gx().device()));
                gx().mul_out(&out, &s)
            });
            (dx, want_s.then(|| gx().to_kind(tch::Kind::Float) * &x))
        }
    };
    let mut ds = product.map(|product| {
        let kind = product.kind();
        product
            .sum_dim_intlist([0i64].as_slice(), true, kind)
            .sum_dim_intlist([1i64].as_slice(), true, kind)
    });
    wanted
        .iter()
        .map(|&i| match i {
            X => dx.take(),
            i if i == slot => ds.take(),
            i => take(i),
        })
        .collect()
}

/// Which inputs share storage with the saved tensors: the projection's (with x's slot taken by
/// `x·s`, a new tensor), then x and s themselves, always.
pub(super) fn shared_storage(saved: &ScaledSaved, n: usize) -> (Vec<bool>, bool) {
    let (mut inputs, output) = super::shared_storage(&saved.inner, n - 1);
    inputs[X] = true;
    inputs.push(true);
    (inputs, output)
}
