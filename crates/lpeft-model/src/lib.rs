//! lpeft-model: a transformer encoder (BERT, RoBERTa, MPNet) whose every layer has its own head count
//! and FFN width (down to zero), with the scalar masks of Light-PEFT's estimation stage, LoRA
//! and bottleneck adapters with a rank per module, and task heads.
//!
//! Invariant: building a model from a spec and a weight source is the only way tensors enter a
//! model, so a spec plus a weights file always rebuilds the identical model.

pub mod checkpoint;
pub mod device;
pub mod encode;
pub mod encoder;
pub mod error;
pub mod fused;
pub mod graph;
pub mod head;
pub mod hf;
pub mod importance;
pub mod layers;
pub mod merge;
pub mod model;
pub mod mpnet;
pub mod names;
pub mod opt;
pub mod optim;
pub mod peft;
pub mod peft_config;
pub mod precision;
pub mod rng;
pub mod source;
pub mod testing;

pub use encoder::EncoderInput;
pub use error::ModelError;
pub use model::{Model, ModelOutput};
