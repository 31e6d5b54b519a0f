//! `LayerNorm(drop(x) + r)` of the residual stream (bf16-mixed's, TF32's) in the shim's CUDA kernels
//! (`csrc/kernels.cuh`; compiled and cached as [`super::scale_kernel`]'s): one kernel forward
//! (x read in bf16 or f32, the sum, the statistics, the output) and one backward (∂r, ∂x
//! through the mask in x's type; two more for ∂γ and ∂β of trained norms), where libtorch
//! takes eight to ten over the full-width f32 stream (a casting copy, dropout, add, norm, the
//! gradient's products and reductions) that pruning does not shrink.
//!
//! Unlike the scaling kernels these do not give libtorch's bits: the statistics are summed in
//! another order (two passes, in a fixed order, so every run gives the same bits). They run
//! only where the island's policy asks ([`crate::fused::FusedPolicy::norm_kernel`] under bf16
//! compute or TF32); a CUDA stage under bf16-mixed or TF32 checks up front that they can
//! ([`crate::fused::require_norm_kernel`]), so a key never stands for two computations.

use std::sync::atomic::{AtomicU64, Ordering};

use tch::{Device, Kind, Tensor as T};

use super::scale_kernel;

static FORWARDS: AtomicU64 = AtomicU64::new(0);

/// How many add-norm forwards ran in the kernels in this process.
pub fn runs() -> u64 {
    FORWARDS.load(Ordering::Relaxed)
}

/// What the forward keeps for the backward besides γ: the sum `s`, the row mean and 1/σ.
pub(super) struct Forward {
    pub y: T,
    pub s: T,
    pub mean: T,
    pub rstd: T,
}

/// The CUDA index when every tensor is contiguous on one CUDA device, x f32 or bf16, the rest
/// f32, the widths the kernels take.
fn device_of(x: &T, rest: &[&T], d: i64) -> Option<usize> {
    let Device::Cuda(i) = x.device() else {
        return None;
    };
    let ok = scale_kernel::usable()
        && (1..=ffi::max_width()).contains(&d)
        && matches!(x.kind(), Kind::Float | Kind::BFloat16)
        && x.is_contiguous()
        && rest
            .iter()
            .all(|t| t.device() == x.device() && t.kind() == Kind::Float && t.is_contiguous());
    ok.then_some(i)
}

/// A keep-mask for dropout `p` over `like`'s shape (uint8, 1 where kept), drawn by libtorch's
/// generator (graph-safe); `None` when p is 0.
fn keep_mask(like: &T, p: f64) -> Option<T> {
    (p > 0.0).then(|| {
        let mut m = T::empty(like.size(), (Kind::Uint8, like.device()));
        let _ = m.bernoulli_float_(1.0 - p);
        m
    })
}

/// The forward over the last dimension with dropout `p` on x (0: none), with the keep-mask and
/// the kept values' scale; None, having drawn nothing, when the kernel cannot take these
/// tensors.
pub(super) fn forward(
    x: &T,
    r: &T,
    p: f64,
    gamma: &T,
    beta: &T,
    eps: f64,
) -> Option<(Forward, Option<T>, f64)> {
    let size = x.size();
    let d = *size.last()?;
    let device = device_of(x, &[r, gamma, beta], d)?;
    if r.size() != size || gamma.numel() != d as usize || beta.numel() != d as usize {
        return None;
    }
    let mask = keep_mask(x, p);
    let scale = if p > 0.0 { 1.0 / (1.0 - p) } else { 1.0 };
    let rows = x.numel() as i64 / d;
    let f32s = (Kind::Float, x.device());
    let out = Forward {
        y: T::empty(size.as_slice(), f32s),
        s: T::empty(size.as_slice(), f32s),
        mean: T::empty([rows], f32s),
        rstd: T::empty([rows], f32s),
    };
    let args = ForwardArgs {
        x,
        r,
        mask: mask.as_ref(),
        scale: scale as f32,
        gamma,
        beta,
        eps: eps as f32,
        out: &out,
        rows,
        d,
    };
    let ran = ffi::forward(device, args);
    if ran {
        FORWARDS.fetch_add(1, Ordering::Relaxed);
    }
    ran.then_some((out, mask, scale))
}

/// Gradients from upstream `g`: ∂r (when `dr`), ∂x through the mask in `dx_kind` (f32 or
/// bf16; when given) and `[∂γ, ∂β]` as one `[2, d]` tensor (when `params`); None when the
/// kernel cannot take these tensors.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    g: &T,
    saved: &Forward,
    gamma: &T,
    mask: Option<&T>,
    scale: f64,
    dr: bool,
    dx_kind: Option<Kind>,
    params: bool,
) -> Option<(Option<T>, Option<T>, Option<T>)> {
    let g = if g.is_contiguous() {
        g.shallow_clone()
    } else {
        g.contiguous()
    };
    let size = saved.s.size();
    let d = *size.last()?;
    let device = device_of(&g, &[&saved.s, &saved.mean, &saved.rstd, gamma], d)?;
    let kinds_ok =
        g.kind() == Kind::Float && matches!(dx_kind, None | Some(Kind::Float | Kind::BFloat16));
    if g.size() != size || !kinds_ok {
        return None;
    }
    let rows = g.numel() as i64 / d;
    let dev = g.device();
    let dr = dr.then(|| T::empty(size.as_slice(), (Kind::Float, dev)));
    let dx = dx_kind.map(|k| T::empty(size.as_slice(), (k, dev)));
    let per_block = ffi::rows_per_block();
    let partial = params.then(|| {
        T::empty(
            [(rows + per_block - 1) / per_block, 2, d],
            (Kind::Float, dev),
        )
    });
    let dparams = params.then(|| T::empty([2, d], (Kind::Float, dev)));
    let args = BackwardArgs {
        g: &g,
        saved,
        gamma,
        mask,
        scale: scale as f32,
        dr: dr.as_ref(),
        dx: dx.as_ref(),
        partial: partial.as_ref(),
        dparams: dparams.as_ref(),
        rows,
        d,
    };
    ffi::backward(device, args).then_some((dr, dx, dparams))
}

/// The kernels' arguments, checked by [`forward`] and [`backward`].
#[cfg_attr(not(lpeft_cuda_graphs), allow(dead_code))]
struct ForwardArgs<'a> {
    x: &'a T,
    r: &'a T,
    mask: Option<&'a T>,
    scale: f32,
    gamma: &'a T,
    beta: &'a T,
    eps: f32,
    out: &'a Forward,
    rows: i64,
    d: i64,
}

#[cfg_attr(not(lpeft_cuda_graphs), allow(dead_code))]
struct BackwardArgs<'a> {
    g: &'a T,
    saved: &'a Forward,
    gamma: &'a T,
    mask: Option<&'a T>,
    scale: f32,
    dr: Option<&'a T>,
    dx: Option<&'a T>,
    partial: Option<&'a T>,
    dparams: Option<&'a T>,
    rows: i64,
    d: i64,
}

#[cfg(lpeft_cuda_graphs)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    use tch::{Kind, Tensor as T};

    use super::super::scale_kernel::{self, call, index};
    use super::{BackwardArgs, ForwardArgs};

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn lpeft_add_norm_max_width() -> i64;
        fn lpeft_add_norm_rows_per_block() -> i64;
        fn lpeft_add_norm_forward(
            device: c_int,
            x: *const c_void,
            x_bf16: c_int,
            r: *const c_void,
            m: *const c_void,
            scale: f32,
            gamma: *const c_void,
            beta: *const c_void,
            eps: f32,
            s: *mut c_void,
            y: *mut c_void,
            mean: *mut c_void,
            rstd: *mut c_void,
            rows: i64,
            d: i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        fn lpeft_add_norm_backward(
            device: c_int,
            g: *const c_void,
            s: *const c_void,
            mean: *const c_void,
            rstd: *const c_void,
            gamma: *const c_void,
            m: *const c_void,
            scale: f32,
            dr: *mut c_void,
            dx: *mut c_void,
            dx_bf16: c_int,
            partial: *mut c_void,
            dparams: *mut c_void,
            rows: i64,
            d: i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
    }

    fn ptr(t: Option<&T>) -> *mut c_void {
        t.map_or(std::ptr::null_mut(), T::data_ptr)
    }

    #[allow(unsafe_code)]
    pub(super) fn max_width() -> i64 {
        // SAFETY: no arguments, returns a constant.
        unsafe { lpeft_add_norm_max_width() }
    }

    #[allow(unsafe_code)]
    pub(super) fn rows_per_block() -> i64 {
        // SAFETY: as above.
        unsafe { lpeft_add_norm_rows_per_block() }
    }

    #[allow(unsafe_code)]
    pub(super) fn forward(device: usize, a: ForwardArgs<'_>) -> bool {
        let x_bf16 = c_int::from(a.x.kind() == Kind::BFloat16);
        scale_kernel::ran(call(|err, len| {
            // SAFETY: contiguous tensors of the kinds and shapes `super::forward` checked, on one
            // CUDA device, alive for the call; the kernel is queued on the current stream,
            // ordered with libtorch's later use of the outputs on it.
            unsafe {
                lpeft_add_norm_forward(
                    index(device),
                    a.x.data_ptr(),
                    x_bf16,
                    a.r.data_ptr(),
                    ptr(a.mask),
                    a.scale,
                    a.gamma.data_ptr(),
                    a.beta.data_ptr(),
                    a.eps,
                    a.out.s.data_ptr(),
                    a.out.y.data_ptr(),
                    a.out.mean.data_ptr(),
                    a.out.rstd.data_ptr(),
                    a.rows,
                    a.d,
                    err,
                    len,
                )
            }
        }))
    }

    #[allow(unsafe_code)]
    pub(super) fn backward(device: usize, a: BackwardArgs<'_>) -> bool {
        let dx_bf16 = c_int::from(a.dx.is_some_and(|t| t.kind() == Kind::BFloat16));
        scale_kernel::ran(call(|err, len| {
            // SAFETY: as in `forward`; null outputs are skipped by the kernels.
            unsafe {
                lpeft_add_norm_backward(
                    index(device),
                    a.g.data_ptr(),
                    a.saved.s.data_ptr(),
                    a.saved.mean.data_ptr(),
                    a.saved.rstd.data_ptr(),
                    a.gamma.data_ptr(),
                    ptr(a.mask),
                    a.scale,
                    ptr(a.dr),
                    ptr(a.dx),
                    dx_bf16,
                    ptr(a.partial),
                    ptr(a.dparams),
                    a.rows,
                    a.d,
                    err,
                    len,
                )
            }
        }))
    }
}

#[cfg(not(lpeft_cuda_graphs))]
mod ffi {
    use super::{BackwardArgs, ForwardArgs};

    /// No shim: no width qualifies, so nothing is ever launched.
    pub(super) fn max_width() -> i64 {
        0
    }

    pub(super) fn rows_per_block() -> i64 {
        1
    }

    pub(super) fn forward(_: usize, _: ForwardArgs<'_>) -> bool {
        false
    }

    pub(super) fn backward(_: usize, _: BackwardArgs<'_>) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest |a − b| over the largest |b| (floored at 1e-6), both as f64 on the host.
    fn rel(a: &T, b: &T) -> f64 {
        let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
        let scale = b.abs().max().double_value(&[]).max(1e-6);
        (a - b).abs().max().double_value(&[]) / scale
    }

    fn same_bits(a: &T, b: &T) -> bool {
        let view = |t: &T| match t.kind() {
            Kind::BFloat16 => t.view_dtype(Kind::Int16),
            _ => t.view_dtype(Kind::Int),
        };
        view(a).equal(&view(b))
    }

    /// The kernels against the formulas in f64 (forward, ∂r, ∂x through the mask in x's type,
    /// ∂γ and ∂β) for x in bf16 and f32, with dropout and without, at widths of one to four
    /// thousand columns (odd ones too); and twice the same bits.
    #[test]
    fn kernels_match_the_formulas() {
        if !tch::Cuda::is_available() || !cfg!(lpeft_cuda_graphs) {
            return;
        }
        let dev = Device::Cuda(0);
        assert_eq!(
            scale_kernel::prepare_now(0),
            Ok(()),
            "compiling the kernels"
        );
        tch::manual_seed(11);
        let f = (Kind::Float, dev);
        for (rows, d) in [
            (37, 768),
            (4096, 768),
            (5, 384),
            (3, 1000),
            (7, 2500),
            (33, 4096),
        ] {
            for (x_kind, p) in [
                (Kind::BFloat16, 0.1),
                (Kind::Float, 0.1),
                (Kind::BFloat16, 0.0),
            ] {
                let what = format!("rows {rows}, d {d}, {x_kind:?}, p {p}");
                let x = (T::randn([rows, d], f) * 2.0).to_kind(x_kind);
                let r = T::randn([rows, d], f) + 0.5;
                let gamma = T::randn([d], f) * 0.2 + 1.0;
                let beta = T::randn([d], f) * 0.1;
                let (out, mask, scale) = forward(&x, &r, p, &gamma, &beta, 1e-5)
                    .unwrap_or_else(|| panic!("{what}: forward ran"));
                assert_eq!(mask.is_some(), p > 0.0, "{what}: mask");
                if let Some(m) = &mask {
                    let kept = m.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
                    assert!((kept - (1.0 - p)).abs() < 0.05, "{what}: {kept} kept");
                }
                // The same draw again gives the same bits.
                tch::manual_seed(5);
                let (a, ma, _) = forward(&x, &r, p, &gamma, &beta, 1e-5).expect("forward ran");
                tch::manual_seed(5);
                let (b, mb, _) = forward(&x, &r, p, &gamma, &beta, 1e-5).expect("forward ran");
                assert!(same_bits(&a.y, &b.y), "{what}: forward not deterministic");
                if let (Some(ma), Some(mb)) = (&ma, &mb) {
                    assert!(ma.equal(mb), "{what}: the same seed, another mask");
                }

                let dd = |t: &T| t.to_kind(Kind::Double);
                let keep = mask.as_ref().map_or_else(
                    || T::ones([rows, d], (Kind::Double, dev)),
                    |m| dd(m) * scale,
                );
                let s = dd(&x) * &keep + dd(&r);
                let mean = s.mean_dim(-1, true, Kind::Double);
                let var = (&s - &mean).square().mean_dim(-1, true, Kind::Double);
                let rstd = (var + 1e-5).rsqrt();
                let xhat = (&s - &mean) * &rstd;
                let y = &xhat * dd(&gamma) + dd(&beta);
                assert!(rel(&out.s, &s) < 1e-6, "{what}: s");
                assert!(
                    rel(&out.y, &y) < 1e-5,
                    "{what}: y off by {}",
                    rel(&out.y, &y)
                );
                assert!(rel(&out.rstd, &rstd.squeeze_dim(-1)) < 1e-5, "{what}: rstd");

                let g = T::randn([rows, d], f);
                let back = || {
                    let dx = Some(x_kind);
                    backward(&g, &out, &gamma, mask.as_ref(), scale, true, dx, true)
                };
                let (dr, dx, dparams) = back().unwrap_or_else(|| panic!("{what}: backward ran"));
                let (dr, dx, dparams) = (dr.unwrap(), dx.unwrap(), dparams.unwrap());
                let (dr2, dx2, dp2) = back().expect("backward ran");
                assert!(
                    same_bits(&dr, &dr2.unwrap())
                        && same_bits(&dx, &dx2.unwrap())
                        && same_bits(&dparams, &dp2.unwrap()),
                    "{what}: backward not deterministic"
                );
                let dy = dd(&g) * dd(&gamma);
                let c1 = dy.mean_dim(-1, true, Kind::Double);
                let c2 = (&dy * &xhat).mean_dim(-1, true, Kind::Double);
                let ds = (&dy - c1 - &xhat * c2) * &rstd;
                assert_eq!(dx.kind(), x_kind, "{what}: ∂x type");
                assert!(rel(&dr, &ds) < 1e-4, "{what}: ∂r off by {}", rel(&dr, &ds));
                let want_dx = &ds * &keep;
                // bf16 rounding: 2⁻⁸ of the value at most.
                let tol = if x_kind == Kind::BFloat16 { 8e-3 } else { 1e-4 };
                assert!(
                    rel(&dx, &want_dx) < tol,
                    "{what}: ∂x off by {}",
                    rel(&dx, &want_dx)
                );
                let dgamma = (dd(&g) * &xhat).sum_dim_intlist([0].as_slice(), false, Kind::Double);
                let dbeta = dd(&g).sum_dim_intlist([0].as_slice(), false, Kind::Double);
                assert!(rel(&dparams.select(0, 0), &dgamma) < 1e-4, "{what}: ∂γ");
                assert!(rel(&dparams.select(0, 1), &dbeta) < 1e-4, "{what}: ∂β");
                // Without ∂γ, ∂β (frozen norms): the same ∂r from a row a block.
                let (dr_only, _, none) =
                    backward(&g, &out, &gamma, mask.as_ref(), scale, true, None, false)
                        .expect("backward ran");
                assert!(none.is_none());
                assert!(same_bits(&dr_only.unwrap(), &dr), "{what}: ∂r without ∂γ");
            }
        }
        // Too wide for the kernels: libtorch's path is left to the caller.
        let wide = T::zeros([2, 4104], f);
        let (g1, b1) = (T::ones([4104], f), T::zeros([4104], f));
        assert!(forward(&wide, &wide, 0.1, &g1, &b1, 1e-5).is_none());
    }
}
