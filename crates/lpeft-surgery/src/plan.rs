//! Pruning decisions (spec §2.6, §3.4): numpy's linear quantile with a strict `>`, per layer or
//! global for each granularity, modules before ranks, and a seeded random-importance baseline
//! that works for all four granularities (the reference's random paths are broken, §6.2.5).

use serde::{Deserialize, Serialize};

use lpeft_model::rng::SeededRng;
use lpeft_schema::model::PeftModuleId;

/// `np.quantile(values, q)` with the default linear method: `pos = q·(n−1)`, interpolated
/// between the neighbouring sorted values. Computed in f64.
pub fn quantile_linear(values: &[f64], q: f64) -> f64 {
    assert!(!values.is_empty(), "quantile of nothing");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = pos - lo as f64;
    let (a, b) = (v[lo], v[hi.min(v.len() - 1)]);
    // numpy's _lerp: the form that is exact at the nearer end.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Indices whose value is strictly above `threshold`.
pub fn kept_above(values: &[f64], threshold: f64) -> Vec<usize> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > threshold)
        .map(|(i, _)| i)
        .collect()
}

/// Number pruned by the rule for `n` distinct values at ratio `q > 0` (spec §2.6).
pub fn pruned_count(n: usize, q: f64) -> usize {
    if n == 0 || q <= 0.0 {
        return 0;
    }
    let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
    n - kept_above(&v, quantile_linear(&v, q)).len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One threshold per layer (heads, neurons, modules) or per module (ranks).
    Layerwise,
    /// One threshold over everything.
    Global,
}

/// Ratios (fraction pruned; 0 prunes nothing, as the reference's `if ratio != 0`) and scopes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlanSettings {
    pub head_ratio: f64,
    pub ffn_ratio: f64,
    pub module_ratio: f64,
    pub rank_ratio: f64,
    pub head_scope: Scope,
    pub ffn_scope: Scope,
    pub module_scope: Scope,
    pub rank_scope: Scope,
}

/// Importance of every prunable unit; larger is more important.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// `[L][H]`: signed mask values at the draw step.
    pub heads: Vec<Vec<f64>>,
    /// `[L][I]`.
    pub neurons: Vec<Vec<f64>>,
    pub modules: Vec<ModuleScores>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModuleScores {
    pub id: PeftModuleId,
    pub score: f64,
    pub ranks: Vec<f64>,
}

impl Scores {
    /// Uniform random scores of the same shapes: the random-pruning baseline. Each granularity
    /// draws from its own stream, so changing one ratio leaves the others' draws unchanged.
    pub fn random_like(&self, seed: u64) -> Scores {
        let draw = |name: String, n: usize| -> Vec<f64> {
            SeededRng::derive(seed, &name)
                .uniform(n, 0.0, 1.0)
                .into_iter()
                .map(f64::from)
                .collect()
        };
        Scores {
            heads: self
                .heads
                .iter()
                .enumerate()
                .map(|(l, h)| draw(format!("heads.{l}"), h.len()))
                .collect(),
            neurons: self
                .neurons
                .iter()
                .enumerate()
                .map(|(l, f)| draw(format!("neurons.{l}"), f.len()))
                .collect(),
            modules: self
                .modules
                .iter()
                .map(|m| ModuleScores {
                    id: m.id,
                    score: draw(format!("module.{}", m.id), 1)[0],
                    ranks: draw(format!("ranks.{}", m.id), m.ranks.len()),
                })
                .collect(),
        }
    }
}

/// Threshold of one group (a layer, a module, or `global`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupThreshold {
    pub group: String,
    /// `None` when the ratio is 0 (nothing pruned) or the group is empty.
    pub threshold: Option<f64>,
    pub kept: usize,
    pub total: usize,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Thresholds {
    pub heads: Vec<GroupThreshold>,
    pub ffn: Vec<GroupThreshold>,
    pub modules: Vec<GroupThreshold>,
    pub ranks: Vec<GroupThreshold>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptRanks {
    pub module: String,
    pub id: PeftModuleId,
    /// Ranks kept; empty means the module is removed.
    pub ranks: Vec<usize>,
}

/// What survives, per granularity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub settings: PlanSettings,
    pub kept_heads: Vec<Vec<usize>>,
    pub kept_neurons: Vec<Vec<usize>>,
    /// Modules that survive module pruning (before rank pruning).
    pub kept_modules: Vec<PeftModuleId>,
    /// Ranks kept per module of `kept_modules`.
    pub kept_ranks: Vec<KeptRanks>,
    pub thresholds: Thresholds,
}

impl Plan {
    pub fn ranks_of(&self, id: PeftModuleId) -> Option<&[usize]> {
        self.kept_ranks
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.ranks.as_slice())
    }
}

/// Keeps, within each group, the values strictly above the group's quantile.
fn select(groups: &[(String, Vec<f64>)], ratio: f64) -> (Vec<Vec<usize>>, Vec<GroupThreshold>) {
    let mut kept = Vec::with_capacity(groups.len());
    let mut th = Vec::with_capacity(groups.len());
    for (name, values) in groups {
        let (k, t) = if ratio <= 0.0 || values.is_empty() {
            ((0..values.len()).collect(), None)
        } else {
            let t = quantile_linear(values, ratio);
            (kept_above(values, t), Some(t))
        };
        th.push(GroupThreshold {
            group: name.clone(),
            threshold: t,
            kept: k.len(),
            total: values.len(),
        });
        kept.push(k);
    }
    (kept, th)
}

/// Per-layer selection, or one global threshold whose survivors are split back per layer.
fn select_scoped(
    per_layer: &[Vec<f64>],
    ratio: f64,
    scope: Scope,
    what: &str,
) -> (Vec<Vec<usize>>, Vec<GroupThreshold>) {
    match scope {
        Scope::Layerwise => {
            let groups: Vec<(String, Vec<f64>)> = per_layer
                .iter()
                .enumerate()
                .map(|(l, v)| (format!("layer{l}"), v.clone()))
                .collect();
            select(&groups, ratio)
        }
        Scope::Global => {
            let all: Vec<f64> = per_layer.iter().flatten().copied().collect();
            let (kept, th) = select(&[(format!("global ({what})"), all)], ratio);
            let mut out = Vec::with_capacity(per_layer.len());
            let mut offset = 0;
            let flat = &kept[0];
            for v in per_layer {
                let end = offset + v.len();
                out.push(
                    flat.iter()
                        .filter(|&&i| i >= offset && i < end)
                        .map(|&i| i - offset)
                        .collect(),
                );
                offset = end;
            }
            (out, th)
        }
    }
}

/// The pruning plan for `scores` under `settings` (spec §2.6, §3.4; appendix stage B).
pub fn make_plan(scores: &Scores, settings: &PlanSettings) -> Plan {
    let (kept_heads, th_heads) = select_scoped(
        &scores.heads,
        settings.head_ratio,
        settings.head_scope,
        "heads",
    );
    let (kept_neurons, th_ffn) = select_scoped(
        &scores.neurons,
        settings.ffn_ratio,
        settings.ffn_scope,
        "neurons",
    );

    // Modules: layerwise groups modules by layer.
    let layers = scores
        .modules
        .iter()
        .map(|m| m.id.layer + 1)
        .max()
        .unwrap_or(0);
    let by_layer: Vec<Vec<f64>> = (0..layers)
        .map(|l| {
            scores
                .modules
                .iter()
                .filter(|m| m.id.layer == l)
                .map(|m| m.score)
                .collect()
        })
        .collect();
    let (kept_by_layer, th_modules) = select_scoped(
        &by_layer,
        settings.module_ratio,
        settings.module_scope,
        "modules",
    );
    let mut kept_modules = Vec::new();
    for (l, kept) in kept_by_layer.iter().enumerate() {
        let in_layer: Vec<&ModuleScores> =
            scores.modules.iter().filter(|m| m.id.layer == l).collect();
        kept_modules.extend(kept.iter().map(|&i| in_layer[i].id));
    }
    kept_modules.sort();

    // Ranks: over the surviving modules only; layerwise = one threshold per module.
    let survivors: Vec<&ModuleScores> = scores
        .modules
        .iter()
        .filter(|m| kept_modules.contains(&m.id))
        .collect();
    let rank_groups: Vec<Vec<f64>> = survivors.iter().map(|m| m.ranks.clone()).collect();
    let (kept_rank_sets, mut th_ranks) = select_scoped(
        &rank_groups,
        settings.rank_ratio,
        settings.rank_scope,
        "ranks",
    );
    if settings.rank_scope == Scope::Layerwise {
        for (t, m) in th_ranks.iter_mut().zip(&survivors) {
            t.group = m.id.to_string();
        }
    }
    let kept_ranks = survivors
        .iter()
        .zip(kept_rank_sets)
        .map(|(m, ranks)| KeptRanks {
            module: m.id.to_string(),
            id: m.id,
            ranks,
        })
        .collect();
    Plan {
        settings: *settings,
        kept_heads,
        kept_neurons,
        kept_modules,
        kept_ranks,
        thresholds: Thresholds {
            heads: th_heads,
            ffn: th_ffn,
            modules: th_modules,
            ranks: th_ranks,
        },
    }
}

/// Rounds every layer's kept FFN neurons up to a multiple of `multiple` (at most the layer's
/// width) by adding back that layer's best-scored pruned neurons (ties: the lower index). GEMMs
/// on CUDA want widths in multiples of 8; the fused nodes pad any other width on every step,
/// which a width that is already a multiple saves. A layer pruned to nothing stays empty. The
/// FFN thresholds' `kept` counts follow; their threshold values stay the rule's.
pub fn round_up_ffn(plan: &mut Plan, neurons: &[Vec<f64>], multiple: usize) {
    if multiple <= 1 {
        return;
    }
    for (kept, scores) in plan.kept_neurons.iter_mut().zip(neurons) {
        let want = kept.len().next_multiple_of(multiple).min(scores.len());
        if kept.is_empty() || kept.len() >= want {
            continue;
        }
        let mut is_kept = vec![false; scores.len()];
        for &i in kept.iter() {
            is_kept[i] = true;
        }
        let mut pruned: Vec<usize> = (0..scores.len()).filter(|&i| !is_kept[i]).collect();
        pruned.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let add = want - kept.len();
        kept.extend(pruned.into_iter().take(add));
        kept.sort_unstable();
    }
    let th = &mut plan.thresholds.ffn;
    if th.len() == plan.kept_neurons.len() {
        for (t, kept) in th.iter_mut().zip(&plan.kept_neurons) {
            t.kept = kept.len();
        }
    } else if let [global] = th.as_mut_slice() {
        global.kept = plan.kept_neurons.iter().map(Vec::len).sum();
    }
}
