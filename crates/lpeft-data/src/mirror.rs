//! GLUE from the Hugging Face hub, written in the official local layout (`lpeft fetch-data`):
//! each split's parquet file is downloaded into the hub cache ([`crate::hub::fetch`]) and
//! written as `<out>/<TASK>/<file>.tsv` the way [`crate::glue::read_tsv`] reads it, so that
//! `GLUE_DIR=<out>` serves every pipeline and the test files (with their `index` column) serve
//! `lpeft predict`. The examples read back from the TSV are the ones the hub's parquet file
//! holds (text, label id or score); a text holding a tab or a line break cannot be written as
//! TSV and is refused with its row.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::DataError;
use crate::example::{Inputs, Label};
use crate::registry::{Benchmark, TaskDef, TsvLayout};

/// Where the hub files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSource {
    pub endpoint: String,
    /// `nyu-mll/glue` when absent.
    pub repo: Option<String>,
    pub revision: String,
    pub cache: PathBuf,
}

impl HubSource {
    /// `HF_ENDPOINT` (or the hub), the `main` revision, `LPEFT_HUB_CACHE` (or the default cache).
    pub fn from_env() -> HubSource {
        HubSource {
            endpoint: crate::hub::endpoint_from_env(),
            repo: None,
            revision: "main".to_owned(),
            cache: crate::hub::default_cache_dir(),
        }
    }
}

/// What happened to one split file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    pub path: PathBuf,
    /// Examples written; `None` when the file was there already and kept.
    pub rows: Option<usize>,
}

/// The local file a split of `task` is mirrored to under `out`.
pub fn local_path(task: &TaskDef, split: &str, out: &Path) -> PathBuf {
    out.join(task.dir).join(task.local_file(split))
}

/// Mirrors one split of a GLUE task into `out` (the GLUE root). An existing file is kept
/// unless `force`.
pub fn mirror_split(
    task: &TaskDef,
    split: &str,
    hub: &HubSource,
    out: &Path,
    force: bool,
) -> Result<Mirrored, DataError> {
    if task.benchmark != Benchmark::Glue {
        return Err(DataError::Params(format!(
            "{}: only GLUE tasks are mirrored into the local layout",
            task.name
        )));
    }
    task.check_split(split)?;
    let path = local_path(task, split, out);
    if path.is_file() && !force {
        return Ok(Mirrored { path, rows: None });
    }
    let repo = hub
        .repo
        .clone()
        .unwrap_or_else(|| crate::hub::default_repo(task).to_owned());
    let remote = crate::hub::hub_path(task, split);
    let parquet = crate::hub::fetch(&hub.endpoint, &repo, &hub.revision, &remote, &hub.cache)?;
    let rows = crate::hub::read_parquet_rows(&parquet)?;
    let text = to_tsv(task, split, &rows, &parquet)?;
    write_atomic(&path, text.as_bytes())?;
    Ok(Mirrored {
        path,
        rows: Some(rows.len()),
    })
}

/// The TSV text of a split's hub rows.
pub fn to_tsv(
    task: &TaskDef,
    split: &str,
    rows: &[serde_json::Map<String, Value>],
    parquet: &Path,
) -> Result<String, DataError> {
    let examples = crate::hub::glue_rows(task, rows, parquet)?;
    let labeled = examples.first().is_some_and(|e| e.is_labeled());
    if let Some(e) = examples.iter().find(|e| e.is_labeled() != labeled) {
        return Err(DataError::Params(format!(
            "{}: row {} is {}, the first one is {}",
            parquet.display(),
            e.source_row + 1,
            if labeled { "unlabeled" } else { "labeled" },
            if labeled { "labeled" } else { "unlabeled" },
        )));
    }
    let no_header = task.tsv == Some(TsvLayout::ColaNoHeader) && !split.starts_with("test");
    let (first, second, label) = match task.tsv {
        Some(TsvLayout::Header {
            first,
            second,
            label,
        }) => (first, second, label),
        // CoLA's test file, and the column names of its header-less train and dev files.
        Some(TsvLayout::ColaNoHeader) => ("sentence", None, "label"),
        None => {
            return Err(DataError::Params(format!(
                "task {} has no TSV layout",
                task.name
            )));
        }
    };
    let mut out = String::new();
    if !no_header {
        let mut header = vec!["index", first];
        header.extend(second);
        if labeled {
            header.push(label);
        }
        out.push_str(&header.join("\t"));
        out.push('\n');
    }
    for (e, row) in examples.iter().zip(rows) {
        let line = e.source_row as u64 + 1;
        let Inputs::Rows(inputs) = &e.inputs else {
            unreachable!("GLUE rows are single rows");
        };
        let (a, b) = &inputs[0];
        for text in std::iter::once(a).chain(b) {
            if text.contains(['\t', '\n', '\r', '\0']) {
                return Err(DataError::BadRow {
                    path: parquet.to_owned(),
                    line,
                    message: format!(
                        "a text holds a tab, line break or NUL, which a GLUE TSV file cannot: {text:?}"
                    ),
                });
            }
        }
        let label = match &e.label {
            Label::None => None,
            Label::Class(id) => Some(task.raw_labels[*id as usize].to_owned()),
            Label::Float(score) => Some(score.to_string()),
            other => unreachable!("GLUE label {other:?}"),
        };
        let cells: Vec<String> = if no_header {
            // source, label, original judgement mark, sentence.
            vec![
                "hub".to_owned(),
                label.clone().unwrap_or_default(),
                String::new(),
                a.clone(),
            ]
        } else {
            let index = match row.get("idx") {
                Some(Value::Number(n)) => n.to_string(),
                _ => e.source_row.to_string(),
            };
            let mut cells = vec![index, a.clone()];
            cells.extend(b.clone());
            cells.extend(label);
            cells
        };
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    Ok(out)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place: a reader sees
/// the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::task;

    fn rows(json: &str) -> Vec<serde_json::Map<String, Value>> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rows_become_the_files_the_readers_read() {
        let rte = task("glue/rte").unwrap();
        let train = rows(
            r#"[{"sentence1": "A b.", "sentence2": "C.", "label": 1, "idx": 0},
                {"sentence1": "D.", "sentence2": "E f.", "label": 0, "idx": 1}]"#,
        );
        let text = to_tsv(rte, "train", &train, Path::new("x.parquet")).unwrap();
        assert_eq!(
            text,
            "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC.\tnot_entailment\n1\tD.\tE f.\tentailment\n"
        );
        let test = rows(r#"[{"sentence1": "A.", "sentence2": "B.", "label": -1, "idx": 3}]"#);
        let text = to_tsv(rte, "test", &test, Path::new("x.parquet")).unwrap();
        assert_eq!(text, "index\tsentence1\tsentence2\n3\tA.\tB.\n");

        let cola = task("glue/cola").unwrap();
        let dev = rows(r#"[{"sentence": "It rains.", "label": 1, "idx": 0}]"#);
        let text = to_tsv(cola, "dev", &dev, Path::new("x.parquet")).unwrap();
        assert_eq!(text, "hub\t1\t\tIt rains.\n");
        let test = rows(r#"[{"sentence": "It rains.", "label": -1, "idx": 0}]"#);
        let text = to_tsv(cola, "test", &test, Path::new("x.parquet")).unwrap();
        assert_eq!(text, "index\tsentence\n0\tIt rains.\n");

        let stsb = task("glue/stsb").unwrap();
        let dev = rows(r#"[{"sentence1": "a", "sentence2": "b", "label": 3.8, "idx": 0}]"#);
        let text = to_tsv(stsb, "dev", &dev, Path::new("x.parquet")).unwrap();
        assert_eq!(text, "index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.8\n");
    }

    #[test]
    fn a_text_with_a_tab_is_refused_with_its_row() {
        let sst2 = task("glue/sst2").unwrap();
        let bad = rows(
            r#"[{"sentence": "fine", "label": 1, "idx": 0}, {"sentence": "a\tb", "label": 0, "idx": 1}]"#,
        );
        let e = to_tsv(sst2, "train", &bad, Path::new("t.parquet"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.parquet:2") && e.contains("tab"), "{e}");
    }
}
