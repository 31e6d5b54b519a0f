//! `lpeft run --devices`: the device slots estimation and fine-tuning stages are pinned to,
//! resolved against `--backend`. Slots never enter keys: only their common backend class does.

use anyhow::{Context, bail};
use lpeft_pipeline::plan::backend_class;
use lpeft_pipeline::run::DeviceSlots;

/// What `lpeft run` was asked for.
#[derive(Debug, Clone)]
pub struct DeviceRequest<'a> {
    /// `--devices`, split at commas (empty: the `--backend` alone).
    pub devices: &'a [String],
    pub backend: &'a str,
    /// Whether `--backend` (or `LPEFT_BACKEND`) was given, rather than left at its default.
    pub backend_given: bool,
    /// `--per-device`.
    pub per_device: usize,
}

/// The plan's backend (the first slot: keys need its class only) and the slots.
/// `count(class)` says how many devices `CLASS:*` stands for.
pub fn resolve(
    req: &DeviceRequest<'_>,
    count: impl Fn(&str) -> anyhow::Result<usize>,
) -> anyhow::Result<(String, DeviceSlots)> {
    let per_slot = Some(req.per_device.max(1));
    if req.devices.is_empty() {
        let slots = DeviceSlots {
            names: vec![req.backend.to_string()],
            per_slot,
            on_host: lpeft_model::device::on_host(req.backend),
        };
        return Ok((req.backend.to_string(), slots));
    }
    let mut names: Vec<String> = Vec::new();
    for raw in req.devices {
        let entry = raw.trim();
        if entry.is_empty() {
            bail!(
                "--devices `{}`: an entry is empty (expected e.g. tch-cuda:0,tch-cuda:1 or tch-cuda:*)",
                req.devices.join(",")
            );
        }
        if let Some(class) = entry.strip_suffix(":*") {
            if req.devices.len() > 1 {
                bail!(
                    "--devices `{entry}` stands for every device; give it alone, not with others"
                );
            }
            if !matches!(class, "tch-cuda" | "cuda") {
                bail!(
                    "--devices `{entry}`: only indexed backends (tch-cuda, cuda) have several devices"
                );
            }
            let n = count(class).with_context(|| format!("--devices `{entry}`"))?;
            if n == 0 {
                bail!("--devices `{entry}`: no {class} device is visible here");
            }
            names.extend((0..n).map(|i| format!("{class}:{i}")));
            continue;
        }
        lpeft_model::device::check_known(entry).with_context(|| format!("--devices `{entry}`"))?;
        // `tch-cuda` is device 0, so that listing both is caught as a repeat.
        let name = match entry.split_once(':') {
            None if matches!(entry, "tch-cuda" | "cuda") => format!("{entry}:0"),
            _ => entry.to_string(),
        };
        if names.contains(&name) {
            bail!(
                "--devices lists `{name}` twice; to run two stages on one device, give --per-device 2"
            );
        }
        names.push(name);
    }
    let class = backend_class(&names[0]);
    if let Some(other) = names.iter().find(|n| backend_class(n) != class) {
        bail!(
            "--devices mixes `{}` and `{other}`: one run uses one backend class (it is part of the keys)",
            names[0]
        );
    }
    if req.backend_given && backend_class(req.backend) != class {
        bail!(
            "--backend `{}` and --devices `{}` name different backends; --devices alone is enough",
            req.backend,
            names[0]
        );
    }
    let slots = DeviceSlots {
        on_host: lpeft_model::device::on_host(&class),
        names,
        per_slot,
    };
    Ok((slots.names[0].clone(), slots))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        devices: &str,
        backend: Option<&str>,
        gpus: usize,
    ) -> anyhow::Result<(String, DeviceSlots)> {
        let devices: Vec<String> = match devices {
            "" => vec![],
            d => d.split(',').map(str::to_string).collect(),
        };
        let req = DeviceRequest {
            devices: &devices,
            backend: backend.unwrap_or("flex"),
            backend_given: backend.is_some(),
            per_device: 1,
        };
        resolve(&req, |class| {
            assert_eq!(class, "tch-cuda");
            Ok(gpus)
        })
    }

    fn err(devices: &str, backend: Option<&str>) -> String {
        format!("{:#}", run(devices, backend, 2).unwrap_err())
    }

    #[test]
    fn without_devices_the_backend_is_the_one_slot() {
        let (backend, slots) = run("", None, 0).unwrap();
        assert_eq!(
            (backend.as_str(), slots.names.as_slice()),
            ("flex", &["flex".to_string()][..])
        );
        assert!(slots.on_host, "flex stages count against --jobs, as before");
        let (_, slots) = run("", Some("tch-cuda:1"), 0).unwrap();
        assert_eq!(slots.names, ["tch-cuda:1"]);
        assert!(!slots.on_host);
        assert_eq!(
            slots.per_slot,
            Some(1),
            "one GPU stage per device unless asked"
        );
    }

    #[test]
    fn lists_and_the_star_become_slots() {
        let (backend, slots) = run("tch-cuda:0, tch-cuda:2", None, 0).unwrap();
        assert_eq!(backend, "tch-cuda:0");
        assert_eq!(slots.names, ["tch-cuda:0", "tch-cuda:2"]);
        let (_, slots) = run("tch-cuda:*", Some("tch-cuda"), 3).unwrap();
        assert_eq!(slots.names, ["tch-cuda:0", "tch-cuda:1", "tch-cuda:2"]);
        let (_, slots) = run("tch-cuda", None, 0).unwrap();
        assert_eq!(slots.names, ["tch-cuda:0"]);
    }

    #[test]
    fn bad_lists_name_the_flag_and_what_was_expected() {
        let e = err("tch-cuda:x", None);
        assert!(
            e.starts_with("--devices `tch-cuda:x`: unknown backend"),
            "{e}"
        );
        let e = err("tch-cuda:0,,tch-cuda:1", None);
        assert!(e.contains("an entry is empty"), "{e}");
        let e = err("tch-cuda:0,tch-cuda", None);
        assert!(
            e.contains("`tch-cuda:0` twice") && e.contains("--per-device 2"),
            "{e}"
        );
        let e = err("tch-cuda:0,cuda:1", None);
        assert!(e.contains("mixes `tch-cuda:0` and `cuda:1`"), "{e}");
        let e = err("tch-cuda:*,tch-cuda:1", None);
        assert!(e.contains("give it alone"), "{e}");
        let e = err("flex:*", None);
        assert!(e.contains("only indexed backends"), "{e}");
        let e = err("tch-cuda:1", Some("flex"));
        assert!(
            e.contains("--backend `flex` and --devices `tch-cuda:1`"),
            "{e}"
        );
        let e = format!("{:#}", run("tch-cuda:*", None, 0).unwrap_err());
        assert!(e.contains("no tch-cuda device is visible"), "{e}");
    }
}
