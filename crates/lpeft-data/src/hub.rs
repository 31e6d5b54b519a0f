//! Download of a task's parquet files from the Hugging Face hub, and their reading.
//!
//! URL layout: `{endpoint}/datasets/{repo}/resolve/{revision}/{config}/{split}-00000-of-00001.parquet`,
//! endpoint from `HF_ENDPOINT` (default `https://huggingface.co`), token from `HF_TOKEN` if set.
//! Files are cached under `{cache}/{repo}/{revision}/{path}` and not fetched again; the stage
//! hashes their content, so a moved revision gives a new key.

use std::io::Write;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};

use crate::error::DataError;
use crate::example::{Example, Inputs, Label};
use crate::registry::{Benchmark, Shape, TaskDef};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Default dataset repository of a benchmark on the hub.
pub fn default_repo(task: &TaskDef) -> &'static str {
    match task.benchmark {
        Benchmark::Glue => "nyu-mll/glue",
        Benchmark::SuperGlue => "aps/super_glue",
        Benchmark::Squad => "rajpurkar/squad",
    }
}

/// Path of a split's parquet file inside the dataset repository.
pub fn hub_path(task: &TaskDef, split: &str) -> String {
    hub_path_with(DEFAULT_PATH_PATTERN, task, split)
}

pub const DEFAULT_PATH_PATTERN: &str = "{config}/{split}-00000-of-00001.parquet";

/// A path pattern with `{config}` and `{split}` filled in.
pub fn hub_path_with(pattern: &str, task: &TaskDef, split: &str) -> String {
    pattern
        .replace("{config}", task.hub_config)
        .replace("{split}", &task.hub_split(split))
}

pub fn endpoint_from_env() -> String {
    endpoint_from(&|name| std::env::var(name).ok())
}

/// The endpoint given an environment lookup: `HF_ENDPOINT` if set and non-empty.
pub fn endpoint_from(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("HF_ENDPOINT")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
}

/// Default download cache: `LPEFT_HUB_CACHE`, else `$HOME/.cache/lpeft/hub`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LPEFT_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/lpeft/hub")
}

/// Fetch `{repo}/{path}` at `revision` into the cache unless it is there already; returns
/// the local path.
pub fn fetch(
    endpoint: &str,
    repo: &str,
    revision: &str,
    path: &str,
    cache: &Path,
) -> Result<PathBuf, DataError> {
    let local = cache.join(repo).join(revision).join(path);
    if local.is_file() {
        return Ok(local);
    }
    let url = format!(
        "{}/datasets/{repo}/resolve/{revision}/{path}",
        endpoint.trim_end_matches('/')
    );
    let fail = |message: String| DataError::Download {
        url: url.clone(),
        message,
    };
    let mut request = ureq::get(&url);
    if let Ok(token) = std::env::var("HF_TOKEN")
        && !token.is_empty()
    {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let response = request.call().map_err(|e| fail(e.to_string()))?;
    let parent = local.parent().expect("cache path has a parent");
    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    let tmp = local.with_extension("part");
    let mut file = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let mut body = response.into_body().into_reader();
    std::io::copy(&mut body, &mut file).map_err(|e| fail(e.to_string()))?;
    file.flush().map_err(|e| DataError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &local).map_err(|e| DataError::io(&local, e))?;
    Ok(local)
}

/// All rows of a parquet file as JSON objects (the record API; nested columns become nested
/// objects and arrays).
pub fn read_parquet_rows(path: &Path) -> Result<Vec<Map<String, Value>>, DataError> {
    let bad = |message: String| DataError::Parquet {
        path: path.to_owned(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let rows = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| DataError::BadRow {
            path: path.to_owned(),
            line: i as u64 + 1,
            message: e.to_string(),
        })?;
        match row.to_json_value() {
            Value::Object(o) => out.push(o),
            other => return Err(bad(format!("row {} is not a record: {other}", i + 1))),
        }
    }
    Ok(out)
}

/// Examples of a task from its hub parquet file (and SQuAD's contexts).
pub fn read_hub_split(
    task: &TaskDef,
    path: &Path,
) -> Result<(Vec<Example>, Vec<String>), DataError> {
    let rows = read_parquet_rows(path)?;
    match task.benchmark {
        Benchmark::SuperGlue => Ok((
            crate::superglue::from_hub_rows(task, &rows, path)?,
            Vec::new(),
        )),
        Benchmark::Glue => Ok((glue_rows(task, &rows, path)?, Vec::new())),
        Benchmark::Squad => crate::squad::from_hub_rows(&rows, path),
    }
}

pub(crate) fn glue_rows(
    task: &TaskDef,
    rows: &[Map<String, Value>],
    path: &Path,
) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, obj) in rows.iter().enumerate() {
        let loc = crate::superglue::Loc {
            path,
            line: i as u64 + 1,
        };
        let first = loc.str(obj, task.inputs[0])?.to_owned();
        let second = match task.inputs.get(1) {
            Some(f) => Some(loc.str(obj, f)?.to_owned()),
            None => None,
        };
        let label = match (task.shape, obj.get("label")) {
            (_, None | Some(Value::Null)) => Label::None,
            (Shape::Regression, Some(v)) => {
                let f = v.as_f64().ok_or_else(|| DataError::BadValue {
                    path: path.to_owned(),
                    line: loc.line,
                    field: "label".to_owned(),
                    value: v.to_string(),
                    expected: "a number".to_owned(),
                })?;
                // The hub writes -1 for unlabeled STS-B test rows.
                if f < 0.0 {
                    Label::None
                } else {
                    Label::Float(f as f32)
                }
            }
            (_, Some(v)) => match v.as_i64() {
                Some(-1) => Label::None,
                Some(id) if (0..task.num_labels() as i64).contains(&id) => Label::Class(id),
                _ => {
                    return Err(DataError::UnknownLabel {
                        path: path.to_owned(),
                        line: loc.line,
                        value: v.to_string(),
                        expected: format!("a class id 0..{} or -1", task.num_labels()),
                    });
                }
            },
        };
        out.push(Example {
            source_row: i as u32,
            inputs: Inputs::Rows(vec![(first, second)]),
            label,
            record: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_comes_from_hf_endpoint() {
        assert_eq!(endpoint_from(&|_| None), "https://huggingface.co");
        assert_eq!(
            endpoint_from(&|_| Some(String::new())),
            "https://huggingface.co"
        );
        let local = |n: &str| (n == "HF_ENDPOINT").then(|| "http://127.0.0.1:9".to_owned());
        assert_eq!(endpoint_from(&local), "http://127.0.0.1:9");
    }

    #[test]
    fn hub_paths_follow_the_parquet_layout() {
        let mnli = crate::registry::task("glue/mnli").unwrap();
        assert_eq!(
            hub_path(mnli, "dev"),
            "mnli/validation_matched-00000-of-00001.parquet"
        );
        assert_eq!(
            hub_path(mnli, "dev_mismatched"),
            "mnli/validation_mismatched-00000-of-00001.parquet"
        );
        let boolq = crate::registry::task("superglue/boolq").unwrap();
        assert_eq!(
            hub_path(boolq, "train"),
            "boolq/train-00000-of-00001.parquet"
        );
        assert_eq!(default_repo(boolq), "aps/super_glue");
        assert_eq!(
            hub_path_with("{config}/{split}/0000.parquet", boolq, "dev"),
            "boolq/validation/0000.parquet"
        );
    }
}
