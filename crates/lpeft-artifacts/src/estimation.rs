//! The estimation artifact: file names, its in-memory form, writing and reading, and the
//! aggregation of per-step scores over a window (spec §3.2–3.3: mean over the window with
//! NaN/Inf → 0), which surgery reruns for other windows.
//!
//! Files:
//! - `masks.safetensors`: `head_masks` f32 `[R, L, H]`, `ffn_masks` f32 `[R, L, I]`,
//!   `record_steps` i64 `[R]` (updates done when recorded; 0 is the initial all-ones state);
//! - `scores.safetensors`: `p2` f32 `[S, M]`, `rank_taylor` f32 `[S, M, r]`; module order in
//!   `scores_index.json`;
//! - `scores.json`: the default (second-half) aggregate per module;
//! - `model.json` + `peft_state.safetensors`: the estimation model's spec and its trainable
//!   tensors (PEFT, head, final masks) for the warm start;
//! - `curve.json`: loss, lr and gradient norm per step; `estimate.json`: summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lpeft_schema::model::{ModelSpec, PeftModuleId};

pub const MASKS_FILE: &str = "masks.safetensors";
pub const SCORES_FILE: &str = "scores.safetensors";
pub const SCORES_INDEX_FILE: &str = "scores_index.json";
pub const SCORES_JSON: &str = "scores.json";
pub const PEFT_STATE_FILE: &str = "peft_state.safetensors";
pub const CURVE_FILE: &str = "curve.json";
pub const SUMMARY_FILE: &str = "estimate.json";
pub const CONFIG_FILE: &str = "config.json";
/// The estimation model's spec (`lpeft_model::checkpoint::SPEC_FILE`: the same name).
pub const SPEC_FILE: &str = "model.json";
/// The estimation model's head outputs on its whole training split (`teacher_outputs`).
pub const TEACHER_FILE: &str = "teacher.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{file}: {message}")]
    Bad { file: PathBuf, message: String },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

fn bad(file: &Path, message: impl Into<String>) -> ArtifactError {
    ArtifactError::Bad {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// Mask values at each record: `head[r][l][h]`, `ffn[r][l][i]` flattened row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskTrajectory {
    pub record_steps: Vec<usize>,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub head: Vec<f32>,
    pub neuron: Vec<f32>,
}

impl MaskTrajectory {
    pub fn records(&self) -> usize {
        self.record_steps.len()
    }
    /// Head mask values of record `r`, per layer.
    pub fn heads_at(&self, r: usize) -> Vec<Vec<f32>> {
        let block = &self.head[r * self.layers * self.heads..(r + 1) * self.layers * self.heads];
        block
            .chunks(self.heads.max(1))
            .map(<[f32]>::to_vec)
            .take(self.layers)
            .collect()
    }
    pub fn ffn_at(&self, r: usize) -> Vec<Vec<f32>> {
        let block = &self.neuron[r * self.layers * self.ffn..(r + 1) * self.layers * self.ffn];
        block
            .chunks(self.ffn.max(1))
            .map(<[f32]>::to_vec)
            .take(self.layers)
            .collect()
    }
    /// Index of the record taken after `step` updates.
    pub fn record_of_step(&self, step: usize) -> Option<usize> {
        self.record_steps.iter().position(|&s| s == step)
    }
}

/// One module's entry in `scores_index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleEntry {
    pub id: PeftModuleId,
    pub name: String,
    pub rank: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoresIndex {
    pub modules: Vec<ModuleEntry>,
    /// Number of steps with scores (S).
    pub steps: usize,
    /// Common rank r of the `rank_taylor` rows.
    pub rank: usize,
}

/// Per-step raw scores: `p2[s * M + m]`, `taylor[(s * M + m) * r + j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepScores {
    pub index: ScoresIndex,
    pub p2: Vec<f32>,
    pub taylor: Vec<f32>,
}

/// Steps whose scores are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// `steps[S/2..]`, the reference's `imp[len//2:]`.
    SecondHalf,
    /// Steps `from..to` (0-based, `to` exclusive).
    Range { from: usize, to: usize },
}

impl Window {
    pub fn bounds(self, steps: usize) -> Result<(usize, usize), String> {
        match self {
            Window::SecondHalf => Ok((steps / 2, steps)),
            Window::Range { from, to } if from < to && to <= steps => Ok((from, to)),
            Window::Range { from, to } => Err(format!(
                "range {from}..{to} is not a non-empty part of the {steps} recorded steps"
            )),
        }
    }
}

/// A module's aggregated importance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleScore {
    pub id: PeftModuleId,
    pub name: String,
    pub module_score: f64,
    pub rank_scores: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateScores {
    /// Steps `from..to` that were averaged.
    pub from: usize,
    pub to: usize,
    pub modules: Vec<ModuleScore>,
}

fn finite_or_zero(v: f32) -> f64 {
    if v.is_finite() { f64::from(v) } else { 0.0 }
}

/// Mean over the window of each module's p2 and rank scores, NaN/Inf counted as 0 (spec §3.2).
pub fn aggregate(scores: &StepScores, window: Window) -> Result<AggregateScores, String> {
    let (from, to) = window.bounds(scores.index.steps)?;
    let m = scores.index.modules.len();
    let r = scores.index.rank;
    let n = (to - from) as f64;
    let modules = scores
        .index
        .modules
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let module_score = (from..to)
                .map(|s| finite_or_zero(scores.p2[s * m + i]))
                .sum::<f64>()
                / n;
            let rank_scores = (0..e.rank)
                .map(|j| {
                    (from..to)
                        .map(|s| finite_or_zero(scores.taylor[(s * m + i) * r + j]))
                        .sum::<f64>()
                        / n
                })
                .collect();
            ModuleScore {
                id: e.id,
                name: e.name.clone(),
                module_score,
                rank_scores,
            }
        })
        .collect();
    Ok(AggregateScores { from, to, modules })
}

/// A named tensor to write: f32 or i64 values with a shape.
pub enum Array {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

pub fn write_arrays(file: &Path, arrays: &BTreeMap<String, Array>) -> Result<(), ArtifactError> {
    let encoded: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = arrays
        .iter()
        .map(|(k, a)| match a {
            Array::F32(s, v) => (
                k.clone(),
                safetensors::Dtype::F32,
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Array::I64(s, v) => (
                k.clone(),
                safetensors::Dtype::I64,
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(k, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b).map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(file, e.to_string()))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| bad(file, e.to_string()))?;
    std::fs::write(file, bytes).map_err(|e| ArtifactError::Io {
        file: file.to_path_buf(),
        source: e,
    })
}

fn read_arrays(file: &Path) -> Result<BTreeMap<String, Array>, ArtifactError> {
    let bytes = std::fs::read(file).map_err(|e| ArtifactError::Io {
        file: file.to_path_buf(),
        source: e,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(file, e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, v) in st.tensors() {
        let shape = v.shape().to_vec();
        let a = match v.dtype() {
            safetensors::Dtype::F32 => Array::F32(
                shape,
                v.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ),
            safetensors::Dtype::I64 => Array::I64(
                shape,
                v.data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            other => {
                return Err(bad(
                    file,
                    format!("tensor `{name}` has dtype {other:?}, expected F32 or I64"),
                ));
            }
        };
        out.insert(name, a);
    }
    Ok(out)
}

fn take_f32(
    file: &Path,
    map: &mut BTreeMap<String, Array>,
    name: &str,
    rank: usize,
) -> Result<(Vec<usize>, Vec<f32>), ArtifactError> {
    match map.remove(name) {
        Some(Array::F32(s, v)) if s.len() == rank => Ok((s, v)),
        Some(_) => Err(bad(file, format!("`{name}` must be f32 of rank {rank}"))),
        None => Err(bad(file, format!("missing tensor `{name}`"))),
    }
}

pub fn write_masks(file: &Path, t: &MaskTrajectory) -> Result<(), ArtifactError> {
    let r = t.records();
    let mut a = BTreeMap::new();
    a.insert(
        "head_masks".into(),
        Array::F32(vec![r, t.layers, t.heads], t.head.clone()),
    );
    a.insert(
        "ffn_masks".into(),
        Array::F32(vec![r, t.layers, t.ffn], t.neuron.clone()),
    );
    a.insert(
        "record_steps".into(),
        Array::I64(vec![r], t.record_steps.iter().map(|&s| s as i64).collect()),
    );
    write_arrays(file, &a)
}

pub fn read_masks(file: &Path) -> Result<MaskTrajectory, ArtifactError> {
    let mut a = read_arrays(file)?;
    let (hs, head) = take_f32(file, &mut a, "head_masks", 3)?;
    let (fs, neuron) = take_f32(file, &mut a, "ffn_masks", 3)?;
    let record_steps = match a.remove("record_steps") {
        Some(Array::I64(_, v)) => v.into_iter().map(|s| s as usize).collect::<Vec<_>>(),
        _ => return Err(bad(file, "missing i64 tensor `record_steps`")),
    };
    if hs[0] != record_steps.len() || fs[0] != record_steps.len() || hs[1] != fs[1] {
        return Err(bad(
            file,
            format!(
                "inconsistent shapes: head_masks {hs:?}, ffn_masks {fs:?}, {} records",
                record_steps.len()
            ),
        ));
    }
    Ok(MaskTrajectory {
        record_steps,
        layers: hs[1],
        heads: hs[2],
        ffn: fs[2],
        head,
        neuron,
    })
}

pub fn write_scores(dir: &Path, s: &StepScores) -> Result<(), ArtifactError> {
    let (steps, m, r) = (s.index.steps, s.index.modules.len(), s.index.rank);
    let mut a = BTreeMap::new();
    a.insert("p2".into(), Array::F32(vec![steps, m], s.p2.clone()));
    a.insert(
        "rank_taylor".into(),
        Array::F32(vec![steps, m, r], s.taylor.clone()),
    );
    write_arrays(&dir.join(SCORES_FILE), &a)?;
    write_json(&dir.join(SCORES_INDEX_FILE), &s.index)
}

pub fn read_scores(dir: &Path) -> Result<StepScores, ArtifactError> {
    let index: ScoresIndex = read_json(&dir.join(SCORES_INDEX_FILE))?;
    let file = dir.join(SCORES_FILE);
    let mut a = read_arrays(&file)?;
    let (ps, p2) = take_f32(&file, &mut a, "p2", 2)?;
    let (ts, taylor) = take_f32(&file, &mut a, "rank_taylor", 3)?;
    let m = index.modules.len();
    if ps != [index.steps, m]
        || ts != [index.steps, m, index.rank]
        || index.modules.iter().any(|e| e.rank > index.rank)
    {
        return Err(bad(
            &file,
            format!(
                "shapes p2 {ps:?}, rank_taylor {ts:?} do not match {SCORES_INDEX_FILE} ({} steps, {m} modules, rank {})",
                index.steps, index.rank
            ),
        ));
    }
    Ok(StepScores { index, p2, taylor })
}

pub fn write_json<T: Serialize>(file: &Path, value: &T) -> Result<(), ArtifactError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| bad(file, e.to_string()))?;
    std::fs::write(file, text).map_err(|e| ArtifactError::Io {
        file: file.to_path_buf(),
        source: e,
    })
}

pub fn read_json<T: for<'de> Deserialize<'de>>(file: &Path) -> Result<T, ArtifactError> {
    let text = std::fs::read_to_string(file).map_err(|e| ArtifactError::Io {
        file: file.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        bad(
            file,
            format!("line {}, column {}: {e}", e.line(), e.column()),
        )
    })
}

/// Per-record mask statistics (how far the masks moved under L1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskStats {
    pub step: usize,
    pub head_mean: f64,
    pub head_min: f32,
    pub head_max: f32,
    pub ffn_mean: f64,
    pub ffn_min: f32,
    pub ffn_max: f32,
    /// Mean |m − m₀| against the first record.
    pub head_mean_abs_change: f64,
    pub ffn_mean_abs_change: f64,
}

pub fn mask_stats(t: &MaskTrajectory) -> Vec<MaskStats> {
    let (nh, nf) = (t.layers * t.heads, t.layers * t.ffn);
    let stats = |v: &[f32], v0: &[f32]| {
        let n = v.len().max(1) as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let min = v.iter().copied().fold(f32::INFINITY, f32::min);
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let change = v
            .iter()
            .zip(v0)
            .map(|(a, b)| f64::from((a - b).abs()))
            .sum::<f64>()
            / n;
        (mean, min, max, change)
    };
    (0..t.records())
        .map(|r| {
            let (hm, hmin, hmax, hc) = stats(&t.head[r * nh..(r + 1) * nh], &t.head[..nh]);
            let (fm, fmin, fmax, fc) = stats(&t.neuron[r * nf..(r + 1) * nf], &t.neuron[..nf]);
            MaskStats {
                step: t.record_steps[r],
                head_mean: hm,
                head_min: hmin,
                head_max: hmax,
                ffn_mean: fm,
                ffn_min: fmin,
                ffn_max: fmax,
                head_mean_abs_change: hc,
                ffn_mean_abs_change: fc,
            }
        })
        .collect()
}

/// `estimate.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateSummary {
    pub steps: usize,
    pub batches_per_epoch: usize,
    pub epochs: f64,
    /// blake3 of the pretrained weights file the frozen backbone came from; surgery checks it.
    pub backbone_blake3: String,
    pub seconds: f64,
    pub seconds_per_step: f64,
    pub examples_per_second: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub masks: Vec<MaskStats>,
}

/// Everything surgery reads from an estimation artifact.
#[derive(Debug, Clone)]
pub struct EstimateArtifact {
    pub spec: ModelSpec,
    pub masks: MaskTrajectory,
    pub scores: StepScores,
    /// Trainable tensors at the end of estimation (PEFT, head, masks).
    pub warm: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub summary: EstimateSummary,
}

impl EstimateArtifact {
    pub fn open(dir: &Path) -> Result<Self, ArtifactError> {
        let spec = read_json(&dir.join(SPEC_FILE))?;
        let masks = read_masks(&dir.join(MASKS_FILE))?;
        let scores = read_scores(dir)?;
        let state = dir.join(PEFT_STATE_FILE);
        let warm = read_arrays(&state)?
            .into_iter()
            .map(|(name, a)| match a {
                Array::F32(shape, values) => Ok((name, (shape, values))),
                Array::I64(..) => Err(bad(&state, format!("`{name}` must be f32"))),
            })
            .collect::<Result<_, _>>()?;
        let summary = read_json(&dir.join(SUMMARY_FILE))?;
        Ok(Self {
            spec,
            masks,
            scores,
            warm,
            summary,
        })
    }
}

/// A teacher's head outputs, one row of `width` values per unit of a split, in split order.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherOutputs {
    pub units: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

pub fn write_teacher(file: &Path, t: &TeacherOutputs) -> Result<(), ArtifactError> {
    let mut a = BTreeMap::new();
    a.insert(
        "outputs".into(),
        Array::F32(vec![t.units, t.width], t.values.clone()),
    );
    write_arrays(file, &a)
}

pub fn read_teacher(file: &Path) -> Result<TeacherOutputs, ArtifactError> {
    let mut a = read_arrays(file)?;
    let (s, values) = take_f32(file, &mut a, "outputs", 2)?;
    Ok(TeacherOutputs {
        units: s[0],
        width: s[1],
        values,
    })
}
