//! The fine-tuning stage (`kind = "finetune"`): inputs `dataset` (a data artifact) and, for
//! Light-PEFT, `init` (a surgery artifact: the pruned model with warm-started PEFT and head).
//! Outputs `result.json` (per-epoch dev metrics, best epoch, efficiency), `curve.json`,
//! `config.json`, and the best epoch's trainable weights in `best/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lpeft_artifacts::dataset::Dataset;
use lpeft_model::Model;
use lpeft_model::checkpoint;
use lpeft_model::hf::weights_file;
use lpeft_model::hf::{HfCheckpoint, load_spec};
use lpeft_model::peft_config::estimation_spec;
use lpeft_pipeline::stage::{
    InputArtifact, Params, Prepared, RunContext, RunSummary, Stage, StageError, StageResultExt,
    parse_params,
};
use lpeft_schema::results::{Efficiency, RunResult};

use crate::config::FinetuneConfig;
use crate::run::{finetune, param_counts};

use lpeft_artifacts::finetune as layout;

pub const KIND: &str = layout::KIND;
pub const RESULT_FILE: &str = layout::RESULT_FILE;

#[derive(Debug, Clone, Copy, Default)]
pub struct FinetuneStage;

pub fn parse(params: &Params) -> Result<FinetuneConfig, StageError> {
    let cfg: FinetuneConfig = parse_params(KIND, params)?;
    if cfg.model.is_some() != cfg.peft.is_some() {
        return Err(StageError::params(
            KIND,
            "give `model` and `peft` together (vanilla PEFT), or neither (Light-PEFT from an `init` input)",
        ));
    }
    cfg.validate(cfg.model.is_none()).invalid_params(KIND)?;
    Ok(cfg)
}

fn write_json(file: &Path, value: &impl serde::Serialize) -> Result<(), StageError> {
    std::fs::write(
        file,
        serde_json::to_string_pretty(value).expect("serializes"),
    )?;
    Ok(())
}

/// Backbone size before pruning, from the surgery artifact's plan.
fn original_backbone(init: &InputArtifact) -> Result<u64, StageError> {
    lpeft_artifacts::surgery::read_report(&init.dir)
        .map(|r| r.backbone_before as u64)
        .map_err(|e| StageError::failed(KIND, format!("{e} (is `init` a surgery artifact?)")))
}

/// The distillation targets: the `teacher` input's outputs on the training split, which must
/// cover every unit of it. A teacher needs `distill` and `distill` needs a teacher.
fn teacher_targets(
    cfg: &FinetuneConfig,
    teacher: Option<&InputArtifact>,
    train: &lpeft_artifacts::dataset::SplitTensors,
    kind: &lpeft_schema::dataset::TaskKind,
) -> Result<Option<lpeft_train::Distill>, StageError> {
    let (d, teacher) = match (cfg.distill, teacher) {
        (None, None) => return Ok(None),
        (Some(d), Some(t)) => (d, t),
        (Some(_), None) => return Err(StageError::missing_input(KIND, "teacher")),
        (None, Some(_)) => {
            return Err(StageError::params(
                KIND,
                "field `distill`: required with a `teacher` input (its weight and temperature)",
            ));
        }
    };
    let file = teacher.dir.join(lpeft_artifacts::estimation::TEACHER_FILE);
    if !file.is_file() {
        return Err(StageError::failed(
            KIND,
            format!(
                "input `teacher` ({}) has no {}: estimate with `teacher_outputs: true`",
                teacher.key,
                lpeft_artifacts::estimation::TEACHER_FILE
            ),
        ));
    }
    let t = lpeft_artifacts::estimation::read_teacher(&file).failed_by(KIND)?;
    // Units as the batcher makes them: questions for multiple choice, rows otherwise.
    let units = match kind {
        lpeft_schema::dataset::TaskKind::MultipleChoice { .. } => train.num_groups(),
        _ => train.num_rows(),
    };
    if t.units != units {
        return Err(StageError::failed(
            KIND,
            format!(
                "{}: the teacher has outputs for {} units, the training split has {units}",
                file.display(),
                t.units
            ),
        ));
    }
    Ok(Some(lpeft_train::Distill {
        weight: d.weight,
        temperature: d.temperature,
        width: t.width,
        targets: t.values,
    }))
}

impl Stage for FinetuneStage {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn code_version(&self) -> u32 {
        // 2: the multi-tensor AdamW (same update, float sums in another order, so the last bits
        // of trained values differ from version 1's). 3: `best_epoch` of result.json counts from
        // 1, as everything that prints it.
        3
    }

    fn input_slots(&self) -> &'static [&'static str] {
        &["dataset", "init", "teacher"]
    }

    fn optional_slots(&self) -> &'static [&'static str] {
        &["init", "teacher"]
    }

    fn about(&self) -> &'static str {
        "Fine-tune PEFT (vanilla from a pretrained model, or Light-PEFT from a surgery artifact) and evaluate on dev every epoch"
    }

    fn backend_tag(&self, class: &str, params: &serde_json::Value) -> Option<&'static str> {
        lpeft_model::fused::key_tag(
            class,
            lpeft_model::precision::Precision::of_canonical(params),
        )
    }

    fn prepare(&self, params: &Params) -> Result<Prepared, StageError> {
        let cfg = parse(params)?;
        let mut external_files: Vec<PathBuf> = Vec::new();
        if let Some(model) = &cfg.model {
            external_files.push(model.join("config.json"));
            external_files.push(weights_file(model).invalid_params(KIND)?);
        }
        let mut canonical = serde_json::to_value(&cfg).expect("config serializes");
        // The model's content enters the key through its files; its path must not.
        if let Some(obj) = canonical.as_object_mut() {
            obj.remove("model");
            obj.insert(
                "vanilla".into(),
                serde_json::Value::Bool(cfg.model.is_some()),
            );
        }
        Ok(Prepared {
            canonical_params: canonical,
            external_files,
            backend_sensitive: true,
        })
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<RunSummary, StageError> {
        let started = Instant::now();
        let cfg = parse(ctx.params)?;
        let data = ctx.input(layout::DATASET_SLOT)?;
        let init = ctx.inputs.get(layout::INIT_SLOT);
        if cfg.model.is_none() && init.is_none() {
            return Err(StageError::missing_input(KIND, "init"));
        }
        let ds = Dataset::open(&data.dir).failed_by(KIND)?;
        let task = ds.meta.task.clone();
        let train = ds.split(&cfg.train_split).failed_by(KIND)?;
        let dev = ds.split(&cfg.eval_split).failed_by(KIND)?;
        // Span tasks score answer texts: contexts and gold answers are kept beside the split.
        let dev_texts = ds.texts(&cfg.eval_split).failed_by(KIND)?;

        let plain = lpeft_model::device::device(ctx.backend).failed_by(KIND)?;
        let _precision = cfg.precision.enter(&plain).failed_by(KIND)?;
        lpeft_model::device::seed(&plain, cfg.seed).failed_by(KIND)?;
        // On a GPU the peak is device memory (NVML); elsewhere the process's peak RSS.
        let gpu_memory = lpeft_train::efficiency::cuda_index(ctx.backend).and_then(|i| {
            lpeft_train::efficiency::DeviceMemoryMonitor::start(i)
                .map_err(|why| tracing::warn!("peak GPU memory not measured: {why}"))
                .ok()
        });
        let device = plain.clone().autodiff();
        let (mut model, original) = match (&cfg.model, &cfg.peft, init) {
            (Some(dir), Some(peft), _) => {
                let ckpt = HfCheckpoint::open(dir).failed_by(KIND)?;
                let encoder = load_spec(dir, &ckpt).failed_by(KIND)?;
                let mut spec = estimation_spec(encoder, &task.kind, peft);
                spec.masks = false;
                let mut src = ckpt.source(spec.encoder.family, spec.head, cfg.seed);
                let model = Model::build(&spec, &mut src, &device).failed_by(KIND)?;
                let original = param_counts(&model).backbone;
                (model, original)
            }
            (_, _, Some(init)) => (
                checkpoint::load(&init.dir, &device).failed_by(KIND)?,
                original_backbone(init)?,
            ),
            _ => unreachable!("checked above"),
        };
        cfg.precision.apply(&mut model);
        let distill = teacher_targets(&cfg, ctx.inputs.get("teacher"), &train, &task.kind)?;
        let load_seconds = started.elapsed().as_secs_f64();
        let counts = param_counts(&model);
        let spec = model.spec.clone();
        let outcome = finetune(
            &cfg,
            model,
            &task,
            &train,
            &dev,
            dev_texts.as_ref(),
            ds.meta.tokenizer.pad_id,
            &device,
            &plain,
            ctx.progress,
            distill,
        )
        .failed_by(KIND)?;

        let secs =
            lpeft_train::efficiency::mean_step_seconds(&outcome.step_seconds, 2).unwrap_or(0.0);
        let train_time: f64 = outcome.step_seconds.iter().sum();
        let memory = match gpu_memory {
            Some(monitor) => monitor.finish(),
            None => (
                lpeft_train::efficiency::peak_rss_bytes().unwrap_or(0),
                lpeft_train::efficiency::MEMORY_PROCESS_RSS,
            ),
        };
        let efficiency = Efficiency {
            total_params: counts.total,
            trainable_params: counts.trainable,
            backbone_params: counts.backbone,
            backbone_params_original: original,
            backbone_pruned_pct: lpeft_train::efficiency::backbone_pruned_pct(
                counts.backbone,
                original,
            ),
            train_seconds_per_step: secs,
            train_examples_per_second: lpeft_train::efficiency::throughput(
                outcome.train_examples,
                train_time,
            ),
            inference_examples_per_second: outcome.inference_examples_per_second,
            peak_memory_bytes: memory.0,
            memory_kind: memory.1.into(),
            backend: ctx.backend.to_string(),
            host: lpeft_train::efficiency::host_description(),
        };
        let best = &outcome.epochs[outcome.best_epoch];
        let result = RunResult {
            task: task.name.clone(),
            method: cfg.method.clone(),
            seed: cfg.seed,
            epochs: outcome.epochs.clone(),
            best_epoch: best.epoch,
            best_main_score: best.main_score,
            best_metrics: best.metrics.clone(),
            efficiency,
            wall_seconds: started.elapsed().as_secs_f64(),
        };
        let writing = Instant::now();
        write_json(&ctx.out_dir.join(RESULT_FILE), &result)?;
        write_json(&ctx.out_dir.join(layout::CONFIG_FILE), &cfg)?;
        write_json(&ctx.out_dir.join(layout::CURVE_FILE), &outcome.curve)?;
        let best_dir = ctx.out_dir.join(layout::BEST_DIR);
        std::fs::create_dir_all(&best_dir)?;
        write_json(&best_dir.join(layout::SPEC_FILE), &spec)?;
        checkpoint::write_safetensors(&best_dir.join(layout::TRAINABLE_FILE), &outcome.best_state)
            .failed_by(KIND)?;
        if let Some(answers) = &outcome.best_answers {
            write_json(&best_dir.join(layout::PREDICTIONS_FILE), answers)?;
        }
        let mut figures = serde_json::json!({
            "task": result.task,
            "method": result.method,
            "best_epoch": result.best_epoch,
            "best_main_score": result.best_main_score,
            "best_metrics": result.best_metrics,
            "trainable_params": result.efficiency.trainable_params,
            "backbone_pruned_pct": result.efficiency.backbone_pruned_pct,
            "train_s_per_step": result.efficiency.train_seconds_per_step,
        });
        figures["phase_seconds"] = lpeft_pipeline::stage::phase_seconds(&[
            ("load", load_seconds),
            ("steps", train_time),
            ("eval", outcome.eval_seconds.iter().sum()),
            ("write", writing.elapsed().as_secs_f64()),
        ]);
        // Each pass apart: a slow first one is warm-up, slow ones throughout are the forward.
        figures["eval_seconds_per_epoch"] =
            lpeft_pipeline::stage::rounded_seconds(&outcome.eval_seconds);
        outcome.graph_captures.add_to(&mut figures);
        Ok(RunSummary { figures })
    }
}
