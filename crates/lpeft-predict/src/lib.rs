//! lpeft-predict: a trained model put to use.
//!
//! - [`load`]: a fine-tune artifact (or an exported directory, [`bundle`]) resolved into a
//!   [`TrainedModel`]: its spec, where its frozen weights and its trained tensors are, the task,
//!   and the tokenizer settings of the dataset it was trained on; [`TrainedModel::build`] puts
//!   the model on a device. Export reuses the same loading.
//! - [`input`]: a task's own files (GLUE TSV, SuperGLUE JSONL, SQuAD v1.1 JSON; labels or
//!   answers optional) or one text, read and tokenized by the data stage's own readers and
//!   tokenization (SQuAD: the same doc-stride windows).
//! - [`infer`]: batched predictions in eval mode, batched as the fine-tune's dev evaluation
//!   was, so a dev file gives back the fine-tune's dev score exactly; scores when the input
//!   has labels. Span tasks: answers per question decoded as the fine-tune decodes dev.
//! - [`export`]: `lpeft export`, the model in Hugging Face layouts: a PEFT adapter, a merged
//!   transformers directory, or a pruned one with its remote-code modeling file.
//! - [`submit`]: the leaderboards' test-submission files (GLUE `<Task>.tsv`, SuperGLUE
//!   `<Task>.jsonl`, SQuAD's official `predictions.json`), written atomically and never over
//!   an existing file unasked.
//!
//! Invariant: the tokens of an input are the ones the data stage would make of it (same
//! reader, tokenizer file checked by hash, `max_length`, truncation and pair handling), and a
//! model is rebuilt only from files whose hashes the store recorded.

pub mod bundle;
pub mod export;
pub mod infer;
pub mod input;
pub mod load;
pub mod submit;

use std::path::PathBuf;

pub use infer::{Answers, Predicted, Predictions, predict, predict_answers, score};
pub use input::Input;
pub use load::{Base, ModelRef, Origin, TextSettings, TrainedModel};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Store(#[from] lpeft_store::StoreError),
    #[error(transparent)]
    Model(#[from] lpeft_model::ModelError),
    #[error(transparent)]
    Artifact(#[from] lpeft_artifacts::estimation::ArtifactError),
    #[error(transparent)]
    Dataset(#[from] lpeft_artifacts::dataset::DatasetError),
    #[error(transparent)]
    Data(Box<lpeft_data::DataError>),
    #[error(transparent)]
    Tokenizer(#[from] lpeft_tokenizer::TokenizerError),
    #[error(transparent)]
    Eval(#[from] lpeft_eval::EvalError),
    #[error(
        "artifact {key} is a `{kind}` artifact, not a fine-tune: give the key of a `finetune` stage (`lpeft plan FILE` lists them)"
    )]
    NotFinetune { key: String, kind: String },
    /// A file the model was made from is not where it was, nor anywhere else tried.
    #[error("{what} not found: {tried}{hint}")]
    MissingFile {
        what: String,
        tried: String,
        hint: String,
    },
    /// An input file that does not read as the task's layout.
    #[error("{path} is not a {task} input ({expected}): {source}")]
    Input {
        path: PathBuf,
        task: String,
        expected: String,
        #[source]
        source: Box<lpeft_data::DataError>,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path} exists: give --force to replace it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Bad { file: PathBuf, message: String },
}

impl From<lpeft_data::DataError> for PredictError {
    fn from(e: lpeft_data::DataError) -> Self {
        PredictError::Data(Box::new(e))
    }
}
