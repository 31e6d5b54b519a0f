//! The estimation stage's typed parameters (saved as `config.json` next to the artifact).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use lpeft_model::peft_config::{PaddingSpec, PeftConfig};
pub use lpeft_model::precision::Precision;

/// Length of the estimation: a number of steps, a fraction of an epoch of the train split
/// (800 steps, the reference's SST-2 value, is 0.38 epoch there but ≈100 epochs on CB), or a
/// fraction of the fine-tune it precedes (the paper's "early": `{fraction: 0.1, epochs: 10}`
/// is a tenth of a 10-epoch fine-tune at the estimation's batch size, i.e. one epoch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepsSpec {
    Steps(usize),
    EpochFraction(f64),
    FinetuneFraction { fraction: f64, epochs: f64 },
}

impl StepsSpec {
    /// Steps to run when an epoch has `batches_per_epoch` batches (at least one).
    pub fn resolve(self, batches_per_epoch: usize) -> usize {
        let of_epochs = |f: f64| ((f * batches_per_epoch as f64).ceil() as usize).max(1);
        match self {
            StepsSpec::Steps(n) => n,
            StepsSpec::EpochFraction(f) => of_epochs(f),
            StepsSpec::FinetuneFraction { fraction, epochs } => of_epochs(fraction * epochs),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateConfig {
    /// Pretrained Hugging Face model directory (config.json + model.safetensors or
    /// pytorch_model.bin). Its files' contents enter the key, not its path.
    pub model: PathBuf,
    #[serde(default = "d_peft")]
    pub peft: PeftConfig,
    #[serde(default = "d_steps")]
    pub steps: StepsSpec,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// λ of `λ·(Σ|m_attn| + Σ|m_ffn|)`.
    #[serde(default = "d_l1")]
    pub l1: f64,
    /// Learning-rate multipliers of the head- and FFN-mask groups (the scripts use 1; the
    /// reference `MaskTrainer`'s own defaults are 100 and 50).
    #[serde(default = "d_one")]
    pub attn_mask_lr_coef: f64,
    #[serde(default = "d_one")]
    pub ffn_mask_lr_coef: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub warmup_ratio: f64,
    /// `null` disables clipping.
    #[serde(default = "d_clip")]
    pub max_grad_norm: Option<f64>,
    /// Mask values are recorded at step 0, every `record_every` steps, and at the end.
    #[serde(default = "d_record_every")]
    pub record_every: usize,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_padding")]
    pub padding: PaddingSpec,
    /// Split of the dataset artifact to train on.
    #[serde(default = "d_split")]
    pub split: String,
    /// Also write the trained estimation model's head outputs on the whole training split
    /// (`teacher.safetensors`): the targets of a distilled fine-tune of the pruned model.
    /// Left out of the canonical form when false, so other keys stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub teacher_outputs: bool,
    /// Float arithmetic of the training (`fp32`, `tf32`, `bf16-mixed`: see
    /// `lpeft_model::precision`); left out of the canonical form when `fp32`.
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    pub precision: Precision,
}

fn d_peft() -> PeftConfig {
    PeftConfig::default_lora()
}
fn d_steps() -> StepsSpec {
    StepsSpec::Steps(800)
}
fn d_batch() -> usize {
    32
}
fn d_lr() -> f64 {
    3e-4
}
fn d_l1() -> f64 {
    1e-4
}
fn d_one() -> f64 {
    1.0
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_record_every() -> usize {
    10
}
fn d_seed() -> u64 {
    42
}
fn d_padding() -> PaddingSpec {
    PaddingSpec::Longest
}
fn d_split() -> String {
    "train".into()
}

impl EstimateConfig {
    /// Checks values serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, msg: String| Err(format!("field `{field}`: {msg}"));
        match self.steps {
            StepsSpec::Steps(0) => return bad("steps", "must be at least 1".into()),
            StepsSpec::EpochFraction(f) if !(f > 0.0 && f.is_finite()) => {
                return bad("steps", format!("epoch fraction {f} must be positive"));
            }
            StepsSpec::FinetuneFraction { fraction, .. }
                if !(fraction > 0.0 && fraction <= 1.0) =>
            {
                return bad(
                    "steps.finetune_fraction.fraction",
                    format!("{fraction} must be in (0, 1]"),
                );
            }
            StepsSpec::FinetuneFraction { epochs, .. } if !(epochs > 0.0 && epochs.is_finite()) => {
                return bad(
                    "steps.finetune_fraction.epochs",
                    format!("{epochs} must be positive"),
                );
            }
            _ => {}
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("{} must be positive", self.lr));
        }
        if !(self.l1 >= 0.0 && self.l1.is_finite()) {
            return bad("l1", format!("{} must be ≥ 0", self.l1));
        }
        for (f, v) in [
            ("attn_mask_lr_coef", self.attn_mask_lr_coef),
            ("ffn_mask_lr_coef", self.ffn_mask_lr_coef),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(f, format!("{v} must be ≥ 0"));
            }
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                format!("{} must be in [0, 1)", self.warmup_ratio),
            );
        }
        if self.record_every == 0 {
            return bad("record_every", "must be at least 1".into());
        }
        if let PaddingSpec::Fixed(0) = self.padding {
            return bad("padding", "fixed length must be positive".into());
        }
        match &self.peft {
            PeftConfig::Lora {
                rank,
                targets,
                dropout,
                ..
            } => {
                if *rank == 0 {
                    return bad("peft.rank", "must be at least 1".into());
                }
                if targets.is_empty() {
                    return bad("peft.targets", "needs at least one target".into());
                }
                if !(0.0..1.0).contains(dropout) {
                    return bad("peft.dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            PeftConfig::Adapter {
                size,
                sites,
                dropout,
                ..
            } => {
                if *size == 0 {
                    return bad("peft.size", "must be at least 1".into());
                }
                if sites.is_empty() {
                    return bad("peft.sites", "needs at least one site".into());
                }
                if !(0.0..1.0).contains(dropout) {
                    return bad("peft.dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
        }
        Ok(())
    }
}
