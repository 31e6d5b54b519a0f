//! The surgery artifact as its readers see it: `plan.json`'s parameter report (the rest of the
//! file, the plan itself, is the surgery crate's own business).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::estimation::{ArtifactError, read_json};

/// The plan file of a surgery artifact.
pub const PLAN_FILE: &str = "plan.json";

/// Parameter counts before and after surgery (spec §2.8 style; masks are not counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamReport {
    /// Embeddings + encoder layers.
    pub backbone_before: usize,
    pub backbone_after: usize,
    pub backbone_pruned_pct: f64,
    /// Encoder layers only (what head and FFN pruning can touch).
    pub encoder_layers_before: usize,
    pub encoder_layers_after: usize,
    pub encoder_layers_pruned_pct: f64,
    pub peft_before: usize,
    pub peft_after: usize,
    pub peft_kept_pct: f64,
    pub peft_modules_before: usize,
    pub peft_modules_after: usize,
    pub rank_slots_before: usize,
    pub rank_slots_after: usize,
    /// Task head (pooler/dense + classifier), all of it and its trainable part.
    pub head_params: usize,
    pub head_trainable: usize,
    /// PEFT + trainable head after surgery: what fine-tuning trains.
    pub trainable_after: usize,
    pub kept_heads_per_layer: Vec<usize>,
    pub kept_neurons_per_layer: Vec<usize>,
}

/// The parameter report of the surgery artifact in `dir` (the fine-tune of a pruned model takes
/// the backbone's size before pruning from it).
pub fn read_report(dir: &Path) -> Result<ParamReport, ArtifactError> {
    #[derive(Deserialize)]
    struct WithReport {
        report: ParamReport,
    }
    Ok(read_json::<WithReport>(&dir.join(PLAN_FILE))?.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_read_from_a_plan_file_and_a_foreign_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let report = serde_json::json!({
            "backbone_before": 100, "backbone_after": 60, "backbone_pruned_pct": 40.0,
            "encoder_layers_before": 80, "encoder_layers_after": 40,
            "encoder_layers_pruned_pct": 50.0, "peft_before": 10, "peft_after": 2,
            "peft_kept_pct": 20.0, "peft_modules_before": 4, "peft_modules_after": 1,
            "rank_slots_before": 32, "rank_slots_after": 8, "head_params": 5,
            "head_trainable": 5, "trainable_after": 7, "kept_heads_per_layer": [2, 1],
            "kept_neurons_per_layer": [8, 4],
        });
        let plan = serde_json::json!({ "plan": { "anything": [1, 2] }, "report": report });
        std::fs::write(dir.path().join(PLAN_FILE), plan.to_string()).unwrap();
        let r = read_report(dir.path()).unwrap();
        assert_eq!((r.backbone_before, r.backbone_after), (100, 60));
        assert_eq!(r.kept_heads_per_layer, [2, 1]);
        std::fs::write(dir.path().join(PLAN_FILE), r#"{"metrics": {}}"#).unwrap();
        let e = read_report(dir.path()).unwrap_err().to_string();
        assert!(e.contains("plan.json") && e.contains("report"), "{e}");
    }
}
