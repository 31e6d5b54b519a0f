//! lpeft-train: the pieces every training loop shares (estimation now, pruned fine-tuning next).
//!
//! - [`to_input`] / [`to_labels`] turn an `lpeft_artifacts::dataset::Batch` into tensors on a device;
//! - [`Trainer::step`] runs one step: forward (optionally recording PEFT norm ratios), task
//!   loss + λ·Σ|masks|, backward, first-order rank scores, NaN guard, AdamW with global-norm
//!   clipping on a linear schedule; every capture of a step is read back in **one** transfer;
//! - [`evaluate`] runs a split in eval mode (no dropout) and returns predictions and loss;
//! - [`Timing`] accumulates step time and throughput; [`efficiency`] measures peak memory
//!   (device memory through NVML on a GPU, process RSS elsewhere), describes the host and holds
//!   the arithmetic behind `lpeft_schema::results::Efficiency`.
//!
//! A fine-tuning loop is `for batch in batcher.epoch(e) { (model, rec) = trainer.step(model,
//! &batch, Capture::NONE)? }` plus `evaluate` at epoch ends.

pub mod efficiency;
mod graphs;
mod step;

use step::device_step;

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use lpeft_artifacts::dataset::{Batch, BatchLabels, Padding};
use lpeft_model::head::{HeadOutput, Labels, task_loss};
use lpeft_model::importance::RankScoreParts;
use lpeft_model::optim::{AdamW, AdamWConfig, linear_schedule};
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
    #[error("{0} (set LPEFT_CUDA_GRAPHS=off to train without CUDA graphs)")]
    Graph(String),
}

/// The padding of training batches on `device`: where steps are CUDA graphs
/// ([`Trainer::with_cuda_graphs`]), each batch's longest row rounded up to a multiple of 8, so
/// that a task's batches come in a few shapes, each captured once (a shape's first two steps
/// are not replayed). Elsewhere `padding` itself.
pub fn training_padding(padding: Padding, device: &Device) -> Padding {
    match padding {
        Padding::Longest if lpeft_model::graph::on_for(device) => Padding::LongestRoundedTo(8),
        other => other,
    }
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

/// The steps a run captured as CUDA graphs and the host seconds they took: the per-shape cost
/// that a short run spreads over few steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GraphCaptures {
    pub steps: usize,
    pub seconds: f64,
}

impl GraphCaptures {
    /// Adds `graph_captures` and `graph_capture_seconds` to a stage's figures (an object),
    /// where steps were captured at all.
    pub fn add_to(self, figures: &mut serde_json::Value) {
        if self.steps > 0 {
            figures["graph_captures"] = self.steps.into();
            figures["graph_capture_seconds"] = self.seconds.into();
        }
    }
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

/// A step whose values are still on the device: loss, task loss, gradient norm and the
/// captures, stacked in one tensor.
struct Pending {
    step: usize,
    lr: f64,
    values: Tensor<1>,
    layout: Option<CaptureLayout>,
}

/// Where a step's captures lie in its values.
#[derive(Clone)]
struct CaptureLayout {
    /// In [`Model::peft_modules`] order.
    ids: Vec<PeftModuleId>,
    /// Each module's norm ratio (none: it recorded nothing, e.g. an empty matrix; reported 0).
    p2_at: Vec<Option<usize>>,
    /// Where the rank-score tensors start.
    taylor_at: usize,
    taylor: RankScoreParts,
}

/// One optimiser over one model; call [`Trainer::step`] once per batch and
/// [`Trainer::finish`] after the last.
///
/// A step does not wait for the device: its loss, gradient norm and captures stay there and
/// are read back, for every step since the last read, in one transfer every
/// [`Trainer::with_read_every`] steps (1 by default). Reading every step would stall the host
/// until the device has finished, so the next step's kernels could not be queued meanwhile.
pub struct Trainer {
    pub config: TrainConfig,
    pub device: Device,
    pub timing: Timing,
    opt: AdamW,
    step: usize,
    distill: Option<Distill>,
    read_every: usize,
    pending: Vec<Pending>,
    /// Examples and tokens of the pending steps.
    pending_examples: usize,
    pending_tokens: usize,
    /// When the first pending step started (the wall time of a read window).
    window_start: Option<Instant>,
    /// CUDA graphs of the steps ([`Trainer::with_cuda_graphs`]).
    graphs: Option<graphs::StepGraphs>,
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
            read_every: 1,
            pending: Vec::new(),
            pending_examples: 0,
            pending_tokens: 0,
            window_start: None,
            graphs: None,
        }
    }

    /// Adds a distillation term towards `distill`'s teacher outputs to every step's loss.
    pub fn with_distill(mut self, distill: Distill) -> Self {
        self.distill = Some(distill);
        self
    }

    /// Reads the steps' values back every `n` steps (at least 1). A diverged step is then
    /// reported up to `n − 1` steps late, with its own step number; results do not change.
    pub fn with_read_every(mut self, n: usize) -> Self {
        self.read_every = n.max(1);
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

    /// Captures and replays the steps as CUDA graphs (see [`graphs`]) when `on` and the device
    /// is a libtorch CUDA one in a build with graphs, without distillation (its teacher rows are
    /// uploaded inside the step). The model returned by a step must be passed to the next.
    /// A libtorch CUDA device in a build without graphs is refused (its keys say graphs).
    pub fn with_cuda_graphs(mut self, on: bool) -> Result<Self, TrainError> {
        let wanted = on && self.distill.is_none() && lpeft_model::graph::on_for(&self.device);
        if wanted && !lpeft_model::graph::available() {
            return Err(TrainError::Graph(
                "this build has no CUDA graphs (libtorch without CUDA, or no CUDA headers at \
                 build time: see crates/lpeft-model/build.rs)"
                    .into(),
            ));
        }
        self.graphs = wanted.then(|| graphs::StepGraphs::new(&self.device, &mut self.opt));
        Ok(self)
    }

    /// Steps captured as graphs and steps replayed from them, so far.
    pub fn graph_counts(&self) -> (usize, usize) {
        self.graphs
            .as_ref()
            .map_or((0, 0), |g| (g.captured, g.replayed))
    }

    /// Steps captured as graphs so far and the host seconds they took (none without graphs).
    pub fn graph_captures(&self) -> GraphCaptures {
        self.graphs
            .as_ref()
            .map_or_else(GraphCaptures::default, |g| GraphCaptures {
                steps: g.captured,
                seconds: g.capture_seconds,
            })
    }

    /// One training step on `batch`; returns the records of the steps read back by this call
    /// (every [`Trainer::with_read_every`] steps; empty in between).
    pub fn step(
        &mut self,
        model: Model,
        batch: &Batch,
        capture: Capture,
    ) -> Result<(Model, Vec<StepRecord>), TrainError> {
        self.window_start.get_or_insert_with(Instant::now);
        let input = to_input(batch, &self.device);
        let labels = to_labels(batch, &self.device)?;
        check_labels(&model, &labels)?;
        let lr = self.lr();
        let (config, distill) = (&self.config, self.distill.as_ref());
        let run = |opt: &mut AdamW, model: Model, input: &EncoderInput, labels: &Labels| {
            device_step(
                opt, config, distill, batch, model, input, labels, capture, lr,
            )
        };
        let (model, values, layout) = match self.graphs.as_mut() {
            Some(g) => g.step(&mut self.opt, model, input, labels, capture, lr, run)?,
            None => {
                let _shared = lpeft_model::graph::drawing_random();
                run(&mut self.opt, model, &input, &labels)?
            }
        };
        self.pending.push(Pending {
            step: self.step,
            lr,
            values,
            layout,
        });
        self.pending_examples += batch.batch_size;
        self.pending_tokens += batch.attention_mask.iter().filter(|&&m| m != 0).count();
        self.step += 1;
        let records = if self.pending.len() >= self.read_every {
            self.finish()?
        } else {
            Vec::new()
        };
        Ok((model, records))
    }

    /// Reads back every pending step (one transfer) and returns their records, in step order;
    /// the first diverged one is an error. Call after the last step (and before anything that
    /// needs the records, such as an evaluation's report).
    pub fn finish(&mut self) -> Result<Vec<StepRecord>, TrainError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let pending = std::mem::take(&mut self.pending);
        let widths: Vec<usize> = pending.iter().map(|p| p.values.dims()[0]).collect();
        let values = Tensor::cat(pending.iter().map(|p| p.values.clone()).collect(), 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values");
        // The window's wall time, shared evenly by its steps (they overlapped on the device).
        let window = self
            .window_start
            .take()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let seconds = window / pending.len() as f64;
        self.timing.steps += pending.len();
        self.timing.seconds += window;
        self.timing.examples += std::mem::take(&mut self.pending_examples);
        self.timing.tokens += std::mem::take(&mut self.pending_tokens);
        let mut records = Vec::with_capacity(pending.len());
        let mut at = 0;
        for (p, width) in pending.into_iter().zip(widths) {
            let v = &values[at..at + width];
            at += width;
            let (loss, task_loss, grad_norm) = (f64::from(v[0]), f64::from(v[1]), f64::from(v[2]));
            if !loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: p.step,
                    loss,
                    task_loss,
                });
            }
            if self.config.max_grad_norm.is_some() && !grad_norm.is_finite() {
                return Err(TrainError::NonFiniteGradient {
                    step: p.step,
                    norm: grad_norm,
                });
            }
            let importance = p.layout.map(|l| StepImportance {
                p2: l.p2_at.iter().map(|at| at.map_or(0.0, |i| v[i])).collect(),
                rank_taylor: l.taylor.scores(&v[l.taylor_at..]),
                modules: l.ids,
            });
            records.push(StepRecord {
                step: p.step,
                loss,
                task_loss,
                lr: p.lr,
                grad_norm,
                seconds,
                importance,
            });
        }
        Ok(records)
    }
}

/// `t` in f32 for reading back; the tensor itself when it already is (no operation on the
/// step's path).
fn to_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == burn::tensor::DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
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
    /// Start and end logits per row (window), each as wide as the row's batch; positions past
    /// the row's tokens are padding. Span decoding (`lpeft_eval::span`) needs them all, not
    /// the arg-max: the best span is searched under constraints.
    Span {
        start_logits: Vec<Vec<f32>>,
        end_logits: Vec<Vec<f32>>,
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
/// Losses and logits stay on the device until the last batch has been queued, then come back
/// in one transfer (span heads: one per batch, their widths differ).
pub fn evaluate(
    model: &Model,
    batches: impl IntoIterator<Item = Batch>,
    device: &Device,
) -> Result<EvalOutput, TrainError> {
    use lpeft_schema::model::TaskHeadSpec;
    let start = Instant::now();
    let model = model.valid();
    let regression = matches!(model.spec.head, TaskHeadSpec::Regression { .. });
    let mut examples = 0usize;
    let (mut losses, mut sizes, mut logits) = (Vec::new(), Vec::new(), Vec::new());
    let (mut starts, mut ends) = (vec![], vec![]);
    let mut span = false;
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
    for batch in batches {
        let input = to_input(&batch, device);
        let labels = to_labels(&batch, device)?;
        check_labels(&model, &labels)?;
        let out = model.forward(&input);
        let loss = to_f32(task_loss(&out.head, &labels));
        losses.push(loss);
        sizes.push(batch.batch_size as f64);
        examples += batch.batch_size;
        match out.head {
            HeadOutput::Logits(l) => logits.push(to_f32(l)),
            HeadOutput::Span { start, end } => {
                span = true;
                let (c, s) = read(start);
                let (_, e) = read(end);
                starts.extend(s.chunks(c).map(<[f32]>::to_vec));
                ends.extend(e.chunks(c).map(<[f32]>::to_vec));
            }
        }
    }
    let loss_sum: f64 = if losses.is_empty() {
        0.0
    } else {
        let per_batch = Tensor::cat(losses, 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 losses");
        if let Some(bad) = per_batch.iter().find(|v| !v.is_finite()) {
            return Err(TrainError::NonFiniteLoss {
                step: 0,
                loss: f64::from(*bad),
                task_loss: f64::from(*bad),
            });
        }
        // Weighted on the host in f64, as the mean of batch means always was.
        per_batch
            .iter()
            .zip(&sizes)
            .map(|(v, n)| f64::from(*v) * n)
            .sum()
    };
    let (mut classes, mut scores, mut logits_out) = (vec![], vec![], vec![]);
    if !logits.is_empty() {
        let (c, v) = read(Tensor::cat(logits, 0));
        for row in v.chunks(c) {
            if regression {
                scores.push(row[0]);
            } else {
                classes.push(argmax(row));
            }
            logits_out.push(row.to_vec());
        }
    }
    let predictions = if span {
        Predictions::Span {
            start_logits: starts,
            end_logits: ends,
        }
    } else if regression {
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
