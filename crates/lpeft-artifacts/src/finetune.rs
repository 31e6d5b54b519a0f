//! The fine-tune artifact as its readers see it (`lpeft predict`, and export later).
//!
//! Files:
//! - `result.json`: per-epoch dev metrics, the best epoch and efficiency ([`RunResult`]);
//! - `config.json`: the stage's parameters as given (the pretrained model's path included);
//! - `curve.json`: loss, lr and gradient norm per step;
//! - `best/model.json` + `best/trainable.safetensors`: the trained model's spec and the best
//!   epoch's trainable tensors (PEFT and head) under their module paths. The frozen rest comes
//!   from the pretrained model of `config.json` (vanilla PEFT) or from the `init` input's
//!   checkpoint (Light-PEFT: a surgery artifact);
//! - `best/predictions.json`, span tasks only: the best epoch's dev answers in the official
//!   SQuAD format (`{"<question id>": "<answer text>"}`), for the official evaluation script.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use lpeft_schema::model::ModelSpec;
use lpeft_schema::results::RunResult;

use crate::estimation::{ArtifactError, read_json};

/// The stage kind (and so the artifact kind in manifests).
pub const KIND: &str = "finetune";
pub const RESULT_FILE: &str = "result.json";
pub const CONFIG_FILE: &str = "config.json";
pub const CURVE_FILE: &str = "curve.json";
/// The best epoch's model, relative to the artifact directory.
pub const BEST_DIR: &str = "best";
/// The best epoch's spec inside [`BEST_DIR`] (`lpeft_model::checkpoint::SPEC_FILE`).
pub const SPEC_FILE: &str = "model.json";
/// The best epoch's trainable tensors inside [`BEST_DIR`].
pub const TRAINABLE_FILE: &str = "trainable.safetensors";
/// Span tasks: the best epoch's dev answers inside [`BEST_DIR`], in the official SQuAD format.
pub const PREDICTIONS_FILE: &str = "predictions.json";
/// The input slot of the Light-PEFT starting point (a surgery artifact).
pub const INIT_SLOT: &str = "init";
/// The input slot of the dataset the run trained and evaluated on.
pub const DATASET_SLOT: &str = "dataset";

/// What a reader of the trained model needs from `config.json` (the stage's own parameters;
/// other fields are left to the stage).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FinetuneSettings {
    /// Label of the method in reports.
    pub method: String,
    /// The pretrained model directory (vanilla PEFT), as the pipeline gave it: relative paths
    /// resolve against the directory the run was started in.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Seed of the run; fresh head tensors a checkpoint lacked were drawn from it.
    pub seed: u64,
    /// Split the dev score was computed on.
    pub eval_split: String,
    /// Batch size of the dev evaluation (predictions reproduce its scores bit for bit when
    /// batched the same way).
    pub eval_batch_size: usize,
}

/// `config.json` of the fine-tune artifact in `dir`.
pub fn read_settings(dir: &Path) -> Result<FinetuneSettings, ArtifactError> {
    read_json(&dir.join(CONFIG_FILE))
}

/// `result.json` of the fine-tune artifact in `dir`.
pub fn read_result(dir: &Path) -> Result<RunResult, ArtifactError> {
    read_json(&dir.join(RESULT_FILE))
}

/// `best/model.json` of the fine-tune artifact in `dir`.
pub fn read_best_spec(dir: &Path) -> Result<ModelSpec, ArtifactError> {
    read_json(&best_file(dir, SPEC_FILE))
}

/// A file of the best epoch's model.
pub fn best_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(BEST_DIR).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_from_config_json_and_a_foreign_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{ "method": "lora-qv", "model": "../m", "peft": { "kind": "lora" }, "epochs": 3,
                 "seed": 7, "eval_split": "dev", "eval_batch_size": 16, "lr": 0.001 }"#,
        )
        .unwrap();
        let s = read_settings(dir.path()).unwrap();
        assert_eq!(s.model.as_deref(), Some(Path::new("../m")));
        assert_eq!((s.seed, s.eval_batch_size), (7, 16));
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{ "masks": [] }"#).unwrap();
        let e = read_settings(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("method"), "{e}");
    }
}
