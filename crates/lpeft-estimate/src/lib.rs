//! lpeft-estimate: Light-PEFT's estimation stage (spec §2–3, appendix stage A).
//!
//! The backbone is frozen; head masks, FFN masks, PEFT modules (LoRA or bottleneck adapters)
//! and the task head train together on the task loss + λ·Σ|masks| with AdamW, a linear
//! schedule and clipping. The artifact keeps the whole mask trajectory and the per-step raw
//! module (p2) and rank (first-order Taylor) scores, so surgery can draw at any recorded step
//! and aggregate any window without re-estimating.
//!
//! Invariant: the run reads only the dataset artifact, the pretrained model's declared files
//! and its parameters; every per-step capture crosses from the device in one transfer.

pub use lpeft_artifacts::estimation as artifact;
pub mod config;
pub mod run;
pub mod stage;

pub use artifact::{EstimateArtifact, Window, aggregate};
pub use config::{EstimateConfig, PeftConfig, StepsSpec};
pub use stage::EstimateStage;
