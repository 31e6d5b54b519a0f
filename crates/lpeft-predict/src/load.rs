//! From a fine-tune artifact (or an exported directory) to a [`TrainedModel`]: the model's
//! spec, where its frozen weights and its trained tensors are, the task, and the tokenizer
//! settings of the dataset it was trained on.
//!
//! A fine-tune artifact holds only the best epoch's trainable tensors (`best/`); the frozen
//! rest is the pretrained model its `config.json` names (vanilla PEFT) or the checkpoint of
//! its `init` input (Light-PEFT, a surgery artifact in the store). Files outside the store (the
//! pretrained model, the tokenizer) are found where the run recorded them or in the
//! directories the caller adds ([`Locations`]), and used only if their BLAKE3 is the one
//! recorded, so the rebuilt model is the one that was scored.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use lpeft_artifacts::dataset::Dataset;
use lpeft_artifacts::finetune as ft;
use lpeft_model::Model;
use lpeft_model::checkpoint;
use lpeft_model::hf::{HfCheckpoint, read_safetensors, weights_file};
use lpeft_model::source::{Init, MapSource, Role, TensorMap, WeightSource};
use lpeft_schema::dataset::TaskSpec;
use lpeft_schema::manifest::{ExternalFile, Manifest};
use lpeft_schema::model::ModelSpec;
use lpeft_store::Store;

use crate::PredictError;

/// What `--model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A fine-tune artifact: its key or a unique prefix.
    Artifact(String),
    /// An exported directory ([`crate::bundle`]).
    Dir(PathBuf),
}

impl ModelRef {
    /// An artifact key when `s` is hex digits and no directory of that name is there, else a
    /// directory (so a mistyped path is reported as a missing directory, not a missing key).
    pub fn parse(s: &str) -> ModelRef {
        let path = Path::new(s);
        let hex = !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
        if hex && !path.is_dir() {
            ModelRef::Artifact(s.to_owned())
        } else {
            ModelRef::Dir(path.to_path_buf())
        }
    }
}

/// Where the frozen weights come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    /// A Hugging Face checkpoint directory (vanilla PEFT: the pretrained model). Tensors it
    /// lacks (a new head) were drawn from `seed` by the fine-tune and are drawn again.
    Pretrained { dir: PathBuf, seed: u64 },
    /// Our checkpoint (`model.json` + `weights.safetensors`): a surgery artifact, or an
    /// exported directory holding every tensor.
    Checkpoint { dir: PathBuf },
}

/// How the dataset the model was trained on turned text into tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSettings {
    /// The `tokenizer.json`, or the directory of GPT-2 BPE files (OPT's `vocab.json` +
    /// `merges.txt` + configs), found and checked against `tokenizer_blake3`.
    pub tokenizer: PathBuf,
    pub tokenizer_blake3: String,
    pub max_length: usize,
    /// Span tasks only.
    pub doc_stride: Option<usize>,
    pub max_query_length: Option<usize>,
    pub pad_id: u32,
}

/// Where a model came from, for messages and for the exported directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The fine-tune artifact's key.
    pub key: Option<String>,
    pub method: String,
    pub seed: u64,
    /// The backend the fine-tune ran on (results are bit-identical on the same backend).
    pub backend: String,
    /// The fine-tune's best dev main score, and on what it was computed.
    pub dev: Option<DevScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevScore {
    pub split: String,
    pub main_score: f64,
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Examples scored, and examples in the source file (more when `max_examples` sampled).
    pub examples: usize,
    pub source_examples: usize,
}

/// A trained model, ready to be built on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    pub task: TaskSpec,
    pub spec: ModelSpec,
    pub base: Base,
    /// The trained tensors laid over the base (a fine-tune's `best/trainable.safetensors`).
    pub trainable: Option<PathBuf>,
    pub text: TextSettings,
    /// Units per batch of the fine-tune's dev evaluation.
    pub batch_size: usize,
    pub origin: Origin,
}

/// Directories to look in for files a run read from outside the store, beside the recorded
/// paths (which are relative to the directory the run started in).
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// Model directories (`MODEL_DIR`, say): the pretrained model and its `tokenizer.json`.
    pub model_dirs: Vec<PathBuf>,
    /// A `tokenizer.json` to try first.
    pub tokenizer: Option<PathBuf>,
}

impl TrainedModel {
    /// Opens `model`: a fine-tune artifact of `store`, or an exported directory.
    pub fn open(
        store: &Store,
        model: &ModelRef,
        at: &Locations,
    ) -> Result<TrainedModel, PredictError> {
        match model {
            ModelRef::Dir(dir) => crate::bundle::read(dir, at),
            ModelRef::Artifact(prefix) => from_store(store, &store.resolve(prefix)?, at),
        }
    }

    /// Builds the model on `device` (a plain device: eval mode, no dropout).
    pub fn build(&self, device: &Device) -> Result<Model, PredictError> {
        let trained = match &self.trainable {
            Some(file) => Some((file.clone(), read_safetensors(file)?)),
            None => None,
        };
        match &self.base {
            Base::Pretrained { dir, seed } => {
                let ckpt = HfCheckpoint::open(dir)?;
                let mut base = ckpt.source(self.spec.encoder.family, self.spec.head, *seed);
                build_over(&self.spec, &mut base, trained, device)
            }
            Base::Checkpoint { dir } => {
                let file = dir.join(checkpoint::WEIGHTS_FILE);
                let mut base = MapSource {
                    map: read_safetensors(&file)?,
                    file: file.clone(),
                    fill: Vec::new(),
                    seed: 0,
                    used: Vec::new(),
                };
                let overlaid = trained.is_some();
                let model = build_over(&self.spec, &mut base, trained, device)?;
                if !overlaid {
                    let used: HashSet<&String> = base.used.iter().collect();
                    if let Some(extra) = base.map.tensors.keys().find(|k| !used.contains(k)) {
                        return Err(lpeft_model::ModelError::BadFile {
                            file,
                            message: format!(
                                "tensor `{extra}` does not belong to the model of {}",
                                checkpoint::SPEC_FILE
                            ),
                        }
                        .into());
                    }
                }
                Ok(model)
            }
        }
    }
}

/// Trained tensors answered first, every one of them used; the rest from `base`.
struct Overlay<'a> {
    file: PathBuf,
    top: TensorMap,
    used: HashSet<String>,
    base: &'a mut dyn WeightSource,
}

impl WeightSource for Overlay<'_> {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, lpeft_model::ModelError> {
        match self.top.tensors.get(name) {
            Some((found, values)) if found.as_slice() == shape => {
                self.used.insert(name.to_owned());
                Ok(values.clone())
            }
            Some((found, _)) => Err(lpeft_model::ModelError::ShapeMismatch {
                file: self.file.clone(),
                name: name.to_owned(),
                found: found.clone(),
                expected: shape.to_vec(),
            }),
            None => self.base.fetch(name, shape, init, role),
        }
    }
}

fn build_over(
    spec: &ModelSpec,
    base: &mut dyn WeightSource,
    trained: Option<(PathBuf, TensorMap)>,
    device: &Device,
) -> Result<Model, PredictError> {
    let Some((file, top)) = trained else {
        return Ok(Model::build(spec, base, device)?);
    };
    let mut src = Overlay {
        file,
        top,
        used: HashSet::new(),
        base,
    };
    let model = Model::build(spec, &mut src, device)?;
    let mut unused: Vec<&String> = src
        .top
        .tensors
        .keys()
        .filter(|k| !src.used.contains(*k))
        .collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(lpeft_model::ModelError::BadFile {
            file: src.file,
            message: format!(
                "{} trained tensor(s) have no place in the model of {}, first `{first}`",
                unused.len(),
                ft::SPEC_FILE
            ),
        }
        .into());
    }
    Ok(model)
}

/// The fine-tune artifact `key` of `store`.
fn from_store(store: &Store, key: &str, at: &Locations) -> Result<TrainedModel, PredictError> {
    let run = store.open_artifact(key)?;
    if run.manifest.kind != ft::KIND {
        return Err(PredictError::NotFinetune {
            key: key.to_owned(),
            kind: run.manifest.kind.clone(),
        });
    }
    let settings = ft::read_settings(&run.dir)?;
    let result = ft::read_result(&run.dir)?;
    let spec = ft::read_best_spec(&run.dir)?;
    let data_key = input_key(&run.manifest, ft::DATASET_SLOT)?;
    let data = store.open_artifact(&data_key)?;
    let ds = Dataset::open(&data.dir)?;

    let base = match run.manifest.inputs.get(ft::INIT_SLOT) {
        Some(init) => Base::Checkpoint {
            dir: store.open_artifact(init)?.dir,
        },
        None => {
            let recorded = settings.model.clone().ok_or_else(|| PredictError::Bad {
                file: run.dir.join(ft::CONFIG_FILE),
                message: "neither a `model` nor an `init` input: no base weights".into(),
            })?;
            let dir = pretrained_dir(store, &run.manifest, &recorded, at)?;
            Base::Pretrained {
                dir,
                seed: settings.seed,
            }
        }
    };
    let mut model_dirs = at.model_dirs.clone();
    if let Base::Pretrained { dir, .. } = &base {
        model_dirs.push(dir.clone());
    }
    let tokenizer = tokenizer_file(store, &data.manifest, &ds, at, &model_dirs)?;
    let dev = ds.split_meta(&settings.eval_split).ok().map(|s| DevScore {
        split: settings.eval_split.clone(),
        main_score: result.best_main_score,
        metrics: result.best_metrics.clone(),
        examples: s.num_examples,
        source_examples: s.num_source_examples,
    });
    let max_query_length = data.manifest.params["max_query_length"]
        .as_u64()
        .map(|n| n as usize);
    Ok(TrainedModel {
        task: ds.meta.task.clone(),
        spec,
        base,
        trainable: Some(ft::best_file(&run.dir, ft::TRAINABLE_FILE)),
        text: TextSettings {
            tokenizer,
            tokenizer_blake3: ds.meta.tokenizer.blake3.clone(),
            max_length: ds.meta.max_length,
            doc_stride: ds.meta.doc_stride,
            max_query_length,
            pad_id: ds.meta.tokenizer.pad_id,
        },
        batch_size: settings.eval_batch_size,
        origin: Origin {
            key: Some(key.to_owned()),
            method: settings.method,
            seed: settings.seed,
            backend: run.manifest.backend.clone(),
            dev,
        },
    })
}

fn input_key(m: &Manifest, slot: &str) -> Result<String, PredictError> {
    m.inputs
        .get(slot)
        .cloned()
        .ok_or_else(|| PredictError::Bad {
            file: PathBuf::from(format!("{}/manifest.json", m.key)),
            message: format!("no `{slot}` input"),
        })
}

/// A candidate file whose content hash is the recorded one; `Err` lists what was tried.
fn find_recorded(
    store: &Store,
    recorded: &ExternalFile,
    candidates: &[PathBuf],
) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for c in candidates {
        match store.hash_external(c) {
            Ok((_, h)) if h == recorded.blake3 => return Ok(c.clone()),
            Ok(_) => tried.push(format!("{} (other content)", c.display())),
            Err(_) => tried.push(format!("{} (absent)", c.display())),
        }
    }
    let mut seen = HashSet::new();
    tried.retain(|t| seen.insert(t.clone()));
    Err(tried.join(", "))
}

/// The pretrained model directory a vanilla fine-tune started from: recorded in its
/// `config.json`, its weights' hash in the manifest's external files.
fn pretrained_dir(
    store: &Store,
    run: &Manifest,
    recorded: &Path,
    at: &Locations,
) -> Result<PathBuf, PredictError> {
    let dirs: Vec<PathBuf> = std::iter::once(recorded.to_path_buf())
        .chain(at.model_dirs.iter().cloned())
        .collect();
    let weights = run.external_files.iter().find(|e| {
        let name = Path::new(&e.path).file_name();
        name.is_some_and(|n| n == "model.safetensors" || n == "pytorch_model.bin")
    });
    let Some(weights) = weights else {
        return Ok(recorded.to_path_buf());
    };
    let name = Path::new(&weights.path).file_name().expect("checked above");
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(name)).collect();
    let found = find_recorded(store, weights, &candidates).map_err(|tried| {
        PredictError::MissingFile {
            what: format!(
                "the pretrained model the fine-tune started from ({}, blake3 {})",
                weights.path,
                &weights.blake3[..12]
            ),
            tried,
            hint: "; run from the directory the pipeline ran in, or set MODEL_DIR to a copy of that model".into(),
        }
    })?;
    let dir = found.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    // A directory holding the right weights but no config.json fails when it is opened.
    let _ = weights_file(&dir);
    Ok(dir)
}

/// The tokenizer the data stage tokenized with, by its hash in the dataset: a `tokenizer.json`
/// whose BLAKE3 it is, or a directory of GPT-2 BPE files (OPT's `vocab.json` + `merges.txt` +
/// configs) whose combined hash it is (`lpeft_tokenizer::gpt2::load`).
fn tokenizer_file(
    store: &Store,
    data: &Manifest,
    ds: &Dataset,
    at: &Locations,
    model_dirs: &[PathBuf],
) -> Result<PathBuf, PredictError> {
    let want = &ds.meta.tokenizer.blake3;
    let recorded = data.external_files.iter().find(|e| &e.blake3 == want);
    let mut candidates: Vec<PathBuf> = at.tokenizer.iter().cloned().collect();
    candidates.extend(recorded.map(|e| PathBuf::from(&e.path)));
    candidates.extend(model_dirs.iter().map(|d| d.join("tokenizer.json")));
    let entry = ExternalFile {
        path: recorded.map_or_else(|| "tokenizer.json".into(), |e| e.path.clone()),
        size: 0,
        blake3: want.clone(),
    };
    let tried_files = match find_recorded(store, &entry, &candidates) {
        Ok(found) => return Ok(found),
        Err(tried) => tried,
    };
    // GPT-2 BPE files: where the data stage read its vocab.json, then the model directories.
    let recorded_vocab = data.external_files.iter().find(|e| {
        Path::new(&e.path)
            .file_name()
            .is_some_and(|n| n == lpeft_tokenizer::gpt2::VOCAB)
    });
    let mut dirs: Vec<PathBuf> = at
        .tokenizer
        .iter()
        .filter(|p| p.is_dir())
        .cloned()
        .collect();
    dirs.extend(
        recorded_vocab
            .and_then(|e| Path::new(&e.path).parent())
            .map(Path::to_path_buf),
    );
    dirs.extend(model_dirs.iter().cloned());
    let mut tried = vec![tried_files];
    let mut seen = HashSet::new();
    for dir in dirs.into_iter().filter(|d| seen.insert(d.clone())) {
        match lpeft_tokenizer::TokenizerSource::locate(&dir) {
            Ok(src @ lpeft_tokenizer::TokenizerSource::Gpt2(_)) => match src.load() {
                Ok(t) if t.content_hash() == want => return Ok(dir),
                Ok(_) => tried.push(format!(
                    "{} (GPT-2 BPE files, other content)",
                    dir.display()
                )),
                Err(e) => tried.push(format!("{} ({e})", dir.display())),
            },
            Err(e) if lpeft_tokenizer::gpt2::looks_like(&dir) => {
                tried.push(format!("{} ({e})", dir.display()));
            }
            _ => {}
        }
    }
    let entry_path = match (recorded, recorded_vocab) {
        (None, Some(v)) => Path::new(&v.path)
            .parent()
            .map_or_else(|| v.path.clone(), |d| d.display().to_string()),
        _ => entry.path.clone(),
    };
    Err(PredictError::MissingFile {
        what: format!(
            "the tokenizer the data stage used ({entry_path}, blake3 {})",
            &want[..want.len().min(12)]
        ),
        tried: tried.join(", "),
        hint: "; run from the directory the pipeline ran in, set MODEL_DIR, or give --tokenizer"
            .into(),
    })
}
