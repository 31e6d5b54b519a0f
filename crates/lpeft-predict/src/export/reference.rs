//! Our logits on a few fixed inputs, for comparing an exported directory with what
//! transformers computes from it (`tools/export_check.py`): `input_ids`, `token_type_ids`,
//! `attention_mask` (rows of uneven length, padded with the pad id) and `logits`, as JSON.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::json;

use lpeft_model::Model;
use lpeft_model::encoder::EncoderInput;
use lpeft_model::head::HeadOutput;
use lpeft_schema::model::Family;

use crate::PredictError;

/// The fixed inputs' rows: token ids, token type ids, attention mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub ids: Vec<Vec<i64>>,
    pub types: Vec<Vec<i64>>,
    pub mask: Vec<Vec<i64>>,
}

/// Token rows of the fixed inputs: `rows` rows, the longest `len` tokens, ids drawn from a
/// fixed stream among the vocabulary's non-special ids (not the pad id).
pub fn inputs(model: &Model, rows: usize, len: usize) -> Inputs {
    let e = &model.spec.encoder;
    let offset = match e.family {
        Family::Roberta | Family::Mpnet => e.pad_token_id + 1,
        Family::Opt => lpeft_model::opt::POSITION_OFFSET,
        Family::Bert => 0,
    };
    let len = len
        .min(e.max_position_embeddings.saturating_sub(offset))
        .max(2);
    let pad = e.pad_token_id as i64;
    let first = 5.min(e.vocab_size.saturating_sub(1)) as u64;
    let span = (e.vocab_size as u64).saturating_sub(first).max(1);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        let real = (len - r * len / (2 * rows.max(1))).max(2);
        let mut row = Vec::with_capacity(len);
        for _ in 0..real {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut id = (first + state % span) as i64;
            if id == pad {
                id = if id + 1 < e.vocab_size as i64 {
                    id + 1
                } else {
                    id - 1
                };
            }
            row.push(id);
        }
        let second = if e.type_vocab_size > 1 { 1 } else { 0 };
        let t: Vec<i64> = (0..len)
            .map(|i| if i >= real / 2 && i < real { second } else { 0 })
            .collect();
        let m: Vec<i64> = (0..len).map(|i| i64::from(i < real)).collect();
        row.resize(len, pad);
        ids.push(row);
        types.push(t);
        mask.push(m);
    }
    Inputs { ids, types, mask }
}

/// Runs `model` on the fixed inputs and writes them with the logits to `file`.
pub fn write(model: &Model, device: &Device, file: &Path) -> Result<(), PredictError> {
    let Inputs { ids, types, mask } = inputs(model, 4, 16);
    let (rows, len) = (ids.len(), ids[0].len());
    let t = |v: &[Vec<i64>]| {
        let flat: Vec<i64> = v.iter().flatten().copied().collect();
        Tensor::<2, Int>::from_data(TensorData::new(flat, [rows, len]), device)
    };
    let input = EncoderInput {
        input_ids: t(&ids),
        token_type_ids: t(&types),
        attention_mask: t(&mask),
    };
    let rows_of = |t: Tensor<2>| -> Vec<Vec<f32>> {
        let [_, cols] = t.dims();
        let values: Vec<f32> = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 logits");
        values.chunks(cols.max(1)).map(<[f32]>::to_vec).collect()
    };
    let mut v = json!({ "input_ids": ids, "token_type_ids": types, "attention_mask": mask });
    match model.forward(&input).head {
        HeadOutput::Logits(logits) => v["logits"] = json!(rows_of(logits)),
        HeadOutput::Span { start, end } => {
            v["start_logits"] = json!(rows_of(start));
            v["end_logits"] = json!(rows_of(end));
        }
    }
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(super::write_err(parent))?;
    }
    super::write_json(file, &v)
}
