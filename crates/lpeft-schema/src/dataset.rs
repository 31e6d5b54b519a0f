//! Task specs and the tokenized dataset artifact's metadata (`dataset.json`).
//!
//! The tensors of each split live next to it in `<split>.safetensors`; the arrays are listed in
//! [`SplitMeta::arrays`]. Semantics (readers, tokenization, batching) live in `lpeft-data`;
//! metric code lives in the eval crate, which these names select.

use serde::{Deserialize, Serialize};

/// Version of the artifact layout; readers reject other versions.
pub const DATASET_FORMAT_VERSION: u32 = 1;

/// A metric the eval crate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    /// Binary F1 of the positive class.
    F1,
    Matthews,
    Pearson,
    Spearman,
    MacroF1,
    /// MultiRC: binary F1 over all answer options.
    F1a,
    /// Exact match: per question group (MultiRC), or max over gold answers (ReCoRD, SQuAD).
    ExactMatch,
    /// Token-overlap F1, max over gold answers (ReCoRD, SQuAD).
    SquadF1,
}

/// How the score that selects the best epoch is formed from the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MainScore {
    Metric(Metric),
    /// Arithmetic mean of the listed metrics.
    Mean(Vec<Metric>),
}

/// What the model predicts for a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One class id per row, `labels` i64 `[rows]`.
    Classification { num_labels: u32 },
    /// One float per row, `labels` f32 `[rows]`.
    Regression,
    /// Rows come in groups of `num_choices` (one row per choice, `group_ids` tells the group);
    /// `labels` i64 `[groups]` is the index of the right choice.
    MultipleChoice { num_choices: u32 },
    /// Span extraction: `labels` i64 `[rows, 2]` holds start and end token positions
    /// (both 0, the first token, when the answer is not inside the window).
    Span,
}

/// Static description of a task, as recorded in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Registry name, e.g. `glue/sst2`, `superglue/copa`, `squad/v1.1`.
    pub name: String,
    /// Input fields of the source, in encoding order (first, second).
    pub inputs: Vec<String>,
    pub kind: TaskKind,
    /// Class names by id (empty for regression and span tasks).
    pub label_names: Vec<String>,
    pub metrics: Vec<Metric>,
    pub main_score: MainScore,
    /// How rows are grouped for the metrics, if they are (`choices`, `question`, `query`).
    pub grouping: Option<String>,
}

/// A source file that was read, with its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// File name relative to the data directory (or hub path), never an absolute path.
    pub name: String,
    pub blake3: String,
}

/// One tensor of a split file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayMeta {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// One split of the artifact (`train`, `dev`, `dev_mismatched`, `test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitMeta {
    pub name: String,
    /// `<split>.safetensors`, relative to the artifact directory.
    pub file: String,
    /// Examples read from the source (after the optional sample).
    pub num_examples: usize,
    /// Examples in the source before sampling.
    pub num_source_examples: usize,
    /// Encoder rows (sequences): equals `num_examples` except for choices, answer options,
    /// candidates and context windows.
    pub num_rows: usize,
    /// Number of groups (`group_ids` values).
    pub num_groups: usize,
    pub num_tokens: usize,
    /// Rows that were cut to `max_length`.
    pub num_truncated: usize,
    /// Whether labels are present (test splits have none).
    pub labeled: bool,
    pub sources: Vec<SourceFile>,
    pub arrays: Vec<ArrayMeta>,
    /// `<split>.texts.json` for span and ReCoRD tasks (texts to map predictions back), if any.
    pub texts_file: Option<String>,
}

/// The tokenizer an artifact was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerMeta {
    pub blake3: String,
    /// `bert` or `roberta`.
    pub family: String,
    pub pad_id: u32,
}

/// `dataset.json`: everything about a tokenized dataset artifact except its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub format_version: u32,
    pub task: TaskSpec,
    pub tokenizer: TokenizerMeta,
    pub max_length: usize,
    /// SQuAD only: tokens shared by consecutive context windows.
    pub doc_stride: Option<usize>,
    pub max_examples: Option<usize>,
    pub seed: u64,
    pub splits: Vec<SplitMeta>,
}

/// Texts kept to map span predictions back (SQuAD), in `<split>.texts.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanTexts {
    pub contexts: Vec<String>,
    /// One per question, indexed by group id.
    pub questions: Vec<SpanQuestion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanQuestion {
    pub id: String,
    pub context: usize,
    /// Gold answers: text and byte offset of its start in the context.
    pub answers: Vec<SpanAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanAnswer {
    pub text: String,
    pub byte_start: usize,
}

/// Texts kept for ReCoRD, in `<split>.texts.json`: per query the candidate entities (one row
/// each, in row order within the group) and the gold answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordTexts {
    pub queries: Vec<RecordQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordQuery {
    pub id: String,
    pub entities: Vec<String>,
    pub answers: Vec<String>,
}
