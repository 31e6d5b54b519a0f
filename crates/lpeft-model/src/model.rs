//! The whole model: encoder + task head, built from a [`ModelSpec`] and a weight source.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use lpeft_schema::model::{
    AdapterSite, EncoderSpec, Family, HeadStyle, LoraTarget, ModelSpec, PeftModuleId, PeftSite,
    TaskHeadSpec,
};

use crate::encoder::{Attention, Embeddings, Encoder, EncoderInput, Ffn, Layer};
use crate::error::ModelError;
use crate::fused::FusedPolicy;
use crate::head::{HeadOutput, TaskHead};
use crate::layers::{Builder, Dense, Norm};
use crate::names::{
    DenseModule, DenseSite, EmbeddingTensor, LayerTensor, NormModule, Sublayer, TensorName,
};
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
    /// Builds the model described by `spec`, asking `source` for every tensor: the encoder, then
    /// the head, each module's fields in declaration order (the order [`Module::visit`] walks).
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
        let encoder = Encoder::build(&mut bld, spec)?;
        let head = TaskHead::build(&mut bld, spec)?;
        Ok(Model {
            encoder,
            head,
            spec: spec.clone(),
        })
    }

    pub fn forward(&self, input: &EncoderInput) -> ModelOutput {
        let hidden = self.encoder.forward(input, None);
        let head = self.head.forward(hidden.clone(), &input.attention_mask);
        ModelOutput { hidden, head }
    }

    /// Forward that also records each PEFT module's output-norm ratio (estimation).
    pub fn forward_recording(
        &self,
        input: &EncoderInput,
        rec: &mut NormRatioRecorder,
    ) -> ModelOutput {
        let hidden = self.encoder.forward(input, Some(rec));
        let head = self.head.forward(hidden.clone(), &input.attention_mask);
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

// Each encoder module builds itself from the spec (as candle's per-module `load`); the head
// and the PEFT modules build beside their structs. Fields are built in declaration order, so
// the source is asked for tensors in the order a visit of the model lists them.

impl Encoder {
    /// Embeddings, then the layers in order, then the final norm of pre-LayerNorm models;
    /// fused nodes on by default.
    pub fn build(bld: &mut Builder, spec: &ModelSpec) -> Result<Encoder, ModelError> {
        let e = &spec.encoder;
        Ok(Encoder {
            embeddings: Embeddings::build(bld, e)?,
            layers: (0..e.layers.len())
                .map(|layer| Layer::build(bld, spec, layer))
                .collect::<Result<_, _>>()?,
            final_norm: e
                .pre_norm
                .then(|| {
                    let (h, eps) = (e.hidden_size, e.layer_norm_eps);
                    bld.norm(NormModule::Final, h, eps, Role::Backbone, false)
                })
                .transpose()?,
            relative: e.relative_attention,
            causal: e.family == Family::Opt,
            fused: FusedPolicy::default(),
        })
    }
}

impl Embeddings {
    pub fn build(bld: &mut Builder, e: &EncoderSpec) -> Result<Embeddings, ModelError> {
        let mut table = |tensor, rows| {
            bld.param2(
                TensorName::Embedding(tensor),
                [rows, e.hidden_size],
                Init::Normal { std: INIT_STD },
                Role::Backbone,
                false,
            )
        };
        Ok(Embeddings {
            word: table(EmbeddingTensor::Word, e.vocab_size)?,
            position: table(EmbeddingTensor::Position, e.max_position_embeddings)?,
            // MPNet and OPT have no token-type table (type_vocab_size 0).
            token_type: (e.type_vocab_size > 0)
                .then(|| table(EmbeddingTensor::TokenType, e.type_vocab_size))
                .transpose()?,
            // OPT has no embedding LayerNorm.
            norm: (e.family != Family::Opt)
                .then(|| {
                    let (h, eps) = (e.hidden_size, e.layer_norm_eps);
                    bld.norm(NormModule::Embeddings, h, eps, Role::Backbone, false)
                })
                .transpose()?,
            dropout: dropout(e.hidden_dropout),
            family: e.family,
            pad_token_id: e.pad_token_id,
        })
    }
}

impl Layer {
    pub fn build(bld: &mut Builder, spec: &ModelSpec, layer: usize) -> Result<Layer, ModelError> {
        Ok(Layer {
            attention: Attention::build(bld, spec, layer)?,
            ffn: Ffn::build(bld, spec, layer)?,
        })
    }
}

impl Attention {
    pub fn build(
        bld: &mut Builder,
        spec: &ModelSpec,
        layer: usize,
    ) -> Result<Attention, ModelError> {
        let e = &spec.encoder;
        let (h, heads) = (e.hidden_size, e.layers[layer].heads);
        let inner = heads * e.head_dim;
        // Q, K and V exist only while the layer keeps a head.
        let qkv = |bld: &mut Builder, site| {
            (inner > 0)
                .then(|| backbone_dense(bld, layer, site, h, inner))
                .transpose()
        };
        Ok(Attention {
            query: qkv(bld, DenseSite::Query)?,
            key: qkv(bld, DenseSite::Key)?,
            value: qkv(bld, DenseSite::Value)?,
            relative_bias: match e.relative_attention {
                Some(rel) if heads > 0 => Some(bld.param2(
                    TensorName::layer(layer, LayerTensor::RelativeBias),
                    [rel.num_buckets, heads],
                    Init::Normal { std: INIT_STD },
                    Role::Backbone,
                    false,
                )?),
                _ => None,
            },
            output: backbone_dense(bld, layer, DenseSite::AttnOut, inner, h)?,
            norm: sublayer_norm(bld, e, layer, Sublayer::Attention)?,
            head_mask: bld.mask(
                TensorName::layer(layer, LayerTensor::HeadMask),
                heads,
                spec.masks,
            )?,
            lora_query: lora_on(bld, spec, layer, LoraTarget::Query, (h, inner))?,
            lora_key: lora_on(bld, spec, layer, LoraTarget::Key, (h, inner))?,
            lora_value: lora_on(bld, spec, layer, LoraTarget::Value, (h, inner))?,
            lora_output: lora_on(bld, spec, layer, LoraTarget::AttnOut, (inner, h))?,
            adapter: adapter_after(bld, spec, layer, AdapterSite::Attention)?,
            attention_dropout: dropout(e.attention_dropout),
            hidden_dropout: dropout(e.hidden_dropout),
            heads,
            head_dim: e.head_dim,
            layer,
            pre_norm: e.pre_norm,
        })
    }
}

impl Ffn {
    pub fn build(bld: &mut Builder, spec: &ModelSpec, layer: usize) -> Result<Ffn, ModelError> {
        let e = &spec.encoder;
        let (h, width) = (e.hidden_size, e.layers[layer].ffn);
        Ok(Ffn {
            // FC1 exists only while the layer keeps a neuron.
            input: (width > 0)
                .then(|| backbone_dense(bld, layer, DenseSite::FfnIn, h, width))
                .transpose()?,
            output: backbone_dense(bld, layer, DenseSite::FfnOut, width, h)?,
            norm: sublayer_norm(bld, e, layer, Sublayer::Ffn)?,
            neuron_mask: bld.mask(
                TensorName::layer(layer, LayerTensor::NeuronMask),
                width,
                spec.masks,
            )?,
            lora_input: lora_on(bld, spec, layer, LoraTarget::FfnIn, (h, width))?,
            lora_output: lora_on(bld, spec, layer, LoraTarget::FfnOut, (width, h))?,
            adapter: adapter_after(bld, spec, layer, AdapterSite::Ffn)?,
            dropout: dropout(e.hidden_dropout),
            activation: e.hidden_act,
            width,
            layer,
            pre_norm: e.pre_norm,
        })
    }
}

/// A frozen backbone projection `[d_in, d_out]` of layer `layer`.
fn backbone_dense(
    bld: &mut Builder,
    layer: usize,
    site: DenseSite,
    d_in: usize,
    d_out: usize,
) -> Result<Dense, ModelError> {
    let module = DenseModule::Layer { layer, site };
    bld.dense(module, d_in, d_out, INIT_STD, Role::Backbone, false)
}

fn sublayer_norm(
    bld: &mut Builder,
    e: &EncoderSpec,
    layer: usize,
    sublayer: Sublayer,
) -> Result<Norm, ModelError> {
    let module = NormModule::Layer { layer, sublayer };
    bld.norm(
        module,
        e.hidden_size,
        e.layer_norm_eps,
        Role::Backbone,
        false,
    )
}

/// LoRA on a `(d_in, d_out)` projection of layer `layer`, where the spec puts one.
fn lora_on(
    bld: &mut Builder,
    spec: &ModelSpec,
    layer: usize,
    target: LoraTarget,
    (d_in, d_out): (usize, usize),
) -> Result<Option<Lora>, ModelError> {
    let id = PeftModuleId {
        layer,
        site: PeftSite::Lora(target),
    };
    Lora::build(bld, spec, id, d_in, d_out)
}

/// The adapter after a sublayer of layer `layer`, where the spec puts one.
fn adapter_after(
    bld: &mut Builder,
    spec: &ModelSpec,
    layer: usize,
    site: AdapterSite,
) -> Result<Option<Adapter>, ModelError> {
    let id = PeftModuleId {
        layer,
        site: PeftSite::Adapter(site),
    };
    Adapter::build(bld, spec, id, spec.encoder.hidden_size)
}

/// Rejects specs that cannot describe a model.
pub fn validate(spec: &ModelSpec) -> Result<(), ModelError> {
    let e: &EncoderSpec = &spec.encoder;
    let bad = |m: String| Err(ModelError::BadSpec(m));
    if e.hidden_size == 0 || e.head_dim == 0 {
        return bad("hidden_size and head_dim must be positive".into());
    }
    if e.vocab_size == 0 || e.max_position_embeddings == 0 {
        return bad("vocab_size and max_position_embeddings must be positive".into());
    }
    // MPNet and OPT have no token types, MPNet alone (always) has a relative position bias,
    // and OPT alone may be pre-LayerNorm.
    let mpnet = e.family == Family::Mpnet;
    let opt = e.family == Family::Opt;
    if (mpnet || opt) != (e.type_vocab_size == 0) {
        return bad(format!(
            "type_vocab_size {} for family {:?}: MPNet and OPT have none (0), BERT and RoBERTa at least one",
            e.type_vocab_size, e.family
        ));
    }
    if e.pre_norm && !opt {
        return bad(format!(
            "pre_norm for family {:?}: only OPT normalises each sublayer's input",
            e.family
        ));
    }
    if opt && e.max_position_embeddings <= crate::opt::POSITION_OFFSET {
        return bad(format!(
            "max_position_embeddings {} for OPT: the table's first {} rows are its offset",
            e.max_position_embeddings,
            crate::opt::POSITION_OFFSET
        ));
    }
    if mpnet != e.relative_attention.is_some() {
        return bad(format!(
            "family {:?} {} a relative position bias (relative_attention)",
            e.family,
            if mpnet { "needs" } else { "has no" }
        ));
    }
    if let Some(rel) = e.relative_attention
        && (rel.num_buckets < 4
            || rel.num_buckets % 2 != 0
            || rel.max_distance <= rel.num_buckets / 4)
    {
        return bad(format!(
            "relative_attention {rel:?}: expected an even num_buckets of at least 4 and max_distance above num_buckets / 4"
        ));
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
        TaskHeadSpec::MultipleChoice { .. } if opt => bad(
            "a multiple-choice head on OPT is not supported (its choice head is BERT's pooler)"
                .into(),
        ),
        TaskHeadSpec::Classification { style, .. } | TaskHeadSpec::Regression { style }
            if opt != (style == HeadStyle::LastToken) =>
        {
            bad(format!(
                "head style {style:?} for family {:?}: OPT's sequence heads are LastToken, and LastToken is OPT's only",
                e.family
            ))
        }
        _ => Ok(()),
    }
}
