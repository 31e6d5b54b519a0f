//! The stage registry of the `lpeft` binary. Adding a stage is one line here (plus the
//! dependency in Cargo.toml); it then works in pipeline files and as `lpeft KIND`.

use lpeft_pipeline::builtin::{DigestStage, SnapshotStage};
use lpeft_pipeline::stage::Stage;

pub fn stages() -> Vec<Box<dyn Stage>> {
    vec![
        // Pipeline stages, in pipeline order.
        Box::new(lpeft_data::DataStage),
        Box::new(lpeft_estimate::EstimateStage),
        Box::new(lpeft_surgery::SurgeryStage),
        Box::new(lpeft_finetune::FinetuneStage),
        // Builtin file stages (demos, tests, pinning raw files).
        Box::new(SnapshotStage),
        Box::new(DigestStage),
    ]
}
