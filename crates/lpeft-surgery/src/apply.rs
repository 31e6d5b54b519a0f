//! Physical surgery on named host tensors (burn layout, spec §2.7, §3.5, §8) and the masked
//! model it must equal: both are pure functions of (spec, tensors, plan).
//!
//! Burn stores a linear weight as `[d_in, d_out]`: Q/K/V and FC1 lose output **columns** (and
//! bias entries), O and FC2 lose input **rows** (bias kept). LoRA `B` of q/k/v/fc1 loses
//! columns, `A` of o/fc2 loses rows; rank pruning keeps columns of `A` and rows of `B`. The LoRA
//! scale stays `alpha / r_original`. MPNet's per-layer relative bias `[buckets, heads]` keeps
//! the columns of the layer's kept heads.

use std::collections::{BTreeMap, BTreeSet};

use lpeft_model::names::{
    DenseModule, DenseParam, DenseSite, HeadDense, LayerTensor, PeftFactor, Sublayer, TensorKind,
    TensorName,
};
use lpeft_schema::model::{
    HeadStyle, LayerShape, LoraTarget, ModelSpec, PeftModuleId, PeftSite, TaskHeadSpec,
};

use crate::plan::Plan;

/// Named host tensors: name → (shape, row-major values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SurgeryError {
    #[error("the plan has {plan} layers, the model {model}")]
    LayerCount { plan: usize, model: usize },
    #[error("layer {layer}: head {head} does not exist (the layer has {heads} heads)")]
    HeadOutOfRange {
        layer: usize,
        head: usize,
        heads: usize,
    },
    #[error("layer {layer}: FFN neuron {neuron} does not exist (the layer has {width})")]
    NeuronOutOfRange {
        layer: usize,
        neuron: usize,
        width: usize,
    },
    #[error("module {module}: rank {rank} does not exist (the module has rank {have})")]
    RankOutOfRange {
        module: String,
        rank: usize,
        have: usize,
    },
    #[error("module {module} is in the plan but not in the model")]
    UnknownModule { module: String },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {shape:?}; {expected}")]
    BadShape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("{what} must be sorted and without repeats")]
    Unsorted { what: String },
    #[error("the masked-equivalent model needs a spec with masks")]
    NoMasks,
}

fn check_sorted_unique(v: &[usize]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Validates a plan against a spec (indices in range, modules known).
pub fn check_plan(spec: &ModelSpec, plan: &Plan) -> Result<(), SurgeryError> {
    let layers = &spec.encoder.layers;
    for n in [plan.kept_heads.len(), plan.kept_neurons.len()] {
        if n != layers.len() {
            return Err(SurgeryError::LayerCount {
                plan: n,
                model: layers.len(),
            });
        }
    }
    for (l, shape) in layers.iter().enumerate() {
        if let Some(&head) = plan.kept_heads[l].iter().find(|&&h| h >= shape.heads) {
            return Err(SurgeryError::HeadOutOfRange {
                layer: l,
                head,
                heads: shape.heads,
            });
        }
        if let Some(&neuron) = plan.kept_neurons[l].iter().find(|&&i| i >= shape.ffn) {
            return Err(SurgeryError::NeuronOutOfRange {
                layer: l,
                neuron,
                width: shape.ffn,
            });
        }
        if !check_sorted_unique(&plan.kept_heads[l]) || !check_sorted_unique(&plan.kept_neurons[l])
        {
            return Err(SurgeryError::Unsorted {
                what: format!("layer {l}'s kept heads or neurons"),
            });
        }
    }
    for k in &plan.kept_ranks {
        let Some(m) = spec.peft.iter().find(|m| m.id == k.id) else {
            return Err(SurgeryError::UnknownModule {
                module: k.id.to_string(),
            });
        };
        if !check_sorted_unique(&k.ranks) {
            return Err(SurgeryError::Unsorted {
                what: format!("module {}'s kept ranks", k.id),
            });
        }
        if let Some(&rank) = k.ranks.iter().find(|&&r| r >= m.rank) {
            return Err(SurgeryError::RankOutOfRange {
                module: k.id.to_string(),
                rank,
                have: m.rank,
            });
        }
    }
    Ok(())
}

/// Whether a LoRA target's matrix still exists after the plan (q/k/v/o need a head, fc1/fc2 a neuron).
fn matrix_survives(plan: &Plan, id: PeftModuleId) -> bool {
    match id.site {
        PeftSite::Lora(
            LoraTarget::Query | LoraTarget::Key | LoraTarget::Value | LoraTarget::AttnOut,
        ) => !plan.kept_heads[id.layer].is_empty(),
        PeftSite::Lora(LoraTarget::FfnIn | LoraTarget::FfnOut) => {
            !plan.kept_neurons[id.layer].is_empty()
        }
        PeftSite::Adapter(_) => true,
    }
}

/// PEFT modules present after surgery, with their kept ranks.
pub fn surviving_modules(spec: &ModelSpec, plan: &Plan) -> BTreeMap<PeftModuleId, Vec<usize>> {
    spec.peft
        .iter()
        .filter_map(|m| {
            let ranks = plan.ranks_of(m.id)?;
            (!ranks.is_empty() && m.rank > 0 && matrix_survives(plan, m.id))
                .then(|| (m.id, ranks.to_vec()))
        })
        .collect()
}

fn select_cols(shape: &[usize], v: &[f32], cols: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let (rows, c) = (shape[0], shape[1]);
    let mut out = Vec::with_capacity(rows * cols.len());
    for r in 0..rows {
        out.extend(cols.iter().map(|&j| v[r * c + j]));
    }
    (vec![rows, cols.len()], out)
}

fn select_rows(shape: &[usize], v: &[f32], rows: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let c = shape[1];
    let mut out = Vec::with_capacity(rows.len() * c);
    for &r in rows {
        out.extend_from_slice(&v[r * c..(r + 1) * c]);
    }
    (vec![rows.len(), c], out)
}

fn select_1d(v: &[f32], idx: &[usize]) -> (Vec<usize>, Vec<f32>) {
    (vec![idx.len()], idx.iter().map(|&i| v[i]).collect())
}

/// Columns of the kept heads' units, `h·d .. (h+1)·d` for each kept head.
fn head_units(heads: &[usize], head_dim: usize) -> Vec<usize> {
    heads
        .iter()
        .flat_map(|&h| h * head_dim..(h + 1) * head_dim)
        .collect()
}

/// Which side of a PEFT factor follows the pruned heads or neurons.
fn dimension_units(plan: &Plan, id: PeftModuleId, head_dim: usize) -> Option<Vec<usize>> {
    match id.site {
        PeftSite::Lora(
            LoraTarget::Query | LoraTarget::Key | LoraTarget::Value | LoraTarget::AttnOut,
        ) => Some(head_units(&plan.kept_heads[id.layer], head_dim)),
        PeftSite::Lora(LoraTarget::FfnIn | LoraTarget::FfnOut) => {
            Some(plan.kept_neurons[id.layer].clone())
        }
        PeftSite::Adapter(_) => None,
    }
}

/// Whether a projection's pruned units are its outputs (q/k/v/fc1: columns and bias entries)
/// rather than its inputs (o/fc2: rows).
fn prunes_outputs(site: DenseSite) -> bool {
    matches!(
        site,
        DenseSite::Query | DenseSite::Key | DenseSite::Value | DenseSite::FfnIn
    )
}

/// B's columns follow the output units of q/k/v/fc1; A's rows follow the input units of o/fc2.
fn b_follows_units(id: PeftModuleId) -> bool {
    matches!(id.site, PeftSite::Lora(t) if prunes_outputs(t.into()))
}
fn a_follows_units(id: PeftModuleId) -> bool {
    matches!(id.site, PeftSite::Lora(t) if !prunes_outputs(t.into()))
}

/// A surviving PEFT factor cut to its kept ranks (A's columns, B's rows), and to the kept units
/// where it follows them (A's rows for o/fc2, B's columns for q/k/v/fc1).
fn prune_factor(
    plan: &Plan,
    id: PeftModuleId,
    factor: PeftFactor,
    head_dim: usize,
    (shape, v): (&[usize], &[f32]),
    ranks: &[usize],
) -> (Vec<usize>, Vec<f32>) {
    let units = dimension_units(plan, id, head_dim);
    match factor {
        PeftFactor::A => {
            let (s, v) = match units {
                Some(units) if a_follows_units(id) => select_rows(shape, v, &units),
                _ => (shape.to_vec(), v.to_vec()),
            };
            select_cols(&s, &v, ranks)
        }
        PeftFactor::B => {
            let (s, v) = match units {
                Some(units) if b_follows_units(id) => select_cols(shape, v, &units),
                _ => (shape.to_vec(), v.to_vec()),
            };
            select_rows(&s, &v, ranks)
        }
    }
}

fn need_2d(name: &str, shape: &[usize]) -> Result<(), SurgeryError> {
    if shape.len() == 2 {
        Ok(())
    } else {
        Err(SurgeryError::BadShape {
            name: name.into(),
            shape: shape.to_vec(),
            expected: "expected a matrix".into(),
        })
    }
}

/// The physically pruned model: its spec (per-layer shapes, surviving PEFT modules with their
/// new ranks, masks off) and tensors.
pub fn prune(
    spec: &ModelSpec,
    tensors: &Tensors,
    plan: &Plan,
) -> Result<(ModelSpec, Tensors), SurgeryError> {
    check_plan(spec, plan)?;
    let d = spec.encoder.head_dim;
    let survivors = surviving_modules(spec, plan);
    let mut out = Tensors::new();
    for (name, (shape, v)) in tensors {
        let Some(TensorName::Layer { layer: l, part }) = TensorName::parse(name) else {
            out.insert(name.clone(), (shape.clone(), v.clone()));
            continue;
        };
        if l >= plan.kept_heads.len() {
            return Err(SurgeryError::LayerCount {
                plan: plan.kept_heads.len(),
                model: l + 1,
            });
        }
        let heads = head_units(&plan.kept_heads[l], d);
        let neurons = &plan.kept_neurons[l];
        let new = match part {
            LayerTensor::HeadMask | LayerTensor::NeuronMask => None,
            LayerTensor::Dense { site, param } => {
                let units = match site.sublayer() {
                    Sublayer::Attention => &heads,
                    Sublayer::Ffn => neurons,
                };
                // A projection without units is gone; o's and fc2's biases stay whole.
                match (param, prunes_outputs(site)) {
                    (DenseParam::Weight, outputs) => {
                        need_2d(name, shape)?;
                        (!units.is_empty()).then(|| {
                            if outputs {
                                select_cols(shape, v, units)
                            } else {
                                select_rows(shape, v, units)
                            }
                        })
                    }
                    (DenseParam::Bias, true) => (!units.is_empty()).then(|| select_1d(v, units)),
                    (DenseParam::Bias, false) => Some((shape.clone(), v.clone())),
                }
            }
            LayerTensor::Peft { site, factor } => {
                let id = PeftModuleId { layer: l, site };
                match survivors.get(&id) {
                    None => None,
                    Some(ranks) => {
                        need_2d(name, shape)?;
                        Some(prune_factor(plan, id, factor, d, (shape, v), ranks))
                    }
                }
            }
            LayerTensor::Norm { .. } => Some((shape.clone(), v.clone())),
            // MPNet: the layer keeps the bias columns of its kept original heads (ids, not
            // units), so after surgery each layer indexes the shared table its own way.
            LayerTensor::RelativeBias => {
                need_2d(name, shape)?;
                let kept = &plan.kept_heads[l];
                (!kept.is_empty()).then(|| select_cols(shape, v, kept))
            }
        };
        if let Some(t) = new {
            out.insert(name.clone(), t);
        }
    }
    let mut new_spec = spec.clone();
    new_spec.masks = false;
    new_spec.encoder.layers = plan
        .kept_heads
        .iter()
        .zip(&plan.kept_neurons)
        .map(|(h, f)| LayerShape {
            heads: h.len(),
            ffn: f.len(),
        })
        .collect();
    new_spec.peft = spec
        .peft
        .iter()
        .filter_map(|m| {
            survivors
                .get(&m.id)
                .map(|ranks| lpeft_schema::model::PeftModuleSpec {
                    rank: ranks.len(),
                    ..m.clone()
                })
        })
        .collect();
    Ok((new_spec, out))
}

/// The unpruned model with the plan expressed as masks: head and neuron masks set to the plan's
/// 0/1 values, removed PEFT modules and ranks zeroed. Its outputs equal the pruned model's.
pub fn masked_equivalent(
    spec: &ModelSpec,
    tensors: &Tensors,
    plan: &Plan,
) -> Result<Tensors, SurgeryError> {
    if !spec.masks {
        return Err(SurgeryError::NoMasks);
    }
    check_plan(spec, plan)?;
    let survivors = surviving_modules(spec, plan);
    let mut out = tensors.clone();
    for (name, (shape, v)) in out.iter_mut() {
        let Some(TensorName::Layer { layer: l, part }) = TensorName::parse(name) else {
            continue;
        };
        let indicator = |keep: &[usize], v: &mut Vec<f32>| {
            let keep: BTreeSet<usize> = keep.iter().copied().collect();
            for (i, x) in v.iter_mut().enumerate() {
                *x = if keep.contains(&i) { 1.0 } else { 0.0 };
            }
        };
        match part {
            LayerTensor::HeadMask => indicator(&plan.kept_heads[l], v),
            LayerTensor::NeuronMask => indicator(&plan.kept_neurons[l], v),
            // Zero A's columns / B's rows of dropped ranks; a dropped module loses all of B.
            LayerTensor::Peft { site, factor } => {
                let keep: BTreeSet<usize> = survivors
                    .get(&PeftModuleId { layer: l, site })
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default();
                let c = shape[1];
                let rank_of = |i: usize| match factor {
                    PeftFactor::A => i % c,
                    PeftFactor::B => i / c,
                };
                for (i, x) in v.iter_mut().enumerate() {
                    if !keep.contains(&rank_of(i)) {
                        *x = 0.0;
                    }
                }
            }
            LayerTensor::Dense { .. } | LayerTensor::Norm { .. } | LayerTensor::RelativeBias => {}
        }
    }
    Ok(out)
}

pub use lpeft_artifacts::surgery::ParamReport;

/// Elements of the tensors whose names satisfy `pred` (names outside the grammar count nowhere).
fn count(t: &Tensors, pred: impl Fn(TensorName) -> bool) -> usize {
    t.iter()
        .filter(|(k, _)| TensorName::parse(k).is_some_and(&pred))
        .map(|(_, (s, _))| s.iter().product::<usize>())
        .sum()
}

fn of_kind(kind: TensorKind) -> impl Fn(TensorName) -> bool {
    move |name| name.kind() == kind
}

fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

pub fn param_report(
    before_spec: &ModelSpec,
    before: &Tensors,
    after_spec: &ModelSpec,
    after: &Tensors,
) -> ParamReport {
    let backbone = of_kind(TensorKind::Backbone);
    let layers = |n: TensorName| backbone(n) && n.layer_index().is_some();
    let (bb0, bb1) = (count(before, &backbone), count(after, &backbone));
    let (el0, el1) = (count(before, layers), count(after, layers));
    let peft = of_kind(TensorKind::Peft);
    let (p0, p1) = (count(before, &peft), count(after, &peft));
    let head = of_kind(TensorKind::Head);
    let head_trainable_pred = |n: TensorName| match after_spec.head {
        TaskHeadSpec::Classification {
            style: HeadStyle::RobertaDenseTanh,
            ..
        }
        | TaskHeadSpec::Regression {
            style: HeadStyle::RobertaDenseTanh,
        } => head(n),
        _ => matches!(
            n,
            TensorName::Head {
                dense: HeadDense::Out,
                ..
            }
        ),
    };
    let head_trainable = count(after, head_trainable_pred);
    ParamReport {
        backbone_before: bb0,
        backbone_after: bb1,
        backbone_pruned_pct: pct(bb0 - bb1.min(bb0), bb0),
        encoder_layers_before: el0,
        encoder_layers_after: el1,
        encoder_layers_pruned_pct: pct(el0 - el1.min(el0), el0),
        peft_before: p0,
        peft_after: p1,
        peft_kept_pct: pct(p1, p0),
        peft_modules_before: before_spec.peft.iter().filter(|m| m.rank > 0).count(),
        peft_modules_after: after_spec.peft.len(),
        rank_slots_before: before_spec.peft.iter().map(|m| m.rank).sum(),
        rank_slots_after: after_spec.peft.iter().map(|m| m.rank).sum(),
        head_params: count(after, &head),
        head_trainable,
        trainable_after: p1 + head_trainable,
        kept_heads_per_layer: after_spec.encoder.layers.iter().map(|l| l.heads).collect(),
        kept_neurons_per_layer: after_spec.encoder.layers.iter().map(|l| l.ffn).collect(),
    }
}

/// The estimation model's function with its learned mask values folded into the weights they
/// scale, masks then set to 1: a head's mask scales its context, i.e. its rows of the attention
/// output weight and of that projection's LoRA `A`; a neuron's mask scales its activation, i.e.
/// its row of FC2 and of FC2's LoRA `A`. The reference discards the values instead (spec §2.7).
pub fn fold_masks(spec: &ModelSpec, tensors: &Tensors) -> Result<Tensors, SurgeryError> {
    if !spec.masks {
        return Err(SurgeryError::NoMasks);
    }
    let d = spec.encoder.head_dim;
    let mask = |name: String| {
        tensors
            .get(&name)
            .map(|(_, v)| v.clone())
            .ok_or(SurgeryError::MissingTensor(name))
    };
    let mut out = tensors.clone();
    for (l, shape) in spec.encoder.layers.iter().enumerate() {
        let head_mask = TensorName::layer(l, LayerTensor::HeadMask);
        let neuron_mask = TensorName::layer(l, LayerTensor::NeuronMask);
        let heads = mask(head_mask.to_string())?;
        let neurons = mask(neuron_mask.to_string())?;
        let per_head_unit: Vec<f32> = heads
            .iter()
            .flat_map(|&m| std::iter::repeat_n(m, d))
            .collect();
        let weight = |site| DenseModule::Layer { layer: l, site }.tensor(DenseParam::Weight);
        let lora_a = |target| {
            let id = PeftModuleId {
                layer: l,
                site: PeftSite::Lora(target),
            };
            TensorName::peft(id, PeftFactor::A)
        };
        let scaled = [
            (weight(DenseSite::AttnOut), &per_head_unit, shape.heads * d),
            (lora_a(LoraTarget::AttnOut), &per_head_unit, shape.heads * d),
            (weight(DenseSite::FfnOut), &neurons, shape.ffn),
            (lora_a(LoraTarget::FfnOut), &neurons, shape.ffn),
        ];
        for (name, factors, rows) in scaled {
            let name = name.to_string();
            let Some((s, v)) = out.get_mut(&name) else {
                continue; // no LoRA there, or a zero-width layer
            };
            if s.len() != 2 || s[0] != rows || factors.len() != rows {
                return Err(SurgeryError::BadShape {
                    name,
                    shape: s.clone(),
                    expected: format!("expected {rows} rows, one per masked unit"),
                });
            }
            let c = s[1];
            for (r, &f) in factors.iter().enumerate() {
                v[r * c..(r + 1) * c].iter_mut().for_each(|x| *x *= f);
            }
        }
        for name in [head_mask, neuron_mask] {
            if let Some((_, v)) = out.get_mut(&name.to_string()) {
                v.iter_mut().for_each(|x| *x = 1.0);
            }
        }
    }
    Ok(out)
}
