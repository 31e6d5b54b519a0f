//! Tiny random models for tests and benchmarks (not for production use).

use burn::tensor::{Device, Int, Tensor, TensorData};

use lpeft_schema::model::{
    Activation, AdapterSite, EncoderSpec, Family, LayerShape, LoraTarget, ModelSpec, PeftModuleId,
    PeftModuleSpec, PeftSite, RelativeAttention, TaskHeadSpec,
};

use crate::encoder::EncoderInput;
use crate::rng::SeededRng;

/// A small encoder spec with the given per-layer shapes (OPT: pre-LayerNorm, as its released
/// models but opt-350m).
pub fn tiny_encoder(family: Family, layers: &[(usize, usize)]) -> EncoderSpec {
    EncoderSpec {
        family,
        vocab_size: 40,
        hidden_size: 16,
        head_dim: 4,
        layers: layers
            .iter()
            .map(|&(heads, ffn)| LayerShape { heads, ffn })
            .collect(),
        max_position_embeddings: 32,
        type_vocab_size: match family {
            Family::Bert => 2,
            Family::Roberta => 1,
            Family::Mpnet | Family::Opt => 0,
        },
        pad_token_id: if family == Family::Bert { 0 } else { 1 },
        layer_norm_eps: 1e-12,
        hidden_act: if family == Family::Opt {
            Activation::Relu
        } else {
            Activation::Gelu
        },
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        // The real model's buckets, so tiny models see exact and logarithmic distances.
        relative_attention: (family == Family::Mpnet).then_some(RelativeAttention {
            num_buckets: 32,
            max_distance: 128,
        }),
        pre_norm: family == Family::Opt,
    }
}

/// LoRA of `rank` on every target of every layer (α = 2·rank, so scale 2 as in the reference).
pub fn lora_everywhere(layers: usize, rank: usize, dropout: f64) -> Vec<PeftModuleSpec> {
    (0..layers)
        .flat_map(|layer| {
            LoraTarget::ALL.into_iter().map(move |t| PeftModuleSpec {
                id: PeftModuleId {
                    layer,
                    site: PeftSite::Lora(t),
                },
                rank,
                original_rank: rank,
                scale: 2.0,
                dropout,
            })
        })
        .collect()
}

/// Adapters of `size` after both sublayers of every layer.
pub fn adapters_everywhere(layers: usize, size: usize, dropout: f64) -> Vec<PeftModuleSpec> {
    (0..layers)
        .flat_map(|layer| {
            [AdapterSite::Attention, AdapterSite::Ffn]
                .into_iter()
                .map(move |s| PeftModuleSpec {
                    id: PeftModuleId {
                        layer,
                        site: PeftSite::Adapter(s),
                    },
                    rank: size,
                    original_rank: size,
                    scale: 1.0,
                    dropout,
                })
        })
        .collect()
}

pub fn tiny_spec(
    family: Family,
    layers: &[(usize, usize)],
    head: TaskHeadSpec,
    peft: Vec<PeftModuleSpec>,
    masks: bool,
) -> ModelSpec {
    ModelSpec {
        encoder: tiny_encoder(family, layers),
        head,
        peft,
        masks,
    }
}

/// A random batch `[batch, seq]` with trailing padding in some rows.
pub fn random_input(
    spec: &EncoderSpec,
    batch: usize,
    seq: usize,
    seed: u64,
    device: &Device,
) -> EncoderInput {
    let mut rng = SeededRng::new(seed);
    let pad = spec.pad_token_id as i64;
    let mut ids = Vec::with_capacity(batch * seq);
    let mut types = Vec::with_capacity(batch * seq);
    let mut mask = Vec::with_capacity(batch * seq);
    for b in 0..batch {
        let len = if b % 2 == 0 { seq } else { (seq / 2).max(2) };
        for t in 0..seq {
            let real = t < len;
            let id = if real {
                3 + (rng.next_u64() % (spec.vocab_size as u64 - 3)) as i64
            } else {
                pad
            };
            ids.push(id);
            types.push(if real && spec.type_vocab_size > 1 && t >= len / 2 {
                1
            } else {
                0
            });
            mask.push(i64::from(real));
        }
    }
    let t = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [batch, seq]), device);
    EncoderInput {
        input_ids: t(ids),
        token_type_ids: t(types),
        attention_mask: t(mask),
    }
}
