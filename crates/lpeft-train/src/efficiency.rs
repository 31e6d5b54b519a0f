//! Measurement helpers for [`lpeft_schema::results::Efficiency`]: peak process memory, a host
//! description, and the small arithmetic the fine-tuning stage needs. Device synchronisation
//! before reading a timer is the caller's job (it owns the backend).

/// What `peak_memory_bytes` measures on CPU backends.
pub const MEMORY_PROCESS_RSS: &str = "process_rss";
/// What `peak_memory_bytes` measures on accelerator backends (peak device allocation).
pub const MEMORY_DEVICE: &str = "device";

/// Peak resident set size of this process in bytes (`VmHWM` of `/proc/self/status`).
/// `None` off Linux or when the file cannot be read; callers then record 0 and say so.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:  1234 kB` line of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// `N-core <arch>`, followed by the CPU model when `/proc/cpuinfo` names one,
/// e.g. `2-core x86_64 (AMD EPYC 7B13)`.
pub fn host_description() -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| cpu_model(&t));
    describe_host(cores, std::env::consts::ARCH, model.as_deref())
}

/// The host line from its parts (pure; see [`host_description`]).
pub fn describe_host(cores: usize, arch: &str, model: Option<&str>) -> String {
    match model {
        Some(m) => format!("{cores}-core {arch} ({m})"),
        None => format!("{cores}-core {arch}"),
    }
}

/// The first `model name` (x86) or `Model` (ARM boards) entry of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        let k = k.trim();
        let v = v.trim();
        ((k == "model name" || k == "Model") && !v.is_empty()).then(|| v.to_owned())
    })
}

/// Mean step time after dropping the first `warmup` steps (all steps if there are no more).
/// `None` for no steps.
pub fn mean_step_seconds(step_seconds: &[f64], warmup: usize) -> Option<f64> {
    let steady = if step_seconds.len() > warmup {
        &step_seconds[warmup..]
    } else {
        step_seconds
    };
    (!steady.is_empty()).then(|| steady.iter().sum::<f64>() / steady.len() as f64)
}

/// Examples per second; 0 for a zero duration.
pub fn throughput(examples: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        examples as f64 / seconds
    } else {
        0.0
    }
}

/// `100 * (1 - backbone / original)`: the share of the pretrained backbone removed.
pub fn backbone_pruned_pct(backbone_params: u64, original_params: u64) -> f64 {
    if original_params == 0 {
        return 0.0;
    }
    100.0 * (1.0 - backbone_params as f64 / original_params as f64)
}

/// What `peak_memory_bytes` measures on a GPU when NVML does not list this process (as in some
/// sandboxes): the device's used memory above its level when the run started.
pub const MEMORY_DEVICE_DELTA: &str = "device_used_above_start";

/// Samples a GPU's memory every 20 ms on a thread while a run goes on, through NVML (the
/// driver's library, loaded at run time, so CPU-only builds and machines need nothing).
/// The peak is this process's own usage where NVML lists the process, else the device's used
/// memory above the level at `start`.
pub struct DeviceMemoryMonitor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, bool)>,
}

impl DeviceMemoryMonitor {
    /// Starts sampling GPU `index`; an error says why it cannot (no driver, no such GPU).
    pub fn start(index: u32) -> Result<Self, String> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready, started) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let nvml = match nvml_wrapper::Nvml::init() {
                Ok(n) => n,
                Err(e) => {
                    let _ = ready.send(Err(format!("NVML cannot start: {e}")));
                    return (0, false);
                }
            };
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    let _ = ready.send(Err(format!("NVML has no GPU {index}: {e}")));
                    return (0, false);
                }
            };
            let pid = std::process::id();
            let baseline = device.memory_info().map_or(0, |m| m.used);
            let _ = ready.send(Ok(()));
            let (mut peak, mut own_seen) = (0u64, false);
            loop {
                let own = device.running_compute_processes().ok().and_then(|ps| {
                    ps.into_iter()
                        .find(|p| p.pid == pid)
                        .and_then(|p| match p.used_gpu_memory {
                            nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
                            nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                        })
                });
                if let Some(bytes) = own {
                    own_seen = true;
                    peak = peak.max(bytes);
                } else if !own_seen && let Ok(m) = device.memory_info() {
                    peak = peak.max(m.used.saturating_sub(baseline));
                }
                if stopped.load(Ordering::Relaxed) {
                    return (peak, own_seen);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        match started.recv() {
            Ok(Ok(())) => Ok(Self { stop, handle }),
            Ok(Err(why)) => Err(why),
            Err(_) => Err("the GPU memory sampler stopped before it started".to_owned()),
        }
    }

    /// Stops sampling; the peak in bytes and what it measures ([`MEMORY_DEVICE`] or
    /// [`MEMORY_DEVICE_DELTA`]).
    pub fn finish(self) -> (u64, &'static str) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (peak, own) = self.handle.join().unwrap_or((0, false));
        (
            peak,
            if own {
                MEMORY_DEVICE
            } else {
                MEMORY_DEVICE_DELTA
            },
        )
    }
}

/// The GPU index of a CUDA backend name (`tch-cuda`, `tch-cuda:1`, `cuda:0`), `None` for others.
pub fn cuda_index(backend: &str) -> Option<u32> {
    let (base, index) = backend.split_once(':').unwrap_or((backend, "0"));
    matches!(base, "tch-cuda" | "cuda")
        .then(|| index.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tlpeft\nVmPeak:\t  900 kB\nVmHWM:\t   123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t12 MB\n"), None);
    }

    #[test]
    fn cuda_indices_come_from_backend_names() {
        assert_eq!(cuda_index("tch-cuda"), Some(0));
        assert_eq!(cuda_index("tch-cuda:1"), Some(1));
        assert_eq!(cuda_index("cuda:2"), Some(2));
        assert_eq!(cuda_index("flex"), None);
        assert_eq!(cuda_index("tch"), None);
        assert_eq!(cuda_index("tch-cuda:x"), None);
    }

    #[test]
    fn the_gpu_monitor_says_why_it_cannot_start_or_measures() {
        // CI has no GPU: start must fail with a reason, not panic. With a GPU it measures.
        match DeviceMemoryMonitor::start(0) {
            Err(why) => assert!(why.contains("NVML"), "{why}"),
            Ok(m) => {
                let (_, kind) = m.finish();
                assert!(kind == MEMORY_DEVICE || kind == MEMORY_DEVICE_DELTA);
            }
        }
    }

    #[test]
    fn peak_rss_on_linux_is_at_least_a_buffer_we_touched() {
        if !cfg!(target_os = "linux") {
            assert_eq!(peak_rss_bytes(), None);
            return;
        }
        let buf = vec![1u8; 64 << 20];
        assert!(buf.iter().map(|&b| u64::from(b)).sum::<u64>() == 64 << 20);
        let peak = peak_rss_bytes().expect("VmHWM on Linux");
        assert!(peak >= 64 << 20, "peak {peak}");
    }

    #[test]
    fn host_line() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(
            describe_host(2, "x86_64", Some("AMD EPYC 7B13")),
            "2-core x86_64 (AMD EPYC 7B13)"
        );
        assert_eq!(describe_host(8, "aarch64", None), "8-core aarch64");
        assert!(host_description().contains(std::env::consts::ARCH));
    }

    #[test]
    fn step_means_and_rates() {
        assert_eq!(mean_step_seconds(&[5.0, 1.0, 2.0, 3.0], 1), Some(2.0));
        assert_eq!(mean_step_seconds(&[4.0, 2.0], 5), Some(3.0));
        assert_eq!(mean_step_seconds(&[], 0), None);
        assert_eq!(throughput(64, 0.5), 128.0);
        assert_eq!(throughput(64, 0.0), 0.0);
        assert!((backbone_pruned_pct(60, 100) - 40.0).abs() < 1e-12);
        assert_eq!(backbone_pruned_pct(100, 100), 0.0);
    }
}
