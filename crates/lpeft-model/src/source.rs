//! Where weights come from when a model is built: random initialisation, our own checkpoint,
//! or a Hugging Face checkpoint. The builder asks for every tensor by its name in our model
//! (the burn module path) with its expected shape in burn layout; a source answers with host
//! f32 data or a precise error.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::ModelError;
use crate::rng::SeededRng;

/// How a tensor is initialised when a source has no stored value for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Normal {
        std: f64,
    },
    /// PyTorch `kaiming_uniform_(a=sqrt(5))` on a `[out, in]` weight: U(-1/sqrt(fan_in), +).
    KaimingUniform {
        fan_in: usize,
    },
}

/// Role of a tensor: decides whether a checkpoint must contain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Pretrained backbone weight: must be present in a pretrained checkpoint.
    Backbone,
    /// Task head weight: may be absent from a pretrained checkpoint (new head).
    Head,
    /// PEFT or mask tensor: absent from pretrained checkpoints, present in ours.
    Peft,
}

pub trait WeightSource {
    /// Host values (row-major, burn layout) for tensor `name` of `shape`.
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, ModelError>;
}

pub fn init_values(rng: &mut SeededRng, shape: &[usize], init: Init) -> Vec<f32> {
    let n: usize = shape.iter().product();
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Normal { std } => rng.normal(n, 0.0, std),
        Init::KaimingUniform { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            rng.uniform(n, -bound, bound)
        }
    }
}

/// Every tensor drawn from its initialiser, each from a stream named after the tensor.
#[derive(Debug, Clone)]
pub struct RandomSource {
    pub seed: u64,
}

impl WeightSource for RandomSource {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        _role: Role,
    ) -> Result<Vec<f32>, ModelError> {
        Ok(init_values(
            &mut SeededRng::derive(self.seed, name),
            shape,
            init,
        ))
    }
}

/// Named host tensors, e.g. read from a safetensors file.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Our own checkpoint: every tensor must be present unless `fill` allows a role to be
/// initialised (a fresh head, say); unused tensors are reported by the loader.
#[derive(Debug)]
pub struct MapSource {
    pub file: PathBuf,
    pub map: TensorMap,
    pub fill: Vec<Role>,
    pub seed: u64,
    pub used: Vec<String>,
}

impl WeightSource for MapSource {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, ModelError> {
        // Taken out of the map, not copied: a tensor is fetched once, and what stays in the
        // map afterwards is what the model did not use.
        match self.map.tensors.remove(name) {
            Some((found, values)) => {
                if found.as_slice() != shape {
                    return Err(ModelError::ShapeMismatch {
                        file: self.file.clone(),
                        name: name.to_string(),
                        found,
                        expected: shape.to_vec(),
                    });
                }
                self.used.push(name.to_string());
                Ok(values)
            }
            None if self.fill.contains(&role) => Ok(init_values(
                &mut SeededRng::derive(self.seed, name),
                shape,
                init,
            )),
            None => Err(ModelError::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
                hint: String::new(),
            }),
        }
    }
}
