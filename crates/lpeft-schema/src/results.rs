//! What a fine-tuning run reports: per-epoch dev metrics, the best epoch, and efficiency
//! figures. Written by the fine-tune stage as `result.json`, read by the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Dev-set metrics after one epoch; metric names are the snake_case names of
/// [`crate::dataset::Metric`] (e.g. `accuracy`, `f1`, `matthews`, `pearson`, `spearman`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    /// Optimizer steps done at the end of this epoch.
    pub step: u64,
    pub train_loss: f64,
    pub metrics: BTreeMap<String, f64>,
    /// The task's main score (selects the best epoch).
    pub main_score: f64,
}

/// Speed, memory and size figures of a run, with the hardware they were measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    /// All parameters of the model as trained (pruned backbone + PEFT + head).
    pub total_params: u64,
    /// Parameters that receive gradients (PEFT + masks + head).
    pub trainable_params: u64,
    /// Backbone (encoder) parameters, and those of the unpruned pretrained backbone.
    pub backbone_params: u64,
    pub backbone_params_original: u64,
    /// `100 * (1 - backbone_params / backbone_params_original)`.
    pub backbone_pruned_pct: f64,
    /// Mean wall time of a training step, device-synchronised, excluding the first (warm-up) steps.
    pub train_seconds_per_step: f64,
    pub train_examples_per_second: f64,
    /// Inference throughput on the dev split (forward only).
    pub inference_examples_per_second: f64,
    /// Peak process RSS on CPU, or peak device memory on CUDA, in bytes.
    pub peak_memory_bytes: u64,
    /// What `peak_memory_bytes` measures: `process_rss` or `device`.
    pub memory_kind: String,
    /// Backend name and host description, e.g. `flex` on `2-core x86_64`.
    pub backend: String,
    pub host: String,
}

/// The outcome of one fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Registry name of the task, e.g. `glue/sst2`.
    pub task: String,
    /// Method label as given in the pipeline, e.g. `lora-qv`, `light-peft-lora`.
    pub method: String,
    pub seed: u64,
    pub epochs: Vec<EpochMetrics>,
    /// The best epoch by main score, numbered from 1 as everywhere it is printed (its
    /// `epochs[..].epoch`; result files of fine-tune stage code version 2 and older counted
    /// from 0).
    pub best_epoch: u32,
    pub best_main_score: f64,
    /// Metrics of the best epoch.
    pub best_metrics: BTreeMap<String, f64>,
    pub efficiency: Efficiency,
    pub wall_seconds: f64,
}
