//! The leaderboards' test-submission files.
//!
//! - GLUE (gluebenchmark.com): `<Task>.tsv` with the header `index<TAB>prediction`, one line
//!   per example; labels as the task's files write them (`entailment`, `not_entailment`, `0`,
//!   `1`), STS-B a float. Names: CoLA, SST-2, MRPC, STS-B, QQP, MNLI-m, MNLI-mm, QNLI, RTE,
//!   WNLI, and AX (the diagnostic set, predicted by the MNLI model).
//! - SuperGLUE (super.gluebenchmark.com): `<Task>.jsonl`, one `{"idx": N, "label": ...}` per
//!   line: BoolQ and WiC `"true"`/`"false"`, WSC `"True"`/`"False"`, CB and RTE the class
//!   names, COPA the choice (0 or 1).
//! - SQuAD v1.1: `predictions.json`, the official evaluation script's input: one JSON object
//!   of question id → answer text (keys sorted, as the fine-tune's `best/predictions.json`).
//!
//! Files are written to a temporary file beside the target and renamed into place, and an
//! existing file is replaced only when asked.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use lpeft_data::registry::{Benchmark, TaskDef};

use crate::PredictError;
use crate::infer::Predicted;

/// The submission file's name for `task`, given the input file it predicts on (MNLI's
/// mismatched and diagnostic sets go to their own files).
pub fn file_name(task: &TaskDef, input: Option<&Path>) -> Result<String, PredictError> {
    let stem = input
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = match (task.benchmark, task.name) {
        (Benchmark::Glue, "glue/mnli") if stem.contains("mismatched") => "MNLI-mm",
        (Benchmark::Glue, "glue/mnli") if stem.contains("diagnostic") || stem == "ax" => "AX",
        (Benchmark::Glue, "glue/mnli") => "MNLI-m",
        (Benchmark::Glue, _) => task.dir,
        // The official evaluation script's predictions file.
        (Benchmark::Squad, _) => return Ok(SQUAD_FILE.to_owned()),
        (Benchmark::SuperGlue, "superglue/multirc" | "superglue/record") => {
            return Err(PredictError::Unsupported(format!(
                "{}: no submission format is written for it yet",
                task.name
            )));
        }
        (Benchmark::SuperGlue, _) => task.dir,
    };
    let ext = match task.benchmark {
        Benchmark::Glue => "tsv",
        _ => "jsonl",
    };
    Ok(format!("{name}.{ext}"))
}

/// Where to write: `output` itself, or the task's file name inside it when `output` is a
/// directory (or ends with `/`).
pub fn output_path(
    output: &Path,
    task: &TaskDef,
    input: Option<&Path>,
) -> Result<PathBuf, PredictError> {
    let dir_like = output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/');
    if dir_like {
        Ok(output.join(file_name(task, input)?))
    } else {
        Ok(output.to_path_buf())
    }
}

/// SQuAD's predictions file name (the fine-tune's `best/predictions.json` too).
pub const SQUAD_FILE: &str = "predictions.json";

/// The official SQuAD predictions file's content: `{id: answer}`, keys sorted, as the
/// fine-tune stage writes `best/predictions.json`.
pub fn render_answers(answers: &lpeft_eval::squad::SquadPredictions) -> String {
    serde_json::to_string_pretty(answers).expect("a map of strings serializes")
}

/// The label a submission writes for class `id`.
pub fn label_value(task: &TaskDef, id: i64) -> Result<Value, PredictError> {
    let class = usize::try_from(id).ok();
    let out_of_range = || {
        PredictError::Unsupported(format!(
            "{}: class {id} has no label (the task has {})",
            task.name,
            task.label_names.len()
        ))
    };
    let pick = |names: &[&str]| {
        class
            .and_then(|c| names.get(c))
            .map(|s| Value::String((*s).to_owned()))
            .ok_or_else(out_of_range)
    };
    match task.name {
        // The choice itself, as a number.
        "superglue/copa" => Ok(Value::from(id)),
        "superglue/wsc" => pick(task.label_names),
        _ => pick(task.raw_labels),
    }
}

/// The label's text in a TSV cell.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The submission file's content: one line per id.
pub fn render(
    task: &TaskDef,
    ids: &[String],
    predicted: &Predicted,
) -> Result<String, PredictError> {
    if ids.len() != predicted.len() {
        return Err(PredictError::Unsupported(format!(
            "{} ids but {} predictions",
            ids.len(),
            predicted.len()
        )));
    }
    let labels: Vec<Value> = match predicted {
        Predicted::Class(c) => c
            .iter()
            .map(|&id| label_value(task, id))
            .collect::<Result<_, _>>()?,
        // Shortest text that reads back as the same f32.
        Predicted::Score(s) => s.iter().map(|&v| Value::String(v.to_string())).collect(),
    };
    let mut out = String::new();
    match task.benchmark {
        Benchmark::Glue => {
            out.push_str("index\tprediction\n");
            for (id, label) in ids.iter().zip(&labels) {
                out.push_str(&format!("{id}\t{}\n", cell(label)));
            }
        }
        _ => {
            for (id, label) in ids.iter().zip(&labels) {
                let idx = id
                    .parse::<i64>()
                    .map_or_else(|_| Value::from(id.clone()), Value::from);
                let line = serde_json::json!({ "idx": idx, "label": label });
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Writes `text` to `path` atomically (a temporary file in the same directory, renamed into
/// place). An existing `path` is an error unless `force`.
pub fn write(path: &Path, text: &str, force: bool) -> Result<(), PredictError> {
    if path.exists() && !force {
        return Err(PredictError::Exists {
            path: path.to_owned(),
        });
    }
    if path.is_dir() {
        return Err(PredictError::Write {
            path: path.to_owned(),
            source: std::io::Error::other("it is a directory"),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PredictError::Write { path: p, source }
    };
    std::fs::create_dir_all(&dir).map_err(err(&dir))?;
    let name = path.file_name().map_or_else(
        || "predictions".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpeft_data::registry::task;

    #[test]
    fn glue_files_have_an_index_column_and_the_tasks_label_strings() {
        let rte = task("glue/rte").unwrap();
        let ids = vec!["0".to_owned(), "1".to_owned()];
        let text = render(rte, &ids, &Predicted::Class(vec![1, 0])).unwrap();
        assert_eq!(
            text,
            "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
        );
        let mnli = task("glue/mnli").unwrap();
        let text = render(mnli, &ids, &Predicted::Class(vec![2, 1])).unwrap();
        assert_eq!(text, "index\tprediction\n0\tcontradiction\n1\tneutral\n");
        let cola = task("glue/cola").unwrap();
        let text = render(cola, &ids, &Predicted::Class(vec![1, 0])).unwrap();
        assert_eq!(text, "index\tprediction\n0\t1\n1\t0\n");
        let stsb = task("glue/stsb").unwrap();
        let text = render(stsb, &ids, &Predicted::Score(vec![3.25, 0.1])).unwrap();
        assert_eq!(text, "index\tprediction\n0\t3.25\n1\t0.1\n");
        assert!(render(rte, &ids, &Predicted::Class(vec![2, 0])).is_err());
    }

    #[test]
    fn superglue_files_are_json_lines_with_idx_and_label() {
        let ids = vec!["0".to_owned(), "7".to_owned()];
        let render_as = |name: &str, p: Vec<i64>| {
            render(task(name).unwrap(), &ids, &Predicted::Class(p)).unwrap()
        };
        assert_eq!(
            render_as("superglue/boolq", vec![1, 0]),
            "{\"idx\":0,\"label\":\"true\"}\n{\"idx\":7,\"label\":\"false\"}\n"
        );
        assert_eq!(
            render_as("superglue/wsc", vec![1, 0]),
            "{\"idx\":0,\"label\":\"True\"}\n{\"idx\":7,\"label\":\"False\"}\n"
        );
        assert_eq!(
            render_as("superglue/copa", vec![1, 0]),
            "{\"idx\":0,\"label\":1}\n{\"idx\":7,\"label\":0}\n"
        );
        assert_eq!(
            render_as("superglue/cb", vec![2, 1]),
            "{\"idx\":0,\"label\":\"neutral\"}\n{\"idx\":7,\"label\":\"contradiction\"}\n"
        );
    }

    #[test]
    fn file_names_follow_the_leaderboards() {
        let name = |t: &str, input: &str| file_name(task(t).unwrap(), Some(Path::new(input)));
        assert_eq!(name("glue/sst2", "x/test.tsv").unwrap(), "SST-2.tsv");
        assert_eq!(name("glue/stsb", "test.tsv").unwrap(), "STS-B.tsv");
        assert_eq!(name("glue/mnli", "test_matched.tsv").unwrap(), "MNLI-m.tsv");
        assert_eq!(
            name("glue/mnli", "test_mismatched.tsv").unwrap(),
            "MNLI-mm.tsv"
        );
        assert_eq!(name("glue/mnli", "diagnostic.tsv").unwrap(), "AX.tsv");
        assert_eq!(name("superglue/wic", "test.jsonl").unwrap(), "WiC.jsonl");
        assert!(name("superglue/multirc", "test.jsonl").is_err());
        assert_eq!(
            name("squad/v1.1", "dev-v1.1.json").unwrap(),
            "predictions.json"
        );
    }

    #[test]
    fn writing_is_atomic_and_never_replaces_a_file_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let out = output_path(dir.path(), task("glue/rte").unwrap(), None).unwrap();
        assert_eq!(out, dir.path().join("RTE.tsv"));
        write(&out, "first\n", false).unwrap();
        let e = write(&out, "second\n", false).unwrap_err().to_string();
        assert!(e.contains("RTE.tsv") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\n");
        write(&out, "second\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "second\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["RTE.tsv"], "no temporary file left");
        let nested = dir.path().join("new/sub/");
        let out = output_path(&nested, task("superglue/cb").unwrap(), None).unwrap();
        write(&out, "x\n", false).unwrap();
        assert!(nested.join("CB.jsonl").is_file());
    }
}
