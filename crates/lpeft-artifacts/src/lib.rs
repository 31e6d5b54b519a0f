//! lpeft-artifacts: what one stage writes and another reads, as typed readers and writers with
//! no burn and no store. A stage crate depends on this crate for another stage's output, never
//! on that stage's crate (ARCHITECTURE.md; `tools/check-deps.sh` in `make test`).
//!
//! - [`dataset`]: the tokenized dataset artifact and batching (written by the data stage).
//! - [`estimation`]: the estimation artifact (mask trajectories, per-step importance, the
//!   estimation model's trained state, teacher outputs) and the aggregation of its scores.
//! - [`surgery`]: the surgery artifact's parameter report (`plan.json`).
//! - [`finetune`]: the fine-tune artifact's layout, settings and result (the trained model).

use std::path::Path;

pub mod dataset;
pub mod estimation;
pub mod finetune;
pub mod surgery;

pub use estimation::{EstimateArtifact, Window, aggregate};

/// BLAKE3 of a file's content, hex.
pub fn file_blake3(file: &Path) -> Result<String, std::io::Error> {
    Ok(blake3::hash(&std::fs::read(file)?).to_hex().to_string())
}
