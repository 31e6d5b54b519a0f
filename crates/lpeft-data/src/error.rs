//! Errors of the data crate: each names the file, the 1-based line and what was expected.

use std::path::PathBuf;

use lpeft_tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown task `{name}` (known: {known})")]
    UnknownTask { name: String, known: String },
    #[error("task `{task}` has no split `{split}` (available: {available})")]
    UnknownSplit {
        task: String,
        split: String,
        available: String,
    },
    #[error("missing file {path}")]
    MissingFile { path: PathBuf },
    /// The `model` parameter names no tokenizer (a fresh clone without the shared model, say).
    #[error(
        "missing file {path} (parameter `model`: a model directory holding tokenizer.json, or GPT-2 BPE's vocab.json + merges.txt + tokenizer_config.json as OPT ships them, or a tokenizer.json itself)"
    )]
    MissingModel { path: PathBuf },
    /// A task's split file is not where the official layout puts it under `data_dir`.
    #[error(
        "missing file {path} ({task} split `{split}`: `data_dir` holds the official layout, <data_dir>/{layout})"
    )]
    MissingTaskFile {
        path: PathBuf,
        task: String,
        split: String,
        /// `<TASK>/<file>` relative to the data directory.
        layout: String,
    },
    /// No data directory given and the benchmark's variable unset.
    #[error(
        "no data source for {task}: give `data_dir` (--data-dir), set {var}, or read the hub with `hub: {{}}`"
    )]
    NoDataSource { task: String, var: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: {found} tab-separated columns, more than the {expected} expected (a tab inside a text field?)"
    )]
    LongRow {
        path: PathBuf,
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("{path}:{line}: expected {expected} tab-separated columns, found {found}")]
    ShortRow {
        path: PathBuf,
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("{path}:{line}: missing column '{column}' (header has: {header})")]
    MissingColumn {
        path: PathBuf,
        line: u64,
        column: String,
        header: String,
    },
    #[error("{path}:{line}: unknown label '{value}' (expected one of: {expected})")]
    UnknownLabel {
        path: PathBuf,
        line: u64,
        value: String,
        expected: String,
    },
    #[error("{path}:{line}: bad value '{value}' for {field} (expected {expected})")]
    BadValue {
        path: PathBuf,
        line: u64,
        field: String,
        value: String,
        expected: String,
    },
    #[error("{path}:{line}: missing field '{field}' (expected {expected})")]
    MissingField {
        path: PathBuf,
        line: u64,
        field: String,
        expected: String,
    },
    #[error("{path}:{line}: bad JSON: {message}")]
    BadJson {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: bad parquet file: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}:{line}: cannot read row: {message}")]
    BadRow {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    #[error("invalid data parameters: {0}")]
    Params(String),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Dataset(#[from] lpeft_artifacts::dataset::DatasetError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DataError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile { path }
        } else {
            DataError::Io { path, source }
        }
    }
}
