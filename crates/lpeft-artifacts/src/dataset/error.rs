//! Errors of reading and batching a dataset artifact; each names the file (and line) and what
//! was expected. The data stage's `DataError` wraps them unchanged.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("missing file {path}")]
    MissingFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: bad JSON: {message}")]
    BadJson {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("dataset artifact {path}: {message}")]
    Artifact { path: PathBuf, message: String },
    #[error("invalid data parameters: {0}")]
    Params(String),
}

impl DatasetError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DatasetError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DatasetError::MissingFile { path }
        } else {
            DatasetError::Io { path, source }
        }
    }

    pub fn artifact(path: impl Into<PathBuf>, message: impl Into<String>) -> DatasetError {
        DatasetError::Artifact {
            path: path.into(),
            message: message.into(),
        }
    }
}
