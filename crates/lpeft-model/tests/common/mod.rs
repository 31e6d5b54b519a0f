#![allow(dead_code)]
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use lpeft_model::EncoderInput;
use lpeft_model::head::{Labels, task_loss};
use lpeft_model::model::Model;
use lpeft_model::rng::SeededRng;
use lpeft_model::source::{Init, Role, TensorMap, WeightSource};
use lpeft_model::testing::{adapters_everywhere, lora_everywhere, tiny_spec};
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};

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

// Training tests' model, labels and loss (training.rs, adamw_reference.rs).

pub const LAMBDA: f64 = 0.05;

pub fn labels(n: usize, device: &Device) -> Labels {
    let v: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    Labels::Class(Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device))
}

pub fn loss(model: &Model, input: &EncoderInput, labels: &Labels) -> Tensor<1> {
    let out = model.forward(input);
    let mut l = task_loss(&out.head, labels);
    if let Some(l1) = model.mask_l1() {
        l = l + l1.mul_scalar(LAMBDA);
    }
    l
}

/// Every tensor random (LoRA B too), so every gradient path is exercised.
pub struct AllRandom(pub u64);
impl WeightSource for AllRandom {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        _role: Role,
    ) -> Result<Vec<f32>, lpeft_model::ModelError> {
        let n: usize = shape.iter().product();
        let mut rng = SeededRng::derive(self.0, name);
        Ok(match init {
            Init::Ones => rng.normal(n, 1.0, 0.2),
            _ => rng.normal(n, 0.0, 0.4),
        })
    }
}

pub fn fd_spec(style: HeadStyle, family: Family) -> ModelSpec {
    let mut peft = lora_everywhere(2, 3, 0.0);
    peft.extend(adapters_everywhere(2, 2, 0.0));
    tiny_spec(
        family,
        &[(4, 12), (2, 7)],
        TaskHeadSpec::Classification {
            num_labels: 3,
            style,
        },
        peft,
        true,
    )
}

/// Two free vectors: the smallest module for optimizer checks.
#[derive(burn::module::Module, Debug)]
pub struct Two {
    pub a: burn::module::Param<Tensor<1>>,
    pub b: burn::module::Param<Tensor<1>>,
}

impl Two {
    pub fn new<const A: usize, const B: usize>(
        a: [f32; A],
        b: [f32; B],
        device: &burn::tensor::Device,
    ) -> Self {
        let p = |v: Tensor<1>| burn::module::Param::from_tensor(v);
        Two {
            a: p(Tensor::<1>::from_floats(a, device)),
            b: p(Tensor::<1>::from_floats(b, device)),
        }
    }
}
