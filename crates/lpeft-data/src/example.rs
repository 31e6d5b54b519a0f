//! Examples as read from the source files, before tokenization.

use std::path::PathBuf;

use lpeft_schema::dataset::{RecordQuery, SpanAnswer};

/// The encoder inputs of one example.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// One encoder row per entry (a sentence or a pair): one for classification and
    /// regression, one per choice (COPA), answer option (MultiRC) or candidate (ReCoRD).
    Rows(Vec<(String, Option<String>)>),
    /// A SQuAD question over context `context` of the split; rows are the context windows.
    Span {
        id: String,
        question: String,
        context: usize,
        answers: Vec<SpanAnswer>,
    },
}

/// The label of one example, absent in test files.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    None,
    /// A class id for the single row.
    Class(i64),
    /// A float for the single row (STS-B).
    Float(f32),
    /// The index of the right row (COPA).
    Choice(i64),
    /// One binary class id per row (MultiRC answer options, ReCoRD candidates).
    PerRow(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// 0-based record index in the source file (data row of a TSV, line of a JSONL file,
    /// row of a parquet file, question ordinal of a SQuAD file).
    pub source_row: u32,
    pub inputs: Inputs,
    pub label: Label,
    /// ReCoRD: the candidate entities (row order) and gold answers.
    pub record: Option<RecordQuery>,
}

impl Example {
    pub fn is_labeled(&self) -> bool {
        !matches!(self.label, Label::None)
    }
}

/// A source file that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    /// Name recorded in the artifact (relative to the data root, or the hub path).
    pub name: String,
}

/// All examples of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSplit {
    pub name: String,
    pub sources: Vec<Source>,
    pub examples: Vec<Example>,
    /// SQuAD contexts, indexed by [`Inputs::Span::context`].
    pub contexts: Vec<String>,
}

impl RawSplit {
    pub fn labeled(&self) -> bool {
        self.examples.first().is_some_and(Example::is_labeled)
    }

    /// Keep only the examples at `indices` (increasing), dropping unused contexts.
    pub fn select(&mut self, indices: &[usize]) {
        let mut keep = vec![false; self.examples.len()];
        for &i in indices {
            keep[i] = true;
        }
        let mut kept: Vec<Example> = std::mem::take(&mut self.examples)
            .into_iter()
            .zip(keep)
            .filter_map(|(e, k)| k.then_some(e))
            .collect();
        if !self.contexts.is_empty() {
            let mut remap = vec![usize::MAX; self.contexts.len()];
            let mut contexts = Vec::new();
            for e in &mut kept {
                if let Inputs::Span { context, .. } = &mut e.inputs {
                    if remap[*context] == usize::MAX {
                        remap[*context] = contexts.len();
                        contexts.push(std::mem::take(&mut self.contexts[*context]));
                    }
                    *context = remap[*context];
                }
            }
            self.contexts = contexts;
        }
        self.examples = kept;
    }
}
