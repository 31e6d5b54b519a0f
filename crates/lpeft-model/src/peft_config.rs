//! The PEFT configuration every training stage shares, and the estimation model's spec built
//! from it (spec §3.1): what "LoRA r 8 on all six matrices" or "adapters after both sublayers"
//! means as modules, and the task head for a dataset's task kind.

use serde::{Deserialize, Serialize};

use lpeft_schema::dataset::TaskKind;
use lpeft_schema::model::{
    AdapterSite, EncoderSpec, Family, HeadStyle, LoraTarget, ModelSpec, PeftModuleId,
    PeftModuleSpec, PeftSite, TaskHeadSpec,
};

/// PEFT modules trained during estimation (spec §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeftConfig {
    /// LoRA `x·A·B·(alpha/rank)` beside each target matrix of every layer.
    Lora {
        #[serde(default = "d_rank")]
        rank: usize,
        #[serde(default = "d_alpha")]
        alpha: f64,
        #[serde(default = "d_lora_dropout")]
        dropout: f64,
        #[serde(default = "d_targets")]
        targets: Vec<LoraTarget>,
    },
    /// Serial bottleneck adapters after the chosen sublayers of every layer.
    Adapter {
        #[serde(default = "d_rank")]
        size: usize,
        #[serde(default = "d_adapter_dropout")]
        dropout: f64,
        #[serde(default = "d_scale")]
        scale: f64,
        #[serde(default = "d_sites")]
        sites: Vec<AdapterSite>,
    },
}

fn d_rank() -> usize {
    8
}
fn d_alpha() -> f64 {
    16.0
}
fn d_lora_dropout() -> f64 {
    0.05
}
fn d_adapter_dropout() -> f64 {
    0.1
}
fn d_scale() -> f64 {
    1.0
}
fn d_targets() -> Vec<LoraTarget> {
    LoraTarget::ALL.to_vec()
}
fn d_sites() -> Vec<AdapterSite> {
    vec![AdapterSite::Attention, AdapterSite::Ffn]
}

impl PeftConfig {
    /// LoRA with every default: rank 8, alpha 16, dropout 0.05, the six matrices.
    pub fn default_lora() -> Self {
        PeftConfig::Lora {
            rank: d_rank(),
            alpha: d_alpha(),
            dropout: d_lora_dropout(),
            targets: d_targets(),
        }
    }
}

/// Padding of training batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PaddingSpec {
    /// Each batch to its longest row (fast; masked attention makes it equivalent).
    Longest,
    /// Every batch to this length (the reference pads to 128).
    Fixed(usize),
}

/// The task head for a dataset's task kind, in the encoder family's style.
pub fn head_for(kind: &TaskKind, family: Family) -> TaskHeadSpec {
    let style = match family {
        Family::Bert => HeadStyle::BertPooler,
        Family::Roberta | Family::Mpnet => HeadStyle::RobertaDenseTanh,
        Family::Opt => HeadStyle::LastToken,
    };
    match kind {
        TaskKind::Classification { num_labels } => TaskHeadSpec::Classification {
            num_labels: *num_labels as usize,
            style,
        },
        TaskKind::Regression => TaskHeadSpec::Regression { style },
        TaskKind::MultipleChoice { num_choices } => TaskHeadSpec::MultipleChoice {
            choices: *num_choices as usize,
            style,
        },
        TaskKind::Span => TaskHeadSpec::SpanExtraction,
    }
}

/// PEFT modules on every layer as configured.
pub fn peft_modules(peft: &PeftConfig, layers: usize) -> Vec<PeftModuleSpec> {
    let mut out = Vec::new();
    for layer in 0..layers {
        match peft {
            PeftConfig::Lora {
                rank,
                alpha,
                dropout,
                targets,
            } => {
                for t in targets {
                    out.push(PeftModuleSpec {
                        id: PeftModuleId {
                            layer,
                            site: PeftSite::Lora(*t),
                        },
                        rank: *rank,
                        original_rank: *rank,
                        scale: alpha / *rank as f64,
                        dropout: *dropout,
                    });
                }
            }
            PeftConfig::Adapter {
                size,
                dropout,
                scale,
                sites,
            } => {
                for s in sites {
                    out.push(PeftModuleSpec {
                        id: PeftModuleId {
                            layer,
                            site: PeftSite::Adapter(*s),
                        },
                        rank: *size,
                        original_rank: *size,
                        scale: *scale,
                        dropout: *dropout,
                    });
                }
            }
        }
    }
    out.sort_by_key(|m| m.id);
    out.dedup_by_key(|m| m.id);
    out
}

/// The estimation model's spec: the pretrained encoder with masks and PEFT on every layer.
pub fn estimation_spec(encoder: EncoderSpec, kind: &TaskKind, peft: &PeftConfig) -> ModelSpec {
    let head = head_for(kind, encoder.family);
    let peft = peft_modules(peft, encoder.layers.len());
    ModelSpec {
        encoder,
        head,
        peft,
        masks: true,
    }
}
