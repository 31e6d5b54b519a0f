//! The whole model: encoder + task head, built from a [`ModelSpec`] and a weight source.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use lpeft_schema::model::{
    AdapterSite, EncoderSpec, HeadStyle, LoraTarget, ModelSpec, PeftModuleId, PeftModuleSpec,
    PeftSite, TaskHeadSpec,
};

use crate::encoder::{Attention, Embeddings, Encoder, EncoderInput, Ffn, Layer};
use crate::error::ModelError;
use crate::head::{HeadOutput, TaskHead};
use crate::layers::{Builder, Dense};
use crate::peft::{Adapter, Lora, NormRatioRecorder, dropout};
use crate::source::{Init, Role, WeightSource};

/// Standard deviation of Hugging Face's `initializer_range` for new weights.
pub const INIT_STD: f64 = 0.02;

#[derive(Module, Debug)]
pub struct Model {
    pub encoder: Encoder,
    pub head: TaskHead,
    #[module(skip)]
    pub spec: ModelSpec,
}

/// Result of a forward pass.
#[derive(Debug)]
pub struct ModelOutput {
    pub hidden: Tensor<3>,
    pub head: HeadOutput,
}

impl Model {
    /// Builds the model described by `spec`, asking `source` for every tensor.
    pub fn build(
        spec: &ModelSpec,
        source: &mut dyn WeightSource,
        device: &Device,
    ) -> Result<Model, ModelError> {
        validate(spec)?;
        let mut bld = Builder {
            source,
            device: device.clone(),
        };
        let e = &spec.encoder;
        let h = e.hidden_size;
        let bb = Role::Backbone;
        let embeddings = Embeddings {
            word: bld.param2(
                "encoder.embeddings.word",
                [e.vocab_size, h],
                Init::Normal { std: INIT_STD },
                bb,
                false,
            )?,
            position: bld.param2(
                "encoder.embeddings.position",
                [e.max_position_embeddings, h],
                Init::Normal { std: INIT_STD },
                bb,
                false,
            )?,
            token_type: bld.param2(
                "encoder.embeddings.token_type",
                [e.type_vocab_size, h],
                Init::Normal { std: INIT_STD },
                bb,
                false,
            )?,
            norm: bld.norm("encoder.embeddings.norm", h, e.layer_norm_eps, bb, false)?,
            dropout: dropout(e.hidden_dropout),
            family: e.family,
            pad_token_id: e.pad_token_id,
        };
        let mut layers = Vec::with_capacity(e.layers.len());
        for (i, shape) in e.layers.iter().enumerate() {
            let p = format!("encoder.layers.{i}");
            let inner = shape.heads * e.head_dim;
            let qkv = |bld: &mut Builder, name: &str| -> Result<Option<Dense>, ModelError> {
                if inner == 0 {
                    return Ok(None);
                }
                bld.dense(
                    &format!("{p}.attention.{name}"),
                    h,
                    inner,
                    INIT_STD,
                    bb,
                    false,
                )
                .map(Some)
            };
            let lora =
                |bld: &mut Builder, target: LoraTarget, field: &str, d_in: usize, d_out: usize| {
                    build_lora(
                        bld,
                        spec,
                        PeftModuleId {
                            layer: i,
                            site: PeftSite::Lora(target),
                        },
                        &format!("{p}.{field}"),
                        d_in,
                        d_out,
                    )
                };
            let adapter = |bld: &mut Builder, site: AdapterSite, field: &str| {
                build_adapter(
                    bld,
                    spec,
                    PeftModuleId {
                        layer: i,
                        site: PeftSite::Adapter(site),
                    },
                    &format!("{p}.{field}"),
                    h,
                )
            };
            let attention = Attention {
                query: qkv(&mut bld, "query")?,
                key: qkv(&mut bld, "key")?,
                value: qkv(&mut bld, "value")?,
                output: bld.dense(
                    &format!("{p}.attention.output"),
                    inner,
                    h,
                    INIT_STD,
                    bb,
                    false,
                )?,
                norm: bld.norm(
                    &format!("{p}.attention.norm"),
                    h,
                    e.layer_norm_eps,
                    bb,
                    false,
                )?,
                head_mask: mask(
                    &mut bld,
                    spec,
                    &format!("{p}.attention.head_mask"),
                    shape.heads,
                )?,
                lora_query: lora(
                    &mut bld,
                    LoraTarget::Query,
                    "attention.lora_query",
                    h,
                    inner,
                )?,
                lora_key: lora(&mut bld, LoraTarget::Key, "attention.lora_key", h, inner)?,
                lora_value: lora(
                    &mut bld,
                    LoraTarget::Value,
                    "attention.lora_value",
                    h,
                    inner,
                )?,
                lora_output: lora(
                    &mut bld,
                    LoraTarget::AttnOut,
                    "attention.lora_output",
                    inner,
                    h,
                )?,
                adapter: adapter(&mut bld, AdapterSite::Attention, "attention.adapter")?,
                attention_dropout: dropout(e.attention_dropout),
                hidden_dropout: dropout(e.hidden_dropout),
                heads: shape.heads,
                head_dim: e.head_dim,
                layer: i,
            };
            let width = shape.ffn;
            let ffn = Ffn {
                input: if width > 0 {
                    Some(bld.dense(&format!("{p}.ffn.input"), h, width, INIT_STD, bb, false)?)
                } else {
                    None
                },
                output: bld.dense(&format!("{p}.ffn.output"), width, h, INIT_STD, bb, false)?,
                norm: bld.norm(&format!("{p}.ffn.norm"), h, e.layer_norm_eps, bb, false)?,
                neuron_mask: mask(&mut bld, spec, &format!("{p}.ffn.neuron_mask"), width)?,
                lora_input: lora(&mut bld, LoraTarget::FfnIn, "ffn.lora_input", h, width)?,
                lora_output: lora(&mut bld, LoraTarget::FfnOut, "ffn.lora_output", width, h)?,
                adapter: adapter(&mut bld, AdapterSite::Ffn, "ffn.adapter")?,
                dropout: dropout(e.hidden_dropout),
                activation: e.hidden_act,
                width,
                layer: i,
            };
            layers.push(Layer { attention, ffn });
        }
        let head = build_head(&mut bld, spec)?;
        Ok(Model {
            encoder: Encoder {
                embeddings,
                layers,
                fused: crate::fused::FusedPolicy::default(),
            },
            head,
            spec: spec.clone(),
        })
    }

    pub fn forward(&self, input: &EncoderInput) -> ModelOutput {
        let hidden = self.encoder.forward(input, None);
        let head = self.head.forward(hidden.clone());
        ModelOutput { hidden, head }
    }

    /// Forward that also records each PEFT module's output-norm ratio (estimation).
    pub fn forward_recording(
        &self,
        input: &EncoderInput,
        rec: &mut NormRatioRecorder,
    ) -> ModelOutput {
        let hidden = self.encoder.forward(input, Some(rec));
        let head = self.head.forward(hidden.clone());
        ModelOutput { hidden, head }
    }

    /// `Σ|m|` over every head and neuron mask (the L1 term of spec §2.3), or `None` without masks.
    pub fn mask_l1(&self) -> Option<Tensor<1>> {
        let mut total: Option<Tensor<1>> = None;
        for layer in &self.encoder.layers {
            for m in [&layer.attention.head_mask, &layer.ffn.neuron_mask]
                .into_iter()
                .flatten()
            {
                let s = m.val().abs().sum();
                total = Some(match total {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
        total
    }

    /// LoRA modules and adapters with their ids, in a fixed order (layer, then site).
    pub fn peft_modules(&self) -> Vec<(PeftModuleId, PeftFactors<'_>)> {
        let mut out = Vec::new();
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            let a = &layer.attention;
            let f = &layer.ffn;
            let loras = [
                (LoraTarget::Query, &a.lora_query),
                (LoraTarget::Key, &a.lora_key),
                (LoraTarget::Value, &a.lora_value),
                (LoraTarget::AttnOut, &a.lora_output),
                (LoraTarget::FfnIn, &f.lora_input),
                (LoraTarget::FfnOut, &f.lora_output),
            ];
            for (target, lora) in loras {
                if let Some(l) = lora {
                    out.push((
                        PeftModuleId {
                            layer: i,
                            site: PeftSite::Lora(target),
                        },
                        PeftFactors { a: &l.a, b: &l.b },
                    ));
                }
            }
            for (site, adapter) in [
                (AdapterSite::Attention, &a.adapter),
                (AdapterSite::Ffn, &f.adapter),
            ] {
                if let Some(ad) = adapter {
                    out.push((
                        PeftModuleId {
                            layer: i,
                            site: PeftSite::Adapter(site),
                        },
                        PeftFactors { a: &ad.a, b: &ad.b },
                    ));
                }
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }
}

/// The two low-rank factors of a PEFT module, `A: [d_in, r]`, `B: [r, d_out]`.
#[derive(Debug, Clone, Copy)]
pub struct PeftFactors<'a> {
    pub a: &'a Param<Tensor<2>>,
    pub b: &'a Param<Tensor<2>>,
}

fn peft_spec(spec: &ModelSpec, id: PeftModuleId) -> Option<&PeftModuleSpec> {
    spec.peft.iter().find(|m| m.id == id)
}

fn build_lora(
    bld: &mut Builder,
    spec: &ModelSpec,
    id: PeftModuleId,
    prefix: &str,
    d_in: usize,
    d_out: usize,
) -> Result<Option<Lora>, ModelError> {
    let Some(m) = peft_spec(spec, id) else {
        return Ok(None);
    };
    if m.rank == 0 || d_in == 0 || d_out == 0 {
        return Ok(None);
    }
    Ok(Some(Lora {
        a: bld.param2(
            &format!("{prefix}.a"),
            [d_in, m.rank],
            Init::KaimingUniform { fan_in: d_in },
            Role::Peft,
            true,
        )?,
        b: bld.param2(
            &format!("{prefix}.b"),
            [m.rank, d_out],
            Init::Zeros,
            Role::Peft,
            true,
        )?,
        dropout: dropout(m.dropout),
        scale: m.scale,
    }))
}

fn build_adapter(
    bld: &mut Builder,
    spec: &ModelSpec,
    id: PeftModuleId,
    prefix: &str,
    hidden: usize,
) -> Result<Option<Adapter>, ModelError> {
    let Some(m) = peft_spec(spec, id) else {
        return Ok(None);
    };
    if m.rank == 0 {
        return Ok(None);
    }
    Ok(Some(Adapter {
        a: bld.param2(
            &format!("{prefix}.a"),
            [hidden, m.rank],
            Init::Normal { std: INIT_STD },
            Role::Peft,
            true,
        )?,
        b: bld.param2(
            &format!("{prefix}.b"),
            [m.rank, hidden],
            Init::Normal { std: INIT_STD },
            Role::Peft,
            true,
        )?,
        dropout: dropout(m.dropout),
        scale: m.scale,
    }))
}

fn mask(
    bld: &mut Builder,
    spec: &ModelSpec,
    name: &str,
    len: usize,
) -> Result<Option<Param<Tensor<1>>>, ModelError> {
    if !spec.masks || len == 0 {
        return Ok(None);
    }
    bld.param1(name, len, Init::Ones, Role::Peft, true)
        .map(Some)
}

fn build_head(bld: &mut Builder, spec: &ModelSpec) -> Result<TaskHead, ModelError> {
    let e = &spec.encoder;
    let h = e.hidden_size;
    let (pooler, out_dim) = match spec.head {
        TaskHeadSpec::SpanExtraction => (None, 2),
        TaskHeadSpec::Classification { num_labels, style } => (Some(style), num_labels),
        TaskHeadSpec::Regression { style } => (Some(style), 1),
        TaskHeadSpec::MultipleChoice { .. } => (Some(HeadStyle::BertPooler), 1),
    };
    let pooler = match pooler {
        // The BERT pooler is part of the pretrained model and stays frozen (HF PEFT trains
        // only `classifier`); RoBERTa's head dense is new and trained.
        Some(HeadStyle::BertPooler) => {
            Some(bld.dense("head.pooler", h, h, INIT_STD, Role::Backbone, false)?)
        }
        Some(HeadStyle::RobertaDenseTanh) => {
            Some(bld.dense("head.pooler", h, h, INIT_STD, Role::Head, true)?)
        }
        None => None,
    };
    Ok(TaskHead {
        pooler,
        out: bld.dense("head.out", h, out_dim, INIT_STD, Role::Head, true)?,
        dropout: dropout(e.hidden_dropout),
        spec: spec.head,
    })
}

/// Rejects specs that cannot describe a model.
pub fn validate(spec: &ModelSpec) -> Result<(), ModelError> {
    let e: &EncoderSpec = &spec.encoder;
    let bad = |m: String| Err(ModelError::BadSpec(m));
    if e.hidden_size == 0 || e.head_dim == 0 {
        return bad("hidden_size and head_dim must be positive".into());
    }
    if e.vocab_size == 0 || e.max_position_embeddings == 0 || e.type_vocab_size == 0 {
        return bad(
            "vocab_size, max_position_embeddings and type_vocab_size must be positive".into(),
        );
    }
    let probability = |what: &str, p: f64| {
        if (0.0..1.0).contains(&p) {
            Ok(())
        } else {
            bad(format!("{what} {p} must be in [0, 1)"))
        }
    };
    probability("hidden_dropout", e.hidden_dropout)?;
    probability("attention_dropout", e.attention_dropout)?;
    if !(e.layer_norm_eps > 0.0 && e.layer_norm_eps.is_finite()) {
        return bad(format!(
            "layer_norm_eps {} must be positive",
            e.layer_norm_eps
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &spec.peft {
        probability(&format!("PEFT module {}: dropout", m.id), m.dropout)?;
        if !m.scale.is_finite() {
            return bad(format!(
                "PEFT module {}: scale {} is not finite",
                m.id, m.scale
            ));
        }
        if m.id.layer >= e.layers.len() {
            return bad(format!(
                "PEFT module {} is on layer {}, but the encoder has {} layers",
                m.id,
                m.id.layer,
                e.layers.len()
            ));
        }
        if !seen.insert(m.id) {
            return bad(format!("PEFT module {} appears twice", m.id));
        }
        if m.rank > m.original_rank {
            return bad(format!(
                "PEFT module {}: rank {} exceeds original rank {}",
                m.id, m.rank, m.original_rank
            ));
        }
    }
    match spec.head {
        TaskHeadSpec::Classification { num_labels: 0, .. } => {
            bad("classification needs num_labels > 0".into())
        }
        TaskHeadSpec::MultipleChoice { choices: 0, .. } => {
            bad("multiple choice needs choices > 0".into())
        }
        _ => Ok(()),
    }
}
