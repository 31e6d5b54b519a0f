//! What MPNet adds to the RoBERTa-style encoder: the T5-style relative position bias, and the
//! Hugging Face names of its layers.
//!
//! transformers' `MPNetEncoder` computes the bias once per forward from the positions
//! `0..T` (padding does not shift them) and adds the same `[B, H, T, T]` tensor to every
//! layer's scaled scores, before the padding mask. Here each layer holds its own columns of
//! that one table (`attention.relative_bias`, `[buckets, heads]`): identical copies when
//! loaded, and after surgery each layer keeps exactly the columns of its kept original heads.

use std::path::Path;

use burn::module::Param;
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use lpeft_schema::model::RelativeAttention;
use serde_json::Value;

use crate::error::ModelError;
use crate::names::{DenseSite, Sublayer};

/// transformers' `MPNetEncoder.compute_position_bias` always buckets into 32 (its default
/// argument; `relative_attention_num_buckets` only sizes the table) with `max_distance` 128.
pub const HF_BUCKETS: usize = 32;
pub const HF_MAX_DISTANCE: usize = 128;

/// The bucket of `relative = key position - query position`, as transformers'
/// `MPNetEncoder.relative_position_bucket` (bidirectional): keys before the query use the
/// upper half of the buckets; in each half the first quarter of all buckets are exact
/// distances, the rest logarithmic up to `max_distance`.
pub fn relative_position_bucket(relative: i64, rel: RelativeAttention) -> usize {
    let half = rel.num_buckets / 2;
    let n = -relative;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        return bucket + n;
    }
    // As torch computes it: an f32 log over Python's f64 `math.log` (cast to f32), then
    // truncation towards zero (`.to(torch.long)`).
    let ratio = (n as f32 / max_exact as f32).ln()
        / ((rel.max_distance as f64 / max_exact as f64).ln() as f32)
        * (half - max_exact) as f32;
    let large = max_exact + ratio as usize;
    bucket += large.min(half - 1);
    bucket
}

/// Bucket ids `[T, T]` (query row, key column) for a sequence of length `t`.
pub fn bucket_ids(t: usize, rel: RelativeAttention, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..t)
        .flat_map(|q| (0..t).map(move |k| k as i64 - q as i64))
        .map(|r| relative_position_bucket(r, rel) as i64)
        .collect();
    Tensor::from_data(TensorData::new(ids, [t, t]), device)
}

/// One layer's additive score bias `[1, heads, T, T]` from its table `[buckets, heads]`.
pub fn layer_bias(table: &Param<Tensor<2>>, buckets: &Tensor<2, Int>) -> Tensor<4> {
    let [t, _] = buckets.dims();
    let [_, heads] = table.val().dims();
    let values = embedding(table.val(), buckets.clone().reshape([1, t * t]));
    values
        .reshape([t, t, heads])
        .permute([2, 0, 1])
        .reshape([1, heads, t, t])
}

/// The HF module of one of a layer's projections (`encoder.layer.N.` + this).
pub fn hf_dense(site: DenseSite) -> &'static str {
    match site {
        DenseSite::Query => "attention.attn.q",
        DenseSite::Key => "attention.attn.k",
        DenseSite::Value => "attention.attn.v",
        DenseSite::AttnOut => "attention.attn.o",
        DenseSite::FfnIn => "intermediate.dense",
        DenseSite::FfnOut => "output.dense",
    }
}

/// The HF module of a sublayer's residual LayerNorm.
pub fn hf_norm(sublayer: Sublayer) -> &'static str {
    match sublayer {
        Sublayer::Attention => "attention.LayerNorm",
        Sublayer::Ffn => "output.LayerNorm",
    }
}

/// MPNet's bucketing: transformers computes 32 buckets whatever the table's size, so only a
/// 32-row table (`relative_attention_num_buckets`, 32 when absent) reproduces it.
pub fn relative_attention_from_config(
    v: &Value,
    file: &Path,
) -> Result<RelativeAttention, ModelError> {
    let field = "relative_attention_num_buckets";
    let rows = match v.get(field) {
        None | Some(Value::Null) => Some(HF_BUCKETS as u64),
        Some(x) => x.as_u64(),
    };
    if rows != Some(HF_BUCKETS as u64) {
        return Err(ModelError::BadConfig {
            file: file.to_path_buf(),
            field: field.into(),
            message: format!(
                "{}: expected {HF_BUCKETS} (transformers' MPNetEncoder buckets relative positions into {HF_BUCKETS} whatever this says; other table sizes are not supported)",
                v[field]
            ),
        });
    }
    Ok(RelativeAttention {
        num_buckets: HF_BUCKETS,
        max_distance: HF_MAX_DISTANCE,
    })
}

/// The one shared table every layer's `attention.relative_bias` is cut from.
pub const HF_RELATIVE_BIAS: &str = "encoder.relative_attention_bias.weight";

#[cfg(test)]
mod tests {
    use super::*;

    const REL: RelativeAttention = RelativeAttention {
        num_buckets: 32,
        max_distance: 128,
    };

    /// Hand-computed from transformers' formula: half = 16, max_exact = 8.
    #[test]
    fn buckets_match_the_formula() {
        let cases = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (-8, 8),
            // 8 + floor(ln(16/8)/ln(128/8) * 8) = 8 + floor(0.25 * 8) = 10
            (-16, 10),
            (16, 26),
            // ln(127/8)/ln(16)*8 = 7.97 -> 15
            (-127, 15),
            (-128, 15),
            (-10_000, 15),
            (10_000, 31),
        ];
        for (relative, bucket) in cases {
            assert_eq!(
                relative_position_bucket(relative, REL),
                bucket,
                "{relative}"
            );
        }
    }
}
