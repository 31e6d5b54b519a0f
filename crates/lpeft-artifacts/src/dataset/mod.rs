//! The dataset artifact: tokenized splits as flat arrays (`<split>.safetensors`), their
//! metadata, and batching (seeded shuffles, padding per batch). Written by the data stage,
//! read by every training stage.

use lpeft_schema::dataset::{RecordTexts, SpanTexts};

pub mod artifact;
pub mod batch;
pub mod error;
pub mod rng;

pub use artifact::Dataset;
pub use batch::{Batch, BatchConfig, BatchLabels, Batcher, Padding};
pub use error::DatasetError;

/// Labels of a split, in the layout the task kind prescribes (see `TaskKind`).
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Unlabeled split (test files).
    None,
    /// i64 per row (classification), or per group (multiple choice: the right choice).
    Class(Vec<i64>),
    /// f32 per row (regression).
    Float(Vec<f32>),
    /// i64 `[rows, 2]`: start and end token positions of the answer (0, 0 if outside).
    Span(Vec<i64>),
}

/// One tokenized split. Rows are encoder sequences; row `r` has tokens
/// `input_ids[offsets[r]..offsets[r + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitTensors {
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u8>,
    /// `[rows + 1]`, starting at 0.
    pub offsets: Vec<u64>,
    /// `[rows]`: the example (group) each row belongs to, `0..num_groups`, non-decreasing.
    pub group_ids: Vec<u32>,
    /// `[groups]`: the 0-based record index of each example in its source file.
    pub example_ids: Vec<u32>,
    pub labels: Labels,
    /// Span tasks: `[tokens, 2]` byte offsets of each token in its context, `u32::MAX` for
    /// question and special tokens.
    pub token_spans: Option<Vec<u32>>,
    pub num_truncated: usize,
}

impl SplitTensors {
    pub fn num_rows(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn num_groups(&self) -> usize {
        self.example_ids.len()
    }

    pub fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.offsets[r] as usize..self.offsets[r + 1] as usize
    }
}

/// Texts kept beside the tensors to map predictions back.
#[derive(Debug, Clone, PartialEq)]
pub enum Texts {
    Span(SpanTexts),
    Record(RecordTexts),
}
