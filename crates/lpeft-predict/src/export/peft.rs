//! An unpruned LoRA run as a Hugging Face PEFT adapter over the pretrained model it started
//! from: `adapter_config.json` and `adapter_model.safetensors`.
//!
//! Our LoRA computes `x·A·B·scale` with `A: [d_in, r]`, `B: [r, d_out]` and `scale =
//! alpha / original_rank` (kept when ranks are pruned); PEFT's computes `B'(A'(x))·lora_alpha/r`
//! with `lora_A.weight: [r, in]` and `lora_B.weight: [out, r]`. So the factors are transposed,
//! and a module whose `(r, scale·r)` is not the config's `(r, lora_alpha)` gets entries in
//! `rank_pattern` / `alpha_pattern` that give it the same scale. Modules are named exactly (a
//! `target_modules` regex of full names), so `output.dense` never catches
//! `attention.output.dense`. The trained head is saved under `modules_to_save`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use lpeft_model::Model;
use lpeft_model::checkpoint::{named_tensors, write_safetensors};
use lpeft_model::hf::{HfCheckpoint, hf_names};
use lpeft_model::names::{DenseParam, LayerTensor, PeftFactor, TensorKind, TensorName};
use lpeft_schema::model::{PeftSite, TaskHeadSpec};

use super::{Tensors, hf_module, prefix, transposed, write_json, write_tokenizer};
use crate::PredictError;
use crate::load::{Base, TrainedModel};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// What PEFT prefixes every key of a task model with.
const KEY_PREFIX: &str = "base_model.model.";

/// One LoRA module as PEFT sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// e.g. `bert.encoder.layer.0.attention.self.query`.
    pub name: String,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
}

/// The LoRA modules of `model` that exist (rank > 0 over a projection of non-zero width).
pub fn modules(model: &Model) -> Vec<Module> {
    let spec = &model.spec;
    let present = named_tensors(model);
    spec.peft
        .iter()
        .filter_map(|m| {
            let PeftSite::Lora(target) = m.id.site else {
                return None;
            };
            let a = TensorName::peft(m.id, PeftFactor::A).to_string();
            if m.rank == 0 || !present.contains_key(&a) {
                return None;
            }
            let weight = TensorName::layer(
                m.id.layer,
                LayerTensor::Dense {
                    site: target.into(),
                    param: DenseParam::Weight,
                },
            );
            Some(Module {
                name: hf_module(spec, weight)?,
                rank: m.rank,
                alpha: m.scale * m.rank as f64,
                dropout: m.dropout,
            })
        })
        .collect()
}

fn escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// PEFT's task type and the head modules it saves, for a head.
pub fn task(head: TaskHeadSpec) -> (&'static str, &'static str) {
    match head {
        TaskHeadSpec::SpanExtraction => ("QUESTION_ANS", "qa_outputs"),
        _ => ("SEQ_CLS", "classifier"),
    }
}

/// `adapter_config.json` for `modules` (non-empty) over the model at `base`, with `head`.
pub fn adapter_config(modules: &[Module], base: &str, head: TaskHeadSpec) -> Value {
    let (task_type, saved) = task(head);
    // The most common (rank, alpha) is the config's; the others are patterns.
    let mut counts: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    for m in modules {
        *counts.entry((m.rank, m.alpha.to_bits())).or_default() += 1;
    }
    let ((r, alpha_bits), _) = counts
        .iter()
        .max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))
        .map(|(k, n)| (*k, *n))
        .expect("at least one module");
    let alpha = f64::from_bits(alpha_bits);
    let mut rank_pattern = serde_json::Map::new();
    let mut alpha_pattern = serde_json::Map::new();
    for m in modules {
        if m.rank != r || m.alpha.to_bits() != alpha_bits {
            rank_pattern.insert(escape(&m.name), json!(m.rank));
            alpha_pattern.insert(escape(&m.name), json!(m.alpha));
        }
    }
    let target = modules
        .iter()
        .map(|m| format!("^{}$", escape(&m.name)))
        .collect::<Vec<_>>()
        .join("|");
    json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": modules[0].dropout,
        "target_modules": target,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": [saved],
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "revision": null,
    })
}

/// The adapter's tensors: LoRA factors transposed, the task head's `classifier` layers (what
/// PEFT's `modules_to_save` holds; BERT's pooler is frozen and stays the base model's).
/// Every other tensor must be the pretrained model's own (frozen in a vanilla LoRA run).
pub fn adapter_tensors(model: &Model) -> Result<Tensors, PredictError> {
    let spec = &model.spec;
    let family = spec.encoder.family;
    let mut out = Tensors::new();
    for (name, (shape, values)) in named_tensors(model) {
        let key = match TensorName::parse(&name) {
            Some(TensorName::Layer {
                layer,
                part:
                    LayerTensor::Peft {
                        site: PeftSite::Lora(target),
                        factor,
                    },
            }) => {
                let weight = TensorName::layer(
                    layer,
                    LayerTensor::Dense {
                        site: target.into(),
                        param: DenseParam::Weight,
                    },
                );
                let module = hf_module(spec, weight).expect("projections have HF names");
                let leaf = match factor {
                    PeftFactor::A => "lora_A",
                    PeftFactor::B => "lora_B",
                };
                format!("{module}.{leaf}.weight")
            }
            Some(n) if n.kind() == TensorKind::Head => {
                let (names, _) =
                    hf_names(prefix(family), &name, spec.head, family).expect("head names");
                if !names[0].starts_with(task(spec.head).1) {
                    continue;
                }
                names[0].clone()
            }
            Some(n) if n.kind() == TensorKind::Backbone => continue,
            _ => {
                return Err(PredictError::Unsupported(format!(
                    "tensor `{name}` is neither LoRA, the task head nor the backbone: PEFT's LoRA cannot hold it"
                )));
            }
        };
        // Matrices are in burn layout ([in, out]); PEFT's are PyTorch's.
        let tensor = if shape.len() == 2 {
            transposed(&shape, &values)
        } else {
            (shape, values)
        };
        out.insert(format!("{KEY_PREFIX}{key}"), tensor);
    }
    Ok(out)
}

/// Writes the adapter of `model` (unmerged) into `dir`, over `base` or else the pretrained
/// model the run started from.
pub fn write(
    trained: &TrainedModel,
    model: &Model,
    base: Option<&Path>,
    dir: &Path,
) -> Result<usize, PredictError> {
    let base = match (base, &trained.base) {
        (Some(b), _) => {
            same_backbone(model, b)?;
            b.to_path_buf()
        }
        (None, Base::Pretrained { dir, .. }) => dir.clone(),
        (None, Base::Checkpoint { .. }) => {
            return Err(PredictError::Unsupported(
                "a Light-PEFT run starts from a surgery checkpoint: give --base DIR, the pretrained model (when the cut left the backbone whole), or use --format pruned".into(),
            ));
        }
    };
    let modules = modules(model);
    if modules.is_empty() {
        return Err(PredictError::Unsupported(
            "the model has no LoRA module: nothing to export as a PEFT adapter (use --format merged)".into(),
        ));
    }
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    let config = adapter_config(&modules, &base.to_string_lossy(), model.spec.head);
    write_json(&dir.join(CONFIG_FILE), &config)?;
    let tensors = adapter_tensors(model)?;
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    write_tokenizer(trained, &model.spec, dir)?;
    Ok(tensors.len())
}

/// Checks that every tensor the adapter does not hold (backbone, BERT's pooler) is the one of
/// the Hugging Face model in `base`, exactly.
fn same_backbone(model: &Model, base: &Path) -> Result<(), PredictError> {
    let spec = &model.spec;
    let family = spec.encoder.family;
    let ckpt = HfCheckpoint::open(base)?;
    let adapter = adapter_tensors(model)?;
    let differs = |what: String| {
        Err(PredictError::Unsupported(format!(
            "--base {}: {what}; the adapter would not give this model's outputs (use --format pruned)",
            base.display()
        )))
    };
    for (name, (shape, values)) in named_tensors(model) {
        let Some((names, transpose)) = hf_names(&ckpt.prefix, &name, spec.head, family) else {
            continue; // LoRA factors
        };
        let ours = names[0].trim_start_matches(&ckpt.prefix);
        if adapter.contains_key(&format!("{KEY_PREFIX}{ours}")) {
            continue; // the head, saved in the adapter
        }
        let Some((hf_shape, hf)) = names.iter().find_map(|n| ckpt.tensors.tensors.get(n)) else {
            return differs(format!("it has no `{}`", names[0]));
        };
        let (shape, values) = if transpose {
            transposed(&shape, &values)
        } else {
            (shape, values)
        };
        if hf_shape != &shape || hf != &values {
            return differs(format!("its `{}` is not this model's", names[0]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, rank: usize, alpha: f64) -> Module {
        Module {
            name: name.into(),
            rank,
            alpha,
            dropout: 0.05,
        }
    }

    /// Ranks pruned under a kept scale: the common (r, alpha) is the config's, the others are
    /// patterns giving each its own `alpha / r` = our scale.
    #[test]
    fn rank_and_alpha_patterns_keep_the_scale() {
        let q0 = "bert.encoder.layer.0.attention.self.query";
        let v0 = "bert.encoder.layer.0.attention.self.value";
        let q1 = "bert.encoder.layer.1.attention.self.query";
        // scale 2 = 16/8: ranks 8, 8 and 3 (pruned).
        let c = adapter_config(
            &[module(q0, 8, 16.0), module(v0, 8, 16.0), module(q1, 3, 6.0)],
            "base",
            TaskHeadSpec::Regression {
                style: lpeft_schema::model::HeadStyle::BertPooler,
            },
        );
        assert_eq!(c["r"], 8);
        assert_eq!(c["lora_alpha"], 16.0);
        let key = "bert\\.encoder\\.layer\\.1\\.attention\\.self\\.query";
        assert_eq!(c["rank_pattern"], json!({ key: 3 }));
        assert_eq!(c["alpha_pattern"], json!({ key: 6.0 }));
        assert_eq!(
            c["target_modules"],
            format!(
                "^{}$|^{}$|^{key}$",
                q0.replace('.', "\\."),
                v0.replace('.', "\\.")
            )
        );
        assert_eq!(c["modules_to_save"], json!(["classifier"]));
        assert_eq!(c["base_model_name_or_path"], "base");
    }
}
