//! Reading an estimation artifact's `masks.safetensors`: `head_masks` f32 `[R, L, H]`,
//! `ffn_masks` f32 `[R, L, I]`, `record_steps` i64 `[R]`. Each tensor is optional, so a
//! partial artifact still gives the plots it can.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::EvalError;

/// A `[records, layers, width]` f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskTensor {
    pub records: usize,
    pub layers: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl MaskTensor {
    /// Values of the last record, per layer.
    pub fn last(&self) -> Vec<&[f32]> {
        let block = self.layers * self.width;
        let start = (self.records - 1) * block;
        self.values[start..start + block]
            .chunks(self.width)
            .collect()
    }
}

/// The tensors found in a masks file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskRecords {
    pub heads: Option<MaskTensor>,
    pub ffn: Option<MaskTensor>,
    pub record_steps: Option<Vec<i64>>,
}

impl MaskRecords {
    /// The step of the last record, if recorded.
    pub fn last_step(&self) -> Option<i64> {
        self.record_steps.as_ref().and_then(|s| s.last().copied())
    }
}

pub fn read_masks(path: &Path) -> Result<MaskRecords, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse_masks(&bytes).map_err(|message| EvalError::Bad {
        file: path.to_path_buf(),
        message,
    })
}

/// [`read_masks`] on bytes; the error is a message.
pub fn parse_masks(bytes: &[u8]) -> Result<MaskRecords, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let names = st.names();
    let has = |n: &str| names.contains(&n);
    let mask = |name: &str| -> Result<Option<MaskTensor>, String> {
        if !has(name) {
            return Ok(None);
        }
        let t = st.tensor(name).map_err(|e| e.to_string())?;
        if t.dtype() != Dtype::F32 {
            return Err(format!("{name}: dtype {:?}, expected F32", t.dtype()));
        }
        let &[records, layers, width] = t.shape() else {
            return Err(format!("{name}: shape {:?}, expected [R, L, W]", t.shape()));
        };
        if records == 0 || layers == 0 || width == 0 {
            return Ok(None);
        }
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Some(MaskTensor {
            records,
            layers,
            width,
            values,
        }))
    };
    let record_steps = if has("record_steps") {
        let t = st.tensor("record_steps").map_err(|e| e.to_string())?;
        if t.dtype() != Dtype::I64 {
            return Err(format!("record_steps: dtype {:?}, expected I64", t.dtype()));
        }
        Some(
            t.data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        )
    } else {
        None
    };
    Ok(MaskRecords {
        heads: mask("head_masks")?,
        ffn: mask("ffn_masks")?,
        record_steps,
    })
}
