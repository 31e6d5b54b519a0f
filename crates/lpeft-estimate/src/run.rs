//! The estimation loop (spec §2, §3, appendix stage A): no IO here; the stage reads the
//! inputs and writes what this returns.

use burn::tensor::Tensor;

use lpeft_artifacts::dataset::{Batch, Batcher};
use lpeft_model::Model;
pub use lpeft_model::peft_config::{estimation_spec, head_for, peft_modules};
use lpeft_train::{Capture, StepRecord, TrainConfig, TrainError, Trainer};

use crate::artifact::{MaskTrajectory, ModuleEntry, ScoresIndex, StepScores};
use crate::config::EstimateConfig;

/// Current head and FFN mask values of every layer, `[L·H + L·I]` per layer in turn (heads,
/// then neurons), left on the device.
pub fn mask_values(model: &Model) -> Result<Tensor<1>, String> {
    let mut parts: Vec<Tensor<1>> = Vec::new();
    for (i, layer) in model.encoder.layers.iter().enumerate() {
        let (Some(h), Some(f)) = (&layer.attention.head_mask, &layer.ffn.neuron_mask) else {
            return Err(format!(
                "layer {i} has no head or FFN mask (estimation needs masks on every layer)"
            ));
        };
        parts.push(h.val().inner());
        parts.push(f.val().inner());
    }
    Ok(Tensor::cat(parts, 0))
}

/// Splits [`mask_values`] read back into `[L·H]` head and `[L·I]` FFN values.
fn split_masks(model: &Model, values: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut heads, mut ffn) = (Vec::new(), Vec::new());
    let mut at = 0;
    for layer in &model.encoder.layers {
        let (h, f) = (layer.attention.heads, layer.ffn.width);
        heads.extend_from_slice(&values[at..at + h]);
        at += h;
        ffn.extend_from_slice(&values[at..at + f]);
        at += f;
    }
    (heads, ffn)
}

#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{0}")]
    Model(String),
}

/// Steps between reads of the loss and captures from the device (see
/// [`Trainer::with_read_every`]); does not change results.
pub const READ_EVERY: usize = 50;

/// The mask snapshots read back in one transfer, as a trajectory.
fn read_snapshots(
    model: &Model,
    snapshots: Vec<(usize, Tensor<1>)>,
    (layers, heads, ffn): (usize, usize, usize),
) -> MaskTrajectory {
    let (steps, tensors): (Vec<usize>, Vec<Tensor<1>>) = snapshots.into_iter().unzip();
    let width = tensors.first().map_or(0, |t| t.dims()[0]);
    let values = Tensor::cat(tensors, 0)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 masks");
    let mut masks = MaskTrajectory {
        record_steps: steps,
        layers,
        heads,
        ffn,
        head: vec![],
        neuron: vec![],
    };
    for chunk in values.chunks(width.max(1)) {
        let (h, f) = split_masks(model, chunk);
        masks.head.extend(h);
        masks.neuron.extend(f);
    }
    masks
}

/// What an estimation run produced.
pub struct Outcome {
    pub model: Model,
    pub masks: MaskTrajectory,
    pub scores: StepScores,
    pub curve: Vec<StepRecord>,
    pub timing: lpeft_train::Timing,
    /// Steps captured as CUDA graphs and the host seconds they took.
    pub graph_captures: lpeft_train::GraphCaptures,
}

/// Trains masks + PEFT + head for `steps` steps on the frozen backbone, recording the masks at
/// step 0, every `record_every` steps and at the end, and p2 and rank scores at every step.
pub fn estimate(
    mut model: Model,
    batcher: &Batcher<'_>,
    cfg: &EstimateConfig,
    steps: usize,
    device: &burn::tensor::Device,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<Outcome, EstimateError> {
    let layers = model.encoder.layers.len();
    let heads = model
        .encoder
        .layers
        .first()
        .map_or(0, |l| l.attention.heads);
    let ffn = model.encoder.layers.first().map_or(0, |l| l.ffn.width);
    if model
        .encoder
        .layers
        .iter()
        .any(|l| l.attention.heads != heads || l.ffn.width != ffn)
    {
        return Err(EstimateError::Model(
            "estimation needs every layer to have the same head count and FFN width".into(),
        ));
    }
    let modules: Vec<ModuleEntry> = model
        .peft_modules()
        .iter()
        .map(|(id, f)| ModuleEntry {
            id: *id,
            name: id.to_string(),
            rank: f.a.val().dims()[1],
        })
        .collect();
    let rank = modules.iter().map(|m| m.rank).max().unwrap_or(0);
    let warmup = (cfg.warmup_ratio * steps as f64).ceil() as usize;
    let train = TrainConfig {
        lr: cfg.lr,
        total_steps: steps,
        warmup_steps: warmup,
        weight_decay: cfg.weight_decay,
        max_grad_norm: cfg.max_grad_norm,
        l1: cfg.l1,
        head_mask_lr_coef: cfg.attn_mask_lr_coef,
        neuron_mask_lr_coef: cfg.ffn_mask_lr_coef,
    };
    // On a libtorch GPU, steps are captured and replayed as CUDA graphs (the key says so).
    let mut trainer = Trainer::new(train, device.clone())
        .with_read_every(READ_EVERY)
        .with_cuda_graphs(true)?;

    // Mask snapshots stay on the device until the end (one transfer for all of them).
    let mut snapshots: Vec<(usize, Tensor<1>)> = Vec::new();
    let snapshot = |model: &Model, step: usize, snaps: &mut Vec<(usize, Tensor<1>)>| {
        mask_values(model)
            .map(|v| snaps.push((step, v)))
            .map_err(EstimateError::Model)
    };
    snapshot(&model, 0, &mut snapshots)?;

    let m = modules.len();
    let (mut p2, mut taylor) = (
        Vec::with_capacity(steps * m),
        Vec::with_capacity(steps * m * rank),
    );
    let mut curve = Vec::with_capacity(steps);
    let mut take = |records: Vec<StepRecord>, curve: &mut Vec<StepRecord>| {
        for rec in records {
            let imp = rec.importance.as_ref().expect("importance was captured");
            debug_assert_eq!(imp.modules.len(), m);
            p2.extend_from_slice(&imp.p2);
            for ranks in &imp.rank_taylor {
                taylor.extend_from_slice(ranks);
                taylor.extend(std::iter::repeat_n(0.0, rank - ranks.len()));
            }
            on_step(&rec);
            curve.push(rec);
        }
    };
    let mut epoch = 0u64;
    let mut batches: Box<dyn Iterator<Item = Batch> + '_> = Box::new(batcher.epoch(epoch));
    for step in 0..steps {
        let batch = match batches.next() {
            Some(b) => b,
            None => {
                epoch += 1;
                batches = Box::new(batcher.epoch(epoch));
                batches.next().ok_or_else(|| {
                    EstimateError::Model("the training split has no batches".into())
                })?
            }
        };
        let (next, records) = trainer.step(model, &batch, Capture::IMPORTANCE)?;
        model = next;
        take(records, &mut curve);
        let done = step + 1;
        if done % cfg.record_every == 0 || done == steps {
            snapshot(&model, done, &mut snapshots)?;
        }
    }
    take(trainer.finish()?, &mut curve);
    let masks = read_snapshots(&model, snapshots, (layers, heads, ffn));
    let scores = StepScores {
        index: ScoresIndex {
            modules,
            steps,
            rank,
        },
        p2,
        taylor,
    };
    Ok(Outcome {
        model,
        masks,
        scores,
        curve,
        timing: trainer.timing,
        graph_captures: trainer.graph_captures(),
    })
}
