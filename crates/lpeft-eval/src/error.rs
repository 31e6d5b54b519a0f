use std::path::PathBuf;

/// Errors of metric computation, evaluation and reports.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{what}: {left} predictions but {right} labels")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    #[error("{what}: no examples to score")]
    Empty { what: &'static str },
    #[error("metric `{metric}` does not apply to {outputs} outputs")]
    NotApplicable {
        metric: &'static str,
        outputs: &'static str,
    },
    #[error("metric `{metric}` on classes needs question groups (one per row)")]
    MissingGroups { metric: &'static str },
    #[error("{0}")]
    Inconsistent(String),
    #[error("{file}: {message}")]
    Bad { file: PathBuf, message: String },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}
