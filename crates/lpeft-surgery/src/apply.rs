//! Physical surgery on named host tensors (burn layout, spec §2.7, §3.5, §8) and the masked
//! model it must equal: both are pure functions of (spec, tensors, plan).
//!
//! Burn stores a linear weight as `[d_in, d_out]`: Q/K/V and FC1 lose output **columns** (and
//! bias entries), O and FC2 lose input **rows** (bias kept). LoRA `B` of q/k/v/fc1 loses
//! columns, `A` of o/fc2 loses rows; rank pruning keeps columns of `A` and rows of `B`. The LoRA
//! scale stays `alpha / r_original`.

use std::collections::{BTreeMap, BTreeSet};

use lpeft_schema::model::{
    AdapterSite, HeadStyle, LayerShape, LoraTarget, ModelSpec, PeftModuleId, PeftSite, TaskHeadSpec,
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

/// What a tensor name refers to inside layer `l`.
enum Part {
    QkvWeight,
    QkvBias,
    AttnOutWeight,
    HeadMask,
    FfnInWeight,
    FfnInBias,
    FfnOutWeight,
    NeuronMask,
    PeftA(PeftModuleId),
    PeftB(PeftModuleId),
    Other,
}

fn classify(name: &str) -> Option<(usize, Part)> {
    let rest = name.strip_prefix("encoder.layers.")?;
    let (l, sub) = rest.split_once('.')?;
    let layer: usize = l.parse().ok()?;
    let id = |site| PeftModuleId { layer, site };
    let part = match sub {
        "attention.query.weight" | "attention.key.weight" | "attention.value.weight" => {
            Part::QkvWeight
        }
        "attention.query.bias" | "attention.key.bias" | "attention.value.bias" => Part::QkvBias,
        "attention.output.weight" => Part::AttnOutWeight,
        "attention.head_mask" => Part::HeadMask,
        "ffn.input.weight" => Part::FfnInWeight,
        "ffn.input.bias" => Part::FfnInBias,
        "ffn.output.weight" => Part::FfnOutWeight,
        "ffn.neuron_mask" => Part::NeuronMask,
        _ => {
            let (module, leaf) = sub.rsplit_once('.')?;
            let site = match module {
                "attention.lora_query" => PeftSite::Lora(LoraTarget::Query),
                "attention.lora_key" => PeftSite::Lora(LoraTarget::Key),
                "attention.lora_value" => PeftSite::Lora(LoraTarget::Value),
                "attention.lora_output" => PeftSite::Lora(LoraTarget::AttnOut),
                "ffn.lora_input" => PeftSite::Lora(LoraTarget::FfnIn),
                "ffn.lora_output" => PeftSite::Lora(LoraTarget::FfnOut),
                "attention.adapter" => PeftSite::Adapter(AdapterSite::Attention),
                "ffn.adapter" => PeftSite::Adapter(AdapterSite::Ffn),
                _ => return Some((layer, Part::Other)),
            };
            match leaf {
                "a" => Part::PeftA(id(site)),
                "b" => Part::PeftB(id(site)),
                _ => Part::Other,
            }
        }
    };
    Some((layer, part))
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

/// B's columns follow the output units of q/k/v/fc1; A's rows follow the input units of o/fc2.
fn b_follows_units(id: PeftModuleId) -> bool {
    matches!(
        id.site,
        PeftSite::Lora(LoraTarget::Query | LoraTarget::Key | LoraTarget::Value | LoraTarget::FfnIn)
    )
}
fn a_follows_units(id: PeftModuleId) -> bool {
    matches!(
        id.site,
        PeftSite::Lora(LoraTarget::AttnOut | LoraTarget::FfnOut)
    )
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
        let Some((l, part)) = classify(name) else {
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
            Part::HeadMask | Part::NeuronMask => None,
            Part::QkvWeight => {
                need_2d(name, shape)?;
                (!heads.is_empty()).then(|| select_cols(shape, v, &heads))
            }
            Part::QkvBias => (!heads.is_empty()).then(|| select_1d(v, &heads)),
            Part::AttnOutWeight => {
                need_2d(name, shape)?;
                (!heads.is_empty()).then(|| select_rows(shape, v, &heads))
            }
            Part::FfnInWeight => {
                need_2d(name, shape)?;
                (!neurons.is_empty()).then(|| select_cols(shape, v, neurons))
            }
            Part::FfnInBias => (!neurons.is_empty()).then(|| select_1d(v, neurons)),
            Part::FfnOutWeight => {
                need_2d(name, shape)?;
                (!neurons.is_empty()).then(|| select_rows(shape, v, neurons))
            }
            Part::PeftA(id) => match survivors.get(&id) {
                None => None,
                Some(ranks) => {
                    need_2d(name, shape)?;
                    let (s, v) = match dimension_units(plan, id, d) {
                        Some(units) if a_follows_units(id) => select_rows(shape, v, &units),
                        _ => (shape.clone(), v.clone()),
                    };
                    Some(select_cols(&s, &v, ranks))
                }
            },
            Part::PeftB(id) => match survivors.get(&id) {
                None => None,
                Some(ranks) => {
                    need_2d(name, shape)?;
                    let (s, v) = match dimension_units(plan, id, d) {
                        Some(units) if b_follows_units(id) => select_cols(shape, v, &units),
                        _ => (shape.clone(), v.clone()),
                    };
                    Some(select_rows(&s, &v, ranks))
                }
            },
            Part::Other => Some((shape.clone(), v.clone())),
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
        let Some((l, part)) = classify(name) else {
            continue;
        };
        let indicator = |keep: &[usize], v: &mut Vec<f32>| {
            let keep: BTreeSet<usize> = keep.iter().copied().collect();
            for (i, x) in v.iter_mut().enumerate() {
                *x = if keep.contains(&i) { 1.0 } else { 0.0 };
            }
        };
        match part {
            Part::HeadMask => indicator(&plan.kept_heads[l], v),
            Part::NeuronMask => indicator(&plan.kept_neurons[l], v),
            // Zero A's columns / B's rows of dropped ranks; a dropped module loses all of B.
            Part::PeftA(id) => {
                let keep: BTreeSet<usize> = survivors
                    .get(&id)
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default();
                let c = shape[1];
                for (i, x) in v.iter_mut().enumerate() {
                    if !keep.contains(&(i % c)) {
                        *x = 0.0;
                    }
                }
            }
            Part::PeftB(id) => {
                let keep: BTreeSet<usize> = survivors
                    .get(&id)
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default();
                let c = shape[1];
                for (i, x) in v.iter_mut().enumerate() {
                    if !keep.contains(&(i / c)) {
                        *x = 0.0;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub use lpeft_artifacts::surgery::ParamReport;

fn count(t: &Tensors, pred: impl Fn(&str) -> bool) -> usize {
    t.iter()
        .filter(|(k, _)| pred(k))
        .map(|(_, (s, _))| s.iter().product::<usize>())
        .sum()
}

fn is_peft(name: &str) -> bool {
    name.contains(".lora_") || name.contains(".adapter.")
}
fn is_mask(name: &str) -> bool {
    name.ends_with("_mask")
}
fn is_head(name: &str) -> bool {
    name.starts_with("head.")
}
fn is_backbone(name: &str) -> bool {
    !is_peft(name) && !is_mask(name) && !is_head(name)
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
    let layers = |n: &str| is_backbone(n) && n.starts_with("encoder.layers.");
    let (bb0, bb1) = (count(before, is_backbone), count(after, is_backbone));
    let (el0, el1) = (count(before, layers), count(after, layers));
    let (p0, p1) = (count(before, is_peft), count(after, is_peft));
    let head_trainable_pred = |n: &str| match after_spec.head {
        TaskHeadSpec::Classification {
            style: HeadStyle::RobertaDenseTanh,
            ..
        }
        | TaskHeadSpec::Regression {
            style: HeadStyle::RobertaDenseTanh,
        } => is_head(n),
        _ => n.starts_with("head.out."),
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
        head_params: count(after, is_head),
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
        let p = format!("encoder.layers.{l}");
        let heads = mask(format!("{p}.attention.head_mask"))?;
        let neurons = mask(format!("{p}.ffn.neuron_mask"))?;
        let per_head_unit: Vec<f32> = heads
            .iter()
            .flat_map(|&m| std::iter::repeat_n(m, d))
            .collect();
        let scaled = [
            ("attention.output.weight", &per_head_unit, shape.heads * d),
            ("attention.lora_output.a", &per_head_unit, shape.heads * d),
            ("ffn.output.weight", &neurons, shape.ffn),
            ("ffn.lora_output.a", &neurons, shape.ffn),
        ];
        for (leaf, factors, rows) in scaled {
            let name = format!("{p}.{leaf}");
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
        for leaf in ["attention.head_mask", "ffn.neuron_mask"] {
            if let Some((_, v)) = out.get_mut(&format!("{p}.{leaf}")) {
                v.iter_mut().for_each(|x| *x = 1.0);
            }
        }
    }
    Ok(out)
}
