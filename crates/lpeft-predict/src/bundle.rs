//! The exported directory: a trained model that stands alone, outside the store.
//!
//! ```text
//! <dir>/model.json           the spec (per-layer shapes, PEFT ranks, head)
//! <dir>/weights.safetensors  every tensor under its module path (our checkpoint)
//! <dir>/tokenizer.json       the tokenizer the training data was made with (or, for OPT's
//!                            GPT-2 BPE files, those files under their own names)
//! <dir>/task.json            the task, the tokenization settings, the batch size and origin
//! ```
//!
//! [`write`] makes one from a [`TrainedModel`] and its built model; [`read`] (through
//! [`TrainedModel::open`]) loads it back, so `lpeft predict --model DIR` gives the predictions
//! the fine-tune artifact gives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lpeft_model::Model;
use lpeft_model::checkpoint;
use lpeft_schema::dataset::TaskSpec;

use crate::PredictError;
use crate::load::{Base, Locations, Origin, TextSettings, TrainedModel};

pub const TASK_FILE: &str = "task.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Version of the directory layout; readers refuse others.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    format: u32,
    task: TaskSpec,
    tokenizer_blake3: String,
    max_length: usize,
    doc_stride: Option<usize>,
    max_query_length: Option<usize>,
    pad_id: u32,
    batch_size: usize,
    origin: Origin,
}

/// Writes `trained` (built as `model`) into the new directory `dir`, which must not exist: the
/// files go to a temporary directory beside it, renamed into place once complete.
pub fn write(trained: &TrainedModel, model: &Model, dir: &Path) -> Result<(), PredictError> {
    if dir.exists() {
        return Err(PredictError::Write {
            path: dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists already (an exported directory is never written over)",
            ),
        });
    }
    let name = dir
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = write_into(trained, model, &tmp).and_then(|()| {
        std::fs::rename(&tmp, dir).map_err(|source| PredictError::Write {
            path: dir.to_owned(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

pub(crate) fn write_into(
    trained: &TrainedModel,
    model: &Model,
    dir: &Path,
) -> Result<(), PredictError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PredictError::Write { path, source }
    };
    checkpoint::save(model, dir)?;
    if trained.text.tokenizer.is_dir() {
        // The files under the names they were hashed with: the directory hashes the same.
        let src = lpeft_tokenizer::TokenizerSource::locate(&trained.text.tokenizer)?;
        for f in src.files() {
            let to = dir.join(f.file_name().expect("a file"));
            std::fs::copy(&f, &to).map_err(io(&to))?;
        }
    } else {
        let tokenizer = dir.join(TOKENIZER_FILE);
        std::fs::copy(&trained.text.tokenizer, &tokenizer).map_err(io(&tokenizer))?;
    }
    let t = &trained.text;
    let meta = TaskFile {
        format: FORMAT,
        task: trained.task.clone(),
        tokenizer_blake3: t.tokenizer_blake3.clone(),
        max_length: t.max_length,
        doc_stride: t.doc_stride,
        max_query_length: t.max_query_length,
        pad_id: t.pad_id,
        batch_size: trained.batch_size,
        origin: trained.origin.clone(),
    };
    let file = dir.join(TASK_FILE);
    let text = serde_json::to_string_pretty(&meta).expect("task file serializes");
    std::fs::write(&file, text).map_err(io(&file))
}

/// Loads the exported directory `dir` (a `--tokenizer` in `at` is tried before its own).
pub fn read(dir: &Path, at: &Locations) -> Result<TrainedModel, PredictError> {
    let file = dir.join(TASK_FILE);
    if !dir.is_dir() {
        return Err(PredictError::Bad {
            file: dir.to_owned(),
            message: "no such directory (give a fine-tune artifact's key, or an exported model directory)".into(),
        });
    }
    if !file.is_file() {
        return Err(PredictError::Bad {
            file: dir.to_owned(),
            message: format!(
                "not an exported model directory (no {TASK_FILE}); give a fine-tune artifact's key, or a directory with {TASK_FILE}, {}, {} and {TOKENIZER_FILE}",
                checkpoint::SPEC_FILE,
                checkpoint::WEIGHTS_FILE
            ),
        });
    }
    let text = std::fs::read_to_string(&file).map_err(|e| lpeft_model::ModelError::io(&file, e))?;
    let meta: TaskFile = serde_json::from_str(&text).map_err(|e| PredictError::Bad {
        file: file.clone(),
        message: format!("line {}, column {}: {e}", e.line(), e.column()),
    })?;
    if meta.format != FORMAT {
        return Err(PredictError::Bad {
            file,
            message: format!("format {} (this build reads {FORMAT})", meta.format),
        });
    }
    let spec = checkpoint::read_spec(dir)?;
    let tokenizer = at.tokenizer.clone().unwrap_or_else(|| {
        let file = dir.join(TOKENIZER_FILE);
        if file.is_file() || !lpeft_tokenizer::gpt2::looks_like(dir) {
            file
        } else {
            dir.to_owned()
        }
    });
    Ok(TrainedModel {
        task: meta.task,
        spec,
        base: Base::Checkpoint {
            dir: dir.to_owned(),
        },
        trainable: None,
        text: TextSettings {
            tokenizer,
            tokenizer_blake3: meta.tokenizer_blake3,
            max_length: meta.max_length,
            doc_stride: meta.doc_stride,
            max_query_length: meta.max_query_length,
            pad_id: meta.pad_id,
        },
        batch_size: meta.batch_size,
        origin: meta.origin,
    })
}
