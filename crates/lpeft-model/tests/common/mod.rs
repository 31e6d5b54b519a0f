#![allow(dead_code)]
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use lpeft_model::EncoderInput;
use lpeft_model::source::TensorMap;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn shared() -> PathBuf {
    std::env::var_os("LPEFT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

pub fn device() -> Device {
    Device::flex()
}

/// Reads a reference file (ints as i64, floats as f32) into shape + f64 values.
pub fn read_reference(file: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let vals: Vec<f64> = match v.dtype() {
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                d => panic!("unexpected dtype {d:?}"),
            };
            (name, (v.shape().to_vec(), vals))
        })
        .collect()
}

pub fn int2(shape: &[usize], v: &[f64], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = v.iter().map(|x| *x as i64).collect();
    Tensor::from_data(TensorData::new(data, [shape[0], shape[1]]), device)
}

pub fn reference_input(
    r: &std::collections::HashMap<String, (Vec<usize>, Vec<f64>)>,
    device: &Device,
) -> EncoderInput {
    let get = |k: &str| int2(&r[k].0, &r[k].1, device);
    EncoderInput {
        input_ids: get("input_ids"),
        token_type_ids: get("token_type_ids"),
        attention_mask: get("attention_mask"),
    }
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn unused(_: &TensorMap) {}
