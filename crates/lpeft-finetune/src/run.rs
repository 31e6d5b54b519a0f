//! The fine-tuning loop: train, evaluate on dev at every epoch end (and at a step cap), keep
//! the best epoch by the task's main score. No IO: the stage reads inputs and writes outputs.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use lpeft_artifacts::dataset::Labels as SplitLabels;
use lpeft_artifacts::dataset::{BatchConfig, Batcher, Padding, SplitTensors, Texts};
use lpeft_eval::span::{decode_split, official_predictions, span_answers};
use lpeft_eval::squad::SquadPredictions;
use lpeft_eval::{Outputs, evaluate_task};
use lpeft_model::Model;
use lpeft_model::checkpoint::trainable_tensors;
use lpeft_model::names::{TensorKind, TensorName};
use lpeft_pipeline::stage::Progress;
use lpeft_schema::dataset::{TaskKind, TaskSpec};
use lpeft_schema::results::EpochMetrics;
use lpeft_train::{Capture, Distill, Predictions, StepRecord, TrainConfig, Trainer, evaluate};

use crate::config::{FinetuneConfig, PaddingSpec};

#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error(transparent)]
    Train(#[from] lpeft_train::TrainError),
    #[error(transparent)]
    Data(#[from] lpeft_artifacts::dataset::DatasetError),
    #[error("evaluating epoch {epoch}: {source}")]
    Eval {
        epoch: usize,
        source: lpeft_eval::EvalError,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "the training split has no examples: nothing to fine-tune (check the task files and the data stage's `max_examples`)"
    )]
    NoTrainingExamples,
}

/// Parameter counts by role, from shapes only (no device reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: u64,
    pub trainable: u64,
    /// Embeddings and encoder layers, PEFT modules and masks excluded.
    pub backbone: u64,
}

struct Count {
    path: Vec<String>,
    counts: ParamCounts,
}

impl ModuleVisitor for Count {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements() as u64;
        let path = self.path.join(".");
        self.counts.total += n;
        if param.val().is_require_grad() {
            self.counts.trainable += n;
        }
        let kind = TensorName::parse(&path).map(TensorName::kind);
        if kind == Some(TensorKind::Backbone) {
            self.counts.backbone += n;
        }
    }
}

pub fn param_counts(model: &Model) -> ParamCounts {
    let mut c = Count {
        path: Vec::new(),
        counts: ParamCounts::default(),
    };
    model.visit(&mut c);
    c.counts
}

/// Steps between reads of the loss from the device (see [`Trainer::with_read_every`]); does
/// not change results.
const READ_EVERY: usize = 50;

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub epochs: Vec<EpochMetrics>,
    /// Index into `epochs` of the best one (its number is `epochs[best_epoch].epoch`).
    pub best_epoch: usize,
    /// Trainable tensors (PEFT + head) of the best epoch.
    pub best_state: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// Span tasks: the best epoch's dev answers by question id (the official predictions).
    pub best_answers: Option<SquadPredictions>,
    pub curve: Vec<StepRecord>,
    pub step_seconds: Vec<f64>,
    pub train_examples: u64,
    /// Dev throughput of the last evaluation (forward only).
    pub inference_examples_per_second: f64,
    /// Host seconds of each epoch's dev evaluation: forward, scoring, and keeping the best
    /// epoch's trainable tensors.
    pub eval_seconds: Vec<f64>,
    /// Steps captured as CUDA graphs and the host seconds they took.
    pub graph_captures: lpeft_train::GraphCaptures,
}

fn padding(p: PaddingSpec) -> Padding {
    match p {
        PaddingSpec::Longest => Padding::Longest,
        PaddingSpec::Fixed(n) => Padding::Fixed(n),
    }
}

/// Steps of the whole run: `epochs` epochs, capped at `max_steps`.
pub fn total_steps(cfg: &FinetuneConfig, batches_per_epoch: usize) -> usize {
    let full = cfg.epochs * batches_per_epoch;
    cfg.max_steps.map_or(full, |m| m.min(full)).max(1)
}

/// Scores predictions on `split` with the task's metrics. Span tasks need the split's texts
/// (contexts and gold answers), to decode the logits into answer texts; ReCoRD needs its texts
/// (each query's candidate entities and gold answers) and the head's `logits` per row, to
/// choose each query's best-scored candidate.
pub fn score(
    task: &TaskSpec,
    split: &SplitTensors,
    texts: Option<&Texts>,
    predictions: &Predictions,
    logits: &[Vec<f32>],
) -> Result<lpeft_eval::Evaluation, lpeft_eval::EvalError> {
    if let Some(Texts::Record(texts)) = texts {
        return lpeft_eval::evaluate_record(task, logits, &split.group_ids, texts);
    }
    match (&task.kind, predictions, &split.labels) {
        (
            TaskKind::Span,
            Predictions::Span {
                start_logits,
                end_logits,
            },
            _,
        ) => {
            let Some(Texts::Span(texts)) = texts else {
                return Err(lpeft_eval::EvalError::Inconsistent(format!(
                    "task {}: span predictions need the split's span texts (`<split>.texts.json`)",
                    task.name
                )));
            };
            let decoded = decode_split(split, texts, start_logits, end_logits)?;
            let (predicted, gold) = span_answers(texts, &decoded);
            evaluate_task(
                task,
                &Outputs::Answers {
                    predicted: &predicted,
                    gold: &gold,
                },
            )
        }
        (TaskKind::MultipleChoice { .. }, Predictions::Class(p), SplitLabels::Class(y)) => {
            evaluate_task(
                task,
                &Outputs::Choices {
                    predicted: p,
                    labels: y,
                },
            )
        }
        (_, Predictions::Class(p), SplitLabels::Class(y)) => evaluate_task(
            task,
            &Outputs::Classes {
                predicted: p,
                labels: y,
                groups: Some(&split.group_ids),
            },
        ),
        (_, Predictions::Score(p), SplitLabels::Float(y)) => {
            let p: Vec<f64> = p.iter().map(|v| f64::from(*v)).collect();
            let y: Vec<f64> = y.iter().map(|v| f64::from(*v)).collect();
            evaluate_task(
                task,
                &Outputs::Scores {
                    predicted: &p,
                    labels: &y,
                },
            )
        }
        _ => Err(lpeft_eval::EvalError::Empty {
            what: "predictions of a form this task cannot score",
        }),
    }
}

/// Span predictions as official answers by question id; `None` for other predictions.
fn dev_answers(
    dev: &SplitTensors,
    texts: Option<&Texts>,
    predictions: &Predictions,
) -> Result<Option<SquadPredictions>, lpeft_eval::EvalError> {
    let (
        Predictions::Span {
            start_logits,
            end_logits,
        },
        Some(Texts::Span(texts)),
    ) = (predictions, texts)
    else {
        return Ok(None);
    };
    let decoded = decode_split(dev, texts, start_logits, end_logits)?;
    Ok(Some(official_predictions(texts, &decoded)))
}

/// Fine-tunes `model` (on the autodiff device) and evaluates on `dev` with `plain` (same
/// backend, no autodiff); with `distill`, towards its teacher outputs on `train` too.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    cfg: &FinetuneConfig,
    mut model: Model,
    task: &TaskSpec,
    train: &SplitTensors,
    dev: &SplitTensors,
    dev_texts: Option<&Texts>,
    pad_id: u32,
    device: &Device,
    plain: &Device,
    progress: &dyn Progress,
    distill: Option<Distill>,
) -> Result<Outcome, FinetuneError> {
    let train_cfg = BatchConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        seed: cfg.seed,
        drop_last: false,
        padding: lpeft_train::training_padding(padding(cfg.padding), device),
        pad_id,
    };
    let dev_cfg = BatchConfig::evaluation(cfg.eval_batch_size, pad_id);
    let batcher = Batcher::new(train, &task.kind, train_cfg)?;
    if batcher.num_units() == 0 {
        return Err(FinetuneError::NoTrainingExamples);
    }
    let dev_batcher = Batcher::new(dev, &task.kind, dev_cfg)?;
    let total = total_steps(cfg, batcher.num_batches());
    // HF: warmup steps = ceil(ratio * total).
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
    let mut trainer = Trainer::new(
        TrainConfig {
            lr: cfg.lr,
            total_steps: total,
            warmup_steps: warmup,
            weight_decay: cfg.weight_decay,
            max_grad_norm: cfg.max_grad_norm,
            l1: 0.0,
            head_mask_lr_coef: 1.0,
            neuron_mask_lr_coef: 1.0,
        },
        device.clone(),
    )
    .with_read_every(READ_EVERY);
    if let Some(d) = distill {
        trainer = trainer.with_distill(d);
    }
    // On a libtorch GPU, steps are captured and replayed as CUDA graphs (the key says so).
    trainer = trainer.with_cuda_graphs(true)?;
    progress.start("fine-tune", total as u64);
    let (mut epochs, mut curve, mut step_seconds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut best_epoch, mut best_score, mut best_state) =
        (0usize, f64::NEG_INFINITY, BTreeMap::new());
    let mut best_answers = None;
    let mut train_examples = 0u64;
    let mut inference = 0.0;
    let mut eval_seconds = Vec::new();
    'epochs: for epoch in 0..cfg.epochs {
        let (mut loss_sum, mut n) = (0.0, 0usize);
        let mut take = |records: Vec<StepRecord>, curve: &mut Vec<StepRecord>| {
            for rec in records {
                loss_sum += rec.loss;
                n += 1;
                step_seconds.push(rec.seconds);
                progress.advance(
                    1,
                    &format!(
                        "epoch {} loss {:.4} {:.4} s/step",
                        epoch + 1,
                        rec.loss,
                        rec.seconds
                    ),
                );
                curve.push(rec);
            }
        };
        for batch in batcher.epoch(epoch as u64) {
            let (m, records) = trainer.step(model, &batch, Capture::NONE)?;
            model = m;
            take(records, &mut curve);
            train_examples += batch.batch_size as u64;
            if trainer.steps_done() >= total {
                break;
            }
        }
        take(trainer.finish()?, &mut curve);
        let eval_started = std::time::Instant::now();
        let eval = evaluate(&model, dev_batcher.epoch(0), plain)?;
        inference = eval.examples as f64 / eval.seconds.max(1e-9);
        let scored =
            score(task, dev, dev_texts, &eval.predictions, &eval.logits).map_err(|source| {
                FinetuneError::Eval {
                    epoch: epoch + 1,
                    source,
                }
            })?;
        let main = if scored.main_score.is_nan() {
            f64::NEG_INFINITY
        } else {
            scored.main_score
        };
        epochs.push(EpochMetrics {
            epoch: (epoch + 1) as u32,
            step: trainer.steps_done() as u64,
            train_loss: loss_sum / n.max(1) as f64,
            metrics: scored.metrics,
            main_score: scored.main_score,
        });
        if main > best_score || epochs.len() == 1 {
            best_score = main;
            best_epoch = epochs.len() - 1;
            best_state = trainable_tensors(&model);
            best_answers = dev_answers(dev, dev_texts, &eval.predictions).map_err(|source| {
                FinetuneError::Eval {
                    epoch: epoch + 1,
                    source,
                }
            })?;
        }
        eval_seconds.push(eval_started.elapsed().as_secs_f64());
        if trainer.steps_done() >= total {
            break 'epochs;
        }
    }
    progress.finish();
    Ok(Outcome {
        epochs,
        best_epoch,
        best_state,
        best_answers,
        curve,
        step_seconds,
        train_examples,
        inference_examples_per_second: inference,
        eval_seconds,
        graph_captures: trainer.graph_captures(),
    })
}
