//! The contract between the runner and a stage crate.
//!
//! A stage is a pure function of (its code version, its canonical parameters, the artifacts it
//! reads, and the content of the external files it names). The runner computes the artifact key
//! from exactly those, so a stage must never read anything it did not declare here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parameters as written in a pipeline file or given on the command line, as JSON values.
/// Stages deserialize them into their own typed config (with `deny_unknown_fields`).
pub type Params = serde_json::Value;

/// What a stage says about one concrete invocation before anything runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The typed config serialized back to JSON: defaults filled in, so writing a default
    /// explicitly or leaving it out gives the same key. Object keys are sorted by the hasher.
    pub canonical_params: serde_json::Value,
    /// Files outside the store that the stage reads (data files, tokenizer, pretrained weights).
    /// Their *content* hashes enter the key; their paths do not.
    pub external_files: Vec<PathBuf>,
    /// Whether results depend on the numeric backend (flex, tch-cpu, tch-cuda...). If true the
    /// backend class enters the key, so a GPU run never reuses a CPU artifact or vice versa.
    pub backend_sensitive: bool,
}

/// An input artifact as a stage sees it: already verified by the store.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    pub key: String,
    pub kind: String,
    pub dir: PathBuf,
}

/// Everything a running stage may touch.
pub struct RunContext<'a> {
    /// Parameters as written in the pipeline (after expansion), not the canonical form; the
    /// stage canonicalizes them again exactly as in `prepare`.
    pub params: &'a serde_json::Value,
    /// Named inputs, as wired in the pipeline file (`inputs: { dataset: "data-sst2" }`).
    pub inputs: &'a BTreeMap<String, InputArtifact>,
    /// Empty directory the stage writes its files into; the store publishes it atomically.
    pub out_dir: &'a Path,
    /// Backend requested by the user, e.g. "flex", "tch", "tch-cuda:0".
    pub backend: &'a str,
    /// Progress and log sink.
    pub progress: &'a dyn Progress,
}

/// Progress reporting, implemented by the CLI (progress bars) and by tests (silent).
pub trait Progress: Sync {
    /// Start a bounded task (`total` units, e.g. steps); returns nothing, updates go through `advance`.
    fn start(&self, label: &str, total: u64);
    fn advance(&self, n: u64, message: &str);
    fn finish(&self);
}

/// Summary a stage returns; stored in the manifest and printed by the CLI.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Small JSON object of figures (counts, metrics, parameter totals).
    pub figures: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("invalid parameters for stage `{stage}`: {message}")]
    Params { stage: String, message: String },
    #[error("stage `{stage}` needs input `{slot}`, which is not wired")]
    MissingInput { stage: String, slot: String },
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl StageError {
    /// Invalid parameters of a stage of kind `stage`.
    pub fn params(stage: &str, message: impl std::fmt::Display) -> Self {
        Self::Params {
            stage: stage.to_owned(),
            message: message.to_string(),
        }
    }

    /// The work of a stage of kind `stage` failed: `"{stage}: {error}"`.
    pub fn failed(stage: &str, error: impl std::fmt::Display) -> Self {
        Self::Failed(format!("{stage}: {error}"))
    }
}

pub trait Stage: Send + Sync {
    /// Stable name used in pipeline files and on the command line ("data", "estimate", ...).
    fn kind(&self) -> &'static str;
    /// Semantic version of the stage's code; bump it when outputs can change.
    fn code_version(&self) -> u32;
    /// Names of the input slots this stage reads.
    fn input_slots(&self) -> &'static [&'static str];
    /// Slots of `input_slots` that may be left unwired (e.g. fine-tuning's `init`).
    fn optional_slots(&self) -> &'static [&'static str] {
        &[]
    }
    /// A tag added to the backend class in this stage's keys when it is backend-sensitive
    /// (`class+tag`): what makes artifacts of one class differ between code versions that the
    /// stage's own version does not cover (the model crate's fused nodes).
    fn backend_tag(&self, _class: &str) -> Option<&'static str> {
        None
    }
    /// Validate and canonicalize the parameters; no heavy work, no writes.
    fn prepare(&self, params: &Params) -> Result<Prepared, StageError>;
    /// Do the work, writing files into `ctx.out_dir`.
    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError>;
    /// One line for `lpeft --help` and `lpeft KIND --help`.
    fn about(&self) -> &'static str {
        ""
    }
}
