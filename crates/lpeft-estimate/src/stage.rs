//! The estimation stage (`kind = "estimate"`): reads a dataset artifact and a pretrained model,
//! writes the estimation artifact (see [`crate::artifact`]).

use std::path::Path;

use lpeft_artifacts::dataset::{BatchConfig, Batcher, Dataset, Padding};
use lpeft_model::Model;
use lpeft_model::hf::{HfCheckpoint, load_spec};
use lpeft_pipeline::stage::{
    Params, Prepared, RunContext, RunSummary, Stage, StageError, StageResultExt, parse_params,
};

use crate::artifact::{self, AggregateScores, ArtifactError, EstimateSummary, ModuleScore, Window};
use crate::config::{EstimateConfig, PaddingSpec};
use crate::run::{Outcome, estimate, estimation_spec};

pub const KIND: &str = "estimate";

#[derive(Debug, Clone, Copy, Default)]
pub struct EstimateStage;

/// The model's head outputs (eval mode) on every unit of `split`, in split order.
pub fn teacher_outputs(
    model: &Model,
    split: &lpeft_artifacts::dataset::SplitTensors,
    ds: &Dataset,
    plain: &burn::tensor::Device,
) -> Result<artifact::TeacherOutputs, String> {
    let cfg = BatchConfig::evaluation(128, ds.meta.tokenizer.pad_id);
    let batcher = Batcher::new(split, &ds.meta.task.kind, cfg).map_err(|e| e.to_string())?;
    let eval = lpeft_train::evaluate(model, batcher.epoch(0), plain).map_err(|e| e.to_string())?;
    let width = eval.logits.first().map_or(0, Vec::len);
    if width == 0 || eval.logits.iter().any(|r| r.len() != width) {
        return Err("teacher outputs need one logit row per unit (span heads have none)".into());
    }
    Ok(artifact::TeacherOutputs {
        units: eval.logits.len(),
        width,
        values: eval.logits.concat(),
    })
}

pub fn parse(params: &Params) -> Result<EstimateConfig, StageError> {
    let cfg: EstimateConfig = parse_params(KIND, params)?;
    cfg.validate().invalid_params(KIND)?;
    Ok(cfg)
}

pub use lpeft_artifacts::file_blake3;
pub use lpeft_model::hf::weights_file;

/// Writes every file of the estimation artifact into `dir`; returns the summary and the
/// default (second-half) aggregate.
pub fn write_artifact(
    dir: &Path,
    cfg: &EstimateConfig,
    out: &Outcome,
    per_epoch: usize,
    backbone_blake3: String,
) -> Result<(EstimateSummary, AggregateScores), ArtifactError> {
    artifact::write_json(&dir.join(artifact::CONFIG_FILE), cfg)?;
    artifact::write_masks(&dir.join(artifact::MASKS_FILE), &out.masks)?;
    artifact::write_scores(dir, &out.scores)?;
    let agg =
        artifact::aggregate(&out.scores, Window::SecondHalf).map_err(|m| ArtifactError::Bad {
            file: dir.join(artifact::SCORES_FILE),
            message: m,
        })?;
    artifact::write_json(&dir.join(artifact::SCORES_JSON), &agg)?;
    artifact::write_json(
        &dir.join(lpeft_model::checkpoint::SPEC_FILE),
        &out.model.spec,
    )?;
    let state = lpeft_model::checkpoint::trainable_tensors(&out.model);
    let state_file = dir.join(artifact::PEFT_STATE_FILE);
    lpeft_model::checkpoint::write_safetensors(&state_file, &state).map_err(|e| {
        ArtifactError::Bad {
            file: state_file.clone(),
            message: e.to_string(),
        }
    })?;
    artifact::write_json(&dir.join(artifact::CURVE_FILE), &out.curve)?;
    let steps = out.curve.len();
    let summary = EstimateSummary {
        steps,
        batches_per_epoch: per_epoch,
        epochs: steps as f64 / per_epoch.max(1) as f64,
        backbone_blake3,
        seconds: out.timing.seconds,
        seconds_per_step: out.timing.seconds_per_step(),
        examples_per_second: out.timing.examples_per_second(),
        first_loss: out.curve.first().map_or(f64::NAN, |r| r.loss),
        last_loss: out.curve.last().map_or(f64::NAN, |r| r.loss),
        masks: artifact::mask_stats(&out.masks),
    };
    artifact::write_json(&dir.join(artifact::SUMMARY_FILE), &summary)?;
    Ok((summary, agg))
}

impl Stage for EstimateStage {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn code_version(&self) -> u32 {
        // 2: the multi-tensor AdamW (same update, float sums in another order, so the last bits
        // of trained values differ from version 1's).
        2
    }

    fn input_slots(&self) -> &'static [&'static str] {
        &["dataset"]
    }

    fn about(&self) -> &'static str {
        "Light-PEFT estimation: train masks + PEFT + head on the frozen backbone with L1 on the masks; record mask trajectories and importance"
    }

    fn backend_tag(&self, class: &str, params: &serde_json::Value) -> Option<&'static str> {
        lpeft_model::fused::estimation_key_tag(
            class,
            lpeft_model::precision::Precision::of_canonical(params),
        )
    }

    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        let cfg = parse(params)?;
        let mut files = vec![
            cfg.model.join("config.json"),
            weights_file(&cfg.model).invalid_params(KIND)?,
        ];
        let tokenizer = cfg.model.join("tokenizer.json");
        if tokenizer.is_file() {
            files.push(tokenizer);
        }
        let mut canonical = serde_json::to_value(&cfg).expect("config serializes");
        // The model's files enter the key by content; its path does not.
        canonical.as_object_mut().expect("object").remove("model");
        Ok(Prepared {
            canonical_params: canonical,
            external_files: files,
            backend_sensitive: true,
        })
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let started = std::time::Instant::now();
        let cfg = parse(ctx.params)?;
        let input = ctx.input("dataset")?;
        let ds = Dataset::open(&input.dir).failed_by(KIND)?;
        let split = ds
            .split(&cfg.split)
            .map_err(|e| StageError::params(KIND, format!("field `split`: {e}")))?;
        let padding = match cfg.padding {
            PaddingSpec::Longest => Padding::Longest,
            PaddingSpec::Fixed(n) => Padding::Fixed(n),
        };
        let plain = lpeft_model::device::device(ctx.backend).failed_by(KIND)?;
        let _precision = cfg.precision.enter(&plain).failed_by(KIND)?;
        if cfg.precision.compute() == lpeft_model::fused::Compute::Bf16 {
            // NVRTC compiles the masks' scaling kernels while the model loads.
            lpeft_model::fused::prepare_scale_kernel(&plain);
        }
        let padding = lpeft_train::training_padding(padding, &plain);
        let bcfg = BatchConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            seed: cfg.seed,
            drop_last: false,
            padding,
            pad_id: ds.meta.tokenizer.pad_id,
        };
        let batcher = Batcher::new(&split, &ds.meta.task.kind, bcfg).failed_by(KIND)?;
        let per_epoch = batcher.num_batches();
        let steps = cfg.steps.resolve(per_epoch);

        let device = plain.clone().autodiff();
        lpeft_model::device::seed(&device, cfg.seed).failed_by(KIND)?;
        let ckpt = HfCheckpoint::open(&cfg.model).failed_by(KIND)?;
        let encoder = load_spec(&cfg.model, &ckpt).failed_by(KIND)?;
        let spec = estimation_spec(encoder, &ds.meta.task.kind, &cfg.peft);
        let mut src = ckpt.source(spec.encoder.family, spec.head, cfg.seed);
        let mut model = Model::build(&spec, &mut src, &device).failed_by(KIND)?;
        cfg.precision.apply(&mut model);
        let backbone_blake3 = file_blake3(&weights_file(&cfg.model).invalid_params(KIND)?)?;
        let load_seconds = started.elapsed().as_secs_f64();

        ctx.progress.start(KIND, steps as u64);
        let kernel_runs = lpeft_model::fused::scale_kernel_report().0;
        let out = estimate(model, &batcher, &cfg, steps, &device, &mut |r| {
            ctx.progress
                .advance(1, &format!("loss {:.4} lr {:.2e}", r.loss, r.lr));
        });
        ctx.progress.finish();
        let out = out.failed_by(KIND)?;

        let writing = std::time::Instant::now();
        let (summary, agg) =
            write_artifact(ctx.out_dir, &cfg, &out, per_epoch, backbone_blake3).failed_by(KIND)?;
        let write_seconds = writing.elapsed().as_secs_f64();
        if cfg.teacher_outputs {
            let teacher = teacher_outputs(&out.model, &split, &ds, &plain).failed(KIND)?;
            artifact::write_teacher(&ctx.out_dir.join(artifact::TEACHER_FILE), &teacher)
                .failed_by(KIND)?;
        }
        let last = summary.masks.last().cloned();
        let top: Vec<&ModuleScore> = {
            let mut v: Vec<&ModuleScore> = agg.modules.iter().collect();
            v.sort_by(|a, b| b.module_score.total_cmp(&a.module_score));
            v.into_iter().take(3).collect()
        };
        let mut figures = serde_json::json!({
            "steps": steps,
            "epochs": summary.epochs,
            "seconds_per_step": summary.seconds_per_step,
            "first_loss": summary.first_loss,
            "last_loss": summary.last_loss,
            "records": out.masks.records(),
            "last_masks": last,
            "top_modules": top.iter().map(|m| (m.name.clone(), m.module_score)).collect::<Vec<_>>(),
        });
        figures["phase_seconds"] = lpeft_pipeline::stage::phase_seconds(&[
            ("load", load_seconds),
            ("steps", out.timing.seconds),
            ("write", write_seconds),
        ]);
        out.graph_captures.add_to(&mut figures);
        // Whether the masks' bf16 scaling ran in its CUDA kernels (the same values either way).
        let (runs, unavailable) = lpeft_model::fused::scale_kernel_report();
        if runs > kernel_runs {
            figures["scale_kernel"] = "ran".into();
        }
        if let Some(why) = unavailable {
            figures["scale_kernel_unavailable"] = why.into();
        }
        Ok(RunSummary { figures })
    }
}
