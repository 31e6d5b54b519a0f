//! `lpeft encode`: final hidden states of a pretrained encoder for one text (or pair), written
//! as safetensors (`last_hidden_state` f32 `[1, T, H]`, `input_ids` i64 `[1, T]`) so anyone can
//! compare us with another implementation.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

use lpeft_schema::model::{HeadStyle, ModelSpec, TaskHeadSpec};

use crate::encoder::EncoderInput;
use crate::error::ModelError;
use crate::hf::{HfCheckpoint, load_spec};
use crate::model::Model;

#[derive(Debug, Clone)]
pub struct Encoding {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// `[T * H]`, row-major.
    pub last_hidden_state: Vec<f32>,
    pub hidden_size: usize,
}

/// Loads the Hugging Face encoder in `model_dir` (with a throw-away classification head; the
/// encoder output does not depend on it).
pub fn load_pretrained_encoder(model_dir: &Path, device: &Device) -> Result<Model, ModelError> {
    let ckpt = HfCheckpoint::open(model_dir)?;
    let encoder = load_spec(model_dir, &ckpt)?;
    let style = match encoder.family {
        lpeft_schema::model::Family::Bert => HeadStyle::BertPooler,
        lpeft_schema::model::Family::Roberta | lpeft_schema::model::Family::Mpnet => {
            HeadStyle::RobertaDenseTanh
        }
        lpeft_schema::model::Family::Opt => HeadStyle::LastToken,
    };
    let head = TaskHeadSpec::Classification {
        num_labels: 2,
        style,
    };
    let spec = ModelSpec {
        encoder,
        head,
        peft: vec![],
        masks: false,
    };
    let mut src = ckpt.source(spec.encoder.family, head, 0);
    Model::build(&spec, &mut src, device)
}

/// Runs one tokenized sequence through the encoder.
pub fn encode_ids(model: &Model, ids: &[u32], type_ids: &[u32], device: &Device) -> Encoding {
    let t = ids.len();
    let to_i64 = |v: &[u32]| v.iter().map(|x| i64::from(*x)).collect::<Vec<i64>>();
    let (ids, types) = (to_i64(ids), to_i64(type_ids));
    let tensor = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [1, t]), device);
    let input = EncoderInput {
        input_ids: tensor(ids.clone()),
        token_type_ids: tensor(types.clone()),
        attention_mask: Tensor::<2, Int>::ones([1, t], device),
    };
    let hidden = model.forward(&input).hidden;
    let values = hidden
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 hidden states");
    Encoding {
        input_ids: ids,
        token_type_ids: types,
        last_hidden_state: values,
        hidden_size: model.spec.encoder.hidden_size,
    }
}

fn view(
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: &[u8],
) -> safetensors::tensor::TensorView<'_> {
    safetensors::tensor::TensorView::new(dtype, shape, data).expect("consistent view")
}

/// Writes an encoding as safetensors.
pub fn write_encoding(file: &Path, e: &Encoding) -> Result<(), ModelError> {
    let t = e.input_ids.len();
    let hidden: Vec<u8> = e
        .last_hidden_state
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let ids: Vec<u8> = e.input_ids.iter().flat_map(|x| x.to_le_bytes()).collect();
    let types: Vec<u8> = e
        .token_type_ids
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "last_hidden_state".to_string(),
            view(safetensors::Dtype::F32, vec![1, t, e.hidden_size], &hidden),
        ),
        (
            "input_ids".to_string(),
            view(safetensors::Dtype::I64, vec![1, t], &ids),
        ),
        (
            "token_type_ids".to_string(),
            view(safetensors::Dtype::I64, vec![1, t], &types),
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).map_err(|err| ModelError::BadFile {
        file: file.to_path_buf(),
        message: err.to_string(),
    })?;
    let tmp = file.with_extension("safetensors.partial");
    std::fs::write(&tmp, bytes).map_err(|err| ModelError::io(&tmp, err))?;
    std::fs::rename(&tmp, file).map_err(|err| ModelError::io(file, err))
}
