//! The fine-tuning stage's typed parameters (saved as `config.json` next to the artifact).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use lpeft_model::peft_config::{PaddingSpec, PeftConfig};
pub use lpeft_model::precision::Precision;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Label of the method in reports (`lora-qv`, `light-peft-lora`, ...).
    pub method: String,
    /// Pretrained Hugging Face model directory. Required for vanilla PEFT (no `init` input);
    /// must be absent when starting from a pruned checkpoint, which describes itself.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// PEFT modules added to the pretrained model (vanilla). Must be absent with an `init`
    /// input: Light-PEFT trains the pruned, warm-started modules.
    #[serde(default)]
    pub peft: Option<PeftConfig>,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Cap on optimizer steps (CPU profiles); the schedule decays over the capped length and
    /// the dev set is evaluated at every epoch end and once more at the cap.
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub warmup_ratio: f64,
    #[serde(default = "d_clip")]
    pub max_grad_norm: Option<f64>,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_padding")]
    pub padding: PaddingSpec,
    #[serde(default = "d_train")]
    pub train_split: String,
    #[serde(default = "d_eval")]
    pub eval_split: String,
    /// Batch size of dev evaluation (no gradients, so larger is fine).
    #[serde(default = "d_eval_batch")]
    pub eval_batch_size: usize,
    /// Distil towards a `teacher` input (an estimation artifact made with `teacher_outputs`):
    /// the loss becomes `(1 − weight)·task + weight·distill`. Absent: no teacher, and the
    /// canonical form (the key) is as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    /// Float arithmetic of training and dev evaluation (`fp32`, `tf32`, `bf16-mixed`: see
    /// `lpeft_model::precision`); left out of the canonical form when `fp32`.
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    pub precision: Precision,
}

/// Distillation settings of a fine-tune (see [`FinetuneConfig::distill`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    #[serde(default = "d_distill_weight")]
    pub weight: f64,
    /// Softmax temperature of the class-logit term; regression uses the squared difference.
    #[serde(default = "d_temperature")]
    pub temperature: f64,
}

fn d_distill_weight() -> f64 {
    0.5
}
fn d_temperature() -> f64 {
    2.0
}

fn d_epochs() -> usize {
    10
}
fn d_batch() -> usize {
    32
}
fn d_lr() -> f64 {
    3e-4
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_seed() -> u64 {
    42
}
fn d_padding() -> PaddingSpec {
    PaddingSpec::Longest
}
fn d_train() -> String {
    "train".into()
}
fn d_eval() -> String {
    "dev".into()
}
fn d_eval_batch() -> usize {
    64
}

impl FinetuneConfig {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self, has_init: bool) -> Result<(), String> {
        let bad = |field: &str, msg: String| Err(format!("field `{field}`: {msg}"));
        if self.method.trim().is_empty() {
            return bad(
                "method",
                "must name the method (it labels the results)".into(),
            );
        }
        match (has_init, &self.model, &self.peft) {
            (false, None, _) => return bad(
                "model",
                "required without an `init` input (vanilla PEFT starts from a pretrained model)"
                    .into(),
            ),
            (false, _, None) => {
                return bad(
                    "peft",
                    "required without an `init` input (which PEFT modules to add)".into(),
                );
            }
            (true, Some(_), _) => {
                return bad(
                    "model",
                    "must be absent with an `init` input: the pruned checkpoint is the model"
                        .into(),
                );
            }
            (true, _, Some(_)) => {
                return bad(
                    "peft",
                    "must be absent with an `init` input: the pruned PEFT modules are trained"
                        .into(),
                );
            }
            _ => {}
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.max_steps == Some(0) {
            return bad("max_steps", "must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("{} must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                format!("{} must be in [0, 1)", self.warmup_ratio),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", format!("{} must be ≥ 0", self.weight_decay));
        }
        if let Some(d) = &self.distill {
            if !(0.0..=1.0).contains(&d.weight) {
                return bad("distill.weight", format!("{} must be in [0, 1]", d.weight));
            }
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                return bad(
                    "distill.temperature",
                    format!("{} must be positive", d.temperature),
                );
            }
        }
        if let PaddingSpec::Fixed(0) = self.padding {
            return bad("padding", "fixed length must be positive".into());
        }
        Ok(())
    }
}
