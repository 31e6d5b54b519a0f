//! Our own checkpoint: `model.json` (the [`ModelSpec`]: per-layer shapes, head, PEFT ranks and
//! scales) beside `weights.safetensors` (every tensor under its module path, f32, burn layout).
//! Loading rebuilds the identical model; a missing, extra or mis-shaped tensor is an error.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use lpeft_schema::model::ModelSpec;

use crate::error::ModelError;
use crate::model::Model;
use crate::source::{MapSource, Role, TensorMap};

pub const SPEC_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// Collects every float parameter under its module path.
#[derive(Default)]
struct Collect {
    path: Vec<String>,
    out: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    only_trainable: bool,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        if self.only_trainable && !t.is_require_grad() {
            return;
        }
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data");
        self.out.insert(self.path.join("."), (shape, values));
    }
}

/// All float tensors of a model by module path (host copies).
pub fn named_tensors(model: &Model) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut c = Collect::default();
    model.visit(&mut c);
    c.out
}

/// Only the trainable tensors (PEFT, masks, head): the warm-start state of estimation.
pub fn trainable_tensors(model: &Model) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut c = Collect {
        only_trainable: true,
        ..Default::default()
    };
    model.visit(&mut c);
    c.out
}

/// Writes named f32 tensors as safetensors, atomically enough for an artifact's temp dir:
/// each tensor's bytes are made as it is written, never the whole file in memory at once.
pub fn write_safetensors(
    file: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<(), ModelError> {
    let views = tensors
        .iter()
        .map(|(k, (shape, values))| (k, F32View { shape, values }));
    safetensors::serialize_to_file(views, None, file).map_err(|e| ModelError::BadFile {
        file: file.to_path_buf(),
        message: e.to_string(),
    })
}

/// A tensor's f32 values as safetensors sees them: little-endian bytes made on demand.
struct F32View<'a> {
    shape: &'a [usize],
    values: &'a [f32],
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        // On a little-endian machine the values' own bytes are safetensors' (no copy: a
        // pruned roberta-base is 0.3 GB).
        if cfg!(target_endian = "little") {
            return bytemuck::cast_slice(self.values).into();
        }
        let mut bytes = Vec::with_capacity(self.values.len() * 4);
        for v in self.values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.into()
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

pub fn save(model: &Model, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let spec = serde_json::to_string_pretty(&model.spec).expect("spec serializes");
    std::fs::write(dir.join(SPEC_FILE), spec)
        .map_err(|e| ModelError::io(dir.join(SPEC_FILE), e))?;
    write_safetensors(&dir.join(WEIGHTS_FILE), &named_tensors(model))
}

pub fn read_spec(dir: &Path) -> Result<ModelSpec, ModelError> {
    let file = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| ModelError::io(&file, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
        file,
        message: format!(
            "not a model spec (line {}, column {}): {e}",
            e.line(),
            e.column()
        ),
    })
}

/// Rebuilds the model saved in `dir`. Every stored tensor must be used.
pub fn load(dir: &Path, device: &Device) -> Result<Model, ModelError> {
    let spec = read_spec(dir)?;
    load_with_spec(dir, &spec, &[], device)
}

/// Loads weights from `dir` into a model of `spec`; roles in `fill` may be missing and are
/// then initialised (e.g. a new head), otherwise every tensor must match and be used.
pub fn load_with_spec(
    dir: &Path,
    spec: &ModelSpec,
    fill: &[Role],
    device: &Device,
) -> Result<Model, ModelError> {
    let file = dir.join(WEIGHTS_FILE);
    let map: TensorMap = crate::hf::read_safetensors(&file)?;
    let mut src = MapSource {
        file: file.clone(),
        map,
        fill: fill.to_vec(),
        seed: 0,
        used: Vec::new(),
    };
    let model = Model::build(spec, &mut src, device)?;
    let mut unused: Vec<&String> = src
        .map
        .tensors
        .keys()
        .filter(|k| !src.used.contains(k))
        .collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(ModelError::BadFile {
            file,
            message: format!(
                "{} tensor(s) do not belong to the model described by {SPEC_FILE}, first `{first}`",
                unused.len()
            ),
        });
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What `write_safetensors` writes reads back to the same bits (NaN payloads,
        /// infinities, signed zeros, subnormals included).
        #[test]
        fn written_tensors_read_back_bit_for_bit(
            bits in proptest::collection::vec(any::<u32>(), 0..64),
            rows in 1usize..4,
        ) {
            let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let n = values.len() / rows * rows;
            let mut tensors = BTreeMap::new();
            tensors.insert("a.weight".to_string(), (vec![rows, n / rows], values[..n].to_vec()));
            tensors.insert("b".to_string(), (vec![1], vec![-0.0]));
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("w.safetensors");
            write_safetensors(&file, &tensors).unwrap();
            let read = crate::hf::read_safetensors(&file).unwrap();
            for (name, (shape, values)) in &tensors {
                let (found, back) = &read.tensors[name];
                prop_assert_eq!(found, shape);
                let to_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(to_bits(back), to_bits(values));
            }
        }
    }
}
