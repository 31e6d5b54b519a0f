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
    /// The running stage's kind, which its errors name (`StageError::MissingInput`).
    pub kind: &'a str,
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

impl RunContext<'_> {
    /// The input wired to `slot`, or [`StageError::MissingInput`] naming the stage and slot.
    pub fn input(&self, slot: &str) -> Result<&InputArtifact, StageError> {
        self.inputs
            .get(slot)
            .ok_or_else(|| StageError::missing_input(self.kind, slot))
    }
}

/// A stage's parameters as its typed config `T` (with `deny_unknown_fields`, it names a field
/// it does not know), or [`StageError::Params`] with serde's message.
pub fn parse_params<T: serde::de::DeserializeOwned>(
    kind: &str,
    params: &Params,
) -> Result<T, StageError> {
    serde_json::from_value(params.clone()).map_err(|e| StageError::params(kind, e))
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

/// Where a stage's host time went, for its figures (`phase_seconds`): named phases in seconds
/// (training stages: `load` from the stage's start to its first step, `steps` summed, `eval`,
/// `write`; the surgery: `load`, `prune`, `write`), rounded to 0.1 ms. What the manifest's
/// `wall_seconds` holds beyond their sum is the store's work and whatever ran between them.
pub fn phase_seconds(phases: &[(&str, f64)]) -> serde_json::Value {
    serde_json::Value::Object(
        phases
            .iter()
            .map(|(name, v)| ((*name).to_owned(), serde_json::json!(round_seconds(*v))))
            .collect(),
    )
}

/// Durations as a JSON array, rounded as [`phase_seconds`] rounds them.
pub fn rounded_seconds(values: &[f64]) -> serde_json::Value {
    serde_json::json!(values.iter().map(|v| round_seconds(*v)).collect::<Vec<_>>())
}

/// Seconds to 0.1 ms: figures, not measurements of the last digits.
fn round_seconds(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("invalid parameters for stage `{stage}`: {message}")]
    Params { stage: String, message: String },
    #[error("stage `{stage}` needs input `{slot}`, which is not wired")]
    MissingInput { stage: String, slot: String },
    /// The work failed: the message names the stage kind; `source` keeps the error it came
    /// from, so that error chains print it (the CLI leaves out a cause the message already holds).
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
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

    /// A stage of kind `stage` needs input `slot`, which is not wired.
    pub fn missing_input(stage: &str, slot: &str) -> Self {
        Self::MissingInput {
            stage: stage.to_owned(),
            slot: slot.to_owned(),
        }
    }

    /// The work of a stage of kind `stage` failed: `"{stage}: {error}"`, for a message.
    pub fn failed(stage: &str, error: impl std::fmt::Display) -> Self {
        Self::Failed {
            message: format!("{stage}: {error}"),
            source: None,
        }
    }

    /// [`StageError::failed`] for an error, kept as the source.
    pub fn failed_by(stage: &str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Failed {
            message: format!("{stage}: {error}"),
            source: Some(Box::new(error)),
        }
    }
}

/// A stage's own errors as [`StageError`]s naming its kind, so a stage needs no helpers of its
/// own: `Dataset::open(dir).failed_by(KIND)?`, `cfg.validate().invalid_params(KIND)?`.
pub trait StageResultExt<T, E> {
    /// The work failed because of the error, kept as the source ([`StageError::failed_by`]).
    fn failed_by(self, kind: &str) -> Result<T, StageError>
    where
        E: std::error::Error + Send + Sync + 'static;
    /// The work failed, for the error's message ([`StageError::failed`]).
    fn failed(self, kind: &str) -> Result<T, StageError>
    where
        E: std::fmt::Display;
    /// The parameters are invalid, for the error's message ([`StageError::params`]).
    fn invalid_params(self, kind: &str) -> Result<T, StageError>
    where
        E: std::fmt::Display;
}

impl<T, E> StageResultExt<T, E> for Result<T, E> {
    fn failed_by(self, kind: &str) -> Result<T, StageError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.map_err(|e| StageError::failed_by(kind, e))
    }
    fn failed(self, kind: &str) -> Result<T, StageError>
    where
        E: std::fmt::Display,
    {
        self.map_err(|e| StageError::failed(kind, e))
    }
    fn invalid_params(self, kind: &str) -> Result<T, StageError>
    where
        E: std::fmt::Display,
    {
        self.map_err(|e| StageError::params(kind, e))
    }
}

/// A wiring of input slots that does not fit a stage ([`check_slots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// A wired slot the stage does not declare.
    Unknown {
        kind: &'static str,
        slot: String,
        slots: &'static [&'static str],
    },
    /// A slot the stage needs (not one of its optional slots) that is not wired.
    Unwired { slot: &'static str },
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::Unknown { kind, slot, slots } => write!(
                f,
                "kind `{kind}` has no input slot `{slot}` (slots: {})",
                if slots.is_empty() {
                    "none".to_string()
                } else {
                    slots.join(", ")
                }
            ),
            SlotError::Unwired { slot } => write!(f, "input slot `{slot}` is not wired"),
        }
    }
}

/// The one check of a stage's wiring, for pipelines and single stages alike: every wired slot
/// is one of `stage`'s input slots (the first that is not, in `wired`'s order, is reported),
/// then every slot that is not optional is wired (the first missing, in declaration order).
pub fn check_slots<'a>(
    stage: &dyn Stage,
    wired: impl IntoIterator<Item = &'a str>,
) -> Result<(), SlotError> {
    let slots = stage.input_slots();
    let wired: Vec<&str> = wired.into_iter().collect();
    if let Some(slot) = wired.iter().find(|slot| !slots.contains(slot)) {
        return Err(SlotError::Unknown {
            kind: stage.kind(),
            slot: (*slot).to_string(),
            slots,
        });
    }
    match slots
        .iter()
        .filter(|slot| !stage.optional_slots().contains(slot))
        .find(|slot| !wired.contains(slot))
    {
        Some(slot) => Err(SlotError::Unwired { slot }),
        None => Ok(()),
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
    /// stage's own version does not cover (the model crate's fused nodes, which may depend on
    /// the canonical params, e.g. on a precision whose kernels changed).
    fn backend_tag(
        &self,
        _class: &str,
        _canonical_params: &serde_json::Value,
    ) -> Option<&'static str> {
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

#[cfg(test)]
mod failed_tests {
    use super::{RunContext, StageError, StageResultExt, parse_params};
    use std::error::Error;

    #[test]
    fn the_helpers_build_the_errors_stages_built_themselves() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Config {
            rounds: u32,
        }
        let e = parse_params::<Config>("digest", &serde_json::json!({ "roundz": 1 })).unwrap_err();
        assert!(matches!(e, StageError::Params { .. }));
        assert_eq!(
            e.to_string(),
            "invalid parameters for stage `digest`: unknown field `roundz`, expected `rounds`"
        );
        let inputs = Default::default();
        let ctx = RunContext {
            kind: "digest",
            params: &serde_json::Value::Null,
            inputs: &inputs,
            out_dir: std::path::Path::new("/nonexistent"),
            backend: "flex",
            progress: &crate::run::NoProgress,
        };
        let e = ctx.input("src").unwrap_err();
        assert!(
            matches!(&e, StageError::MissingInput { stage, slot } if stage == "digest" && slot == "src")
        );
        assert_eq!(
            e.to_string(),
            "stage `digest` needs input `src`, which is not wired"
        );

        let io = || Err::<(), _>(std::io::Error::other("no such file: x.json"));
        let e = io().failed_by("estimate").unwrap_err();
        assert_eq!(e.to_string(), "estimate: no such file: x.json");
        assert!(e.source().is_some());
        let e = Err::<(), _>("no batches").failed("estimate").unwrap_err();
        assert_eq!(e.to_string(), "estimate: no batches");
        assert!(e.source().is_none());
        let e = Err::<(), _>("field `lr`: must be positive")
            .invalid_params("estimate")
            .unwrap_err();
        assert!(matches!(e, StageError::Params { .. }));
        assert_eq!(
            e.to_string(),
            "invalid parameters for stage `estimate`: field `lr`: must be positive"
        );
    }

    #[test]
    fn a_failure_from_an_error_keeps_it_as_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file: x.json");
        let e = StageError::failed_by("estimate", io);
        assert_eq!(e.to_string(), "estimate: no such file: x.json");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("no such file: x.json")
        );
        let m = StageError::failed("estimate", "the split has no batches");
        assert_eq!(m.to_string(), "estimate: the split has no batches");
        assert!(m.source().is_none());
    }
}

#[cfg(test)]
mod phase_tests {
    use super::{phase_seconds, rounded_seconds};

    #[test]
    fn phases_are_named_and_rounded() {
        let v = phase_seconds(&[
            ("load", 1.23456789),
            ("steps", 2.0),
            ("eval", 0.5),
            ("write", 0.000_04),
        ]);
        assert_eq!(
            v,
            serde_json::json!({"load": 1.2346, "steps": 2.0, "eval": 0.5, "write": 0.0})
        );
        assert_eq!(
            rounded_seconds(&[0.123456, 2.0]),
            serde_json::json!([0.1235, 2.0])
        );
    }
}
