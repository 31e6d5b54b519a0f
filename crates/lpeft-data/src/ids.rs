//! The ids that leaderboard submissions give back per example: GLUE's `index` column (QQP's
//! `id`), SuperGLUE's `idx` field. One id per example the readers return, in their order; a
//! file without ids (a GLUE train or dev file) numbers its examples from 0.

use std::path::Path;

use serde_json::Value;

use crate::build::Format;
use crate::error::DataError;
use crate::registry::{Shape, TaskDef, TsvLayout};

/// The id of every example [`crate::build::read_split`] reads from `path`, in order. For
/// SuperGLUE only tasks with one example per line have one (MultiRC and ReCoRD nest theirs).
pub fn example_ids(task: &TaskDef, path: &Path, format: Format) -> Result<Vec<String>, DataError> {
    match format {
        Format::Tsv => tsv_ids(task, path),
        Format::Jsonl => jsonl_ids(task, path),
        Format::SquadJson | Format::Parquet => Err(DataError::Params(format!(
            "{}: example ids are read from GLUE TSV and SuperGLUE JSONL files only",
            path.display()
        ))),
    }
}

/// The `index` (or `id`) column of a GLUE file with a header, else row numbers from 0. Rows
/// are counted as [`crate::glue::read_tsv`] counts them (a trailing empty line is no row).
fn tsv_ids(task: &TaskDef, path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let has_header = !matches!(task.tsv, Some(TsvLayout::ColaNoHeader)) || cola_has_header(&text);
    let column = if has_header {
        let header = lines.next().unwrap_or("");
        header
            .split('\t')
            .map(|h| h.trim_start_matches('\u{feff}').trim())
            .position(|h| h == "index" || h == "id")
    } else {
        None
    };
    let mut ids = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let id = match column {
            Some(c) => line
                .split('\t')
                .nth(c)
                .ok_or_else(|| DataError::ShortRow {
                    path: path.to_owned(),
                    line: (i + 1 + usize::from(has_header)) as u64,
                    expected: c + 1,
                    found: line.split('\t').count(),
                })?
                .trim()
                .to_owned(),
            None => ids.len().to_string(),
        };
        ids.push(id);
    }
    Ok(ids)
}

/// CoLA's train and dev files have no header; its test file has `index  sentence`.
pub fn cola_has_header(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .split(['\t', '\n'])
        .next()
        .is_some_and(|first| first.trim() == "index")
}

/// The `idx` field of every line (the line's number from 0 where it has none).
fn jsonl_ids(task: &TaskDef, path: &Path) -> Result<Vec<String>, DataError> {
    if matches!(task.shape, Shape::AnswerOptions | Shape::Candidates) {
        return Err(DataError::Params(format!(
            "{}: {} nests its ids per question; only tasks with one example per line have one id per example",
            path.display(),
            task.name
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| DataError::BadJson {
            path: path.to_owned(),
            line: i as u64 + 1,
            message: e.to_string(),
        })?;
        let id = match value.get("idx") {
            None | Some(Value::Null) => ids.len().to_string(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(other) => {
                return Err(DataError::BadValue {
                    path: path.to_owned(),
                    line: i as u64 + 1,
                    field: "idx".to_owned(),
                    value: other.to_string(),
                    expected: "an integer".to_owned(),
                });
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::task;

    fn ids(task_name: &str, name: &str, text: &str, format: Format) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        example_ids(task(task_name).unwrap(), &path, format).unwrap()
    }

    #[test]
    fn glue_ids_come_from_the_index_column_or_count_rows() {
        let test = "index\tsentence1\tsentence2\n7\ta\tb\n9\tc\td\n";
        assert_eq!(ids("glue/rte", "t.tsv", test, Format::Tsv), ["7", "9"]);
        let qqp = "id\tquestion1\tquestion2\r\n3\ta\tb\r\n";
        assert_eq!(ids("glue/qqp", "t.tsv", qqp, Format::Tsv), ["3"]);
        let dev = "sentence\tlabel\nx\t1\ny\t0\n\n";
        assert_eq!(ids("glue/sst2", "d.tsv", dev, Format::Tsv), ["0", "1"]);
        let cola_dev = "gj04\t1\t\tA sentence.\ngj04\t0\t*\tOther.\n";
        assert_eq!(ids("glue/cola", "d.tsv", cola_dev, Format::Tsv), ["0", "1"]);
        let cola_test = "index\tsentence\n0\tA.\n1\tB.\n";
        assert_eq!(
            ids("glue/cola", "t.tsv", cola_test, Format::Tsv),
            ["0", "1"]
        );
    }

    #[test]
    fn superglue_ids_come_from_idx() {
        let text = "{\"idx\": 4, \"question\": \"q\"}\n\n{\"question\": \"r\", \"idx\": 5}\n";
        let got = ids("superglue/boolq", "t.jsonl", text, Format::Jsonl);
        assert_eq!(got, ["4", "5"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"idx\": \"x\"}\n").unwrap();
        let e = example_ids(task("superglue/cb").unwrap(), &path, Format::Jsonl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.jsonl:1") && e.contains("idx"), "{e}");
    }
}
