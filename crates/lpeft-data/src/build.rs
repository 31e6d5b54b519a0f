//! From a typed config to a dataset artifact: resolve the source files, read, sample, tokenize,
//! write. [`resolve`] does no heavy work (it may download hub files into the download cache, so
//! their content can be hashed); [`build`] does the rest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lpeft_schema::dataset::{
    DATASET_FORMAT_VERSION, DatasetMeta, SourceFile, SplitMeta, TaskKind, TokenizerMeta,
};
use lpeft_tokenizer::{TokenizerError, TokenizerSource};
use serde::{Deserialize, Serialize};

use crate::artifact::{write_meta, write_split};
use crate::encode::{EncodeConfig, encode_split_with};
use crate::error::DataError;
use crate::example::{RawSplit, Source};
use crate::registry::{Benchmark, TaskDef, task};
use crate::rng::SplitMix64;

/// Parameters of the data stage, as written in a pipeline file or given on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Registry name: `glue/sst2`, `superglue/copa`, `squad/v1.1`.
    pub task: String,
    /// Root of the official layout (`<root>/<TASK>/...`) or the task directory itself. When
    /// absent and `hub` is absent too: `GLUE_DIR`, `SUPERGLUE_DIR` or `SQUAD_DIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Download the hub's parquet files instead of reading a local directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubConfig>,
    /// `tokenizer.json`, or the model directory holding it (or, without one, GPT-2 BPE's
    /// `vocab.json` + `merges.txt` + `tokenizer_config.json`, as OPT ships them).
    pub model: PathBuf,
    /// Tokens per row, special tokens included: 128 by default, 384 for SQuAD.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Per split, a seeded sample of at most this many examples (quick runs).
    #[serde(default)]
    pub max_examples: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Splits to build; the task's defaults (train and dev) when absent.
    #[serde(default)]
    pub splits: Option<Vec<String>>,
    /// SQuAD: context tokens shared by consecutive windows.
    #[serde(default = "default_doc_stride")]
    pub doc_stride: usize,
    /// SQuAD: questions are cut to this many tokens.
    #[serde(default = "default_max_query_length")]
    pub max_query_length: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Dataset repository; `nyu-mll/glue`, `aps/super_glue` or `rajpurkar/squad` by default.
    #[serde(default)]
    pub repo: Option<String>,
    /// Branch, tag or commit; pin a commit for reproducible downloads.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Download cache; `LPEFT_HUB_CACHE` or `~/.cache/lpeft/hub` by default.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Hub endpoint; `HF_ENDPOINT` or `https://huggingface.co` by default.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// File path inside the repository, with `{config}` and `{split}` (hub names, e.g.
    /// `validation_matched`); `{config}/{split}-00000-of-00001.parquet` by default. The
    /// parquet conversion branch (`revision: "refs%2Fconvert%2Fparquet"`) uses
    /// `{config}/{split}/0000.parquet`.
    #[serde(default)]
    pub path_pattern: Option<String>,
}

fn default_doc_stride() -> usize {
    128
}
fn default_max_query_length() -> usize {
    64
}
fn default_revision() -> String {
    "main".to_owned()
}

/// Where one split is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSource {
    pub split: String,
    pub source: Source,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tsv,
    Jsonl,
    SquadJson,
    Parquet,
}

/// A config with its files found.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub task: &'static TaskDef,
    pub splits: Vec<SplitSource>,
    /// The tokenizer and the files it is read from.
    pub tokenizer: TokenizerSource,
    pub config: DataConfig,
}

impl Resolved {
    /// `max_length`, or the task's default: 384 for span extraction (with its doc stride of
    /// 128), 128 otherwise.
    pub fn max_length(&self) -> usize {
        self.config.max_length.unwrap_or(match self.task.benchmark {
            Benchmark::Squad => 384,
            _ => 128,
        })
    }

    /// Every file the build reads: the split sources, then the tokenizer's (its
    /// `tokenizer.json`, or GPT-2 BPE's vocabulary, merges and configs).
    pub fn files(&self) -> Vec<PathBuf> {
        self.splits
            .iter()
            .map(|s| s.source.path.clone())
            .chain(self.tokenizer.files())
            .collect()
    }

    /// The parameters that decide the artifact's content, besides the files' content:
    /// no paths, defaults filled in.
    pub fn canonical_params(&self) -> serde_json::Value {
        let c = &self.config;
        let mut v = serde_json::json!({
            "task": self.task.name,
            "splits": self.splits.iter().map(|s| s.split.as_str()).collect::<Vec<_>>(),
            "max_length": self.max_length(),
            "max_examples": c.max_examples,
            "seed": c.seed,
            "source": if c.hub.is_some() { "hub" } else { "local" },
        });
        if self.task.benchmark == Benchmark::Squad {
            v["doc_stride"] = c.doc_stride.into();
            v["max_query_length"] = c.max_query_length.into();
        }
        v
    }
}

/// Find the files a config reads. Hub sources are downloaded into the cache here.
pub fn resolve(config: &DataConfig) -> Result<Resolved, DataError> {
    let task = task(&config.task)?;
    let splits: Vec<String> = match &config.splits {
        Some(s) if s.is_empty() => return Err(DataError::Params("splits is empty".to_owned())),
        Some(s) => s.clone(),
        None => task
            .default_splits
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    for s in &splits {
        task.check_split(s)?;
    }
    if let Some(n) = config.max_length
        && n < 8
    {
        return Err(DataError::Params(format!(
            "max_length {n} is too small (at least 8)"
        )));
    }
    if config.max_examples == Some(0) {
        return Err(DataError::Params(
            "max_examples must be at least 1".to_owned(),
        ));
    }
    let tokenizer = match TokenizerSource::locate(&config.model) {
        Ok(TokenizerSource::Json(path)) if !path.is_file() => {
            return Err(DataError::MissingModel { path });
        }
        Err(TokenizerError::NoTokenizer { dir }) => {
            return Err(DataError::MissingModel {
                path: dir.join("tokenizer.json"),
            });
        }
        other => other?,
    };
    check_position_limit(&config.model, config.max_length)?;
    let sources = match (&config.hub, &config.data_dir) {
        (Some(_), Some(_)) => {
            return Err(DataError::Params(
                "give either data_dir or hub, not both".to_owned(),
            ));
        }
        (Some(hub), None) => {
            let repo = hub
                .repo
                .clone()
                .unwrap_or_else(|| crate::hub::default_repo(task).to_owned());
            let endpoint = hub
                .endpoint
                .clone()
                .unwrap_or_else(crate::hub::endpoint_from_env);
            let cache = hub
                .cache_dir
                .clone()
                .unwrap_or_else(crate::hub::default_cache_dir);
            splits
                .iter()
                .map(|split| {
                    let path = match &hub.path_pattern {
                        Some(p) => crate::hub::hub_path_with(p, task, split),
                        None => crate::hub::hub_path(task, split),
                    };
                    let local = crate::hub::fetch(&endpoint, &repo, &hub.revision, &path, &cache)?;
                    Ok(SplitSource {
                        split: split.clone(),
                        source: Source {
                            path: local,
                            name: format!("{repo}/{path}"),
                        },
                        format: Format::Parquet,
                    })
                })
                .collect::<Result<Vec<_>, DataError>>()?
        }
        (None, dir) => {
            let root = match dir {
                Some(d) => d.clone(),
                None => env_dir(task)?,
            };
            let task_dir = if task.dir.is_empty() || !root.join(task.dir).is_dir() {
                root.clone()
            } else {
                root.join(task.dir)
            };
            let format = match task.benchmark {
                Benchmark::Glue => Format::Tsv,
                Benchmark::SuperGlue => Format::Jsonl,
                Benchmark::Squad => Format::SquadJson,
            };
            splits
                .iter()
                .map(|split| {
                    let file = task.local_file(split);
                    let path = task_dir.join(&file);
                    if !path.is_file() {
                        // Name the file where the official layout puts it (`<root>/<TASK>/`),
                        // unless `root` is the task directory itself.
                        let path = if task_dir == root && !task.dir.is_empty() {
                            root.join(task.dir).join(&file)
                        } else {
                            path
                        };
                        return Err(DataError::MissingTaskFile {
                            path,
                            task: task.name.to_owned(),
                            split: split.clone(),
                            layout: match task.dir {
                                "" => file.clone(),
                                dir => format!("{dir}/{file}"),
                            },
                        });
                    }
                    let name = if task_dir == root {
                        file
                    } else {
                        format!("{}/{file}", task.dir)
                    };
                    Ok(SplitSource {
                        split: split.clone(),
                        source: Source { path, name },
                        format,
                    })
                })
                .collect::<Result<Vec<_>, DataError>>()?
        }
    };
    Ok(Resolved {
        task,
        splits: sources,
        tokenizer,
        config: config.clone(),
    })
}

fn env_dir(task: &TaskDef) -> Result<PathBuf, DataError> {
    let var = match task.benchmark {
        Benchmark::Glue => "GLUE_DIR",
        Benchmark::SuperGlue => "SUPERGLUE_DIR",
        Benchmark::Squad => "SQUAD_DIR",
    };
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| DataError::NoDataSource {
            task: task.name.to_owned(),
            var: var.to_owned(),
        })
}

/// Read one split's examples from its source file.
pub fn read_split(task: &TaskDef, src: &SplitSource) -> Result<RawSplit, DataError> {
    let path = &src.source.path;
    let (examples, contexts) = match src.format {
        Format::Tsv => (crate::glue::read_tsv(task, path, &src.split)?, Vec::new()),
        Format::Jsonl => (crate::superglue::read_jsonl(task, path)?, Vec::new()),
        Format::SquadJson => crate::squad::read_squad(path)?,
        Format::Parquet => crate::hub::read_hub_split(task, path)?,
    };
    let split = RawSplit {
        name: src.split.clone(),
        sources: vec![src.source.clone()],
        examples,
        contexts,
    };
    let labeled = split.labeled();
    if let Some(e) = split.examples.iter().find(|e| e.is_labeled() != labeled) {
        return Err(DataError::Params(format!(
            "{}: example at source row {} is {}labeled, the first one is {}labeled",
            path.display(),
            e.source_row,
            if labeled { "un" } else { "" },
            if labeled { "" } else { "un" }
        )));
    }
    Ok(split)
}

/// Figures of one build, for the stage summary and the CLI.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub meta: DatasetMeta,
    pub read_seconds: f64,
    pub tokenize_seconds: f64,
}

/// What a build reports while it works.
pub trait BuildProgress {
    /// One line per step (a split read, a split tokenized).
    fn line(&self, line: &str);
    /// Tokenizing `split`: `done` of its `total` examples (at 0, then every
    /// [`crate::encode::PROGRESS_CHUNK`]).
    fn tokenized(&self, split: &str, done: usize, total: usize);
}

/// Lines only.
struct Lines<'a>(&'a dyn Fn(&str));

impl BuildProgress for Lines<'_> {
    fn line(&self, line: &str) {
        (self.0)(line)
    }
    fn tokenized(&self, _: &str, _: usize, _: usize) {}
}

/// Build the artifact into `out_dir` (which must exist). `progress` receives one line per step.
pub fn build(
    resolved: &Resolved,
    out_dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<BuildReport, DataError> {
    build_reporting(resolved, out_dir, &Lines(progress))
}

/// [`build`], reporting tokenization progress too.
pub fn build_reporting(
    resolved: &Resolved,
    out_dir: &Path,
    progress: &dyn BuildProgress,
) -> Result<BuildReport, DataError> {
    let cfg = &resolved.config;
    let task = resolved.task;
    let tokenizer = resolved.tokenizer.load()?;
    let enc = EncodeConfig {
        max_length: resolved.max_length(),
        doc_stride: cfg.doc_stride,
        max_query_length: cfg.max_query_length,
    };
    let mut splits = Vec::new();
    let (mut read_s, mut tok_s) = (0.0, 0.0);
    for src in &resolved.splits {
        let t0 = Instant::now();
        let mut raw = read_split(task, src)?;
        let num_source_examples = raw.examples.len();
        if let Some(k) = cfg.max_examples
            && k < raw.examples.len()
        {
            let keep = SplitMix64::derive(cfg.seed, &format!("sample/{}", src.split), 0)
                .sample_sorted(raw.examples.len(), k);
            raw.select(&keep);
        }
        read_s += t0.elapsed().as_secs_f64();
        progress.line(&format!(
            "{}: read {} examples from {}",
            src.split,
            raw.examples.len(),
            src.source.name
        ));
        let t1 = Instant::now();
        let total = raw.examples.len();
        progress.tokenized(&src.split, 0, total);
        let (tensors, texts) = encode_split_with(&raw, &tokenizer, enc, &|done| {
            progress.tokenized(&src.split, done, total)
        })?;
        tok_s += t1.elapsed().as_secs_f64();
        if let TaskKind::Classification { num_labels } = task.spec().kind
            && let crate::encode::Labels::Class(ls) = &tensors.labels
            && let Some(bad) = ls.iter().find(|&&l| l < 0 || l >= num_labels as i64)
        {
            return Err(DataError::Params(format!("label {bad} out of range")));
        }
        let (file, arrays, texts_file) =
            write_split(out_dir, &src.split, &tensors, texts.as_ref())?;
        let hash = hash_file(&src.source.path)?;
        splits.push(SplitMeta {
            name: src.split.clone(),
            file,
            num_examples: raw.examples.len(),
            num_source_examples,
            num_rows: tensors.num_rows(),
            num_groups: tensors.num_groups(),
            num_tokens: tensors.input_ids.len(),
            num_truncated: tensors.num_truncated,
            labeled: raw.labeled(),
            sources: vec![SourceFile {
                name: src.source.name.clone(),
                blake3: hash,
            }],
            arrays,
            texts_file,
        });
        progress.line(&format!(
            "{}: {} rows, {} tokens, {} truncated, tokenized in {:.2} s",
            src.split,
            tensors.num_rows(),
            tensors.input_ids.len(),
            tensors.num_truncated,
            t1.elapsed().as_secs_f64()
        ));
    }
    let meta = DatasetMeta {
        format_version: DATASET_FORMAT_VERSION,
        task: task.spec(),
        tokenizer: TokenizerMeta {
            blake3: tokenizer.content_hash().to_owned(),
            family: tokenizer.family().as_str().to_owned(),
            pad_id: tokenizer.pad_id(),
        },
        max_length: resolved.max_length(),
        doc_stride: (task.benchmark == Benchmark::Squad).then_some(cfg.doc_stride),
        max_examples: cfg.max_examples,
        seed: cfg.seed,
        splits,
    };
    write_meta(out_dir, &meta)?;
    Ok(BuildReport {
        meta,
        read_seconds: read_s,
        tokenize_seconds: tok_s,
    })
}

fn hash_file(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// Refuses a `max_length` the model cannot embed: its `config.json`'s `max_position_embeddings`
/// (less RoBERTa's two offset positions). Read only to validate; without a `config.json` (a
/// bare tokenizer file) nothing is checked here.
fn check_position_limit(model: &Path, max_length: Option<usize>) -> Result<(), DataError> {
    let Some(n) = max_length else {
        return Ok(());
    };
    let file = model.join("config.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(());
    };
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| DataError::BadRow {
        path: file.clone(),
        line: e.line() as u64,
        message: format!("not a model config: {e}"),
    })?;
    let Some(positions) = config["max_position_embeddings"].as_u64() else {
        return Ok(());
    };
    let offset = match config["model_type"].as_str() {
        Some("roberta" | "xlm-roberta" | "camembert" | "mpnet") => 2,
        _ => 0,
    };
    let limit = (positions as usize).saturating_sub(offset);
    if n > limit {
        return Err(DataError::Params(format!(
            "max_length {n} is more than the model embeds: {limit} positions ({}'s max_position_embeddings {positions}{})",
            file.display(),
            if offset > 0 {
                ", less the 2 of RoBERTa-style position offsets"
            } else {
                ""
            }
        )));
    }
    Ok(())
}
