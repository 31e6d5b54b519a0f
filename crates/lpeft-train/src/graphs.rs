//! Training steps as CUDA graphs (`lpeft_model::graph`): the run's first step runs as usual;
//! after it, a shape's first step is captured and replayed, every later one only replayed.
//!
//! A graph reads the memory it saw at capture, so the state a step reads lives in fixed places:
//! the model given to the first step keeps its parameter tensors for the whole run (each step's
//! new values are copied back into them, inside the graph), the optimizer's flat moments too,
//! the learning rate and bias corrections are read from a device tensor written before each
//! step, and a batch is copied into the input tensors its shape's graph was captured with.

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};

use lpeft_model::graph::{CudaGraph, anchor, copy_into, copy_trained};
use lpeft_model::head::Labels;
use lpeft_model::optim::AdamW;
use lpeft_model::{EncoderInput, Model};

use crate::{Capture, CaptureLayout, TrainError};

/// What a step computes on the device: the updated model, the stacked values to read back,
/// and where the captures lie in them.
pub(crate) type DeviceStep = (Model, Tensor<1>, Option<CaptureLayout>);

/// Shapes (and capture settings) that need a graph of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    rows: usize,
    seq_len: usize,
    importance: bool,
    labels: (u8, usize),
}

impl Key {
    fn of(input: &EncoderInput, labels: &Labels, capture: Capture) -> Key {
        let [rows, seq_len] = input.input_ids.dims();
        let labels = match labels {
            Labels::Class(t) => (0, t.dims()[0]),
            Labels::Score(t) => (1, t.dims()[0]),
            Labels::Span { start, .. } => (2, start.dims()[0]),
        };
        Key {
            rows,
            seq_len,
            importance: capture.importance,
            labels,
        }
    }
}

struct Captured {
    graph: CudaGraph,
    /// The tensors the graph reads its batch from.
    input: EncoderInput,
    labels: Labels,
    /// Where the graph leaves its values (overwritten by the next replay).
    values: Tensor<1>,
    layout: Option<CaptureLayout>,
}

enum Entry {
    /// Ran once without capture (which also built every lazily made tensor the step needs).
    Seen,
    Captured(Box<Captured>),
}

pub(crate) struct StepGraphs {
    /// `[3]`: what [`AdamW::step_scalars`] gives for the step about to run.
    scalars: Tensor<1>,
    entries: HashMap<Key, Entry>,
    /// The first graph captured: the others share its memory pool (replays never overlap).
    first: Option<Key>,
    /// [`anchor`] of the model the graphs were captured over.
    model_at: Option<usize>,
    /// A step has run without capture (see [`StepGraphs::step`]).
    warmed: bool,
    pub(crate) captured: usize,
    pub(crate) replayed: usize,
    /// Host seconds spent in capturing steps (recording, instantiating, the first replay's
    /// launch): what a run pays per batch shape on top of its replayed steps.
    pub(crate) capture_seconds: f64,
}

impl StepGraphs {
    /// Sets `opt` to read its step scalars from the device.
    pub(crate) fn new(device: &Device, opt: &mut AdamW) -> Self {
        let scalars = Tensor::<1>::zeros([3], device);
        opt.use_device_scalars(scalars.clone());
        Self {
            scalars,
            entries: HashMap::new(),
            first: None,
            model_at: None,
            warmed: false,
            captured: 0,
            replayed: 0,
            capture_seconds: 0.0,
        }
    }

    /// One step of `run` on this batch: run, captured or replayed (see the module).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &mut self,
        opt: &mut AdamW,
        model: Model,
        input: EncoderInput,
        labels: Labels,
        capture: Capture,
        lr: f64,
        run: impl FnOnce(&mut AdamW, Model, &EncoderInput, &Labels) -> Result<DeviceStep, TrainError>,
    ) -> Result<DeviceStep, TrainError> {
        let graph_err = |e: lpeft_model::ModelError| TrainError::Graph(e.to_string());
        let at = anchor(&model);
        match self.model_at {
            None => self.model_at = at,
            Some(a) if Some(a) != at => {
                return Err(TrainError::Graph(
                    "the model passed to a step is not the one the previous step returned \
                     (its steps are captured over the first one's parameters)"
                        .into(),
                ));
            }
            Some(_) => {}
        }
        let device = self.scalars.device();
        let fresh =
            Tensor::<1>::from_data(TensorData::new(opt.step_scalars(lr).to_vec(), [3]), &device);
        copy_into(&self.scalars, &fresh);
        let key = Key::of(&input, &labels, capture);
        match self.entries.get(&key) {
            Some(Entry::Captured(c)) => {
                let _shared = lpeft_model::graph::drawing_random();
                copy_batch(&c.input, &c.labels, &input, &labels);
                c.graph.replay().map_err(graph_err)?;
                opt.count_replayed_step();
                self.replayed += 1;
                // A copy: the next replay overwrites the graph's own.
                Ok((model, c.values.clone().mul_scalar(1.0), c.layout.clone()))
            }
            // The first step of the run builds what every step needs lazily (the optimizer's
            // moments and multipliers); after it, a new shape is captured on first sight.
            Some(Entry::Seen) | None if self.warmed => {
                let started = std::time::Instant::now();
                let share = self.first.and_then(|k| match self.entries.get(&k) {
                    Some(Entry::Captured(c)) => Some(&c.graph),
                    _ => None,
                });
                let (graph, done) = CudaGraph::capture(share, || {
                    let moments = opt.moments();
                    let (out, values, layout) = run(opt, model.clone(), &input, &labels)?;
                    write_back(&model, &out, moments, opt)?;
                    Ok::<_, TrainError>((values, layout))
                })
                .map_err(graph_err)?;
                let (values, layout) = done?;
                let _shared = lpeft_model::graph::drawing_random();
                graph.replay().map_err(graph_err)?;
                self.captured += 1;
                self.capture_seconds += started.elapsed().as_secs_f64();
                let first_values = values.clone().mul_scalar(1.0);
                self.first.get_or_insert(key);
                let c = Captured {
                    graph,
                    input,
                    labels,
                    values,
                    layout: layout.clone(),
                };
                self.entries.insert(key, Entry::Captured(Box::new(c)));
                Ok((model, first_values, layout))
            }
            _ => {
                let _shared = lpeft_model::graph::drawing_random();
                let moments = opt.moments();
                let (out, values, layout) = run(opt, model.clone(), &input, &labels)?;
                write_back(&model, &out, moments, opt)?;
                self.entries.insert(key, Entry::Seen);
                self.warmed = true;
                Ok((model, values, layout))
            }
        }
    }
}

/// After a step: its parameters into the model's own tensors, its moments into the ones it
/// started from (none before the first step: the first step's become the fixed ones).
fn write_back(
    model: &Model,
    out: &Model,
    moments: Option<(Tensor<1>, Tensor<1>)>,
    opt: &mut AdamW,
) -> Result<(), TrainError> {
    copy_trained(model, out).map_err(|e| TrainError::Graph(e.to_string()))?;
    if let (Some((m0, v0)), Some((m, v))) = (moments, opt.moments()) {
        copy_into(&m0, &m);
        copy_into(&v0, &v);
        opt.set_moments(m0, v0);
    }
    Ok(())
}

fn copy_batch(dst: &EncoderInput, dst_labels: &Labels, src: &EncoderInput, labels: &Labels) {
    copy_into(&dst.input_ids, &src.input_ids);
    copy_into(&dst.token_type_ids, &src.token_type_ids);
    copy_into(&dst.attention_mask, &src.attention_mask);
    match (dst_labels, labels) {
        (Labels::Class(d), Labels::Class(s)) => {
            copy_into(d, s);
        }
        (Labels::Score(d), Labels::Score(s)) => {
            copy_into(d, s);
        }
        (Labels::Span { start: ds, end: de }, Labels::Span { start: ss, end: se }) => {
            copy_into(ds, ss);
            copy_into(de, se);
        }
        // Different kinds never share a key.
        _ => unreachable!("labels of one key have one kind"),
    }
}
