use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: missing tensor `{name}`{hint}")]
    MissingTensor {
        file: PathBuf,
        name: String,
        hint: String,
    },
    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        file: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{file}: tensor `{name}` has dtype {dtype}, expected a float type (f32, f16, bf16, f64)"
    )]
    UnsupportedDtype {
        file: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{file}: {message}")]
    BadFile { file: PathBuf, message: String },
    #[error("{file}: field `{field}`: {message}")]
    BadConfig {
        file: PathBuf,
        field: String,
        message: String,
    },
    #[error("invalid model spec: {0}")]
    BadSpec(String),
    /// Capturing or replaying a CUDA graph failed, or this build has none.
    #[error("{0}")]
    CudaGraph(String),
    /// A stage's `precision` that its backend cannot run.
    #[error("`precision: {precision}` {why}")]
    Precision { precision: String, why: String },
    #[error("unknown backend `{name}`; this build supports: {available}")]
    UnknownBackend { name: String, available: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
