//! Backend selection at run time. Cargo features decide which backends are compiled in; a
//! string (`--backend`, `LPEFT_BACKEND`) picks one of them.

use burn::tensor::Device;

use crate::error::ModelError;

/// Backends compiled into this build, by the names `device()` accepts.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "tch") {
        v.extend(["tch", "tch-cuda"]);
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    v
}

/// What each compiled-in backend can run on here, for `lpeft doctor`: (backend, devices). Only
/// libtorch is asked (CUDA devices through its own runtime); the others open a device at first
/// use, which may fail later.
pub fn probe() -> Vec<(&'static str, String)> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push(("flex", format!("CPU ({threads} threads)")));
    }
    #[cfg(feature = "tch")]
    {
        let cuda = if tch::Cuda::is_available() {
            let n = tch::Cuda::device_count();
            format!(
                "CUDA: {n} device(s), --backend tch-cuda[:0..{}]",
                (n - 1).max(0)
            )
        } else {
            "CUDA: none visible (libtorch CPU only)".to_owned()
        };
        v.push(("tch", format!("CPU; {cuda}")));
    }
    if cfg!(feature = "cuda") {
        v.push((
            "cuda",
            "burn's CUDA runtime: the device opens at first use".to_owned(),
        ));
    }
    for (on, name) in [
        (cfg!(feature = "vulkan"), "vulkan"),
        (cfg!(feature = "wgpu"), "wgpu"),
    ] {
        if on {
            v.push((name, "the default adapter opens at first use".to_owned()));
        }
    }
    if cfg!(feature = "ndarray") {
        v.push(("ndarray", format!("CPU ({threads} threads)")));
    }
    v
}

/// Every backend name this tool knows, compiled in or not (`tch-cpu` is `tch`).
pub const KNOWN: &[&str] = &[
    "flex", "tch", "tch-cpu", "tch-cuda", "cuda", "vulkan", "wgpu", "ndarray",
];

/// Checks that `name` is a backend this tool knows (`tch-cuda:1` included), without creating
/// a device or needing it compiled in: enough to compute artifact keys, as `plan` and
/// `report` do. Running a stage needs it compiled in ([`device`]).
pub fn check_known(name: &str) -> Result<(), ModelError> {
    let (base, index) = match name.split_once(':') {
        Some((b, i)) => (b, Some(i)),
        None => (name, None),
    };
    let indexed = matches!(base, "tch-cuda" | "cuda");
    let index_ok = index.is_none_or(|i| indexed && i.parse::<usize>().is_ok());
    if KNOWN.contains(&base) && index_ok {
        return Ok(());
    }
    Err(ModelError::UnknownBackend {
        name: name.to_string(),
        available: format!(
            "{} (known: flex, tch, tch-cuda[:i], cuda[:i], vulkan, wgpu, ndarray)",
            available().join(", ")
        ),
    })
}

/// Whether backend `name`'s device is the host's CPU (`flex`, `tch`, `ndarray`), so stages on
/// it compete with every other stage for the same cores.
pub fn on_host(name: &str) -> bool {
    let base = name.split(':').next().unwrap_or(name);
    matches!(base, "flex" | "tch" | "tch-cpu" | "ndarray")
}

/// How many devices of the indexed backend `class` (`tch-cuda`) this machine shows, for
/// `--devices tch-cuda:*`; only libtorch can count them.
pub fn device_count(class: &str) -> Result<usize, ModelError> {
    match class {
        #[cfg(feature = "tch")]
        "tch-cuda" => Ok(usize::try_from(tch::Cuda::device_count()).unwrap_or(0)),
        _ => Err(ModelError::UnknownBackend {
            name: format!("{class}:*"),
            available: format!(
                "{}; only tch-cuda devices can be counted (a `--features tch` build), list the others",
                available().join(", ")
            ),
        }),
    }
}

/// Seeds the random streams a stage on `device` draws from (dropout, random tensors). On a
/// libtorch CUDA device (in a build with the CUDA shim) only that device's generator and the
/// CPU one are seeded, to the same values burn's seed gives them: burn's seed (libtorch's
/// `manual_seed`) would re-seed every GPU of the process, so a stage starting on one GPU would
/// change the draws of a stage training on another. Elsewhere, burn's seed.
pub fn seed(device: &Device, seed: u64) -> Result<(), ModelError> {
    match crate::fused::libtorch_cuda_index(device) {
        Some(index) if crate::graph::available() => crate::graph::seed_cuda_device(index, seed),
        _ => {
            device.seed(seed);
            Ok(())
        }
    }
}

/// The host CPU's device for a stage that only slices and copies tensors (surgery) under
/// backend `name`: libtorch's CPU for `tch-cuda[:i]` (no CUDA context, no upload and download of
/// every weight), `flex` for burn's GPU backends where it is compiled in, `name`'s own device
/// otherwise. Values are copied exactly on every device, so the result is the same.
pub fn host_device(name: &str) -> Result<Device, ModelError> {
    let base = name.split(':').next().unwrap_or(name);
    match base {
        "tch-cuda" => device("tch"),
        "cuda" | "vulkan" | "wgpu" if cfg!(feature = "flex") => device("flex"),
        _ => device(name),
    }
}

/// Parses `flex`, `tch` (libtorch CPU), `tch-cuda[:i]`, `cuda[:i]`, `vulkan`, `wgpu`, `ndarray`.
pub fn device(name: &str) -> Result<Device, ModelError> {
    let (base, index) = match name.split_once(':') {
        Some((b, i)) => (b, i.parse::<usize>().ok()),
        None => (name, None),
    };
    let unknown = || ModelError::UnknownBackend {
        name: name.to_string(),
        available: available().join(", "),
    };
    let _ = index;
    match base {
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" | "tch-cpu" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch-cuda" => Ok(Device::libtorch_cuda(index.unwrap_or(0))),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(index.unwrap_or(0))),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_known, device, host_device, on_host};

    #[test]
    fn cpu_backends_are_on_the_host() {
        assert!(on_host("flex") && on_host("tch") && on_host("ndarray"));
        assert!(!on_host("tch-cuda:1") && !on_host("cuda") && !on_host("wgpu"));
    }

    #[test]
    fn known_backends_pass_with_device_indices_where_they_take_one() {
        for ok in [
            "flex",
            "tch",
            "tch-cuda",
            "tch-cuda:1",
            "cuda:0",
            "vulkan",
            "ndarray",
        ] {
            assert!(check_known(ok).is_ok(), "{ok}");
        }
        for bad in ["nonexistent", "", "flex:1", "tch-cuda:x", "CUDA"] {
            let e = check_known(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn host_work_stays_on_the_host_cpu() {
        #[cfg(feature = "flex")]
        for gpu in ["vulkan", "wgpu", "cuda:1"] {
            assert_eq!(host_device(gpu).unwrap(), device("flex").unwrap(), "{gpu}");
        }
        #[cfg(feature = "tch")]
        assert_eq!(host_device("tch-cuda:1").unwrap(), device("tch").unwrap());
        #[cfg(feature = "flex")]
        assert_eq!(host_device("flex").unwrap(), device("flex").unwrap());
        assert!(host_device("no-such").is_err());
    }
}
