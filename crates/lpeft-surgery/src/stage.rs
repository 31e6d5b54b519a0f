//! The surgery stage (`kind = "surgery"`): estimation artifact + ratios → `plan.json` and the
//! pruned checkpoint (`model.json` + `weights.safetensors`). Cheap: no training, so changing
//! ratios, scopes, the draw step or the score window reruns only this stage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use lpeft_artifacts::{EstimateArtifact, Window, aggregate, file_blake3};
use lpeft_model::Model;
use lpeft_model::checkpoint;
use lpeft_model::hf::HfCheckpoint;
use lpeft_model::hf::weights_file;
use lpeft_model::source::{MapSource, TensorMap};
use lpeft_pipeline::stage::{
    Params, Prepared, RunContext, RunSummary, Stage, StageError, StageResultExt, parse_params,
};

use crate::apply::{ParamReport, Tensors, fold_masks, param_report, prune};
use crate::plan::{ModuleScores, Plan, PlanSettings, Scope, Scores, make_plan};

pub const KIND: &str = "surgery";
pub use lpeft_artifacts::surgery::PLAN_FILE;

/// Which mask record to draw the backbone decision from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DrawStep {
    /// The last record (the reference's choice).
    Last,
    /// The record taken after this many updates (must be a recorded step).
    Step(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ImportanceSource {
    /// Mask values and the aggregated PEFT scores of the estimation.
    Estimated,
    /// Seeded uniform scores: the random-pruning baseline.
    Random { seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurgeryConfig {
    /// The pretrained model the estimation froze (its weights must hash to the same value).
    pub model: PathBuf,
    #[serde(default = "d_third")]
    pub head_ratio: f64,
    #[serde(default = "d_third")]
    pub ffn_ratio: f64,
    #[serde(default = "d_module")]
    pub module_ratio: f64,
    #[serde(default = "d_half")]
    pub rank_ratio: f64,
    #[serde(default = "d_layerwise")]
    pub head_scope: Scope,
    #[serde(default = "d_global")]
    pub ffn_scope: Scope,
    #[serde(default = "d_global")]
    pub module_scope: Scope,
    #[serde(default = "d_global")]
    pub rank_scope: Scope,
    #[serde(default = "d_draw")]
    pub draw_step: DrawStep,
    #[serde(default = "d_importance")]
    pub importance: ImportanceSource,
    #[serde(default = "d_window")]
    pub window: Window,
    /// Fold the learned mask values of the surviving heads and neurons into the weights they
    /// scale (the estimation model's function), instead of discarding them as the reference
    /// does. Left out of the canonical form when false, so reference keys stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fold_masks: bool,
    /// Each layer keeps a multiple of this many FFN neurons (its best-scored pruned ones added
    /// back; `plan::round_up_ffn`), so that the pruned widths need no padding in the CUDA GEMMs.
    /// 1, the reference's rule, is left out of the canonical form (keys unchanged).
    #[serde(default = "d_one", skip_serializing_if = "is_one")]
    pub ffn_multiple: usize,
}

fn d_one() -> usize {
    1
}
fn is_one(n: &usize) -> bool {
    *n == 1
}

// Defaults: the reference's train.sh (spec §1.3).
fn d_third() -> f64 {
    0.333333333
}
fn d_module() -> f64 {
    0.75
}
fn d_half() -> f64 {
    0.5
}
fn d_layerwise() -> Scope {
    Scope::Layerwise
}
fn d_global() -> Scope {
    Scope::Global
}
fn d_draw() -> DrawStep {
    DrawStep::Last
}
fn d_importance() -> ImportanceSource {
    ImportanceSource::Estimated
}
fn d_window() -> Window {
    Window::SecondHalf
}

impl SurgeryConfig {
    pub fn settings(&self) -> PlanSettings {
        PlanSettings {
            head_ratio: self.head_ratio,
            ffn_ratio: self.ffn_ratio,
            module_ratio: self.module_ratio,
            rank_ratio: self.rank_ratio,
            head_scope: self.head_scope,
            ffn_scope: self.ffn_scope,
            module_scope: self.module_scope,
            rank_scope: self.rank_scope,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("head_ratio", self.head_ratio),
            ("ffn_ratio", self.ffn_ratio),
            ("module_ratio", self.module_ratio),
            ("rank_ratio", self.rank_ratio),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!(
                    "field `{field}`: {v} must be in [0, 1) (the fraction pruned)"
                ));
            }
        }
        if self.ffn_multiple == 0 {
            return Err("field `ffn_multiple`: 0 must be at least 1 (1: no rounding)".into());
        }
        Ok(())
    }
}

/// `plan.json`: the plan, where it came from, and its parameter figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    pub plan: Plan,
    pub report: ParamReport,
    /// Key of the estimation artifact the plan was drawn from.
    pub estimate: String,
    pub draw_step: usize,
    pub window: (usize, usize),
    pub importance: ImportanceSource,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SurgeryStage;

pub fn parse(params: &Params) -> Result<SurgeryConfig, StageError> {
    let cfg: SurgeryConfig = parse_params(KIND, params)?;
    cfg.validate().invalid_params(KIND)?;
    Ok(cfg)
}

/// The importance scores of an estimation artifact at a draw record and window.
pub fn estimated_scores(
    art: &EstimateArtifact,
    record: usize,
    window: Window,
) -> Result<(Scores, (usize, usize)), String> {
    let agg = aggregate(&art.scores, window).map_err(|e| format!("field `window`: {e}"))?;
    let to64 = |v: Vec<Vec<f32>>| {
        v.into_iter()
            .map(|l| l.into_iter().map(f64::from).collect())
            .collect()
    };
    let scores = Scores {
        heads: to64(art.masks.heads_at(record)),
        neurons: to64(art.masks.ffn_at(record)),
        modules: agg
            .modules
            .iter()
            .map(|m| ModuleScores {
                id: m.id,
                score: m.module_score,
                ranks: m.rank_scores.clone(),
            })
            .collect(),
    };
    Ok((scores, (agg.from, agg.to)))
}

/// Draw-step resolution: the index of the record to use, and its step.
pub fn resolve_draw(art: &EstimateArtifact, draw: DrawStep) -> Result<(usize, usize), String> {
    let steps = &art.masks.record_steps;
    match draw {
        DrawStep::Last => steps
            .len()
            .checked_sub(1)
            .map(|r| (r, steps[r]))
            .ok_or_else(|| "the estimation recorded no masks".to_string()),
        DrawStep::Step(s) => art.masks.record_of_step(s).map(|r| (r, s)).ok_or_else(|| {
            format!("field `draw_step`: step {s} was not recorded; recorded steps: {steps:?}")
        }),
    }
}

/// Backbone from the pretrained checkpoint, PEFT + head (+ masks) from the estimation.
pub fn warm_tensors(
    art: &EstimateArtifact,
    ckpt: &HfCheckpoint,
    device: &burn::tensor::Device,
) -> Result<Tensors, String> {
    let mut src = ckpt.source(art.spec.encoder.family, art.spec.head, 0);
    let model = Model::build(&art.spec, &mut src, device).map_err(|e| e.to_string())?;
    let mut tensors = checkpoint::named_tensors(&model);
    for (name, (shape, values)) in &art.warm {
        match tensors.get_mut(name) {
            Some(slot) if slot.0 == *shape => slot.1.clone_from(values),
            Some(slot) => {
                return Err(format!(
                    "warm-start tensor `{name}` has shape {shape:?}, the model {:?}",
                    slot.0
                ));
            }
            None => {
                return Err(format!(
                    "warm-start tensor `{name}` does not belong to the estimation model"
                ));
            }
        }
    }
    Ok(tensors)
}

/// Builds a model from a spec and named tensors (every tensor must be used).
pub fn build_model(
    spec: &lpeft_schema::model::ModelSpec,
    tensors: &Tensors,
    device: &burn::tensor::Device,
) -> Result<Model, String> {
    build_from(spec, tensors.clone(), device)
}

/// [`build_model`] that consumes the tensors (no copy of the weights on the way in).
pub fn build_from(
    spec: &lpeft_schema::model::ModelSpec,
    tensors: Tensors,
    device: &burn::tensor::Device,
) -> Result<Model, String> {
    let names: Vec<String> = tensors.keys().cloned().collect();
    let map = TensorMap {
        tensors: tensors.into_iter().collect(),
    };
    let mut src = MapSource {
        file: "pruned".into(),
        map,
        fill: vec![],
        seed: 0,
        used: vec![],
    };
    let model = Model::build(spec, &mut src, device).map_err(|e| e.to_string())?;
    if let Some(extra) = names.iter().find(|k| !src.used.contains(k)) {
        return Err(format!("tensor `{extra}` is not part of the pruned model"));
    }
    Ok(model)
}

impl Stage for SurgeryStage {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn code_version(&self) -> u32 {
        1
    }

    fn input_slots(&self) -> &'static [&'static str] {
        &["estimate"]
    }

    fn about(&self) -> &'static str {
        "Light-PEFT early pruning: a plan from the estimation's masks and scores, then physical surgery of backbone and PEFT"
    }

    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        let cfg = parse(params)?;
        let files = vec![
            cfg.model.join("config.json"),
            weights_file(&cfg.model).invalid_params(KIND)?,
        ];
        let mut canonical = serde_json::to_value(&cfg).expect("config serializes");
        canonical.as_object_mut().expect("object").remove("model");
        // Host-side slicing and copies only: the result does not depend on the backend.
        Ok(Prepared {
            canonical_params: canonical,
            external_files: files,
            backend_sensitive: false,
        })
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let started = std::time::Instant::now();
        let cfg = parse(ctx.params)?;
        let input = ctx.input("estimate")?;
        let art = EstimateArtifact::open(&input.dir).failed_by(KIND)?;
        let wfile = weights_file(&cfg.model).invalid_params(KIND)?;
        if file_blake3(&wfile)? != art.summary.backbone_blake3 {
            return Err(StageError::params(
                KIND,
                format!(
                    "field `model`: {} is not the backbone the estimation froze (its blake3 differs)",
                    wfile.display()
                ),
            ));
        }
        let (record, draw_step) = resolve_draw(&art, cfg.draw_step).invalid_params(KIND)?;
        let (mut scores, window) =
            estimated_scores(&art, record, cfg.window).invalid_params(KIND)?;
        if let ImportanceSource::Random { seed } = cfg.importance {
            scores = scores.random_like(seed);
        }
        let mut plan = make_plan(&scores, &cfg.settings());
        crate::plan::round_up_ffn(&mut plan, &scores.neurons, cfg.ffn_multiple);

        // Host-side work: on a GPU backend, its library's CPU device (no CUDA context to start).
        let device = lpeft_model::device::host_device(ctx.backend).failed_by(KIND)?;
        let ckpt = HfCheckpoint::open(&cfg.model).failed_by(KIND)?;
        let mut tensors = warm_tensors(&art, &ckpt, &device).failed(KIND)?;
        let load_seconds = started.elapsed().as_secs_f64();
        if cfg.fold_masks {
            tensors = fold_masks(&art.spec, &tensors).failed_by(KIND)?;
        }
        let (spec, pruned) = prune(&art.spec, &tensors, &plan).failed_by(KIND)?;
        let report = param_report(&art.spec, &tensors, &spec, &pruned);
        drop(tensors);
        let model = build_from(&spec, pruned, &device).failed(KIND)?;
        let prune_seconds = started.elapsed().as_secs_f64() - load_seconds;
        checkpoint::save(&model, ctx.out_dir).failed_by(KIND)?;
        let file = PlanFile {
            plan,
            report: report.clone(),
            estimate: input.key.clone(),
            draw_step,
            window,
            importance: cfg.importance,
        };
        let text = serde_json::to_string_pretty(&file).expect("plan serializes");
        std::fs::write(ctx.out_dir.join(PLAN_FILE), text)?;
        let write_seconds = started.elapsed().as_secs_f64() - load_seconds - prune_seconds;
        Ok(RunSummary {
            figures: serde_json::json!({
                "backbone_params": [report.backbone_before, report.backbone_after],
                "backbone_pruned_pct": report.backbone_pruned_pct,
                "encoder_layers_pruned_pct": report.encoder_layers_pruned_pct,
                "peft_params": [report.peft_before, report.peft_after],
                "peft_modules": [report.peft_modules_before, report.peft_modules_after],
                "rank_slots": [report.rank_slots_before, report.rank_slots_after],
                "head_params": report.head_params,
                "trainable_after": report.trainable_after,
                "kept_heads": report.kept_heads_per_layer,
                "kept_neurons": report.kept_neurons_per_layer,
                "draw_step": draw_step,
                "phase_seconds": lpeft_pipeline::stage::phase_seconds(&[
                    ("load", load_seconds),
                    ("prune", prune_seconds),
                    ("write", write_seconds),
                ]),
            }),
        })
    }
}
