//! lpeft-train: the pieces every training loop shares (estimation now, pruned fine-tuning next).
//!
//! - [`to_input`] / [`to_labels`] turn an `lpeft_data::Batch` into tensors on a device;
//! - [`Trainer::step`] runs one step: forward (optionally recording PEFT norm ratios), task
//!   loss + λ·Σ|masks|, backward, first-order rank scores, NaN guard, AdamW with global-norm
//!   clipping on a linear schedule; every capture of a step is read back in **one** transfer;
//! - [`evaluate`] runs a split in eval mode (no dropout) and returns predictions and loss;
//! - [`Timing`] accumulates step time and throughput.
//!
//! A fine-tuning loop is `for batch in batcher.epoch(e) { (model, rec) = trainer.step(model,
//! &batch, Capture::NONE)? }` plus `evaluate` at epoch ends.

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use lpeft_data::{Batch, BatchLabels};
use lpeft_model::head::{HeadOutput, Labels, distill_loss, task_loss};
use lpeft_model::importance::rank_taylor_scores;
use lpeft_model::optim::{AdamW, AdamWConfig, linear_schedule};
use lpeft_model::peft::NormRatioRecorder;
use lpeft_model::{EncoderInput, Model};
use lpeft_schema::model::PeftModuleId;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "step {step}: the loss is {loss} (task loss {task_loss}); training diverged (lower the learning rate or check the data)"
    )]
    NonFiniteLoss {
        step: usize,
        loss: f64,
        task_loss: f64,
    },
    #[error("step {step}: the gradient norm is {norm}; training diverged")]
    NonFiniteGradient { step: usize, norm: f64 },
    #[error("batch has no labels (an unlabeled split cannot be trained or evaluated)")]
    NoLabels,
    #[error("distillation: {0}")]
    Teacher(String),
    #[error("batch labels ({found}) do not fit the model's head ({head})")]
    LabelMismatch { found: &'static str, head: String },
}

/// Turns a batch's row-major token arrays into an [`EncoderInput`] on `device`.
pub fn to_input(batch: &Batch, device: &Device) -> EncoderInput {
    let shape = [batch.rows, batch.seq_len];
    let t = |v: &Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v.clone(), shape), device);
    EncoderInput {
        input_ids: t(&batch.input_ids),
        token_type_ids: t(&batch.type_ids),
        attention_mask: t(&batch.attention_mask),
    }
}

/// The batch's gold answers as [`Labels`].
pub fn to_labels(batch: &Batch, device: &Device) -> Result<Labels, TrainError> {
    let n = batch.batch_size;
    Ok(match &batch.labels {
        BatchLabels::None => return Err(TrainError::NoLabels),
        BatchLabels::Class(v) => Labels::Class(Tensor::<1, Int>::from_data(
            TensorData::new(v.clone(), [n]),
            device,
        )),
        BatchLabels::Float(v) => Labels::Score(Tensor::<1>::from_data(
            TensorData::new(v.clone(), [n]),
            device,
        )),
        BatchLabels::Span(v) => {
            let start: Vec<i64> = v.iter().step_by(2).copied().collect();
            let end: Vec<i64> = v.iter().skip(1).step_by(2).copied().collect();
            let rows = start.len();
            let t = |x: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(x, [rows]), device);
            Labels::Span {
                start: t(start),
                end: t(end),
            }
        }
    })
}

/// Optimisation settings of one training run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub lr: f64,
    /// Steps of the linear schedule (the lr reaches 0 after this many).
    pub total_steps: usize,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Global-norm clipping; `None` disables it.
    pub max_grad_norm: Option<f64>,
    /// λ of `λ·Σ|masks|` (spec §2.3); 0 trains without the penalty.
    pub l1: f64,
    /// Learning-rate multipliers of the head masks and FFN-neuron masks (the reference's
    /// `attn_mask_lr_coef` / `ffn_mask_lr_coef`; its scripts use 1).
    pub head_mask_lr_coef: f64,
    pub neuron_mask_lr_coef: f64,
}

/// What a step should capture besides the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// PEFT output-norm ratios (p2) and first-order rank scores (spec §3.2, §3.3).
    pub importance: bool,
}

impl Capture {
    pub const NONE: Capture = Capture { importance: false };
    pub const IMPORTANCE: Capture = Capture { importance: true };
}

/// Importance captured in one step, per PEFT module in [`Model::peft_modules`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct StepImportance {
    pub modules: Vec<PeftModuleId>,
    /// Mean `‖Δ‖/‖base‖` over non-padding tokens (0 for a module that recorded nothing).
    pub p2: Vec<f32>,
    /// `[r]` per module.
    pub rank_taylor: Vec<Vec<f32>>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 0-based index of the step (the number of updates done before it).
    pub step: usize,
    /// The objective: task loss (mixed with the distillation term if any) + λ·Σ|m|.
    pub loss: f64,
    pub task_loss: f64,
    pub lr: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub seconds: f64,
    #[serde(skip)]
    pub importance: Option<StepImportance>,
}

/// Time and throughput over the steps run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub steps: usize,
    pub seconds: f64,
    pub examples: usize,
    pub tokens: usize,
}

impl Timing {
    pub fn seconds_per_step(&self) -> f64 {
        self.seconds / self.steps.max(1) as f64
    }
    pub fn examples_per_second(&self) -> f64 {
        self.examples as f64 / self.seconds.max(1e-9)
    }
}

/// Distillation targets: a teacher's head outputs for every unit of the training split, in
/// split order (row order; question order for multiple choice), `width` values a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Distill {
    /// Weight `w` of the loss `(1 − w)·task + w·distill`.
    pub weight: f64,
    /// Softmax temperature of the class-logit term (unused for regression).
    pub temperature: f64,
    pub width: usize,
    pub targets: Vec<f32>,
}

impl Distill {
    /// The teacher rows of a batch's units, as `[units, width]` host values.
    fn rows(&self, batch: &Batch) -> Result<Vec<f32>, TrainError> {
        let units = if batch.num_choices.is_some() {
            &batch.group_indices
        } else {
            &batch.row_indices
        };
        let have = self.targets.len() / self.width.max(1);
        let mut out = Vec::with_capacity(units.len() * self.width);
        for &u in units {
            if u >= have {
                return Err(TrainError::Teacher(format!(
                    "unit {u} of the batch has no teacher output (the teacher covers {have})"
                )));
            }
            out.extend_from_slice(&self.targets[u * self.width..(u + 1) * self.width]);
        }
        Ok(out)
    }
}

/// One optimiser over one model; call [`Trainer::step`] once per batch.
pub struct Trainer {
    pub config: TrainConfig,
    pub device: Device,
    pub timing: Timing,
    opt: AdamW,
    step: usize,
    distill: Option<Distill>,
}

impl Trainer {
    /// `device` is the autodiff device the model lives on.
    pub fn new(config: TrainConfig, device: Device) -> Self {
        let opt = AdamW::new(AdamWConfig {
            max_grad_norm: config.max_grad_norm,
            ..AdamWConfig::reference(config.weight_decay)
        });
        Self {
            config,
            device,
            timing: Timing::default(),
            opt,
            step: 0,
            distill: None,
        }
    }

    /// Adds a distillation term towards `distill`'s teacher outputs to every step's loss.
    pub fn with_distill(mut self, distill: Distill) -> Self {
        self.distill = Some(distill);
        self
    }

    /// Number of steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Learning rate of the next update.
    pub fn lr(&self) -> f64 {
        self.config.lr
            * linear_schedule(self.step, self.config.total_steps, self.config.warmup_steps)
    }

    pub fn step(
        &mut self,
        model: Model,
        batch: &Batch,
        capture: Capture,
    ) -> Result<(Model, StepRecord), TrainError> {
        let start = Instant::now();
        let input = to_input(batch, &self.device);
        let labels = to_labels(batch, &self.device)?;
        check_labels(&model, &labels)?;
        let mut rec = capture
            .importance
            .then(|| NormRatioRecorder::new(&input.attention_mask));
        let out = match rec.as_mut() {
            Some(r) => model.forward_recording(&input, r),
            None => model.forward(&input),
        };
        let task = task_loss(&out.head, &labels);
        let objective = match &self.distill {
            None => task.clone(),
            Some(d) => {
                let rows = d.rows(batch)?;
                let teacher = Tensor::<2>::from_data(
                    TensorData::new(rows, [batch.batch_size, d.width]),
                    &self.device,
                );
                let regression = matches!(labels, Labels::Score(_));
                let kd = distill_loss(&out.head, teacher, d.temperature, regression)
                    .ok_or_else(|| TrainError::Teacher("span heads cannot be distilled".into()))?;
                task.clone().mul_scalar(1.0 - d.weight) + kd.mul_scalar(d.weight)
            }
        };
        let loss = match model.mask_l1() {
            Some(l1) if self.config.l1 != 0.0 => objective + l1.mul_scalar(self.config.l1),
            _ => objective,
        };
        let grads = loss.backward();

        // Everything this step reports, stacked so it crosses from the device once.
        let mut parts: Vec<Tensor<1>> = vec![loss.inner(), task.inner()];
        let mut layout: Option<(Vec<PeftModuleId>, Vec<usize>)> = None;
        if let Some(rec) = rec.take() {
            let taylor = rank_taylor_scores(&model, &grads);
            let ids: Vec<PeftModuleId> = taylor.iter().map(|(id, _)| *id).collect();
            let device = parts[0].device();
            for id in &ids {
                // A module records one ratio per forward; none if its matrix was empty.
                parts.push(
                    rec.ratios
                        .iter()
                        .find(|(m, _)| m == id)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_else(|| Tensor::zeros([1], &device)),
                );
            }
            let mut ranks = Vec::with_capacity(ids.len());
            for (_, t) in taylor {
                ranks.push(t.dims()[0]);
                parts.push(t);
            }
            layout = Some((ids, ranks));
        }
        let values = Tensor::cat(parts, 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values");
        let (loss_v, task_v) = (f64::from(values[0]), f64::from(values[1]));
        if !loss_v.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.step,
                loss: loss_v,
                task_loss: task_v,
            });
        }
        let importance = layout.map(|(modules, ranks)| {
            let m = modules.len();
            let p2 = values[2..2 + m].to_vec();
            let mut at = 2 + m;
            let rank_taylor = ranks
                .iter()
                .map(|&r| {
                    let v = values[at..at + r].to_vec();
                    at += r;
                    v
                })
                .collect();
            StepImportance {
                modules,
                p2,
                rank_taylor,
            }
        });

        let lr = self.lr();
        let gp = GradientsParams::from_grads(grads, &model);
        let (head_coef, neuron_coef) = (
            self.config.head_mask_lr_coef,
            self.config.neuron_mask_lr_coef,
        );
        let group = move |path: &[String]| match path.last().map(String::as_str) {
            Some("head_mask") => head_coef,
            Some("neuron_mask") => neuron_coef,
            _ => 1.0,
        };
        let (model, info) = self.opt.step_grouped(model, gp, lr, &group);
        if self.config.max_grad_norm.is_some() && !info.grad_norm.is_finite() {
            return Err(TrainError::NonFiniteGradient {
                step: self.step,
                norm: info.grad_norm,
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        self.timing.steps += 1;
        self.timing.seconds += seconds;
        self.timing.examples += batch.batch_size;
        self.timing.tokens += batch.attention_mask.iter().filter(|&&m| m != 0).count();
        let record = StepRecord {
            step: self.step,
            loss: loss_v,
            task_loss: task_v,
            lr,
            grad_norm: info.grad_norm,
            seconds,
            importance,
        };
        self.step += 1;
        Ok((model, record))
    }
}

fn check_labels(model: &Model, labels: &Labels) -> Result<(), TrainError> {
    use lpeft_schema::model::TaskHeadSpec as H;
    let ok = matches!(
        (&model.spec.head, labels),
        (
            H::Classification { .. } | H::MultipleChoice { .. },
            Labels::Class(_)
        ) | (H::Regression { .. }, Labels::Score(_))
            | (H::SpanExtraction, Labels::Span { .. })
    );
    if ok {
        return Ok(());
    }
    let found = match labels {
        Labels::Class(_) => "class ids",
        Labels::Score(_) => "scores",
        Labels::Span { .. } => "spans",
    };
    Err(TrainError::LabelMismatch {
        found,
        head: format!("{:?}", model.spec.head),
    })
}

/// Predictions on a split, in batch order.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Arg-max class (classification, multiple choice).
    Class(Vec<i64>),
    Score(Vec<f32>),
    /// Arg-max start and end token per row.
    Span {
        start: Vec<i64>,
        end: Vec<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalOutput {
    /// Mean task loss over batches, weighted by batch size.
    pub loss: f64,
    pub predictions: Predictions,
    /// Raw head outputs per unit (`[num_labels]`, `[1]` or `[choices]`); empty for spans.
    pub logits: Vec<Vec<f32>>,
    pub examples: usize,
    pub seconds: f64,
}

fn argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as i64
}

/// Runs `model` in eval mode (no dropout, no graph) over `batches` on `device` (a plain device).
pub fn evaluate(
    model: &Model,
    batches: impl IntoIterator<Item = Batch>,
    device: &Device,
) -> Result<EvalOutput, TrainError> {
    let start = Instant::now();
    let model = model.valid();
    let (mut loss_sum, mut examples) = (0.0f64, 0usize);
    let (mut classes, mut scores, mut starts, mut ends, mut logits_out) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut span = false;
    for batch in batches {
        let input = to_input(&batch, device);
        let labels = to_labels(&batch, device)?;
        check_labels(&model, &labels)?;
        let out = model.forward(&input);
        let loss = f64::from(task_loss(&out.head, &labels).into_scalar::<f32>());
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: 0,
                loss,
                task_loss: loss,
            });
        }
        loss_sum += loss * batch.batch_size as f64;
        examples += batch.batch_size;
        let read = |t: Tensor<2>| -> (usize, Vec<f32>) {
            let [_, c] = t.dims();
            (
                c,
                t.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 logits"),
            )
        };
        match out.head {
            HeadOutput::Logits(l) => {
                let (c, v) = read(l);
                for row in v.chunks(c) {
                    if matches!(
                        model.spec.head,
                        lpeft_schema::model::TaskHeadSpec::Regression { .. }
                    ) {
                        scores.push(row[0]);
                    } else {
                        classes.push(argmax(row));
                    }
                    logits_out.push(row.to_vec());
                }
            }
            HeadOutput::Span { start, end } => {
                span = true;
                let (c, s) = read(start);
                let (_, e) = read(end);
                starts.extend(s.chunks(c).map(argmax));
                ends.extend(e.chunks(c).map(argmax));
            }
        }
    }
    let predictions = if span {
        Predictions::Span {
            start: starts,
            end: ends,
        }
    } else if matches!(
        model.spec.head,
        lpeft_schema::model::TaskHeadSpec::Regression { .. }
    ) {
        Predictions::Score(scores)
    } else {
        Predictions::Class(classes)
    };
    Ok(EvalOutput {
        loss: loss_sum / examples.max(1) as f64,
        predictions,
        logits: logits_out,
        examples,
        seconds: start.elapsed().as_secs_f64(),
    })
}
