//! `lpeft export`: a trained model in the Hugging Face ecosystem's layouts.
//!
//! - [`Format::Peft`]: an unpruned LoRA run as a PEFT adapter (`adapter_config.json` +
//!   `adapter_model.safetensors`, the task head under `modules_to_save`) over the pretrained
//!   model it was trained from ([`peft`]).
//! - [`Format::Merged`]: LoRA folded into the weights, a plain transformers model directory
//!   (`config.json` + `model.safetensors` + tokenizer files); unpruned models only.
//! - [`Format::Pruned`]: the same for any shape, per-layer head counts and FFN widths in its
//!   `config.json`, with a small modeling file loaded through `auto_map` and
//!   `trust_remote_code=True` ([`remote`]).
//! - [`Format::Bundle`]: our own checkpoint with its tokenizer and task ([`crate::bundle`]),
//!   for `lpeft predict --model DIR` away from the store; any model.
//!
//! Every weight is written under its Hugging Face name ([`lpeft_model::hf::hf_names`]) in
//! PyTorch layout (`[out, in]`). The directory is written beside its destination and renamed
//! into place once complete. [`reference`] computes our logits on a few fixed inputs, for
//! `tools/export_check.py` to compare with what transformers computes from the exported files.

pub mod peft;
pub mod reference;
pub mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use lpeft_model::Model;
use lpeft_model::checkpoint::{named_tensors, write_safetensors};
use lpeft_model::hf::hf_names;
use lpeft_model::names::TensorName;
use lpeft_schema::model::{Activation, EncoderSpec, Family, ModelSpec, PeftSite, TaskHeadSpec};

use crate::PredictError;
use crate::load::TrainedModel;

pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// What `--format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Peft,
    Merged,
    Pruned,
    Bundle,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "peft" => Some(Format::Peft),
            "merged" => Some(Format::Merged),
            "pruned" => Some(Format::Pruned),
            "bundle" => Some(Format::Bundle),
            _ => None,
        }
    }
}

/// What was written, for the command's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub tensors: usize,
}

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub format: Format,
    /// The directory to write: absent or empty unless `force`.
    pub out: PathBuf,
    pub force: bool,
    /// The pretrained model a PEFT adapter applies to, when it is not the one the run started
    /// from (a Light-PEFT run whose backbone was not cut, or a moved model): its backbone must
    /// equal the model's.
    pub base: Option<PathBuf>,
}

/// Writes `trained` (built as `model`, on a plain device) as `target` says.
pub fn export(
    trained: &TrainedModel,
    model: Model,
    target: &Target,
) -> Result<Exported, PredictError> {
    let (format, out, force) = (target.format, target.out.as_path(), target.force);
    check_exportable(&model.spec, format)?;
    if out.exists() && !force && !is_empty_dir(out) {
        return Err(PredictError::Exists {
            path: out.to_owned(),
        });
    }
    let name = out
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::create_dir_all(&parent).map_err(write_err(&parent))?;
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(write_err(&tmp))?;
    let written = match format {
        Format::Peft => peft::write(trained, &model, target.base.as_deref(), &tmp),
        Format::Bundle => {
            crate::bundle::write_into(trained, &model, &tmp).map(|()| named_tensors(&model).len())
        }
        Format::Merged | Format::Pruned => {
            write_model_dir(trained, lpeft_model::merge::merge_lora(model), format, &tmp)
        }
    };
    let result = written.and_then(|tensors| {
        if out.exists() {
            let old = parent.join(format!(".{name}.{}.old", std::process::id()));
            std::fs::rename(out, &old).map_err(write_err(out))?;
            std::fs::rename(&tmp, out).map_err(write_err(out))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, out).map_err(write_err(out))?;
        }
        let mut files: Vec<String> = std::fs::read_dir(out)
            .map_err(write_err(out))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        files.sort();
        Ok(Exported {
            dir: out.to_owned(),
            files,
            tensors,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

pub(crate) fn write_err(path: &Path) -> impl Fn(std::io::Error) -> PredictError + use<> {
    let path = path.to_owned();
    move |source| PredictError::Write {
        path: path.clone(),
        source,
    }
}

/// Whether every layer has the pretrained shape (`hidden_size / head_dim` heads).
pub fn is_unpruned(spec: &ModelSpec) -> bool {
    let e = &spec.encoder;
    let first = e.layers.first();
    e.layers.iter().all(|l| {
        Some(l) == first && l.heads * e.head_dim == e.hidden_size && l.heads > 0 && l.ffn > 0
    })
}

/// Refuses, with the reason, what `format` cannot represent.
pub fn check_exportable(spec: &ModelSpec, format: Format) -> Result<(), PredictError> {
    let no = |m: String| Err(PredictError::Unsupported(m));
    if format == Format::Bundle {
        return Ok(());
    }
    if spec.encoder.family == Family::Mpnet {
        // transformers adds MPNet's whole relative-bias table to every layer, and the
        // remote-code model of the pruned format has no relative bias yet.
        return no(
            "an MPNet model: export supports BERT and RoBERTa so far; use --format bundle".into(),
        );
    }
    if spec.encoder.family == Family::Opt {
        // Neither the HF-name mapping of export nor the remote-code model knows OPT's decoder.
        return no(
            "an OPT model: export supports BERT and RoBERTa so far; use --format bundle".into(),
        );
    }
    if spec.masks {
        return no("the model carries estimation masks (an estimation model, not a fine-tune); export a fine-tune".into());
    }
    if spec
        .peft
        .iter()
        .any(|m| matches!(m.id.site, PeftSite::Adapter(_)) && m.rank > 0)
    {
        return no(
            "bottleneck adapters have no Hugging Face PEFT or merged form; only LoRA runs export"
                .into(),
        );
    }
    if let TaskHeadSpec::MultipleChoice { .. } = spec.head {
        return no("a multiple-choice head: export supports sequence classification, regression and span (question answering) heads so far".into());
    }
    let unpruned = is_unpruned(spec);
    match format {
        Format::Peft if !unpruned => no(
            "a pruned model (per-layer head counts or FFN widths) has no base model on the hub for a PEFT adapter: use --format pruned".into(),
        ),
        Format::Merged if !unpruned => no(
            "a pruned model does not fit a plain transformers config (one head count and FFN width for all layers): use --format pruned".into(),
        ),
        _ => Ok(()),
    }
}

/// `"bert."` or `"roberta."`: the backbone prefix of the transformers task models.
pub fn prefix(family: Family) -> &'static str {
    match family {
        Family::Bert => "bert.",
        Family::Roberta => "roberta.",
        Family::Mpnet => "mpnet.",
        Family::Opt => "model.",
    }
}

/// The transformers task class for a head.
fn architecture(spec: &ModelSpec) -> String {
    let family = match spec.encoder.family {
        Family::Bert => "Bert",
        Family::Roberta => "Roberta",
        Family::Mpnet => "MPNet",
        Family::Opt => "OPT",
    };
    format!("{family}For{}", task_class(spec.head))
}

/// The transformers task a head is: `SequenceClassification` or `QuestionAnswering`.
pub fn task_class(head: TaskHeadSpec) -> &'static str {
    match head {
        TaskHeadSpec::SpanExtraction => "QuestionAnswering",
        _ => "SequenceClassification",
    }
}

/// Every backbone and head tensor of a model without PEFT modules, under its transformers name
/// in PyTorch layout; zero-width projections of pruned layers as empty `[out, 0]` tensors.
pub fn hf_tensors(model: &Model) -> Result<Tensors, PredictError> {
    let spec = &model.spec;
    let p = prefix(spec.encoder.family);
    let mut out = Tensors::new();
    for (name, (shape, values)) in named_tensors(model) {
        let Some((names, transpose)) = hf_names(p, &name, spec.head, spec.encoder.family) else {
            return Err(PredictError::Unsupported(format!(
                "tensor `{name}` has no Hugging Face name"
            )));
        };
        let tensor = if transpose {
            transposed(&shape, &values)
        } else {
            (shape, values)
        };
        out.insert(names[0].clone(), tensor);
    }
    let h = spec.encoder.hidden_size;
    for (l, shape) in spec.encoder.layers.iter().enumerate() {
        let layer = format!("{p}encoder.layer.{l}");
        if shape.heads == 0 {
            out.insert(
                format!("{layer}.attention.output.dense.weight"),
                (vec![h, 0], vec![]),
            );
        }
        if shape.ffn == 0 {
            out.insert(format!("{layer}.output.dense.weight"), (vec![h, 0], vec![]));
        }
    }
    Ok(out)
}

/// A `[rows, cols]` tensor as `[cols, rows]`.
pub fn transposed(shape: &[usize], values: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (rows, cols) = (shape[0], shape[1]);
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    (vec![cols, rows], out)
}

/// The HF module a LoRA site sits on, e.g. `bert.encoder.layer.0.attention.self.query`.
pub fn hf_module(spec: &ModelSpec, name: TensorName) -> Option<String> {
    let (names, _) = hf_names(
        prefix(spec.encoder.family),
        &name.to_string(),
        spec.head,
        spec.encoder.family,
    )?;
    names[0].strip_suffix(".weight").map(str::to_owned)
}

/// A transformers `config.json` for `spec` (uniform shapes: layer 0's; the pruned format adds
/// its per-layer shapes).
pub fn hf_config(spec: &ModelSpec) -> Value {
    let e: &EncoderSpec = &spec.encoder;
    let (model_type, num_labels, problem) = match (e.family, spec.head) {
        (f, TaskHeadSpec::Regression { .. }) => (f, 1, "regression"),
        (f, TaskHeadSpec::Classification { num_labels, .. }) => {
            (f, num_labels, "single_label_classification")
        }
        (f, TaskHeadSpec::SpanExtraction) => (f, 2, "single_label_classification"),
        (f, _) => (f, 1, "single_label_classification"),
    };
    let model_type = match model_type {
        Family::Bert => "bert",
        Family::Roberta => "roberta",
        Family::Mpnet => "mpnet",
        Family::Opt => "opt",
    };
    let act = match e.hidden_act {
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_new",
        Activation::Relu => "relu",
    };
    let first = e
        .layers
        .first()
        .copied()
        .unwrap_or(lpeft_schema::model::LayerShape { heads: 0, ffn: 0 });
    let id2label: serde_json::Map<String, Value> = (0..num_labels)
        .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
        .collect();
    let label2id: serde_json::Map<String, Value> = (0..num_labels)
        .map(|i| (format!("LABEL_{i}"), json!(i)))
        .collect();
    json!({
        "architectures": [architecture(spec)],
        "model_type": model_type,
        "vocab_size": e.vocab_size,
        "hidden_size": e.hidden_size,
        "num_hidden_layers": e.layers.len(),
        "num_attention_heads": e.hidden_size / e.head_dim.max(1),
        "intermediate_size": first.ffn,
        "hidden_act": act,
        "hidden_dropout_prob": e.hidden_dropout,
        "attention_probs_dropout_prob": e.attention_dropout,
        "classifier_dropout": null,
        "max_position_embeddings": e.max_position_embeddings,
        "type_vocab_size": e.type_vocab_size,
        "initializer_range": lpeft_model::model::INIT_STD,
        "layer_norm_eps": e.layer_norm_eps,
        "pad_token_id": e.pad_token_id,
        "position_embedding_type": "absolute",
        "problem_type": problem,
        "id2label": id2label,
        "label2id": label2id,
        "torch_dtype": "float32",
    })
}

/// A model directory: `config.json`, `model.safetensors`, tokenizer files (and, pruned, the
/// modeling file). Returns the number of tensors written.
fn write_model_dir(
    trained: &TrainedModel,
    model: Model,
    format: Format,
    dir: &Path,
) -> Result<usize, PredictError> {
    let tensors = hf_tensors(&model)?;
    let mut config = hf_config(&model.spec);
    if format == Format::Pruned {
        remote::extend_config(&mut config, &model.spec);
        let file = dir.join(remote::MODELING_FILE);
        std::fs::write(&file, remote::MODELING_SOURCE).map_err(write_err(&file))?;
    }
    write_json(&dir.join("config.json"), &config)?;
    let file = dir.join("model.safetensors");
    write_safetensors(&file, &tensors)?;
    write_tokenizer(trained, &model.spec, dir)?;
    Ok(tensors.len())
}

pub(crate) fn write_json(file: &Path, v: &Value) -> Result<(), PredictError> {
    let text = serde_json::to_string_pretty(v).expect("JSON serializes") + "\n";
    std::fs::write(file, text).map_err(write_err(file))
}

/// `tokenizer.json` (the one the training data was tokenized with) and a
/// `tokenizer_config.json` naming the family's special tokens, for `AutoTokenizer`.
pub fn write_tokenizer(
    trained: &TrainedModel,
    spec: &ModelSpec,
    dir: &Path,
) -> Result<(), PredictError> {
    let file = dir.join(crate::bundle::TOKENIZER_FILE);
    std::fs::copy(&trained.text.tokenizer, &file).map_err(write_err(&file))?;
    let [cls, sep, pad, unk, mask] = match spec.encoder.family {
        Family::Bert => ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"],
        Family::Roberta | Family::Mpnet => ["<s>", "</s>", "<pad>", "<unk>", "<mask>"],
        // GPT-2's vocabulary as OPT's tokenizer uses it: `</s>` begins and ends, unknowns too.
        Family::Opt => ["</s>", "</s>", "<pad>", "</s>", "<mask>"],
    };
    let inputs = match spec.encoder.family {
        Family::Bert => json!(["input_ids", "token_type_ids", "attention_mask"]),
        Family::Roberta | Family::Mpnet | Family::Opt => json!(["input_ids", "attention_mask"]),
    };
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_input_names": inputs,
        "model_max_length": trained.text.max_length,
        "cls_token": cls, "sep_token": sep, "pad_token": pad, "unk_token": unk, "mask_token": mask,
        "bos_token": cls, "eos_token": sep,
    });
    write_json(&dir.join("tokenizer_config.json"), &config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpeft_model::testing::tiny_spec;
    use lpeft_schema::model::HeadStyle;

    /// MPNet exports only as our own bundle: transformers' layout has no per-layer relative
    /// bias, and the pruned format's remote code has none yet.
    #[test]
    fn mpnet_exports_only_as_a_bundle() {
        let head = TaskHeadSpec::Classification {
            num_labels: 2,
            style: HeadStyle::RobertaDenseTanh,
        };
        let spec = tiny_spec(Family::Mpnet, &[(2, 4)], head, vec![], false);
        for format in [Format::Peft, Format::Merged, Format::Pruned] {
            let err = check_exportable(&spec, format).unwrap_err().to_string();
            assert!(err.contains("MPNet") && err.contains("bundle"), "{err}");
        }
        assert!(check_exportable(&spec, Format::Bundle).is_ok());
        let roberta = tiny_spec(Family::Roberta, &[(2, 4)], head, vec![], false);
        assert!(check_exportable(&roberta, Format::Pruned).is_ok());
    }

    /// OPT too: neither export's HF names nor the remote-code model know its decoder.
    #[test]
    fn opt_exports_only_as_a_bundle() {
        let head = TaskHeadSpec::Classification {
            num_labels: 2,
            style: HeadStyle::LastToken,
        };
        let spec = tiny_spec(Family::Opt, &[(2, 4)], head, vec![], false);
        for format in [Format::Peft, Format::Merged, Format::Pruned] {
            let err = check_exportable(&spec, format).unwrap_err().to_string();
            assert!(err.contains("OPT") && err.contains("bundle"), "{err}");
        }
        assert!(check_exportable(&spec, Format::Bundle).is_ok());
    }
}
