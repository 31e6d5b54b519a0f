//! lpeft-surgery: Light-PEFT's early pruning (spec §2.6–2.7, §3.4–3.5, appendix stage B).
//!
//! - [`plan`]: numpy's linear quantile with a strict `>` (5 of 16 heads at 0.333333333, 6 at
//!   1/3), layerwise or global per granularity, module pruning before rank pruning, and a
//!   seeded random-importance baseline for all four granularities;
//! - [`apply`]: physical surgery on named tensors, the masked model it equals, and the
//!   parameter report;
//! - [`stage`]: the `surgery` stage (plan.json + a self-describing pruned checkpoint).
//!
//! Architecture invariant: for every plan, the masked model (masks at the plan's 0/1 values,
//! dropped ranks and modules zeroed) and the physically pruned model give the same outputs.
//! The plan and the surgery are pure functions; only `stage` does IO.

pub mod apply;
pub mod plan;
pub mod stage;

pub use apply::{ParamReport, SurgeryError, Tensors, masked_equivalent, param_report, prune};
pub use plan::{Plan, PlanSettings, Scope, Scores, make_plan, quantile_linear};
pub use stage::{SurgeryConfig, SurgeryStage};
