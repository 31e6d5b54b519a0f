//! Two small, real stages that need no model: `snapshot` copies named files into an artifact,
//! `digest` summarizes an artifact's files (lines, bytes, iterated BLAKE3). They exercise the
//! store and runner in demos and tests, and `snapshot` pins raw data files by content.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stage::{Params, Prepared, RunContext, RunSummary, Stage, StageError, parse_params};

/// `snapshot`: copy files (or every file under a directory) into the artifact.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotStage;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotConfig {
    /// Files or directories; relative paths are relative to the working directory.
    paths: Vec<String>,
}

/// Files named by the config, with the name each gets inside the artifact.
fn snapshot_files(config: &SnapshotConfig) -> Result<Vec<(PathBuf, String)>, StageError> {
    let err = |m: String| StageError::params("snapshot", m);
    if config.paths.is_empty() {
        return Err(err("`paths` is empty".into()));
    }
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for p in &config.paths {
        let path = PathBuf::from(p);
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| err(format!("`{p}` has no file name")))?;
        let meta = fs::metadata(&path).map_err(|e| err(format!("{p}: {e}")))?;
        let mut found = Vec::new();
        if meta.is_dir() {
            collect_files(&path, &base, &mut found).map_err(|e| err(format!("{p}: {e}")))?;
            found.sort();
        } else {
            found.push((path.clone(), base));
        }
        for (file, name) in found {
            if !names.insert(name.clone()) {
                return Err(err(format!("two inputs map to the same name `{name}`")));
            }
            out.push((file, name));
        }
    }
    Ok(out)
}

fn collect_files(dir: &Path, rel: &str, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), &name, out)?;
        } else {
            out.push((entry.path(), name));
        }
    }
    Ok(())
}

impl Stage for SnapshotStage {
    fn kind(&self) -> &'static str {
        "snapshot"
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn input_slots(&self) -> &'static [&'static str] {
        &[]
    }
    fn about(&self) -> &'static str {
        "Copy files or directories into an artifact, pinned by content"
    }
    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        let config: SnapshotConfig = parse_params("snapshot", params)?;
        let files = snapshot_files(&config)?;
        // Only contents and the names inside the artifact matter, not where files were.
        let names: Vec<&str> = files.iter().map(|(_, n)| n.as_str()).collect();
        Ok(Prepared {
            canonical_params: serde_json::json!({ "names": names }),
            external_files: files.into_iter().map(|(p, _)| p).collect(),
            backend_sensitive: false,
        })
    }
    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let config: SnapshotConfig = parse_params("snapshot", ctx.params)?;
        let files = snapshot_files(&config)?;
        ctx.progress.start("copy", files.len() as u64);
        let mut bytes = 0;
        for (src, name) in &files {
            let dst = ctx.out_dir.join(name);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)?;
            }
            bytes += fs::copy(src, &dst)?;
            ctx.progress.advance(1, name);
        }
        ctx.progress.finish();
        Ok(RunSummary {
            figures: serde_json::json!({ "files": files.len(), "bytes": bytes }),
        })
    }
}

/// `digest`: per file of the `src` artifact, its size, line count and a BLAKE3 iterated
/// `rounds` times over the content (a knob for how long the stage takes). With `device: true`
/// it is backend-sensitive (it computes the same everywhere, but its key carries the backend
/// class and it takes a device slot), to exercise device scheduling without a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestStage;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestConfig {
    #[serde(default = "one")]
    rounds: u32,
    /// Off by default and then left out of the canonical parameters, so keys stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    device: bool,
}

fn one() -> u32 {
    1
}

impl Stage for DigestStage {
    fn kind(&self) -> &'static str {
        "digest"
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn input_slots(&self) -> &'static [&'static str] {
        &["src"]
    }
    fn about(&self) -> &'static str {
        "Summarize an artifact's files: size, lines, iterated BLAKE3"
    }
    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        let config: DigestConfig = parse_params("digest", params)?;
        if config.rounds == 0 {
            return Err(StageError::params("digest", "`rounds` must be at least 1"));
        }
        Ok(Prepared {
            canonical_params: serde_json::to_value(&config).expect("config serializes"),
            external_files: vec![],
            backend_sensitive: config.device,
        })
    }
    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let config: DigestConfig = parse_params("digest", ctx.params)?;
        let src = ctx.input("src")?;
        let mut files = Vec::new();
        collect_files(&src.dir, "", &mut files)?;
        files.retain(|(_, n)| n != "/manifest.json" && n != "/manifest.blake3");
        files.sort_by(|a, b| a.1.cmp(&b.1));
        ctx.progress.start("digest", files.len() as u64);
        let mut table = fs::File::create(ctx.out_dir.join("digest.tsv"))?;
        writeln!(table, "file\tbytes\tlines\tblake3")?;
        fs::create_dir_all(ctx.out_dir.join("files"))?;
        let (mut total_bytes, mut total_lines) = (0u64, 0u64);
        for (path, name) in &files {
            let name = name.trim_start_matches('/');
            let content = fs::read(path)?;
            let lines = content.iter().filter(|&&b| b == b'\n').count() as u64;
            let mut h = blake3::hash(&content);
            for _ in 1..config.rounds {
                let mut hasher = blake3::Hasher::new();
                hasher.update(h.as_bytes());
                hasher.update(&content);
                h = hasher.finalize();
            }
            writeln!(table, "{name}\t{}\t{lines}\t{}", content.len(), h.to_hex())?;
            let per_file = ctx
                .out_dir
                .join("files")
                .join(format!("{}.txt", name.replace('/', "__")));
            fs::write(per_file, format!("{}\n", h.to_hex()))?;
            total_bytes += content.len() as u64;
            total_lines += lines;
            ctx.progress.advance(1, name);
        }
        ctx.progress.finish();
        Ok(RunSummary {
            figures: serde_json::json!({
                "files": files.len(), "bytes": total_bytes, "lines": total_lines, "rounds": config.rounds,
            }),
        })
    }
}
