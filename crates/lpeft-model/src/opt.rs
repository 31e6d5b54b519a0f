//! What OPT (facebook/opt) changes in the shared layer stack: its `config.json`, the Hugging
//! Face names of its tensors (`OPTModel`'s `decoder.…`, under `model.` in the task models),
//! its positions, and the causal score bias.
//!
//! transformers' `OPTDecoder`: `embed_tokens(ids) + embed_positions(cumsum(mask) * mask - 1 + 2)`
//! (no embedding LayerNorm, no dropout there), then layers that normalise each sublayer's input
//! when `do_layer_norm_before` (and its output plus residual otherwise), attention masked
//! causally and on padded keys, and `final_layer_norm` after the last layer when pre-LN.

use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;

use lpeft_schema::model::{EncoderSpec, Family, LayerShape};

use crate::encoder::EncoderInput;
use crate::error::ModelError;
use crate::hf::ConfigFields;
use crate::model::Model;
use crate::names::{DenseSite, Sublayer};

/// OPT's learned positions start at this row (`OPTLearnedPositionalEmbedding.offset`).
pub const POSITION_OFFSET: usize = 2;

/// The prefixes OPT backbone keys carry: `OPTModel` (none) and the task models' `model.`.
pub const PREFIXES: [&str; 2] = ["", "model."];

/// The key whose presence marks an OPT checkpoint (under one of [`PREFIXES`]).
pub const HF_WORD: &str = "decoder.embed_tokens.weight";

/// The HF module of one of a layer's projections (`decoder.layers.N.` + this).
pub fn hf_dense(site: DenseSite) -> &'static str {
    match site {
        DenseSite::Query => "self_attn.q_proj",
        DenseSite::Key => "self_attn.k_proj",
        DenseSite::Value => "self_attn.v_proj",
        DenseSite::AttnOut => "self_attn.out_proj",
        DenseSite::FfnIn => "fc1",
        DenseSite::FfnOut => "fc2",
    }
}

/// The HF module of a sublayer's LayerNorm (before it when pre-LN, after it otherwise).
pub fn hf_norm(sublayer: Sublayer) -> &'static str {
    match sublayer {
        Sublayer::Attention => "self_attn_layer_norm",
        Sublayer::Ffn => "final_layer_norm",
    }
}

/// OPT positions `[B, T]` from the attention mask: `cumsum(mask) * mask - 1 + 2`, so real
/// tokens count from 2 and padding sits on row 1.
pub fn positions(attention_mask: &Tensor<2, Int>) -> Tensor<2, Int> {
    let mask = attention_mask.clone();
    mask.clone()
        .cumsum(1)
        .mul(mask)
        .add_scalar(POSITION_OFFSET as i64 - 1)
}

/// 1 where query `q` may not see key `k` (`k > q`), `[1, 1, T, T]`.
pub fn future_keys(t: usize, device: &Device) -> Tensor<4> {
    let v: Vec<f32> = (0..t)
        .flat_map(|q| (0..t).map(move |k| if k > q { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(v, [1, 1, t, t]), device)
}

/// Next-token logits `[B, T, vocab]` of final hidden states `[B, T, H]` through the tied
/// embedding matrix (OPTForCausalLM's `lm_head`, which shares `embed_tokens`' weight).
pub fn lm_logits(model: &Model, hidden: Tensor<3>) -> Tensor<3> {
    let [b, t, h] = hidden.dims();
    let word = model.encoder.embeddings.word.val();
    let [vocab, _] = word.dims();
    hidden
        .reshape([b * t, h])
        .matmul(word.transpose())
        .reshape([b, t, vocab])
}

/// Mean next-token cross-entropy, as OPTForCausalLM's loss with `labels` = the input ids and
/// -100 (ignored) on padding: position `i` predicts token `i + 1` wherever that token is real
/// (mask 1). 0 where no position has a target (fewer than two tokens, or all padding).
pub fn causal_lm_loss(logits: Tensor<3>, input: &EncoderInput) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    if t < 2 {
        return Tensor::zeros([1], &logits.device());
    }
    let log_probs = log_softmax(logits.slice_dim(1, 0..t - 1), 2);
    let targets = input.input_ids.clone().slice_dim(1, 1..t);
    let picked = log_probs
        .gather(2, targets.reshape([b, t - 1, 1]))
        .reshape([b, t - 1]);
    let weight = input.attention_mask.clone().slice_dim(1, 1..t).float();
    let count = weight.clone().sum().clamp_min(1.0);
    (picked * weight).sum().neg() / count
}

/// The encoder spec of an OPT `config.json` (layer shapes still uniform). Refuses what the
/// shared layers cannot represent, naming the field.
pub fn spec_from_config(v: &Value, file: &Path) -> Result<EncoderSpec, ModelError> {
    let cfg = ConfigFields { v, file };
    let bad = |field: &str, message: String| cfg.bad(field, message);
    let uint = |field: &str| cfg.uint(field);
    let flag = |field: &str, default: bool| cfg.flag(field, default);
    let (hidden, heads) = cfg.hidden_and_heads()?;
    // opt-350m projects 512-wide embeddings in and out of its 1024-wide layers
    // (project_in / project_out); the shared layers have no such projections.
    match v.get("word_embed_proj_dim") {
        None | Some(Value::Null) => {}
        Some(_) => {
            let proj = uint("word_embed_proj_dim")?;
            if proj != hidden {
                return Err(bad(
                    "word_embed_proj_dim",
                    format!(
                        "{proj} differs from hidden_size {hidden}: OPT's project_in/project_out are not supported (only word_embed_proj_dim == hidden_size)"
                    ),
                ));
            }
        }
    }
    for (field, default, why) in [
        (
            "enable_bias",
            true,
            "OPT without projection biases is not supported",
        ),
        (
            "layer_norm_elementwise_affine",
            true,
            "LayerNorms without weight and bias are not supported",
        ),
    ] {
        if !flag(field, default)? {
            return Err(bad(field, format!("false: {why}")));
        }
    }
    let pre_norm = flag("do_layer_norm_before", true)?;
    if flag("_remove_final_layer_norm", false)? && pre_norm {
        return Err(bad(
            "_remove_final_layer_norm",
            "true: a pre-LayerNorm OPT without its final LayerNorm is not supported".into(),
        ));
    }
    let hidden_act = cfg.activation("activation_function", "relu")?;
    let pad_token_id = match v.get("pad_token_id") {
        None => 1,
        Some(_) => uint("pad_token_id")?,
    };
    Ok(EncoderSpec {
        family: Family::Opt,
        vocab_size: uint("vocab_size")?,
        hidden_size: hidden,
        head_dim: hidden / heads,
        layers: vec![
            LayerShape {
                heads,
                ffn: uint("ffn_dim")?,
            };
            uint("num_hidden_layers")?
        ],
        max_position_embeddings: uint("max_position_embeddings")? + POSITION_OFFSET,
        type_vocab_size: 0,
        pad_token_id,
        // torch.nn.LayerNorm's default; OPT's config has no epsilon.
        layer_norm_eps: 1e-5,
        hidden_act,
        hidden_dropout: cfg.float_or("dropout", 0.1)?,
        attention_dropout: cfg.float_or("attention_dropout", 0.0)?,
        relative_attention: None,
        pre_norm,
    })
}
