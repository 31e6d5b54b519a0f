use std::fmt;
use std::path::PathBuf;

use lpeft_store::StoreError;

use crate::stage::StageError;

/// A place in a pipeline file (1-based line and column), or just the file when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub fn file_only(file: impl Into<PathBuf>) -> Location {
        Location {
            file: file.into(),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{path}: cannot read pipeline file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid RON, or does not match the pipeline schema.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// The file parses but does not make a valid pipeline.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    /// A stage refused its parameters.
    #[error("{at}: stage `{stage}`: {source}")]
    Prepare {
        at: Location,
        stage: String,
        #[source]
        source: StageError,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot run: {0}")]
    Refused(String),
    #[error("stage `{stage}` failed: {source}")]
    StageFailed {
        stage: String,
        #[source]
        source: StageError,
    },
    #[error("{} stages failed: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<PipelineError>),
}

impl PipelineError {
    pub(crate) fn invalid(at: &Location, message: impl Into<String>) -> PipelineError {
        PipelineError::Invalid {
            at: at.clone(),
            message: message.into(),
        }
    }
}
