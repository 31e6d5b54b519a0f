//! What to predict on: a task's own file (GLUE TSV, SuperGLUE JSONL; test files, or train and
//! dev files whose labels are then used for a score) or one text, read and tokenized by the
//! data stage's own readers and tokenization.

use std::path::{Path, PathBuf};

use lpeft_artifacts::dataset::{SplitTensors, Texts};
use lpeft_data::build::{Format, SplitSource, read_split};
use lpeft_data::encode::{EncodeConfig, encode_split_with};
use lpeft_data::example::{Example, Inputs, Label, RawSplit, Source};
use lpeft_data::registry::{Benchmark, Shape, TaskDef, TsvLayout};
use lpeft_tokenizer::Tokenizer;

use crate::PredictError;
use crate::load::TextSettings;

/// Examples to predict, with the id a submission gives each back.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub raw: RawSplit,
    /// One per example: GLUE's `index`, SuperGLUE's `idx`, else the example's number from 0.
    pub ids: Vec<String>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

impl Input {
    pub fn labeled(&self) -> bool {
        self.raw.labeled()
    }
}

/// What an input file of `task` must look like, for error messages.
pub fn expected_layout(task: &TaskDef) -> String {
    match (task.benchmark, task.tsv) {
        (Benchmark::Glue, Some(TsvLayout::ColaNoHeader)) => {
            "CoLA's test layout (a header `index<TAB>sentence`) or its train/dev layout (no header; source, label, mark, sentence)".into()
        }
        (Benchmark::Glue, Some(TsvLayout::Header {
            first,
            second,
            label,
        })) => format!(
            "a tab-separated file with a header naming `{first}`{}, optionally `index` and `{label}`, as {}/test.tsv",
            second.map_or(String::new(), |s| format!(" and `{s}`")),
            task.dir
        ),
        (Benchmark::SuperGlue, _) => format!(
            "JSON lines with the fields {}, optionally `idx` and `label`, as {}/test.jsonl",
            task.inputs.join(", "),
            task.dir
        ),
        (Benchmark::Squad, _) => "SQuAD v1.1 JSON as the official dev-v1.1.json: `{\"data\": [{\"paragraphs\": [{\"context\", \"qas\": [{\"id\", \"question\", \"answers\" optional}]}]}]}`".into(),
        _ => "a file of a task that predict does not read yet".into(),
    }
}

/// Reads `path` as an input file of `task`.
pub fn read_file(task: &TaskDef, path: &Path) -> Result<Input, PredictError> {
    let format = match task.benchmark {
        Benchmark::Glue => Format::Tsv,
        Benchmark::SuperGlue => Format::Jsonl,
        Benchmark::Squad => Format::SquadJson,
    };
    if matches!(task.shape, Shape::AnswerOptions | Shape::Candidates) {
        return Err(PredictError::Unsupported(format!(
            "{}: predictions for MultiRC and ReCoRD (answer options and candidates grouped per question) are not written yet",
            task.name
        )));
    }
    let wrong = |source| PredictError::Input {
        path: path.to_owned(),
        task: task.name.to_owned(),
        expected: expected_layout(task),
        source: Box::new(source),
    };
    let text_start = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .map_err(|e| lpeft_data::DataError::Io {
            path: path.to_owned(),
            source: e,
        })?;
    // The readers take the label column as optional in test files; CoLA's train and dev files
    // (no header) always have one.
    let split = match task.tsv {
        Some(TsvLayout::ColaNoHeader) if !lpeft_data::ids::cola_has_header(&text_start) => "dev",
        _ => "test",
    };
    let src = SplitSource {
        split: split.to_owned(),
        source: Source {
            path: path.to_owned(),
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
        },
        format,
    };
    let raw = read_split(task, &src).map_err(wrong)?;
    let ids = match format {
        // The question ids, as the official predictions file keys its answers.
        Format::SquadJson => raw
            .examples
            .iter()
            .map(|e| match &e.inputs {
                Inputs::Span { id, .. } => id.clone(),
                Inputs::Rows(_) => e.source_row.to_string(),
            })
            .collect(),
        _ => lpeft_data::ids::example_ids(task, path, format).map_err(wrong)?,
    };
    if ids.len() != raw.examples.len() {
        return Err(PredictError::Bad {
            file: path.to_owned(),
            message: format!(
                "{} examples but {} ids were read",
                raw.examples.len(),
                ids.len()
            ),
        });
    }
    if raw.examples.is_empty() {
        return Err(PredictError::Bad {
            file: path.to_owned(),
            message: format!("no examples (expected {})", expected_layout(task)),
        });
    }
    Ok(Input {
        raw,
        ids,
        file: Some(path.to_owned()),
    })
}

/// One example from the command line: `text` (and `pair`), for the tasks whose encoder row is
/// their input fields as they are (GLUE, and BoolQ, CB and RTE of SuperGLUE).
pub fn one(task: &TaskDef, text: &str, pair: Option<&str>) -> Result<Input, PredictError> {
    let plain = task.benchmark == Benchmark::Glue
        || matches!(
            task.name,
            "superglue/boolq" | "superglue/cb" | "superglue/rte"
        );
    if !plain {
        return Err(PredictError::Unsupported(format!(
            "{}: its encoder rows are made from several fields; give an --input file ({})",
            task.name,
            expected_layout(task)
        )));
    }
    match (task.inputs, pair) {
        ([_], Some(_)) => {
            return Err(PredictError::Unsupported(format!(
                "{} takes one text ({}); leave out --pair",
                task.name, task.inputs[0]
            )));
        }
        ([first, second], None) => {
            return Err(PredictError::Unsupported(format!(
                "{} takes a pair: --text is its `{first}`, give --pair for its `{second}`",
                task.name
            )));
        }
        _ => {}
    }
    let raw = RawSplit {
        name: "text".into(),
        sources: Vec::new(),
        examples: vec![Example {
            source_row: 0,
            inputs: Inputs::Rows(vec![(text.to_owned(), pair.map(str::to_owned))]),
            label: Label::None,
            record: None,
        }],
        contexts: Vec::new(),
    };
    Ok(Input {
        raw,
        ids: vec!["0".into()],
        file: None,
    })
}

/// Tokenizes `input` as the data stage tokenized the model's training data (span tasks: the
/// same doc-stride windows, with their contexts and answers as [`Texts::Span`]).
/// `progress(done, total)` follows the examples.
pub fn tokenize(
    input: &Input,
    text: &TextSettings,
    progress: &dyn Fn(usize, usize),
) -> Result<(SplitTensors, Option<Texts>), PredictError> {
    let tokenizer = Tokenizer::from_file(&text.tokenizer)?;
    if tokenizer.content_hash() != text.tokenizer_blake3 {
        return Err(PredictError::Bad {
            file: text.tokenizer.clone(),
            message: format!(
                "blake3 {}, but the model was trained with tokens of {}",
                tokenizer.content_hash(),
                text.tokenizer_blake3
            ),
        });
    }
    let span = input
        .raw
        .examples
        .first()
        .is_some_and(|e| matches!(e.inputs, Inputs::Span { .. }));
    let (doc_stride, max_query_length) = match (text.doc_stride, text.max_query_length) {
        (Some(s), Some(q)) => (s, q),
        _ if span => {
            return Err(PredictError::Unsupported(
                "span input, but the model's dataset recorded no doc_stride and max_query_length (was it trained on a span task?)".into(),
            ));
        }
        // Unused outside span tasks.
        (s, q) => (s.unwrap_or(128), q.unwrap_or(64)),
    };
    let cfg = EncodeConfig {
        max_length: text.max_length,
        doc_stride,
        max_query_length,
    };
    let total = input.raw.examples.len();
    progress(0, total);
    Ok(encode_split_with(&input.raw, &tokenizer, cfg, &|done| {
        progress(done, total)
    })?)
}
