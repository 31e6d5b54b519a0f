//! The count rule of spec §2.6 / §3.4: numpy's linear quantile and a strict `>` prune
//! `floor(ρ·(n−1)) + 1` of n distinct values.

use lpeft_schema::model::{LoraTarget, PeftModuleId, PeftSite};
use lpeft_surgery::plan::{
    ModuleScores, PlanSettings, Scope, Scores, kept_above, make_plan, pruned_count, quantile_linear,
};

#[test]
fn quantile_matches_numpy_linear() {
    // np.quantile([3, 1, 4, 1, 5, 9, 2, 6], q) for q in (0, .25, .5, .9, 1): 1, 1.75, 3.5, 6.9, 9
    let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
    let expect = [(0.0, 1.0), (0.25, 1.75), (0.5, 3.5), (0.9, 6.9), (1.0, 9.0)];
    for (q, want) in expect {
        let got = quantile_linear(&v, q);
        assert!((got - want).abs() < 1e-12, "q={q}: {got} vs {want}");
    }
    assert_eq!(quantile_linear(&[7.0], 0.3), 7.0);
}

#[test]
fn strict_greater_prunes_ties_at_the_threshold() {
    let v = [1.0, 1.0, 1.0, 2.0];
    let t = quantile_linear(&v, 0.5);
    assert_eq!(t, 1.0);
    assert_eq!(kept_above(&v, t), vec![3]);
}

#[test]
fn spec_head_counts() {
    assert_eq!(
        pruned_count(16, 0.333333333),
        5,
        "roberta-large heads at the scripts' ratio"
    );
    assert_eq!(
        pruned_count(16, 1.0 / 3.0),
        6,
        "exactly one third prunes one more"
    );
    assert_eq!(pruned_count(12, 0.333333333), 4, "roberta-base heads");
    assert_eq!(
        pruned_count(98_304, 0.333333333),
        32_768,
        "roberta-large FFN, global"
    );
    assert_eq!(
        pruned_count(36_864, 0.333333333),
        12_288,
        "roberta-base FFN, global"
    );
}

#[test]
fn spec_module_and_rank_counts() {
    assert_eq!(
        144 - pruned_count(144, 0.75),
        36,
        "LoRA modules kept at 0.75"
    );
    assert_eq!(48 - pruned_count(48, 0.75), 12, "adapters kept at 0.75");
    assert_eq!(288 - pruned_count(288, 0.5), 144, "rank slots kept at 0.5");
}

/// roberta-large-shaped scores with distinct values.
fn large_scores() -> Scores {
    let mut k = 0.0;
    let mut next = || {
        k += 1.0;
        // A fixed permutation-ish sequence of distinct values.
        (k * 7919.0) % 100_003.0
    };
    Scores {
        heads: (0..24).map(|_| (0..16).map(|_| next()).collect()).collect(),
        neurons: (0..24)
            .map(|_| (0..4096).map(|_| next()).collect())
            .collect(),
        modules: (0..24)
            .flat_map(|layer| {
                LoraTarget::ALL.into_iter().map(move |t| PeftModuleId {
                    layer,
                    site: PeftSite::Lora(t),
                })
            })
            .map(|id| ModuleScores {
                id,
                score: next(),
                ranks: (0..8).map(|_| next()).collect(),
            })
            .collect(),
    }
}

#[test]
fn plan_reproduces_the_reference_configuration() {
    let scores = large_scores();
    let s = PlanSettings {
        head_ratio: 0.333333333,
        ffn_ratio: 0.333333333,
        module_ratio: 0.75,
        rank_ratio: 0.5,
        head_scope: Scope::Layerwise,
        ffn_scope: Scope::Global,
        module_scope: Scope::Global,
        rank_scope: Scope::Global,
    };
    let plan = make_plan(&scores, &s);
    assert!(
        plan.kept_heads.iter().all(|h| h.len() == 11),
        "5 of 16 heads pruned per layer"
    );
    let neurons: usize = plan.kept_neurons.iter().map(Vec::len).sum();
    assert_eq!(neurons, 98_304 - 32_768);
    assert_eq!(plan.kept_modules.len(), 36);
    let slots: usize = plan.kept_ranks.iter().map(|k| k.ranks.len()).sum();
    assert_eq!(slots, 144);
    assert_eq!(plan.thresholds.heads.len(), 24);
    assert_eq!(plan.thresholds.ffn.len(), 1);

    // Ratio 0 keeps everything (the reference skips a granularity whose ratio is 0).
    let none = make_plan(
        &scores,
        &PlanSettings {
            head_ratio: 0.0,
            ffn_ratio: 0.0,
            module_ratio: 0.0,
            rank_ratio: 0.0,
            ..s
        },
    );
    assert!(none.kept_heads.iter().all(|h| h.len() == 16));
    assert_eq!(none.kept_modules.len(), 144);
}

#[test]
fn random_baseline_is_seeded_and_prunes_every_granularity() {
    let scores = large_scores();
    let s = PlanSettings {
        head_ratio: 0.5,
        ffn_ratio: 0.5,
        module_ratio: 0.5,
        rank_ratio: 0.5,
        head_scope: Scope::Layerwise,
        ffn_scope: Scope::Layerwise,
        module_scope: Scope::Layerwise,
        rank_scope: Scope::Layerwise,
    };
    let a = make_plan(&scores.random_like(1), &s);
    let b = make_plan(&scores.random_like(1), &s);
    let c = make_plan(&scores.random_like(2), &s);
    assert_eq!(a, b, "same seed, same plan");
    assert_ne!(a.kept_heads, c.kept_heads, "another seed, another draw");
    assert_ne!(a.kept_modules, c.kept_modules);
    assert!(a.kept_heads.iter().all(|h| h.len() == 8));
    assert!(a.kept_neurons.iter().all(|n| n.len() == 2048));
    assert_eq!(a.kept_modules.len(), 24 * 3, "3 of 6 modules per layer");
    assert!(
        a.kept_ranks.iter().all(|k| k.ranks.len() == 4),
        "4 of 8 ranks per module"
    );
}

mod rounded_ffn {
    use super::*;
    use lpeft_surgery::plan::round_up_ffn;
    use proptest::prelude::*;

    fn scores_of(neurons: Vec<Vec<f64>>) -> Scores {
        Scores {
            heads: neurons.iter().map(|_| vec![1.0, 2.0]).collect(),
            neurons,
            modules: vec![],
        }
    }

    fn settings(ffn_scope: Scope) -> PlanSettings {
        PlanSettings {
            head_ratio: 0.0,
            ffn_ratio: 0.4,
            module_ratio: 0.0,
            rank_ratio: 0.0,
            head_scope: Scope::Layerwise,
            ffn_scope,
            module_scope: Scope::Global,
            rank_scope: Scope::Global,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Every layer keeps a multiple of m (or all, or none), a superset of the rule's
        /// choice, and what it adds back are that layer's best-scored pruned neurons.
        #[test]
        fn widths_become_multiples_with_the_best_pruned_added_back(
            neurons in proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, 1..40), 1..5),
            m in 1usize..10,
            global in any::<bool>(),
        ) {
            let scores = scores_of(neurons.clone());
            let s = settings(if global { Scope::Global } else { Scope::Layerwise });
            let rule = make_plan(&scores, &s);
            let mut plan = rule.clone();
            round_up_ffn(&mut plan, &scores.neurons, m);
            for (l, (kept, before)) in plan.kept_neurons.iter().zip(&rule.kept_neurons).enumerate() {
                let n = neurons[l].len();
                prop_assert!(kept.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
                prop_assert!(before.iter().all(|i| kept.contains(i)), "layer {l}: superset");
                if before.is_empty() {
                    prop_assert!(kept.is_empty(), "an emptied layer stays empty");
                } else {
                    prop_assert!(kept.len() % m == 0 || kept.len() == n, "layer {l}: {} of {n}", kept.len());
                    prop_assert!(kept.len() < before.len() + m, "adds fewer than m");
                }
                let added: Vec<usize> = kept.iter().filter(|i| !before.contains(i)).copied().collect();
                let worst_added = added.iter().map(|&i| neurons[l][i]).fold(f64::INFINITY, f64::min);
                let best_left = (0..n)
                    .filter(|i| !kept.contains(i))
                    .map(|i| neurons[l][i])
                    .fold(f64::NEG_INFINITY, f64::max);
                prop_assert!(added.is_empty() || worst_added >= best_left, "layer {l}: the best pruned come back");
            }
            let total: usize = plan.kept_neurons.iter().map(Vec::len).sum();
            let counted: usize = if global {
                plan.thresholds.ffn[0].kept
            } else {
                plan.thresholds.ffn.iter().map(|t| t.kept).sum()
            };
            prop_assert_eq!(total, counted, "thresholds count what is kept");
            if m == 1 {
                prop_assert_eq!(&plan, &rule);
            }
        }
    }

    #[test]
    fn a_width_that_is_not_a_multiple_of_8_is_rounded_up() {
        let layer: Vec<f64> = (0..3072).map(|i| f64::from(i) / 3072.0).collect();
        let scores = scores_of(vec![layer]);
        let s = PlanSettings {
            ffn_ratio: 1025.0 / 3071.0 - 1e-9,
            ..settings(Scope::Global)
        };
        let mut plan = make_plan(&scores, &s);
        let before = plan.kept_neurons[0].len();
        round_up_ffn(&mut plan, &scores.neurons, 8);
        assert!(!before.is_multiple_of(8) && plan.kept_neurons[0].len().is_multiple_of(8));
        assert_eq!(plan.kept_neurons[0].len(), before.next_multiple_of(8));
    }
}
