//! The manifest written next to every artifact (`objects/<key>/manifest.json`) and the
//! per-pipeline index record (`index/<pipeline>/<stage>.json`) used to explain reruns.
//!
//! Everything that enters the artifact key is recorded here, together with provenance that
//! does not (host, times, memory, paths of external files).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest layout; bump when a field changes meaning.
pub const MANIFEST_FORMAT: u32 = 1;

/// One file of an artifact, relative to the artifact directory (always `/`-separated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Lower-case hex BLAKE3 of the file content.
    pub blake3: String,
}

/// A file outside the store that the producing stage read. Its content hash enters the key;
/// its path is recorded for humans only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalFile {
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// Provenance and content of one published artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The artifact key (hex BLAKE3), equal to the directory name.
    pub key: String,
    /// Version of the key derivation (see `lpeft_store::key`).
    pub key_format: u32,
    /// Stage kind that produced the artifact ("data", "estimate", ...); also the artifact kind.
    pub kind: String,
    /// Name of the stage instance in the pipeline that first produced it (not part of the key).
    pub stage: String,
    pub code_version: u32,
    /// Canonical parameters exactly as they entered the key.
    pub params: serde_json::Value,
    /// Input slot -> input artifact key.
    pub inputs: BTreeMap<String, String>,
    pub external_files: Vec<ExternalFile>,
    /// The `seed` parameter, when the stage has one.
    pub seed: Option<u64>,
    /// Backend string requested by the user (may name a device; not part of the key).
    pub backend: String,
    /// Backend class that entered the key, if the stage is backend-sensitive.
    pub backend_class: Option<String>,
    pub host: String,
    /// Version of lightpeft that produced the artifact.
    pub tool_version: String,
    /// RFC 3339 UTC timestamps.
    pub started_at: String,
    pub finished_at: String,
    pub wall_seconds: f64,
    /// Peak resident set size of the whole producing process so far (VmHWM), in bytes. With
    /// `--jobs > 1` or several stages in one process this over-states a single stage.
    pub peak_rss_bytes: Option<u64>,
    pub files: Vec<FileEntry>,
    /// Figures the stage reported (counts, metrics).
    pub figures: serde_json::Value,
    /// Why the stage ran ("missing", "params changed: lr 3e-4 → 1e-4", "forced", ...).
    #[serde(default)]
    pub run_reasons: Vec<String>,
}

/// What a pipeline stage resolved to the last time it was run or found in the store. The plan
/// compares the current resolution with this record to say *why* a stage must run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub pipeline: String,
    pub stage: String,
    pub key: String,
    pub kind: String,
    pub code_version: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, String>,
    /// External file path -> content hash, as resolved then.
    pub external_files: BTreeMap<String, String>,
    pub backend_class: Option<String>,
    /// RFC 3339 UTC time the record was written.
    pub recorded_at: String,
}
