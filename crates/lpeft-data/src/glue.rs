//! GLUE readers: `<TASK>/{train,dev,test}.tsv` as the GLUE download script writes them.
//!
//! Files are read with quoting disabled (rows contain unbalanced `"`), tab-separated, with a
//! flexible row width so that short rows are reported here with their line. CoLA train/dev have
//! no header; MRPC's header starts with a UTF-8 byte-order mark; test files have no label column.
//!
//! Decided for malformed rows (none occur in the official files): a row with more columns than
//! the header (or CoLA's four) is an error, since a tab inside a text would shift the label
//! column silently; a NUL byte is an error (a binary or UTF-16 file); an STS-B score outside
//! 0–5 is read as it is, with a warning naming the line.

use std::path::Path;

use crate::error::DataError;
use crate::example::{Example, Inputs, Label};
use crate::registry::{COLA_TEST, Shape, TaskDef, TsvLayout};

/// Read one GLUE split file into examples.
pub fn read_tsv(task: &TaskDef, path: &Path, split: &str) -> Result<Vec<Example>, DataError> {
    let layout = match task.tsv {
        Some(TsvLayout::ColaNoHeader) if split.starts_with("test") => COLA_TEST,
        Some(l) => l,
        None => {
            return Err(DataError::Params(format!(
                "task {} is not read from TSV files",
                task.name
            )));
        }
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .quoting(false)
        .flexible(true)
        .has_headers(false)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, file));

    let mut records = reader.records();
    // Column positions: (first, second, label); label None when the file has no label column.
    let (width, first, second, label) = match layout {
        TsvLayout::ColaNoHeader => (4, 3, None, Some(1)),
        TsvLayout::Header {
            first,
            second,
            label,
        } => {
            let header = match records.next() {
                Some(r) => r.map_err(|e| csv_error(path, e))?,
                None => {
                    return Err(DataError::MissingColumn {
                        path: path.to_owned(),
                        line: 1,
                        column: first.to_owned(),
                        header: "(empty file)".to_owned(),
                    });
                }
            };
            let names: Vec<&str> = header
                .iter()
                .map(|h| h.trim_start_matches('\u{feff}').trim())
                .collect();
            let find = |col: &str| names.iter().position(|n| *n == col);
            let missing = |col: &str| DataError::MissingColumn {
                path: path.to_owned(),
                line: 1,
                column: col.to_owned(),
                header: names.join(", "),
            };
            let f = find(first).ok_or_else(|| missing(first))?;
            let s = match second {
                Some(c) => Some(find(c).ok_or_else(|| missing(c))?),
                None => None,
            };
            let l = if split.starts_with("test") {
                find(label)
            } else {
                Some(find(label).ok_or_else(|| missing(label))?)
            };
            (names.len(), f, s, l)
        }
    };

    let mut examples = Vec::new();
    for record in records {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() < width {
            // A trailing empty line is not a row.
            if record.len() == 1 && record.get(0) == Some("") {
                continue;
            }
            return Err(DataError::ShortRow {
                path: path.to_owned(),
                line,
                expected: width,
                found: record.len(),
            });
        }
        if record.len() > width {
            return Err(DataError::LongRow {
                path: path.to_owned(),
                line,
                expected: width,
                found: record.len(),
            });
        }
        if let Some(column) = record.iter().position(|f| f.contains('\0')) {
            return Err(DataError::BadRow {
                path: path.to_owned(),
                line,
                message: format!(
                    "column {} holds a NUL byte (GLUE files are UTF-8 text; is this a binary or UTF-16 file?)",
                    column + 1
                ),
            });
        }
        let text_a = record[first].to_owned();
        let text_b = second.map(|i| record[i].to_owned());
        let label = match label {
            None => Label::None,
            Some(i) => parse_label(task, path, line, &record[i])?,
        };
        examples.push(Example {
            source_row: examples.len() as u32,
            inputs: Inputs::Rows(vec![(text_a, text_b)]),
            label,
            record: None,
        });
    }
    Ok(examples)
}

fn parse_label(task: &TaskDef, path: &Path, line: u64, value: &str) -> Result<Label, DataError> {
    match task.shape {
        Shape::Regression => {
            let score = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| DataError::BadValue {
                    path: path.to_owned(),
                    line,
                    field: "score".to_owned(),
                    value: value.to_owned(),
                    expected: "a number".to_owned(),
                })?;
            if let Some((lo, hi)) =
                score_range(task).filter(|(lo, hi)| !(*lo..=*hi).contains(&score))
            {
                tracing::warn!(
                    "{}:{line}: {} score {score} is outside {lo}–{hi}; read as it is",
                    path.display(),
                    task.name
                );
            }
            Ok(Label::Float(score))
        }
        _ => class_id(task, path, line, value).map(Label::Class),
    }
}

/// The range a task's gold scores are defined on, where it has one (STS-B: 0 to 5).
fn score_range(task: &TaskDef) -> Option<(f32, f32)> {
    (task.name == "glue/stsb").then_some((0.0, 5.0))
}

/// The class id of a raw label value, or an error naming the values the task accepts.
pub(crate) fn class_id(
    task: &TaskDef,
    path: &Path,
    line: u64,
    value: &str,
) -> Result<i64, DataError> {
    task.raw_labels
        .iter()
        .position(|l| *l == value.trim())
        .map(|i| i as i64)
        .ok_or_else(|| DataError::UnknownLabel {
            path: path.to_owned(),
            line,
            value: value.to_owned(),
            expected: task.raw_labels.join(", "),
        })
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::io(path, source),
        csv::ErrorKind::Utf8 { err, .. } => DataError::BadRow {
            path: path.to_owned(),
            line,
            message: format!("invalid UTF-8: {err}"),
        },
        other => DataError::BadRow {
            path: path.to_owned(),
            line,
            message: format!("{other:?}"),
        },
    }
}
