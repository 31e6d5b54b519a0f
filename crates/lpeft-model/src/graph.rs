//! CUDA graphs on libtorch: capture the device work of a closure once, replay it for the cost
//! of one launch. A training step of MiniLM issues about 1,500 libtorch operators, whose host
//! work (burn's autodiff, dispatch, launch) takes 18 ms while the GPU is busy for 5
//! (`bench/profile_step.py`); replayed, the step costs what the GPU needs.
//!
//! A graph reads and writes the memory it saw at capture: inputs must be copied into the
//! tensors the capture read ([`copy_into`]), and what the step produced copied back where the
//! next replay will read it. `lpeft_train`'s trainer does that; this module only captures,
//! replays and copies. Built only with `tch` and a libtorch with CUDA and its headers (see
//! build.rs); [`available`] says whether this build has them.

use burn::tensor::Tensor;
use burn::tensor::kind::Basic;

use crate::ModelError;

/// Whether this build can capture CUDA graphs (libtorch with CUDA, shim compiled).
pub const fn available() -> bool {
    cfg!(lpeft_cuda_graphs)
}

/// The environment variable that turns CUDA graphs off (`off`) where they would run; artifact
/// keys follow it ([`crate::fused::key_tag`]), since the graphed step's results differ from the
/// plain one's in the last bits.
pub const ENV: &str = "LPEFT_CUDA_GRAPHS";

/// Whether training on a backend of this class captures its steps: a libtorch CUDA device, and
/// neither [`ENV`] nor `LPEFT_FUSED` is `off`. It does not depend on this build (a report planned
/// by a CPU build must resolve the keys of GPU runs); a CUDA run in a build without graphs
/// ([`available`] false) refuses to train rather than run plainly under this tag.
pub fn on_for_class(backend_class: &str) -> bool {
    backend_class == "tch-cuda" && enabled_by_env()
}

/// Neither [`ENV`] nor `LPEFT_FUSED` ([`crate::fused::ENV`]) is `off`.
fn enabled_by_env() -> bool {
    std::env::var(ENV).as_deref() != Ok("off") && crate::fused::enabled_by_env()
}

/// [`on_for_class`] for a device.
pub fn on_for(device: &burn::tensor::Device) -> bool {
    crate::fused::libtorch_cuda(device) == Some(true) && enabled_by_env()
}

/// Switches libtorch's TF32 kernels for f32 matmuls on or off, process-wide (through the
/// shim, which builds with CUDA graphs; see [`crate::precision`] for who may call it).
pub fn set_tf32(on: bool) -> Result<(), ModelError> {
    #[cfg(lpeft_cuda_graphs)]
    {
        ffi::set_tf32(on)
    }
    #[cfg(not(lpeft_cuda_graphs))]
    {
        let _ = on;
        Err(ModelError::CudaGraph(
            "TF32 is switched through the CUDA shim, which this build lacks (libtorch without \
             CUDA, or no CUDA headers at build time: see crates/lpeft-model/build.rs)"
                .into(),
        ))
    }
}

/// libtorch keeps one random generator per CUDA device for the whole process, and while one
/// thread captures a graph, a draw from that generator on another thread (a dropout, a replay's
/// offset increment, a seeding) fails ("Offset increment outside graph capture encountered
/// unexpectedly"): two training stages may share a device (`lpeft run --per-device 2`).
/// Captures hold this lock exclusively; steps, replays and seeding hold it shared.
static RANDOM_STREAMS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held (shared) while a training step runs or replays: see [`RANDOM_STREAMS`]. Not while
/// capturing on the same thread (the capture takes the lock exclusively).
pub fn drawing_random() -> std::sync::RwLockReadGuard<'static, ()> {
    RANDOM_STREAMS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seeds libtorch's CPU generator and CUDA device `index`'s (only), through the shim; see
/// [`crate::device::seed`].
pub fn seed_cuda_device(index: usize, seed: u64) -> Result<(), ModelError> {
    #[cfg(lpeft_cuda_graphs)]
    {
        let _shared = drawing_random();
        ffi::seed_device(index, seed)
    }
    #[cfg(not(lpeft_cuda_graphs))]
    {
        let _ = (index, seed);
        Err(ModelError::CudaGraph(
            "seeding one CUDA device goes through the CUDA shim, which this build lacks".into(),
        ))
    }
}

/// A captured graph; dropped, it frees its memory pool (unless another graph shares it).
pub struct CudaGraph {
    #[cfg(lpeft_cuda_graphs)]
    raw: std::ptr::NonNull<std::ffi::c_void>,
}

impl std::fmt::Debug for CudaGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CudaGraph")
    }
}

impl CudaGraph {
    /// Runs `f` under capture on a side stream and returns the graph with `f`'s result; the
    /// captured work has **not** run yet: call [`CudaGraph::replay`]. `share`: a graph whose
    /// memory pool this one reuses (graphs that are replayed one at a time may share).
    pub fn capture<R>(
        share: Option<&CudaGraph>,
        f: impl FnOnce() -> R,
    ) -> Result<(CudaGraph, R), ModelError> {
        #[cfg(lpeft_cuda_graphs)]
        {
            let _exclusive = RANDOM_STREAMS
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let graph = ffi::new()?;
            ffi::begin(&graph, share)?;
            let out = f();
            ffi::end(&graph)?;
            Ok((graph, out))
        }
        #[cfg(not(lpeft_cuda_graphs))]
        {
            let _ = (share, f);
            Err(unavailable())
        }
    }

    /// Runs the captured work again, on the current stream.
    pub fn replay(&self) -> Result<(), ModelError> {
        #[cfg(lpeft_cuda_graphs)]
        {
            ffi::replay(self)
        }
        #[cfg(not(lpeft_cuda_graphs))]
        {
            Err(unavailable())
        }
    }
}

#[cfg(not(lpeft_cuda_graphs))]
fn unavailable() -> ModelError {
    ModelError::CudaGraph(
        "this build has no CUDA graphs (it needs the tch feature, a libtorch with CUDA and the \
         CUDA headers at build time; see crates/lpeft-model/build.rs)"
            .into(),
    )
}

/// Copies `src`'s values into `dst`'s memory (same shape and dtype), outside autodiff: what a
/// graph will read next. libtorch tensors only; `false` elsewhere (nothing copied).
pub fn copy_into<const D: usize, K: Basic>(dst: &Tensor<D, K>, src: &Tensor<D, K>) -> bool {
    #[cfg(feature = "tch")]
    {
        match (torch::handle(dst), torch::handle(src)) {
            (Some(mut d), Some(s)) => {
                tch::no_grad(|| d.copy_(&s));
                true
            }
            _ => false,
        }
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = (dst, src);
        false
    }
}

/// Copies every trained parameter of `src` into the same parameter of `dst` (two versions of
/// one model: a step's output and the tensors a graph reads); returns how many, or an error when
/// the two do not have the same trained parameters. libtorch only.
pub fn copy_trained<M: burn::module::Module>(dst: &M, src: &M) -> Result<usize, ModelError> {
    #[cfg(feature = "tch")]
    {
        let (d, s) = (torch::trained(dst), torch::trained(src));
        let size = |t: &Option<tch::Tensor>| t.as_ref().map(tch::Tensor::size);
        let same = d.len() == s.len() && d.iter().zip(&s).all(|(a, b)| size(a) == size(b));
        if !same || d.iter().any(Option::is_none) {
            return Err(ModelError::CudaGraph(format!(
                "the step's output has other trained parameters ({} against {})",
                s.len(),
                d.len()
            )));
        }
        let n = s.len();
        tch::no_grad(|| {
            for (mut a, b) in d.into_iter().flatten().zip(s.into_iter().flatten()) {
                if a.data_ptr() != b.data_ptr() {
                    a.copy_(&b);
                }
            }
        });
        Ok(n)
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = (dst, src);
        Err(unavailable())
    }
}

/// The address of `model`'s first trained parameter: a graph captured over one model must not
/// be replayed over another.
pub fn anchor<M: burn::module::Module>(model: &M) -> Option<usize> {
    #[cfg(feature = "tch")]
    {
        torch::first_trained(model).map(|t| t.data_ptr() as usize)
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = model;
        None
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it is our libtorch backend.
mod torch {
    use burn::backend::libtorch::LibTorch;
    use burn::backend::{Autodiff, AutodiffBackend, BackendTensor, DispatchTensorKind};
    use burn::tensor::Tensor;
    use burn::tensor::kind::Basic;

    /// Handles of the trained (gradient-requiring) parameters, in visit order (`None`: not a
    /// libtorch tensor).
    pub(super) fn trained<M: burn::module::Module>(model: &M) -> Vec<Option<tch::Tensor>> {
        struct Collect(Vec<Option<tch::Tensor>>);
        impl burn::module::ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                let t = param.val();
                if t.is_require_grad() {
                    self.0.push(handle(&t));
                }
            }
        }
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        c.0
    }

    /// The handle of the first trained parameter only: [`super::anchor`] runs every training
    /// step, so it does not collect the others.
    pub(super) fn first_trained<M: burn::module::Module>(model: &M) -> Option<tch::Tensor> {
        struct First(Option<tch::Tensor>);
        impl burn::module::ModuleVisitor for First {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                if self.0.is_none() {
                    let t = param.val();
                    if t.is_require_grad() {
                        self.0 = handle(&t);
                    }
                }
            }
        }
        let mut f = First(None);
        model.visit(&mut f);
        f.0
    }

    /// A libtorch handle sharing `t`'s storage (float, int or bool; autodiff or not).
    pub(super) fn handle<const D: usize, K: Basic>(t: &Tensor<D, K>) -> Option<tch::Tensor> {
        fn of(kind: &DispatchTensorKind) -> Option<tch::Tensor> {
            match kind {
                DispatchTensorKind::LibTorch(t) => Some(match t {
                    BackendTensor::Float(t) | BackendTensor::Int(t) | BackendTensor::Bool(t) => {
                        t.tensor.shallow_clone()
                    }
                    BackendTensor::Autodiff(t) => {
                        <Autodiff<LibTorch> as AutodiffBackend>::inner(t.clone())
                            .tensor
                            .shallow_clone()
                    }
                    BackendTensor::Quantized(_) => return None,
                }),
                DispatchTensorKind::Autodiff(inner) => of(inner),
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }
        of(&t.clone().into_dispatch().kind)
    }
}

#[cfg(lpeft_cuda_graphs)]
mod ffi {
    use std::ffi::{CStr, c_char, c_int, c_void};
    use std::ptr::NonNull;

    use super::CudaGraph;
    use crate::ModelError;

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn lpeft_graph_new(err: *mut c_char, len: usize) -> *mut c_void;
        fn lpeft_graph_free(g: *mut c_void);
        fn lpeft_graph_begin(
            g: *mut c_void,
            share: *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        fn lpeft_graph_end(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        fn lpeft_graph_replay(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        fn lpeft_set_tf32(on: c_int, err: *mut c_char, len: usize) -> c_int;
        fn lpeft_seed_device(device: i64, seed: u64, err: *mut c_char, len: usize) -> c_int;
    }

    const ERR_LEN: usize = 1024;

    #[allow(unsafe_code)]
    fn failed(what: &str, buf: &[c_char; ERR_LEN]) -> ModelError {
        // SAFETY: the shim always leaves a NUL-terminated string within the buffer.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        ModelError::CudaGraph(format!("CUDA graph {what}: {msg}"))
    }

    /// Runs one shim call that reports failure as a non-zero code with a message in the buffer.
    fn checked(
        what: &str,
        call: impl FnOnce(*mut c_char, usize) -> c_int,
    ) -> Result<(), ModelError> {
        let mut buf = [0 as c_char; ERR_LEN];
        if call(buf.as_mut_ptr(), ERR_LEN) == 0 {
            Ok(())
        } else {
            Err(failed(what, &buf))
        }
    }

    #[allow(unsafe_code)]
    pub(super) fn new() -> Result<CudaGraph, ModelError> {
        let mut buf = [0 as c_char; ERR_LEN];
        // SAFETY: the buffer outlives the call and its length is passed.
        let raw = unsafe { lpeft_graph_new(buf.as_mut_ptr(), ERR_LEN) };
        NonNull::new(raw)
            .map(|raw| CudaGraph { raw })
            .ok_or_else(|| failed("creation", &buf))
    }

    #[allow(unsafe_code)]
    pub(super) fn begin(g: &CudaGraph, share: Option<&CudaGraph>) -> Result<(), ModelError> {
        let share = share.map_or(std::ptr::null_mut(), |s| s.raw.as_ptr());
        checked("capture", |err, len| {
            // SAFETY: both pointers come from lpeft_graph_new and are alive.
            unsafe { lpeft_graph_begin(g.raw.as_ptr(), share, err, len) }
        })
    }

    #[allow(unsafe_code)]
    pub(super) fn end(g: &CudaGraph) -> Result<(), ModelError> {
        checked("capture", |err, len| {
            // SAFETY: as in `begin`.
            unsafe { lpeft_graph_end(g.raw.as_ptr(), err, len) }
        })
    }

    #[allow(unsafe_code)]
    pub(super) fn replay(g: &CudaGraph) -> Result<(), ModelError> {
        checked("replay", |err, len| {
            // SAFETY: as in `begin`.
            unsafe { lpeft_graph_replay(g.raw.as_ptr(), err, len) }
        })
    }

    #[allow(unsafe_code)]
    pub(super) fn set_tf32(on: bool) -> Result<(), ModelError> {
        checked("TF32 switch", |err, len| {
            // SAFETY: the buffer outlives the call and its length is passed.
            unsafe { lpeft_set_tf32(c_int::from(on), err, len) }
        })
    }

    #[allow(unsafe_code)]
    pub(super) fn seed_device(index: usize, seed: u64) -> Result<(), ModelError> {
        let device = i64::try_from(index).unwrap_or(i64::MAX);
        checked("seeding", |err, len| {
            // SAFETY: the buffer outlives the call and its length is passed.
            unsafe { lpeft_seed_device(device, seed, err, len) }
        })
    }

    impl Drop for CudaGraph {
        #[allow(unsafe_code)]
        fn drop(&mut self) {
            // SAFETY: created by lpeft_graph_new, freed once.
            unsafe { lpeft_graph_free(self.raw.as_ptr()) }
        }
    }
}
