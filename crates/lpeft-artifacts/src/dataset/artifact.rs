//! The dataset artifact on disk: `dataset.json` (a [`DatasetMeta`]) plus, per split,
//! `<split>.safetensors` with flat little-endian arrays and, for SQuAD and ReCoRD,
//! `<split>.texts.json`.
//!
//! Arrays of `<split>.safetensors` (N rows, T tokens, G groups):
//! - `input_ids` u32 `[T]`, `type_ids` u8 `[T]`, `offsets` u64 `[N+1]`;
//! - `group_ids` u32 `[N]`, `example_ids` u32 `[G]`;
//! - `labels`: i64 `[N]` (classification), f32 `[N]` (regression), i64 `[G]` (multiple
//!   choice), i64 `[N, 2]` (span); absent for unlabeled splits;
//! - `token_spans` u32 `[T, 2]` (span tasks only).
//!
//! The attention mask is implied by the row lengths; the batcher materialises it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lpeft_schema::dataset::{
    ArrayMeta, DATASET_FORMAT_VERSION, DatasetMeta, RecordTexts, SpanTexts, SplitMeta, TaskKind,
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::error::DatasetError as DataError;
use super::{Labels, SplitTensors, Texts};

pub const META_FILE: &str = "dataset.json";

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * N);
    for &x in v {
        out.extend_from_slice(&f(x));
    }
    out
}

struct Array {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn arrays(t: &SplitTensors) -> Vec<Array> {
    let mut out = vec![
        Array {
            name: "input_ids",
            dtype: Dtype::U32,
            shape: vec![t.input_ids.len()],
            bytes: le_bytes(&t.input_ids, u32::to_le_bytes),
        },
        Array {
            name: "type_ids",
            dtype: Dtype::U8,
            shape: vec![t.type_ids.len()],
            bytes: t.type_ids.clone(),
        },
        Array {
            name: "offsets",
            dtype: Dtype::U64,
            shape: vec![t.offsets.len()],
            bytes: le_bytes(&t.offsets, u64::to_le_bytes),
        },
        Array {
            name: "group_ids",
            dtype: Dtype::U32,
            shape: vec![t.group_ids.len()],
            bytes: le_bytes(&t.group_ids, u32::to_le_bytes),
        },
        Array {
            name: "example_ids",
            dtype: Dtype::U32,
            shape: vec![t.example_ids.len()],
            bytes: le_bytes(&t.example_ids, u32::to_le_bytes),
        },
    ];
    match &t.labels {
        Labels::None => {}
        Labels::Class(v) => out.push(Array {
            name: "labels",
            dtype: Dtype::I64,
            shape: vec![v.len()],
            bytes: le_bytes(v, i64::to_le_bytes),
        }),
        Labels::Float(v) => out.push(Array {
            name: "labels",
            dtype: Dtype::F32,
            shape: vec![v.len()],
            bytes: le_bytes(v, f32::to_le_bytes),
        }),
        Labels::Span(v) => out.push(Array {
            name: "labels",
            dtype: Dtype::I64,
            shape: vec![v.len() / 2, 2],
            bytes: le_bytes(v, i64::to_le_bytes),
        }),
    }
    if let Some(s) = &t.token_spans {
        out.push(Array {
            name: "token_spans",
            dtype: Dtype::U32,
            shape: vec![s.len() / 2, 2],
            bytes: le_bytes(s, u32::to_le_bytes),
        });
    }
    out
}

/// Write one split's files into `dir`; returns the array list for its [`SplitMeta`].
pub fn write_split(
    dir: &Path,
    name: &str,
    t: &SplitTensors,
    texts: Option<&Texts>,
) -> Result<(String, Vec<ArrayMeta>, Option<String>), DataError> {
    let file = format!("{name}.safetensors");
    let path = dir.join(&file);
    let arrays = arrays(t);
    let views = arrays
        .iter()
        .map(|a| {
            TensorView::new(a.dtype, a.shape.clone(), &a.bytes)
                .map(|v| (a.name.to_owned(), v))
                .map_err(|e| DataError::artifact(&path, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &path)
        .map_err(|e| DataError::artifact(&path, e.to_string()))?;
    let metas = arrays
        .iter()
        .map(|a| ArrayMeta {
            name: a.name.to_owned(),
            dtype: format!("{:?}", a.dtype).to_lowercase(),
            shape: a.shape.clone(),
        })
        .collect();
    let texts_file = match texts {
        None => None,
        Some(texts) => {
            let file = format!("{name}.texts.json");
            let json = match texts {
                Texts::Span(s) => serde_json::to_vec(s),
                Texts::Record(r) => serde_json::to_vec(r),
            }
            .map_err(|e| DataError::artifact(dir.join(&file), e.to_string()))?;
            std::fs::write(dir.join(&file), json).map_err(|e| DataError::io(dir.join(&file), e))?;
            Some(file)
        }
    };
    Ok((file, metas, texts_file))
}

pub fn write_meta(dir: &Path, meta: &DatasetMeta) -> Result<(), DataError> {
    let path = dir.join(META_FILE);
    let json =
        serde_json::to_vec_pretty(meta).map_err(|e| DataError::artifact(&path, e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| DataError::io(&path, e))
}

/// An opened dataset artifact.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub meta: DatasetMeta,
    dir: PathBuf,
}

impl Dataset {
    /// Open the artifact directory (reads `dataset.json` only).
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset, DataError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let meta: DatasetMeta = serde_json::from_slice(&bytes).map_err(|e| DataError::BadJson {
            path: path.clone(),
            line: e.line() as u64,
            message: e.to_string(),
        })?;
        if meta.format_version != DATASET_FORMAT_VERSION {
            return Err(DataError::artifact(
                &path,
                format!(
                    "format version {} (this build reads {DATASET_FORMAT_VERSION})",
                    meta.format_version
                ),
            ));
        }
        Ok(Dataset { meta, dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn split_meta(&self, name: &str) -> Result<&SplitMeta, DataError> {
        self.meta
            .splits
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                DataError::artifact(
                    self.dir.join(META_FILE),
                    format!(
                        "no split `{name}` (has: {})",
                        self.meta
                            .splits
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// Load and validate one split's arrays.
    pub fn split(&self, name: &str) -> Result<SplitTensors, DataError> {
        let meta = self.split_meta(name)?;
        let path = self.dir.join(&meta.file);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| DataError::artifact(&path, e.to_string()))?;
        let r = Reader {
            st: &st,
            path: &path,
        };
        let input_ids = r.u32("input_ids", 1)?;
        let type_ids = r.u8("type_ids")?;
        let offsets = r.u64("offsets")?;
        let group_ids = r.u32("group_ids", 1)?;
        let example_ids = r.u32("example_ids", 1)?;
        let bad = |m: String| DataError::artifact(&path, m);
        if type_ids.len() != input_ids.len() {
            return Err(bad(format!(
                "type_ids has {} tokens, input_ids {}",
                type_ids.len(),
                input_ids.len()
            )));
        }
        let rows = offsets
            .len()
            .checked_sub(1)
            .ok_or_else(|| bad("offsets is empty (expected rows + 1 entries)".to_owned()))?;
        if offsets[0] != 0
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets[rows] as usize != input_ids.len()
        {
            return Err(bad(
                "offsets must start at 0, not decrease, and end at the token count".to_owned(),
            ));
        }
        if group_ids.len() != rows {
            return Err(bad(format!(
                "group_ids has {} entries, expected {rows} rows",
                group_ids.len()
            )));
        }
        let groups = example_ids.len();
        if group_ids.windows(2).any(|w| w[0] > w[1])
            || group_ids.last().is_some_and(|&g| g as usize >= groups)
        {
            return Err(bad(format!(
                "group_ids must be non-decreasing and below {groups} (the example count)"
            )));
        }
        if rows != meta.num_rows || groups != meta.num_groups {
            return Err(bad(format!(
                "{rows} rows and {groups} groups, but dataset.json says {} and {}",
                meta.num_rows, meta.num_groups
            )));
        }
        let labels = if st.names().contains(&"labels") {
            match &self.meta.task.kind {
                TaskKind::Classification { .. } => Labels::Class(r.i64_exact("labels", &[rows])?),
                TaskKind::MultipleChoice { .. } => Labels::Class(r.i64_exact("labels", &[groups])?),
                TaskKind::Span => Labels::Span(r.i64_exact("labels", &[rows, 2])?),
                TaskKind::Regression => {
                    let v = r.f32("labels")?;
                    if v.len() != rows {
                        return Err(bad(format!(
                            "labels has {} entries, expected {rows}",
                            v.len()
                        )));
                    }
                    Labels::Float(v)
                }
            }
        } else {
            if meta.labeled {
                return Err(bad(
                    "labels missing, but dataset.json says the split is labeled".to_owned(),
                ));
            }
            Labels::None
        };
        let token_spans = if st.names().contains(&"token_spans") {
            let v = r.u32("token_spans", 2)?;
            if v.len() != 2 * input_ids.len() {
                return Err(bad(format!(
                    "token_spans has {} rows, expected {} tokens",
                    v.len() / 2,
                    input_ids.len()
                )));
            }
            Some(v)
        } else {
            None
        };
        Ok(SplitTensors {
            input_ids,
            type_ids,
            offsets,
            group_ids,
            example_ids,
            labels,
            token_spans,
            num_truncated: meta.num_truncated,
        })
    }

    /// Texts kept to map predictions back (SQuAD contexts and answers, ReCoRD entities).
    pub fn texts(&self, name: &str) -> Result<Option<Texts>, DataError> {
        let meta = self.split_meta(name)?;
        let Some(file) = &meta.texts_file else {
            return Ok(None);
        };
        let path = self.dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let json_err = |e: serde_json::Error| DataError::BadJson {
            path: path.clone(),
            line: e.line() as u64,
            message: e.to_string(),
        };
        Ok(Some(match self.meta.task.kind {
            TaskKind::Span => {
                Texts::Span(serde_json::from_slice::<SpanTexts>(&bytes).map_err(json_err)?)
            }
            _ => Texts::Record(serde_json::from_slice::<RecordTexts>(&bytes).map_err(json_err)?),
        }))
    }
}

struct Reader<'a> {
    st: &'a SafeTensors<'a>,
    path: &'a Path,
}

impl Reader<'_> {
    fn get(&self, name: &str, dtype: Dtype) -> Result<TensorView<'_>, DataError> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| DataError::artifact(self.path, format!("missing array `{name}`")))?;
        if t.dtype() != dtype {
            return Err(DataError::artifact(
                self.path,
                format!("array `{name}` is {:?}, expected {dtype:?}", t.dtype()),
            ));
        }
        Ok(t)
    }

    fn check_rank(&self, name: &str, t: &TensorView<'_>, last: usize) -> Result<(), DataError> {
        let shape = t.shape();
        let ok = match last {
            1 => shape.len() == 1,
            n => shape.len() == 2 && shape[1] == n,
        };
        if ok {
            Ok(())
        } else {
            Err(DataError::artifact(
                self.path,
                format!("array `{name}` has shape {shape:?}, expected [n] or [n, {last}]"),
            ))
        }
    }

    fn u32(&self, name: &str, last: usize) -> Result<Vec<u32>, DataError> {
        let t = self.get(name, Dtype::U32)?;
        self.check_rank(name, &t, last)?;
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    fn u8(&self, name: &str) -> Result<Vec<u8>, DataError> {
        let t = self.get(name, Dtype::U8)?;
        self.check_rank(name, &t, 1)?;
        Ok(t.data().to_vec())
    }

    fn u64(&self, name: &str) -> Result<Vec<u64>, DataError> {
        let t = self.get(name, Dtype::U64)?;
        self.check_rank(name, &t, 1)?;
        Ok(t.data()
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    fn f32(&self, name: &str) -> Result<Vec<f32>, DataError> {
        let t = self.get(name, Dtype::F32)?;
        self.check_rank(name, &t, 1)?;
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    fn i64_exact(&self, name: &str, shape: &[usize]) -> Result<Vec<i64>, DataError> {
        let t = self.get(name, Dtype::I64)?;
        if t.shape() != shape {
            return Err(DataError::artifact(
                self.path,
                format!(
                    "array `{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                ),
            ));
        }
        Ok(t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}
