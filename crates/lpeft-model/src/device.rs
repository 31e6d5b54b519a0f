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
