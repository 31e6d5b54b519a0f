//! Loading Hugging Face checkpoints: `config.json` + `model.safetensors` (or
//! `pytorch_model.bin`). Names are mapped from our module paths to HF keys, Linear weights are
//! transposed from PyTorch's `[out, in]` to burn's `[in, out]`, and per-layer head counts and
//! FFN widths are read off the tensors, so pruned checkpoints load too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use lpeft_schema::model::{Activation, EncoderSpec, Family, HeadStyle, LayerShape, TaskHeadSpec};

use crate::error::ModelError;
use crate::names::{
    DenseModule, DenseParam, DenseSite, EmbeddingTensor, HeadDense, LayerTensor, NormParam,
    Sublayer, TensorName,
};
use crate::rng::SeededRng;
use crate::source::{Init, Role, TensorMap, WeightSource, init_values};
use crate::{mpnet, opt};

mod tensor_files;
pub use tensor_files::{read_pytorch_bin, read_safetensors};

/// A checkpoint's tensors, as read from disk, in PyTorch layout.
#[derive(Debug)]
pub struct HfCheckpoint {
    pub file: PathBuf,
    pub tensors: TensorMap,
    /// `""`, `"bert."`, `"roberta."`, `"mpnet."` or (OPT's task models) `"model."`: the prefix
    /// the backbone keys carry.
    pub prefix: String,
}

/// Reads `config.json` into an encoder spec (per-layer shapes still uniform; see
/// [`HfCheckpoint::layer_shapes`]).
pub fn read_config(dir: &Path) -> Result<EncoderSpec, ModelError> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|e| ModelError::io(&file, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
        file: file.clone(),
        message: format!(
            "not valid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
    })?;
    parse_config(&v, &file)
}

/// Typed reads of `config.json` fields, each error naming the file and the field.
pub(crate) struct ConfigFields<'a> {
    pub v: &'a Value,
    pub file: &'a Path,
}

impl ConfigFields<'_> {
    pub fn bad(&self, field: &str, message: String) -> ModelError {
        ModelError::BadConfig {
            file: self.file.to_path_buf(),
            field: field.into(),
            message,
        }
    }

    pub fn uint(&self, field: &str) -> Result<usize, ModelError> {
        self.v
            .get(field)
            .ok_or_else(|| self.bad(field, "missing (expected a non-negative integer)".into()))?
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| {
                self.bad(
                    field,
                    format!("expected a non-negative integer, found {}", self.v[field]),
                )
            })
    }

    pub fn float_or(&self, field: &str, default: f64) -> Result<f64, ModelError> {
        match self.v.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| self.bad(field, format!("expected a number, found {x}"))),
        }
    }

    pub fn flag(&self, field: &str, default: bool) -> Result<bool, ModelError> {
        match self.v.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| self.bad(field, format!("expected true or false, found {x}"))),
        }
    }

    /// `hidden_size` and `num_attention_heads`, the second dividing the first.
    pub fn hidden_and_heads(&self) -> Result<(usize, usize), ModelError> {
        let hidden = self.uint("hidden_size")?;
        let heads = self.uint("num_attention_heads")?;
        if heads == 0 || hidden % heads != 0 {
            return Err(self.bad(
                "num_attention_heads",
                format!("{heads} does not divide hidden_size {hidden}"),
            ));
        }
        Ok((hidden, heads))
    }

    /// The activation named by `field` (`default` when absent), in transformers' names.
    pub fn activation(&self, field: &str, default: &str) -> Result<Activation, ModelError> {
        match self.v.get(field).and_then(Value::as_str).unwrap_or(default) {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(self.bad(
                field,
                format!("unsupported activation {other:?} (expected gelu, gelu_new or relu)"),
            )),
        }
    }
}

pub fn parse_config(v: &Value, file: &Path) -> Result<EncoderSpec, ModelError> {
    let cfg = ConfigFields { v, file };
    let bad = |field: &str, message: String| cfg.bad(field, message);
    let uint = |field: &str| cfg.uint(field);
    let float_or = |field: &str, default: f64| cfg.float_or(field, default);
    let supported = SUPPORTED_MODEL_TYPES.map(|t| format!("{t:?}")).join(", ");
    let model_type = v.get("model_type").and_then(Value::as_str).ok_or_else(|| {
        bad(
            "model_type",
            format!("missing (expected one of {supported})"),
        )
    })?;
    let family = match model_type {
        "bert" => Family::Bert,
        "roberta" | "xlm-roberta" | "camembert" => Family::Roberta,
        "mpnet" => Family::Mpnet,
        "opt" => return opt::spec_from_config(v, file),
        other => {
            return Err(bad(
                "model_type",
                format!("unsupported model type {other:?} (supported: {supported})"),
            ));
        }
    };
    let (hidden, heads) = cfg.hidden_and_heads()?;
    let act = cfg.activation("hidden_act", "gelu")?;
    if let Some(p) = v
        .get("position_embedding_type")
        .and_then(Value::as_str)
        .filter(|p| *p != "absolute")
    {
        return Err(bad(
            "position_embedding_type",
            format!("{p:?} is not supported (expected \"absolute\")"),
        ));
    }
    let layers = uint("num_hidden_layers")?;
    let ffn = uint("intermediate_size")?;
    let default_pad = if family == Family::Bert { 0 } else { 1 };
    let relative_attention = (family == Family::Mpnet)
        .then(|| mpnet::relative_attention_from_config(v, file))
        .transpose()?;
    let pad_token_id = v
        .get("pad_token_id")
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .unwrap_or(default_pad);
    if family == Family::Mpnet && pad_token_id != 1 {
        return Err(bad(
            "pad_token_id",
            format!(
                "{pad_token_id}: transformers' MPNet always pads (and offsets positions) with id 1"
            ),
        ));
    }
    // MPNet has no token types: the table is absent, not one row.
    let type_vocab_size = match family {
        Family::Mpnet => 0,
        _ => v
            .get("type_vocab_size")
            .map(|_| uint("type_vocab_size"))
            .transpose()?
            .unwrap_or(2),
    };
    Ok(EncoderSpec {
        family,
        vocab_size: uint("vocab_size")?,
        hidden_size: hidden,
        head_dim: hidden / heads,
        layers: vec![LayerShape { heads, ffn }; layers],
        max_position_embeddings: uint("max_position_embeddings")?,
        type_vocab_size,
        pad_token_id,
        layer_norm_eps: float_or("layer_norm_eps", 1e-12)?,
        hidden_act: act,
        hidden_dropout: float_or("hidden_dropout_prob", 0.1)?,
        attention_dropout: float_or("attention_probs_dropout_prob", 0.1)?,
        relative_attention,
        pre_norm: false,
    })
}

/// The `model_type`s `config.json` may name.
pub const SUPPORTED_MODEL_TYPES: [&str; 6] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "mpnet",
    "opt",
];

impl HfCheckpoint {
    /// Opens `model.safetensors`, else `pytorch_model.bin`, in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        let (file, tensors) = if st.exists() {
            let t = read_safetensors(&st)?;
            (st, t)
        } else if bin.exists() {
            let t = read_pytorch_bin(&bin)?;
            (bin, t)
        } else {
            return Err(ModelError::BadFile {
                file: dir.to_path_buf(),
                message: "no model.safetensors or pytorch_model.bin in this directory".into(),
            });
        };
        let encoder = ["", "bert.", "roberta.", "mpnet.", "model."]
            .into_iter()
            .find(|p| {
                tensors
                    .tensors
                    .contains_key(&format!("{p}embeddings.word_embeddings.weight"))
            });
        let decoder = || {
            opt::PREFIXES.into_iter().find(|p| {
                tensors
                    .tensors
                    .contains_key(&format!("{p}{}", opt::HF_WORD))
            })
        };
        let prefix = encoder
            .or_else(decoder)
            .ok_or_else(|| ModelError::MissingTensor {
                file: file.clone(),
                name: "embeddings.word_embeddings.weight".into(),
                hint: format!(" (looked for it with the prefixes \"\", \"bert.\", \"roberta.\", \"mpnet.\", \"model.\", and for OPT's {} with \"\" and \"model.\"; is this a BERT, RoBERTa, MPNet or OPT checkpoint?)", opt::HF_WORD),
            })?
            .to_string();
        Ok(Self {
            file,
            tensors,
            prefix,
        })
    }

    /// Per-layer head counts and FFN widths, read off the query and FC1 weights.
    pub fn layer_shapes(&self, spec: &EncoderSpec) -> Result<Vec<LayerShape>, ModelError> {
        (0..spec.layers.len())
            .map(|i| {
                let hf = |site| {
                    let ours = DenseModule::Layer { layer: i, site }.tensor(DenseParam::Weight);
                    let head = TaskHeadSpec::SpanExtraction;
                    let (names, _) = hf_names(&self.prefix, &ours.to_string(), head, spec.family)
                        .expect("every layer projection has an HF name");
                    names[0].clone()
                };
                let (q, f) = (hf(DenseSite::Query), hf(DenseSite::FfnIn));
                let rows = |name: &str| -> Result<usize, ModelError> {
                    self.tensors
                        .tensors
                        .get(name)
                        .map(|(s, _)| s[0])
                        .ok_or_else(|| ModelError::MissingTensor {
                            file: self.file.clone(),
                            name: name.to_string(),
                            hint: String::new(),
                        })
                };
                let inner = rows(&q)?;
                if inner % spec.head_dim != 0 {
                    return Err(ModelError::ShapeMismatch {
                        file: self.file.clone(),
                        name: q,
                        found: vec![inner, spec.hidden_size],
                        expected: vec![spec.head_dim * spec.layers[i].heads, spec.hidden_size],
                    });
                }
                Ok(LayerShape {
                    heads: inner / spec.head_dim,
                    ffn: rows(&f)?,
                })
            })
            .collect()
    }

    /// The HF keys (candidates, first found wins) for one of our tensor names, and whether it
    /// needs a transpose. `None` for masks, PEFT tensors and unknown names.
    fn hf_name(
        &self,
        ours: &str,
        head: TaskHeadSpec,
        family: Family,
    ) -> Option<(Vec<String>, bool)> {
        hf_names(&self.prefix, ours, head, family)
    }

    /// A weight source over this checkpoint for a model with `head` on top.
    pub fn source(&self, family: Family, head: TaskHeadSpec, seed: u64) -> HfSource<'_> {
        HfSource {
            ckpt: self,
            family,
            head,
            seed,
            used: Vec::new(),
        }
    }
}

/// The Hugging Face keys (candidates, first found wins; the first is the canonical name) for
/// one of our tensor names under the backbone prefix `p` (`""`, `"bert."`, `"roberta."`, `"mpnet."`), and
/// whether the weight needs a transpose (PyTorch `[out, in]` against our `[in, out]`). `None`
/// for masks, PEFT tensors and unknown names.
pub fn hf_names(
    p: &str,
    ours: &str,
    head: TaskHeadSpec,
    family: Family,
) -> Option<(Vec<String>, bool)> {
    // Old checkpoints name LayerNorm parameters gamma/beta.
    let norm = |hf: String, param: NormParam| {
        let leaves = match param {
            NormParam::Gamma => ["weight", "gamma"],
            NormParam::Beta => ["bias", "beta"],
        };
        Some((leaves.map(|l| format!("{hf}.{l}")).to_vec(), false))
    };
    let lin = |hf: String, param: DenseParam| {
        Some(match param {
            DenseParam::Weight => (vec![format!("{hf}.weight")], true),
            DenseParam::Bias => (vec![format!("{hf}.bias")], false),
        })
    };
    let table = |hf: &str| Some((vec![format!("{p}embeddings.{hf}.weight")], false));
    if family == Family::Opt {
        let d = format!("{p}decoder");
        return match TensorName::parse(ours)? {
            TensorName::Embedding(t) => match t {
                EmbeddingTensor::Word => Some((vec![format!("{d}.embed_tokens.weight")], false)),
                EmbeddingTensor::Position => {
                    Some((vec![format!("{d}.embed_positions.weight")], false))
                }
                EmbeddingTensor::TokenType | EmbeddingTensor::Norm(_) => None,
            },
            TensorName::FinalNorm(param) => norm(format!("{d}.final_layer_norm"), param),
            TensorName::Layer { layer, part } => {
                let l = format!("{d}.layers.{layer}");
                match part {
                    LayerTensor::Dense { site, param } => {
                        lin(format!("{l}.{}", opt::hf_dense(site)), param)
                    }
                    LayerTensor::Norm { sublayer, param } => {
                        norm(format!("{l}.{}", opt::hf_norm(sublayer)), param)
                    }
                    LayerTensor::RelativeBias
                    | LayerTensor::HeadMask
                    | LayerTensor::NeuronMask
                    | LayerTensor::Peft { .. } => None,
                }
            }
            // OPTForSequenceClassification's `score`; OPTForQuestionAnswering's `qa_outputs`.
            TensorName::Head { dense, param } => match dense {
                HeadDense::Pooler => None,
                HeadDense::Out if head == TaskHeadSpec::SpanExtraction => {
                    lin("qa_outputs".into(), param)
                }
                HeadDense::Out => lin("score".into(), param),
            },
        };
    }
    match TensorName::parse(ours)? {
        TensorName::Embedding(t) => match t {
            EmbeddingTensor::Word => table("word_embeddings"),
            EmbeddingTensor::Position => table("position_embeddings"),
            EmbeddingTensor::TokenType if family == Family::Mpnet => None,
            EmbeddingTensor::TokenType => table("token_type_embeddings"),
            EmbeddingTensor::Norm(param) => norm(format!("{p}embeddings.LayerNorm"), param),
        },
        TensorName::FinalNorm(_) => None,
        TensorName::Layer { layer, part } => {
            let l = format!("{p}encoder.layer.{layer}");
            match part {
                LayerTensor::Dense { site, param } if family == Family::Mpnet => {
                    lin(format!("{l}.{}", mpnet::hf_dense(site)), param)
                }
                LayerTensor::Norm { sublayer, param } if family == Family::Mpnet => {
                    norm(format!("{l}.{}", mpnet::hf_norm(sublayer)), param)
                }
                // A layer's own kept columns where a pruned checkpoint has them (transformers
                // has no such key), else the one shared table (surgery cuts it per layer).
                LayerTensor::RelativeBias => (family == Family::Mpnet).then(|| {
                    let own = format!("{l}.attention.attn.relative_attention_bias.weight");
                    (vec![own, format!("{p}{}", mpnet::HF_RELATIVE_BIAS)], false)
                }),
                LayerTensor::Dense { site, param } => {
                    let module = match site {
                        DenseSite::Query => "attention.self.query",
                        DenseSite::Key => "attention.self.key",
                        DenseSite::Value => "attention.self.value",
                        DenseSite::AttnOut => "attention.output.dense",
                        DenseSite::FfnIn => "intermediate.dense",
                        DenseSite::FfnOut => "output.dense",
                    };
                    lin(format!("{l}.{module}"), param)
                }
                LayerTensor::Norm { sublayer, param } => {
                    let module = match sublayer {
                        Sublayer::Attention => "attention.output.LayerNorm",
                        Sublayer::Ffn => "output.LayerNorm",
                    };
                    norm(format!("{l}.{module}"), param)
                }
                LayerTensor::HeadMask | LayerTensor::NeuronMask | LayerTensor::Peft { .. } => None,
            }
        }
        TensorName::Head { dense, param } => {
            // MPNetForSequenceClassification's head is RoBERTa's (`classifier.dense`, tanh,
            // `classifier.out_proj` on `<s>`).
            let roberta_cls = matches!(family, Family::Roberta | Family::Mpnet)
                && matches!(
                    head,
                    TaskHeadSpec::Classification {
                        style: HeadStyle::RobertaDenseTanh,
                        ..
                    } | TaskHeadSpec::Regression {
                        style: HeadStyle::RobertaDenseTanh
                    }
                );
            let module = match dense {
                HeadDense::Pooler if roberta_cls => "classifier.dense".to_string(),
                HeadDense::Pooler => format!("{p}pooler.dense"),
                HeadDense::Out if roberta_cls => "classifier.out_proj".to_string(),
                HeadDense::Out if head == TaskHeadSpec::SpanExtraction => "qa_outputs".to_string(),
                HeadDense::Out => "classifier".to_string(),
            };
            lin(module, param)
        }
    }
}

/// Weight source over a Hugging Face checkpoint: backbone tensors must be present; head tensors
/// are used when present (a fine-tuned checkpoint) and freshly initialised otherwise; PEFT
/// tensors and masks are always initialised.
pub struct HfSource<'a> {
    ckpt: &'a HfCheckpoint,
    family: Family,
    head: TaskHeadSpec,
    seed: u64,
    pub used: Vec<String>,
}

impl WeightSource for HfSource<'_> {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, ModelError> {
        let fresh = |seed| Ok(init_values(&mut SeededRng::derive(seed, name), shape, init));
        if role == Role::Peft {
            return fresh(self.seed);
        }
        let Some((candidates, transpose)) = self.ckpt.hf_name(name, self.head, self.family) else {
            return if role == Role::Head {
                fresh(self.seed)
            } else {
                Err(ModelError::MissingTensor {
                    file: self.ckpt.file.clone(),
                    name: name.into(),
                    hint: " (no Hugging Face key is known for it)".into(),
                })
            };
        };
        let found = candidates
            .iter()
            .find_map(|c| self.ckpt.tensors.tensors.get(c).map(|t| (c, t)));
        let Some((key, (hf_shape, values))) = found else {
            return if role == Role::Head {
                fresh(self.seed)
            } else {
                Err(ModelError::MissingTensor {
                    file: self.ckpt.file.clone(),
                    name: candidates[0].clone(),
                    hint: String::new(),
                })
            };
        };
        let expected: Vec<usize> = if transpose {
            shape.iter().rev().copied().collect()
        } else {
            shape.to_vec()
        };
        if hf_shape != &expected {
            // A head of another size (e.g. 3 labels where the checkpoint has 2) is re-initialised.
            if role == Role::Head {
                return fresh(self.seed);
            }
            return Err(ModelError::ShapeMismatch {
                file: self.ckpt.file.clone(),
                name: key.clone(),
                found: hf_shape.clone(),
                expected,
            });
        }
        self.used.push(key.clone());
        if !transpose {
            return Ok(values.clone());
        }
        Ok(transposed(values, hf_shape[0], hf_shape[1]))
    }
}

/// `[rows, cols]` row-major values as `[cols, rows]`, in 32×32 tiles: a row-by-row copy writes
/// with a stride of `rows` floats and misses the cache on every write (a roberta-base load
/// spends its seconds on them).
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// Loads a pretrained encoder directory into a full model spec (shapes from the tensors).
pub fn load_spec(dir: &Path, ckpt: &HfCheckpoint) -> Result<EncoderSpec, ModelError> {
    let mut spec = read_config(dir)?;
    spec.layers = ckpt.layer_shapes(&spec)?;
    Ok(spec)
}

/// Unused-key report, for loaders that want to warn.
pub fn unused_keys(ckpt: &HfCheckpoint, used: &[String]) -> Vec<String> {
    let used: std::collections::HashSet<&String> = used.iter().collect();
    let mut v: Vec<String> = ckpt
        .tensors
        .tensors
        .keys()
        .filter(|k| !used.contains(k))
        .cloned()
        .collect();
    v.sort();
    v
}

#[allow(dead_code)]
fn _assert_map_type(_: &HashMap<String, (Vec<usize>, Vec<f32>)>) {}

/// The pretrained weights file of a Hugging Face model directory.
pub fn weights_file(dir: &Path) -> Result<PathBuf, String> {
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "field `model`: {} has no model.safetensors or pytorch_model.bin",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::transposed;

    #[test]
    fn tiled_transpose_is_the_plain_one_on_ragged_shapes() {
        for (rows, cols) in [(1, 1), (3, 70), (33, 32), (65, 97)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let out = transposed(&values, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        out[c * rows + r],
                        values[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
