//! The bf16 scaling kernels of `csrc/scale_kernel.cpp` (compiled at run time by NVRTC, once per
//! machine: kept in `$LPEFT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/lpeft/kernels`, else
//! `~/.cache/lpeft/kernels`; `LPEFT_KERNEL_CACHE=off` keeps none) for [`super::scale`]: `x·s`
//! and, in the backward, ∂x with the f32 product behind ∂s in one pass; and the bf16 → f32
//! widening of the islands' hand-backs ([`to_kind`]).
//! They give libtorch's bits (see the C++ file), so whether they run changes no value, only the
//! time: each call says whether it ran, and the caller falls back to libtorch's products when
//! it did not (not CUDA, not bf16, not contiguous, no NVRTC, or `LPEFT_SCALE_KERNEL=off`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tch::{Device, Kind, Tensor as T};

static LAUNCHES: AtomicU64 = AtomicU64::new(0);
static FAILURE: Mutex<Option<String>> = Mutex::new(None);
/// Set by the first failure: later calls go straight to libtorch (as the shim would refuse
/// them too), without allocating outputs for a launch that cannot happen.
static UNUSABLE: AtomicBool = AtomicBool::new(false);

/// How many times the kernels ran in this process, and why they could not run when a call
/// found them unusable (the first such reason).
pub fn report() -> (u64, Option<String>) {
    let failure = FAILURE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (LAUNCHES.load(Ordering::Relaxed), failure)
}

/// Compiles the kernels for CUDA device `device` on a thread of their own, so that the first
/// launch does not wait for NVRTC (about 0.3 s): for a stage to call before it loads its model.
pub fn prepare_in_background(device: usize) {
    if enabled() {
        std::thread::spawn(move || {
            if let Err(why) = ffi::prepare(device) {
                note_failure(why);
            }
        });
    }
}

fn note_failure(why: String) {
    UNUSABLE.store(true, Ordering::Relaxed);
    FAILURE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(why);
}

/// Whether the shim's kernels may still run (no launch or compilation has failed), whatever
/// `LPEFT_SCALE_KERNEL` says: the add-norm kernels ([`super::norm_kernel`]) ask this.
pub(super) fn usable() -> bool {
    !UNUSABLE.load(Ordering::Relaxed)
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    usable() && *ON.get_or_init(|| std::env::var("LPEFT_SCALE_KERNEL").map_or(true, |v| v != "off"))
}

/// The CUDA device index when `t` is a contiguous CUDA tensor of `kind`.
fn cuda_index(t: &T, kind: Kind) -> Option<usize> {
    match t.device() {
        Device::Cuda(i) if t.kind() == kind && t.is_contiguous() => Some(i),
        _ => None,
    }
}

/// `s` as the kernels read it: f32, contiguous, one value per column of `x`, on x's device.
fn scales(x: &T, s: &T) -> Option<(usize, T, i64, i64)> {
    if !enabled() {
        return None;
    }
    let device = cuda_index(x, Kind::BFloat16)?;
    let c = *x.size().last()?;
    if s.kind() != Kind::Float
        || s.device() != x.device()
        || s.numel() != usize::try_from(c).ok()?
    {
        return None;
    }
    let s = if s.is_contiguous() {
        s.shallow_clone()
    } else {
        s.contiguous()
    };
    let n = i64::try_from(x.numel()).ok()?;
    Some((device, s, n, c))
}

/// `out = x·s` (out: bf16 like x); false when the kernel did not run.
pub(super) fn scale(x: &T, s: &T, out: &T) -> bool {
    let Some((device, s, n, c)) = scales(x, s) else {
        return false;
    };
    if cuda_index(out, Kind::BFloat16) != Some(device) || out.size() != x.size() {
        return false;
    }
    ffi::scale(device, x, &s, out, n, c)
}

/// `(∂x, p)` with ∂x = g·s in bf16 (when `dx`) and p = g·x in f32 (when `product`), or None
/// when the kernel did not run.
pub(super) fn scale_backward(
    g: &T,
    x: &T,
    s: &T,
    dx: bool,
    product: bool,
) -> Option<(Option<T>, Option<T>)> {
    let (device, s, n, c) = scales(x, s)?;
    if cuda_index(g, Kind::BFloat16) != Some(device) || g.size() != x.size() {
        return None;
    }
    let dx = dx.then(|| T::empty(x.size(), (Kind::BFloat16, x.device())));
    let p = product.then(|| T::empty(x.size(), (Kind::Float, x.device())));
    ffi::scale_backward(device, g, x, &s, dx.as_ref(), p.as_ref(), n, c).then_some((dx, p))
}

/// `t` in `kind`, as `t.to_kind(kind)` gives it: from bf16 to f32 on CUDA in the shim's
/// vectorised kernel (widening is exact), where libtorch's casting copy is unvectorised (about
/// a hundred a training step, at the islands' f32 hand-backs).
pub(super) fn to_kind(t: &T, kind: Kind) -> T {
    if kind == Kind::Float
        && enabled()
        && let Some(device) = cuda_index(t, Kind::BFloat16)
        && let Ok(n) = i64::try_from(t.numel())
    {
        let out = T::empty(t.size(), (Kind::Float, t.device()));
        if ffi::widen(device, t, &out, n) {
            return out;
        }
    }
    t.to_kind(kind)
}

pub(super) fn ran(result: Result<(), String>) -> bool {
    match result {
        Ok(()) => {
            LAUNCHES.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(why) => {
            note_failure(why);
            false
        }
    }
}

#[cfg(lpeft_cuda_graphs)]
pub(super) use ffi::{call, index};

/// Compiles (or loads from the disk cache) the shim's kernels for `device` now: Ok when they
/// can run.
pub(in crate::fused) fn prepare_now(device: usize) -> Result<(), String> {
    ffi::prepare(device).inspect_err(|why| note_failure(why.clone()))
}

#[cfg(lpeft_cuda_graphs)]
mod ffi {
    use std::ffi::{CStr, c_char, c_int, c_void};

    use tch::Tensor as T;

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn lpeft_scale_prepare(device: c_int, err: *mut c_char, len: usize) -> c_int;
        fn lpeft_widen_bf16(
            device: c_int,
            x: *const c_void,
            out: *mut c_void,
            n: i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        fn lpeft_scale_bf16(
            device: c_int,
            x: *const c_void,
            s: *const c_void,
            out: *mut c_void,
            n: i64,
            c: i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        #[allow(clippy::too_many_arguments)]
        fn lpeft_scale_backward_bf16(
            device: c_int,
            g: *const c_void,
            x: *const c_void,
            s: *const c_void,
            dx: *mut c_void,
            p: *mut c_void,
            n: i64,
            c: i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
    }

    const ERR_LEN: usize = 2048;

    #[allow(unsafe_code)]
    pub(super) fn prepare(device: usize) -> Result<(), String> {
        // SAFETY: the buffer outlives the call and its length is passed.
        call(|err, len| unsafe { lpeft_scale_prepare(index(device), err, len) })
    }

    #[allow(unsafe_code)]
    pub(in crate::fused::torch) fn call(
        f: impl FnOnce(*mut c_char, usize) -> c_int,
    ) -> Result<(), String> {
        let mut buf = [0 as c_char; ERR_LEN];
        if f(buf.as_mut_ptr(), ERR_LEN) == 0 {
            return Ok(());
        }
        // SAFETY: the shim leaves a NUL-terminated string within the buffer on failure.
        Err(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    pub(in crate::fused::torch) fn index(device: usize) -> c_int {
        c_int::try_from(device).unwrap_or(c_int::MAX)
    }

    #[allow(unsafe_code)]
    pub(super) fn widen(device: usize, x: &T, out: &T, n: i64) -> bool {
        super::ran(call(|err, len| {
            // SAFETY: as in `scale`: contiguous CUDA tensors of n elements, bf16 and f32.
            unsafe { lpeft_widen_bf16(index(device), x.data_ptr(), out.data_ptr(), n, err, len) }
        }))
    }

    #[allow(unsafe_code)]
    pub(super) fn scale(device: usize, x: &T, s: &T, out: &T, n: i64, c: i64) -> bool {
        super::ran(call(|err, len| {
            // SAFETY: contiguous CUDA tensors of the checked kinds and n elements (s: c), alive
            // for the call; the kernel is queued on the current stream, ordered with libtorch's
            // later use of `out` on it.
            unsafe {
                lpeft_scale_bf16(
                    index(device),
                    x.data_ptr(),
                    s.data_ptr(),
                    out.data_ptr(),
                    n,
                    c,
                    err,
                    len,
                )
            }
        }))
    }

    #[allow(unsafe_code, clippy::too_many_arguments)]
    pub(super) fn scale_backward(
        device: usize,
        g: &T,
        x: &T,
        s: &T,
        dx: Option<&T>,
        p: Option<&T>,
        n: i64,
        c: i64,
    ) -> bool {
        let ptr = |t: Option<&T>| t.map_or(std::ptr::null_mut(), T::data_ptr);
        super::ran(call(|err, len| {
            // SAFETY: as in `scale`; null outputs are skipped by the kernel.
            unsafe {
                lpeft_scale_backward_bf16(
                    index(device),
                    g.data_ptr(),
                    x.data_ptr(),
                    s.data_ptr(),
                    ptr(dx),
                    ptr(p),
                    n,
                    c,
                    err,
                    len,
                )
            }
        }))
    }
}

#[cfg(not(lpeft_cuda_graphs))]
mod ffi {
    use tch::Tensor as T;

    const WHY: &str = "built without the CUDA shim (see crates/lpeft-model/build.rs)";

    pub(super) fn prepare(_: usize) -> Result<(), String> {
        Err(WHY.into())
    }

    pub(super) fn widen(_: usize, _: &T, _: &T, _: i64) -> bool {
        super::ran(Err(WHY.into()))
    }

    pub(super) fn scale(_: usize, _: &T, _: &T, _: &T, _: i64, _: i64) -> bool {
        super::ran(Err(WHY.into()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn scale_backward(
        _: usize,
        _: &T,
        _: &T,
        _: &T,
        _: Option<&T>,
        _: Option<&T>,
        _: i64,
        _: i64,
    ) -> bool {
        super::ran(Err(WHY.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw bits of a tensor's elements (bf16 as i16, f32 as i32), on the host.
    fn bits(t: &T) -> Vec<i64> {
        let view = match t.kind() {
            Kind::BFloat16 => Kind::Int16,
            _ => Kind::Int,
        };
        let host = t
            .view_dtype(view)
            .flatten(0, -1)
            .to_kind(Kind::Int64)
            .to_device(Device::Cpu);
        Vec::<i64>::try_from(&host).expect("int64 elements")
    }

    /// bf16 values with the cases rounding can get wrong: infinities, NaN, signed zeros,
    /// subnormals, the largest finite values, and random ones of every scale.
    fn awkward(rows: i64, c: i64, device: Device) -> T {
        let n = rows * c;
        let random =
            T::randn([n], (Kind::Float, device)) * T::randn([n], (Kind::Float, device)).exp2();
        let special = T::from_slice(&[
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            1e-39,
            -3e-40,
            3.3e38,
            -3.3e38,
            1.0,
        ])
        .to_device(device);
        let k = special.size()[0].min(n);
        random.narrow(0, 0, k).copy_(&special.narrow(0, 0, k));
        random.to_kind(Kind::BFloat16).view([rows, c])
    }

    /// The kernels against libtorch's own products, bit for bit: vectorised (c a multiple of
    /// 8), one element a thread (c = 12, 1), and a misaligned view.
    #[test]
    fn kernels_give_libtorchs_bits() {
        // Nothing to compare without CUDA (or without the shim); the GPU calls run it.
        if !tch::Cuda::is_available() || !cfg!(lpeft_cuda_graphs) {
            return;
        }
        let device = Device::Cuda(0);
        assert_eq!(ffi::prepare(0), Ok(()), "compiling the kernels");
        // The documented disk cache holds them now (unless switched off).
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let dir = match env("LPEFT_KERNEL_CACHE") {
            Some(d) if d == "off" => None,
            Some(d) => Some(std::path::PathBuf::from(d)),
            None => env("XDG_CACHE_HOME")
                .map(|x| std::path::PathBuf::from(x).join("lpeft/kernels"))
                .or_else(|| {
                    env("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/lpeft/kernels"))
                }),
        };
        if let Some(dir) = dir {
            let cached = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .any(|e| e.file_name().to_string_lossy().ends_with(".cubin"))
                })
                .unwrap_or(false);
            assert!(cached, "no cached kernels in {}", dir.display());
        }
        tch::manual_seed(7);
        for (rows, c, offset) in [
            (37, 24, 0),
            (4096, 768, 0),
            (5, 12, 0),
            (9, 1, 0),
            (6, 16, 1),
        ] {
            let whole = awkward(rows * c + offset, 1, device).flatten(0, -1);
            let x = whole.narrow(0, offset, rows * c).view([rows, c]);
            let g = awkward(rows, c, device);
            let s = T::randn([c], (Kind::Float, device)) * 3.0;
            let _ = s.narrow(0, 0, 1).fill_(1e30);
            let what = format!("rows {rows}, c {c}, offset {offset}");

            let want = x.mul_out(&T::empty([rows, c], (Kind::BFloat16, device)), &s);
            let got = T::empty([rows, c], (Kind::BFloat16, device));
            assert!(scale(&x, &s, &got), "{what}: forward ran");
            assert_eq!(bits(&got), bits(&want), "{what}: x·s");

            let want_dx = g.mul_out(&T::empty([rows, c], (Kind::BFloat16, device)), &s);
            let want_p = g.to_kind(Kind::Float) * &x;
            let (dx, p) = scale_backward(&g, &x, &s, true, true).expect("backward ran");
            assert_eq!(bits(&dx.unwrap()), bits(&want_dx), "{what}: ∂x");
            assert_eq!(bits(&p.unwrap()), bits(&want_p), "{what}: g·x");
            let (dx, p) = scale_backward(&g, &x, &s, false, true).expect("backward ran");
            assert!(dx.is_none());
            assert_eq!(bits(&p.unwrap()), bits(&want_p), "{what}: g·x alone");
        }
        // Widening: every bf16 bit pattern (NaNs included), aligned and not, and odd lengths.
        let all = T::arange(65536, (Kind::Int, device)).to_kind(Kind::Int16);
        let all = all.view_dtype(Kind::BFloat16);
        for (offset, n) in [(0, 65536), (1, 65535), (3, 13), (8, 64)] {
            let x = all.narrow(0, offset, n);
            let got = to_kind(&x, Kind::Float);
            assert_eq!(got.size(), x.size());
            assert_eq!(
                bits(&got),
                bits(&x.to_kind(Kind::Float)),
                "widening {offset}+{n}"
            );
        }
        let (runs, failure) = report();
        assert_eq!(failure, None);
        assert!(runs >= 19, "{runs} kernel runs");
    }
}
