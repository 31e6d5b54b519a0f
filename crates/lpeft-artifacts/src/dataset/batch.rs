//! Batching for training and evaluation: a seeded shuffle per epoch, padding per batch (to the
//! longest row) or to a fixed length, attention masks materialised, labels gathered.
//! Batches are plain row-major vectors; the trainer turns them into tensors.

use lpeft_schema::dataset::TaskKind;

use super::error::DatasetError as DataError;
use super::rng::SplitMix64;
use super::{Labels, SplitTensors};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad each batch to its longest row.
    Longest,
    /// Pad every batch to this length (rows must not be longer).
    Fixed(usize),
    /// Pad each batch to its longest row rounded up to a multiple of this (at least 1): a few
    /// batch shapes, for training steps replayed as one CUDA graph per shape.
    LongestRoundedTo(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Units per batch: rows, or for multiple choice, questions (each with all its choices).
    pub batch_size: usize,
    /// Shuffle the units each epoch (training); keep source order when false (evaluation).
    pub shuffle: bool,
    pub seed: u64,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    pub padding: Padding,
    /// From the tokenizer (`Tokenizer::pad_id`, or `dataset.json`'s `tokenizer.pad_id`).
    pub pad_id: u32,
}

impl BatchConfig {
    /// Evaluation and inference batches: source order, every unit, each batch padded to its
    /// longest row.
    pub fn evaluation(batch_size: usize, pad_id: u32) -> Self {
        Self {
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            padding: Padding::Longest,
            pad_id,
        }
    }
}

/// Labels of a batch, in unit order.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchLabels {
    None,
    /// `[batch_size]` (rows), or `[batch_size]` right-choice indices (multiple choice).
    Class(Vec<i64>),
    /// `[batch_size]`.
    Float(Vec<f32>),
    /// `[batch_size, 2]` start/end token positions.
    Span(Vec<i64>),
}

/// One padded batch. Token arrays are row-major `[rows, seq_len]`, where `rows` is
/// `batch_size`, or `batch_size * num_choices` for multiple choice (choices of a question are
/// consecutive).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub labels: BatchLabels,
    /// Number of units (rows, or questions for multiple choice).
    pub batch_size: usize,
    /// Number of encoder rows in the token arrays.
    pub rows: usize,
    pub seq_len: usize,
    /// `Some(n)` for multiple choice.
    pub num_choices: Option<usize>,
    /// Split row index of each encoder row of the batch.
    pub row_indices: Vec<usize>,
    /// Group (example) index of each unit.
    pub group_indices: Vec<usize>,
}

/// Turns a split into batches, epoch after epoch.
#[derive(Debug)]
pub struct Batcher<'a> {
    split: &'a SplitTensors,
    cfg: BatchConfig,
    /// Row ranges of the units: one row each, or the rows of one question (multiple choice).
    units: Vec<(usize, usize)>,
    num_choices: Option<usize>,
}

impl<'a> Batcher<'a> {
    pub fn new(
        split: &'a SplitTensors,
        kind: &TaskKind,
        cfg: BatchConfig,
    ) -> Result<Batcher<'a>, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Params(
                "batch_size must be at least 1".to_owned(),
            ));
        }
        if let Padding::Fixed(n) = cfg.padding {
            let longest = (0..split.num_rows())
                .map(|r| split.row(r).len())
                .max()
                .unwrap_or(0);
            if longest > n {
                return Err(DataError::Params(format!(
                    "fixed padding length {n} is shorter than the longest row ({longest} tokens)"
                )));
            }
        }
        let (units, num_choices) = match kind {
            TaskKind::MultipleChoice { num_choices } => {
                let n = *num_choices as usize;
                let mut units = Vec::with_capacity(split.num_groups());
                let mut start = 0;
                for g in 0..split.num_groups() {
                    let mut end = start;
                    while end < split.num_rows() && split.group_ids[end] as usize == g {
                        end += 1;
                    }
                    if end - start != n {
                        return Err(DataError::Params(format!(
                            "question {g} has {} choices, expected {n}",
                            end - start
                        )));
                    }
                    units.push((start, end));
                    start = end;
                }
                (units, Some(n))
            }
            _ => ((0..split.num_rows()).map(|r| (r, r + 1)).collect(), None),
        };
        Ok(Batcher {
            split,
            cfg,
            units,
            num_choices,
        })
    }

    pub fn num_units(&self) -> usize {
        self.units.len()
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.units.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Unit order of an epoch: a Fisher–Yates shuffle seeded by (seed, epoch), or source order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.units.len()).collect();
        if self.cfg.shuffle {
            SplitMix64::derive(self.cfg.seed, "batches", epoch).shuffle(&mut order);
        }
        order
    }

    /// The batches of one epoch, lazily.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Batch> + '_ {
        let order = self.order(epoch);
        let num = self.num_batches();
        let b = self.cfg.batch_size;
        (0..num).map(move |i| {
            let end = ((i + 1) * b).min(order.len());
            self.batch(&order[i * b..end])
        })
    }

    /// Build the batch of the given units.
    pub fn batch(&self, units: &[usize]) -> Batch {
        let s = self.split;
        let row_indices: Vec<usize> = units
            .iter()
            .flat_map(|&u| self.units[u].0..self.units[u].1)
            .collect();
        let seq_len = match self.cfg.padding {
            Padding::Fixed(n) => n,
            Padding::Longest | Padding::LongestRoundedTo(_) => {
                let longest = row_indices
                    .iter()
                    .map(|&r| s.row(r).len())
                    .max()
                    .unwrap_or(0);
                match self.cfg.padding {
                    Padding::LongestRoundedTo(n) => longest.next_multiple_of(n.max(1)),
                    _ => longest,
                }
            }
        };
        let cells = row_indices.len() * seq_len;
        let mut input_ids = vec![self.cfg.pad_id as i64; cells];
        let mut type_ids = vec![0i64; cells];
        let mut attention_mask = vec![0i64; cells];
        for (i, &r) in row_indices.iter().enumerate() {
            let range = s.row(r);
            let base = i * seq_len;
            for (j, t) in range.enumerate() {
                input_ids[base + j] = s.input_ids[t] as i64;
                type_ids[base + j] = s.type_ids[t] as i64;
                attention_mask[base + j] = 1;
            }
        }
        let group_indices: Vec<usize> = units
            .iter()
            .map(|&u| s.group_ids[self.units[u].0] as usize)
            .collect();
        let labels = match &s.labels {
            Labels::None => BatchLabels::None,
            Labels::Class(v) if self.num_choices.is_some() => {
                BatchLabels::Class(group_indices.iter().map(|&g| v[g]).collect())
            }
            Labels::Class(v) => BatchLabels::Class(row_indices.iter().map(|&r| v[r]).collect()),
            Labels::Float(v) => BatchLabels::Float(row_indices.iter().map(|&r| v[r]).collect()),
            Labels::Span(v) => BatchLabels::Span(
                row_indices
                    .iter()
                    .flat_map(|&r| [v[2 * r], v[2 * r + 1]])
                    .collect(),
            ),
        };
        Batch {
            input_ids,
            type_ids,
            attention_mask,
            labels,
            batch_size: units.len(),
            rows: row_indices.len(),
            seq_len,
            num_choices: self.num_choices,
            row_indices,
            group_indices,
        }
    }
}
