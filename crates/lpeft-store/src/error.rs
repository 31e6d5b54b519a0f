use std::path::PathBuf;

/// Everything that can go wrong in the store. Errors name the key and file involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact {key} not found in store {store}")]
    NotFound { key: String, store: PathBuf },
    #[error("`{key}` is not a valid artifact key (64 lower-case hex digits, or a unique prefix)")]
    InvalidKey { key: String },
    #[error("key prefix `{prefix}` is ambiguous: matches {matches} artifacts")]
    AmbiguousKey { prefix: String, matches: usize },
    #[error(
        "artifact {key} is corrupt: file `{file}` has BLAKE3 {actual}, manifest says {expected}"
    )]
    Corrupt {
        key: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "artifact {key} is corrupt: file `{file}` has {actual} bytes, manifest says {expected}"
    )]
    SizeMismatch {
        key: String,
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("artifact {key} is corrupt: file `{file}` is missing")]
    MissingFile { key: String, file: String },
    #[error("artifact {key} is corrupt: unexpected file `{file}` not listed in the manifest")]
    ExtraFile { key: String, file: String },
    #[error("manifest {path} is unreadable: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("stage output {path} is not a regular file or directory (symlinks are not allowed)")]
    NotRegular { path: PathBuf },
    #[error("stage output may not be named `{name}`: that name is reserved for the store")]
    Reserved { name: String },
    #[error("the store {store} is in use by another process (a run holds its lock)")]
    Busy { store: PathBuf },
}

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            path: path.into(),
            source,
        })
    }
}
