//! Task readers (GLUE, SuperGLUE, SQuAD), task registry, tokenized dataset artifacts and batching.
//!
//! Flow: [`build::resolve`] a [`DataConfig`] to its source files → [`build::build`] reads them
//! (`glue`, `superglue`, `squad`, `hub`), samples, tokenizes (`encode`) and writes the
//! artifact (`artifact`) → the trainer opens it with [`Dataset::open`] and iterates
//! [`Batcher::epoch`].
//!
//! Reading an artifact for training:
//!
//! ```no_run
//! use lpeft_data::{BatchConfig, BatchLabels, Batcher, Dataset, Padding};
//!
//! # fn main() -> Result<(), lpeft_data::DataError> {
//! let ds = Dataset::open("artifacts/<key>")?; // the data stage's output directory
//! let train = ds.split("train")?; // validated flat arrays
//! let cfg = BatchConfig {
//!     batch_size: 32,
//!     shuffle: true,
//!     seed: 42,
//!     drop_last: false,
//!     padding: Padding::Longest,
//!     pad_id: ds.meta.tokenizer.pad_id,
//! };
//! let batcher = Batcher::new(&train, &ds.meta.task.kind, cfg)?;
//! for epoch in 0..3 {
//!     for batch in batcher.epoch(epoch) {
//!         // batch.input_ids / type_ids / attention_mask: row-major [batch.rows, batch.seq_len]
//!         if let BatchLabels::Class(labels) = &batch.labels {
//!             assert_eq!(labels.len(), batch.batch_size);
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Architecture invariants:
//! - The artifact depends only on the declared files' content and the canonical parameters
//!   (no paths, no clock, no thread count): tokenization is order-preserving and sampling and
//!   shuffling use the self-contained [`rng::SplitMix64`].
//! - Label ids follow the Hugging Face class-label order, whatever the source.
//! - No dependency on burn: batches are plain vectors.

pub use lpeft_artifacts::dataset::{artifact, batch};
pub mod build;
pub mod encode;
pub mod error;
pub mod example;
pub mod glue;
pub mod hub;
pub mod ids;
pub mod mirror;
pub mod registry;
pub use lpeft_artifacts::dataset::rng;
pub mod squad;
pub mod stage;
pub mod superglue;

pub use artifact::Dataset;
pub use batch::{Batch, BatchConfig, BatchLabels, Batcher, Padding};
pub use build::{DataConfig, HubConfig};
pub use encode::{Labels, SplitTensors, Texts};
pub use error::DataError;
pub use stage::DataStage;
