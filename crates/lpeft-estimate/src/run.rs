//! The estimation loop (spec §2, §3, appendix stage A): no IO here; the stage reads the
//! inputs and writes what this returns.

use burn::tensor::Tensor;

use lpeft_data::{Batch, Batcher};
use lpeft_model::Model;
use lpeft_schema::dataset::TaskKind;
use lpeft_schema::model::{
    EncoderSpec, Family, HeadStyle, ModelSpec, PeftModuleId, PeftModuleSpec, PeftSite, TaskHeadSpec,
};
use lpeft_train::{Capture, StepRecord, TrainConfig, TrainError, Trainer};

use crate::artifact::{MaskTrajectory, ModuleEntry, ScoresIndex, StepScores};
use crate::config::{EstimateConfig, PeftConfig};

/// The task head for a dataset's task kind, in the encoder family's style.
pub fn head_for(kind: &TaskKind, family: Family) -> TaskHeadSpec {
    let style = match family {
        Family::Bert => HeadStyle::BertPooler,
        Family::Roberta => HeadStyle::RobertaDenseTanh,
    };
    match kind {
        TaskKind::Classification { num_labels } => TaskHeadSpec::Classification {
            num_labels: *num_labels as usize,
            style,
        },
        TaskKind::Regression => TaskHeadSpec::Regression { style },
        TaskKind::MultipleChoice { num_choices } => TaskHeadSpec::MultipleChoice {
            choices: *num_choices as usize,
            style,
        },
        TaskKind::Span => TaskHeadSpec::SpanExtraction,
    }
}

/// PEFT modules on every layer as configured.
pub fn peft_modules(peft: &PeftConfig, layers: usize) -> Vec<PeftModuleSpec> {
    let mut out = Vec::new();
    for layer in 0..layers {
        match peft {
            PeftConfig::Lora {
                rank,
                alpha,
                dropout,
                targets,
            } => {
                for t in targets {
                    out.push(PeftModuleSpec {
                        id: PeftModuleId {
                            layer,
                            site: PeftSite::Lora(*t),
                        },
                        rank: *rank,
                        original_rank: *rank,
                        scale: alpha / *rank as f64,
                        dropout: *dropout,
                    });
                }
            }
            PeftConfig::Adapter {
                size,
                dropout,
                scale,
                sites,
            } => {
                for s in sites {
                    out.push(PeftModuleSpec {
                        id: PeftModuleId {
                            layer,
                            site: PeftSite::Adapter(*s),
                        },
                        rank: *size,
                        original_rank: *size,
                        scale: *scale,
                        dropout: *dropout,
                    });
                }
            }
        }
    }
    out.sort_by_key(|m| m.id);
    out.dedup_by_key(|m| m.id);
    out
}

/// The estimation model's spec: the pretrained encoder with masks and PEFT on every layer.
pub fn estimation_spec(encoder: EncoderSpec, kind: &TaskKind, peft: &PeftConfig) -> ModelSpec {
    let head = head_for(kind, encoder.family);
    let peft = peft_modules(peft, encoder.layers.len());
    ModelSpec {
        encoder,
        head,
        peft,
        masks: true,
    }
}

/// Current head and FFN mask values, `[L·H]` and `[L·I]`, read in one transfer.
pub fn read_masks(model: &Model) -> Result<(Vec<f32>, Vec<f32>), String> {
    let mut parts: Vec<Tensor<1>> = Vec::new();
    let (mut nh, mut nf) = (0, 0);
    for (i, layer) in model.encoder.layers.iter().enumerate() {
        let (Some(h), Some(f)) = (&layer.attention.head_mask, &layer.ffn.neuron_mask) else {
            return Err(format!(
                "layer {i} has no head or FFN mask (estimation needs masks on every layer)"
            ));
        };
        nh += h.val().dims()[0];
        nf += f.val().dims()[0];
        parts.push(h.val().inner());
        parts.push(f.val().inner());
    }
    let values = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 masks");
    let (mut heads, mut ffn) = (Vec::with_capacity(nh), Vec::with_capacity(nf));
    let mut at = 0;
    for layer in &model.encoder.layers {
        let (h, f) = (layer.attention.heads, layer.ffn.width);
        heads.extend_from_slice(&values[at..at + h]);
        at += h;
        ffn.extend_from_slice(&values[at..at + f]);
        at += f;
    }
    Ok((heads, ffn))
}

#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{0}")]
    Model(String),
}

/// What an estimation run produced.
pub struct Outcome {
    pub model: Model,
    pub masks: MaskTrajectory,
    pub scores: StepScores,
    pub curve: Vec<StepRecord>,
    pub timing: lpeft_train::Timing,
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
    let mut trainer = Trainer::new(train, device.clone());

    let mut masks = MaskTrajectory {
        record_steps: vec![],
        layers,
        heads,
        ffn,
        head: vec![],
        neuron: vec![],
    };
    let record =
        |model: &Model, step: usize, masks: &mut MaskTrajectory| -> Result<(), EstimateError> {
            let (h, f) = read_masks(model).map_err(EstimateError::Model)?;
            masks.record_steps.push(step);
            masks.head.extend(h);
            masks.neuron.extend(f);
            Ok(())
        };
    record(&model, 0, &mut masks)?;

    let m = modules.len();
    let (mut p2, mut taylor) = (
        Vec::with_capacity(steps * m),
        Vec::with_capacity(steps * m * rank),
    );
    let mut curve = Vec::with_capacity(steps);
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
        let (next, rec) = trainer.step(model, &batch, Capture::IMPORTANCE)?;
        model = next;
        let imp = rec.importance.as_ref().expect("importance was captured");
        debug_assert_eq!(imp.modules.len(), m);
        p2.extend_from_slice(&imp.p2);
        for ranks in &imp.rank_taylor {
            taylor.extend_from_slice(ranks);
            taylor.extend(std::iter::repeat_n(0.0, rank - ranks.len()));
        }
        on_step(&rec);
        curve.push(rec);
        let done = step + 1;
        if done % cfg.record_every == 0 || done == steps {
            record(&model, done, &mut masks)?;
        }
    }
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
    })
}
