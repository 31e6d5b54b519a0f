//! Pipelines: parse RON files, resolve them into a plan of keyed stages, run what is missing.
//!
//! `file` (RON -> expanded stage specs) → `plan` (registry + store -> keyed HIT/RUN nodes with
//! typed reasons) → `run` (execute RUN nodes through the store, on device slots) or `slurm`
//! (the RUN nodes as batch jobs). `stage` is the contract a
//! stage crate implements; `builtin` holds two small file stages used by demos and tests.
//!
//! Invariant: a stage's key is computed from its kind, code version, canonical parameters,
//! input keys, external file contents and (if backend-sensitive) backend class, before
//! anything runs; nothing is written and no stage runs until the whole plan has resolved.

pub mod builtin;
pub mod error;
pub mod file;
pub mod plan;
pub mod registry;
pub mod run;
pub mod slurm;
pub mod stage;

pub use error::{Location, PipelineError};
pub use file::{ExpandOptions, Pipeline, StageSpec};
pub use plan::{Plan, PlanNode, PlanOptions, RerunReason, Status};
pub use registry::Registry;
pub use run::{Observer, Outcome, RunOptions, RunReport};
