//! First-order Taylor importance of each PEFT rank (spec §3.3), computed right after backward:
//! `s_j = |mean_i(A[i,j]·∂L/∂A[i,j])| + |mean_o(B[j,o]·∂L/∂B[j,o])|` with `A: [d_in, r]`,
//! `B: [r, d_out]` (burn layout; the mean runs over the non-rank axis, the absolute value after
//! the mean, as in the reference).

use burn::tensor::{Gradients, Tensor};

use lpeft_schema::model::PeftModuleId;

use crate::model::Model;

/// The rank scores of every PEFT module as a few device tensors (factors sharing their
/// non-rank dimension are scored in one go: a handful of operations for all of them instead of
/// a handful per module) and, per module, where its terms lie in their concatenation.
#[derive(Clone)]
pub struct RankScoreParts {
    pub tensors: Vec<Tensor<1>>,
    /// In [`Model::peft_modules`] order.
    pub modules: Vec<ModuleTerms>,
}

/// Where one module's score terms (A's side, then B's) start in the concatenated tensors; each
/// term is `rank` values, and the module's score is their sum.
#[derive(Clone)]
pub struct ModuleTerms {
    pub id: PeftModuleId,
    pub rank: usize,
    pub terms: Vec<usize>,
}

impl RankScoreParts {
    /// Total length of the tensors.
    pub fn len(&self) -> usize {
        self.tensors.iter().map(|t| t.dims()[0]).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each module's scores from the tensors' values read back (concatenated): the terms
    /// added in f32, as the device would.
    pub fn scores(&self, values: &[f32]) -> Vec<Vec<f32>> {
        self.modules
            .iter()
            .map(|m| {
                let mut out = vec![0.0f32; m.rank];
                for (k, &at) in m.terms.iter().enumerate() {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = if k == 0 {
                            values[at + j]
                        } else {
                            *o + values[at + j]
                        };
                    }
                }
                out
            })
            .collect()
    }
}

/// A module's index, one of its factors (graph-free) and that factor's gradient.
type Factor = (usize, Tensor<2>, Tensor<2>);

/// See [`RankScoreParts`]; nothing is read back.
pub fn rank_taylor_parts(model: &Model, grads: &Gradients) -> RankScoreParts {
    let modules = model.peft_modules();
    let mut terms: Vec<Vec<(usize, usize)>> = vec![Vec::new(); modules.len()];
    let mut tensors = Vec::new();
    let mut offset = 0;
    for side in 0..2 {
        // A is `[d_in, r]` (ranks on axis 1), B `[r, d_out]` (ranks on axis 0); the mean runs
        // over the other axis. Factors with the same other dimension are concatenated along
        // the rank axis.
        let mut groups: Vec<(usize, Vec<Factor>)> = Vec::new();
        for (i, (_, f)) in modules.iter().enumerate() {
            let w = if side == 0 { f.a.val() } else { f.b.val() };
            let Some(g) = w.grad(grads) else { continue };
            let other = w.dims()[side];
            let entry = (i, w.inner(), g);
            match groups.iter_mut().find(|(d, _)| *d == other) {
                Some((_, v)) => v.push(entry),
                None => groups.push((other, vec![entry])),
            }
        }
        for (_, group) in groups {
            let rank_axis = 1 - side;
            let ranks: Vec<usize> = group.iter().map(|(_, w, _)| w.dims()[rank_axis]).collect();
            let total: usize = ranks.iter().sum();
            let (idx, (w, g)): (Vec<usize>, (Vec<Tensor<2>>, Vec<Tensor<2>>)) =
                group.into_iter().map(|(i, w, g)| (i, (w, g))).unzip();
            let product = Tensor::cat(w, rank_axis) * Tensor::cat(g, rank_axis);
            tensors.push(product.mean_dim(side).abs().reshape([total]));
            for (i, r) in idx.into_iter().zip(ranks) {
                terms[i].push((side, offset));
                offset += r;
            }
        }
    }
    let modules = modules
        .iter()
        .zip(terms)
        .map(|((id, f), mut t)| {
            t.sort();
            ModuleTerms {
                id: *id,
                rank: f.a.val().dims()[1],
                terms: t.into_iter().map(|(_, at)| at).collect(),
            }
        })
        .collect();
    RankScoreParts { tensors, modules }
}

/// Per-module rank scores `[r]` on the device (the same values as [`rank_taylor_parts`]).
pub fn rank_taylor_scores(model: &Model, grads: &Gradients) -> Vec<(PeftModuleId, Tensor<1>)> {
    let parts = rank_taylor_parts(model, grads);
    let device = model
        .peft_modules()
        .first()
        .map(|(_, f)| f.a.val().device().inner());
    let all = (!parts.tensors.is_empty()).then(|| Tensor::cat(parts.tensors.clone(), 0));
    parts
        .modules
        .iter()
        .map(|m| {
            let score = m
                .terms
                .iter()
                .map(|&at| {
                    all.clone()
                        .expect("terms lie in tensors")
                        .slice(at..at + m.rank)
                })
                .reduce(|a, b| a + b)
                .unwrap_or_else(|| Tensor::zeros([m.rank], device.as_ref().expect("a module")));
            (m.id, score)
        })
        .collect()
}
