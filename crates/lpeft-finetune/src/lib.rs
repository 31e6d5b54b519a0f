//! lpeft-finetune: the fine-tuning stage of lightpeft (spec stage C and baseline D).
//!
//! Vanilla PEFT builds the pretrained model with fresh PEFT modules and head; Light-PEFT loads
//! the surgery artifact's pruned model, whose PEFT modules and head are warm-started from
//! estimation (spec §6.1.2), with a fresh optimizer and schedule. Both evaluate on dev after
//! every epoch and keep the best epoch by the task's main score.
//!
//! Invariant: the reported best epoch is the first epoch with the highest main score, and its
//! trainable weights are the ones saved.

pub mod config;
pub mod run;
pub mod stage;

pub use config::FinetuneConfig;
pub use stage::FinetuneStage;
