//! With the `tch` feature: compiles the CUDA shim (csrc/cuda_graph.cpp: CUDA graphs;
//! csrc/scale_kernel.cpp with csrc/kernels.cuh: the kernels NVRTC compiles at run time) against the
//! libtorch that torch-sys found, when that libtorch has CUDA and the CUDA headers can be
//! found; otherwise (CPU-only libtorch, no headers) the crate builds without CUDA graphs and
//! says so at run time (`lpeft_model::graph::available`). Without `tch` it does nothing.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(lpeft_cuda_graphs)");
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-changed=csrc/scale_kernel.cpp");
    println!("cargo:rerun-if-changed=csrc/kernels.cuh");
    println!("cargo:rerun-if-env-changed=LPEFT_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    #[cfg(feature = "tch")]
    shim::build();
}

#[cfg(feature = "tch")]
mod shim {
    use std::path::{Path, PathBuf};

    pub fn build() {
        let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
            warn("torch-sys did not say where libtorch is");
            return;
        };
        if !lib.join("libtorch_cuda.so").exists() {
            warn("libtorch has no CUDA (no libtorch_cuda.so)");
            return;
        }
        let Some(cuda) = cuda_include(&lib) else {
            warn(
                "no CUDA headers (cuda_runtime_api.h with crt/host_config.h): set \
                 LPEFT_CUDA_INCLUDE or CUDA_HOME, or pip install nvidia-cuda-crt beside torch",
            );
            return;
        };
        let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .std("c++17")
            .warnings(false)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .include(&cuda)
            .flag(format!(
                "-D_GLIBCXX_USE_CXX11_ABI={}",
                std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
            ))
            .file("csrc/cuda_graph.cpp")
            .file("csrc/scale_kernel.cpp")
            .compile("lpeft_cuda_graph");
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        // dlopen, for NVRTC and the driver (scale_kernel.cpp).
        println!("cargo:rustc-link-lib=dylib=dl");
        println!("cargo:rustc-cfg=lpeft_cuda_graphs");
    }

    fn warn(why: &str) {
        println!("cargo:warning=lpeft-model: built without CUDA graphs: {why}");
    }

    /// A directory with both the runtime API header and the host-compiler configuration it
    /// includes: $LPEFT_CUDA_INCLUDE, $CUDA_HOME/include, or the PyPI nvidia-* packages beside
    /// torch (site-packages/nvidia/*/include).
    fn cuda_include(libtorch_lib: &Path) -> Option<PathBuf> {
        let complete = |d: &Path| {
            d.join("cuda_runtime_api.h").exists() && d.join("crt/host_config.h").exists()
        };
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = std::env::var_os("LPEFT_CUDA_INCLUDE") {
            candidates.push(d.into());
        }
        if let Some(d) = std::env::var_os("CUDA_HOME") {
            candidates.push(PathBuf::from(d).join("include"));
        }
        // site-packages/torch/lib -> site-packages/nvidia/<pkg>/include
        if let Some(site) = libtorch_lib.parent().and_then(Path::parent)
            && let Ok(entries) = std::fs::read_dir(site.join("nvidia"))
        {
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("include"))
                .collect();
            dirs.sort();
            candidates.extend(dirs);
        }
        candidates.push("/usr/local/cuda/include".into());
        candidates.into_iter().find(|d| complete(d))
    }
}
