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
