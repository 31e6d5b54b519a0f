//! The surgery invariant: masks at the plan's 0/1 values ≡ the physically pruned model, on
//! random small encoders, random plans, LoRA and adapters, classification and regression.

use burn::tensor::{Device, Tensor};
use proptest::prelude::*;

use lpeft_model::checkpoint::named_tensors;
use lpeft_model::head::HeadOutput;
use lpeft_model::model::Model;
use lpeft_model::rng::SeededRng;
use lpeft_model::source::{Init, Role, WeightSource};
use lpeft_model::testing::{adapters_everywhere, lora_everywhere, random_input, tiny_spec};
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};
use lpeft_surgery::apply::{Tensors, fold_masks, masked_equivalent, param_report, prune};
use lpeft_surgery::plan::{ModuleScores, PlanSettings, Scope, Scores, make_plan};
use lpeft_surgery::stage::build_model;

/// Every tensor random (LoRA B and masks too), so every path carries signal.
struct AllRandom(u64);
impl WeightSource for AllRandom {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        _role: Role,
    ) -> Result<Vec<f32>, lpeft_model::ModelError> {
        let n: usize = shape.iter().product();
        let mut rng = SeededRng::derive(self.0, name);
        Ok(match init {
            Init::Ones => rng.normal(n, 1.0, 0.2),
            _ => rng.normal(n, 0.0, 0.3),
        })
    }
}

fn device() -> Device {
    Device::flex()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Hidden states and head outputs, flattened.
fn outputs(model: &Model, spec: &ModelSpec, seed: u64) -> (Vec<f32>, Vec<f32>) {
    // MPNet's relative distances reach the logarithmic buckets from 8 on.
    let seq = if spec.encoder.family == Family::Mpnet {
        20
    } else {
        7
    };
    let input = random_input(&spec.encoder, 3, seq, seed, &device());
    let out = model.forward(&input);
    let HeadOutput::Logits(logits) = out.head else {
        panic!("sequence heads only")
    };
    (values(out.hidden), values(logits))
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
            "{what}[{i}]: masked {x} vs pruned {y}"
        );
    }
}

/// Importance of the right shapes for a spec, drawn from a seed.
fn scores_for(spec: &ModelSpec, seed: u64) -> Scores {
    let template = Scores {
        heads: spec
            .encoder
            .layers
            .iter()
            .map(|l| vec![0.0; l.heads])
            .collect(),
        neurons: spec
            .encoder
            .layers
            .iter()
            .map(|l| vec![0.0; l.ffn])
            .collect(),
        modules: spec
            .peft
            .iter()
            .map(|m| ModuleScores {
                id: m.id,
                score: 0.0,
                ranks: vec![0.0; m.rank],
            })
            .collect(),
    };
    template.random_like(seed)
}

fn scope(global: bool) -> Scope {
    if global {
        Scope::Global
    } else {
        Scope::Layerwise
    }
}

fn spec_for(
    layers: &[(usize, usize)],
    lora: bool,
    rank: usize,
    regression: bool,
    family: Family,
) -> ModelSpec {
    let n = layers.len();
    let peft = if lora {
        lora_everywhere(n, rank, 0.0)
    } else {
        adapters_everywhere(n, rank, 0.0)
    };
    let style = match family {
        Family::Bert => HeadStyle::BertPooler,
        Family::Roberta | Family::Mpnet => HeadStyle::RobertaDenseTanh,
        Family::Opt => HeadStyle::LastToken,
    };
    let head = if regression {
        TaskHeadSpec::Regression { style }
    } else {
        TaskHeadSpec::Classification {
            num_labels: 3,
            style,
        }
    };
    tiny_spec(family, layers, head, peft, true)
}

fn families() -> impl Strategy<Value = Family> {
    prop::sample::select(vec![
        Family::Bert,
        Family::Roberta,
        Family::Mpnet,
        Family::Opt,
    ])
}

fn check(spec: &ModelSpec, settings: &PlanSettings, score_seed: u64, weight_seed: u64) {
    let model = Model::build(spec, &mut AllRandom(weight_seed), &device()).unwrap();
    let tensors: Tensors = named_tensors(&model);
    let plan = make_plan(&scores_for(spec, score_seed), settings);

    let masked = masked_equivalent(spec, &tensors, &plan).unwrap();
    let masked_model = build_model(spec, &masked, &device()).unwrap();
    let (pruned_spec, pruned) = prune(spec, &tensors, &plan).unwrap();
    let pruned_model = build_model(&pruned_spec, &pruned, &device()).unwrap();
    assert!(!pruned_spec.masks);
    for (l, shape) in pruned_spec.encoder.layers.iter().enumerate() {
        assert_eq!(shape.heads, plan.kept_heads[l].len());
        assert_eq!(shape.ffn, plan.kept_neurons[l].len());
    }

    let (h0, y0) = outputs(&masked_model, spec, 11);
    let (h1, y1) = outputs(&pruned_model, &pruned_spec, 11);
    assert_close(&h0, &h1, "hidden");
    assert_close(&y0, &y1, "logits");

    // Idempotent: an all-keep plan on the pruned model changes nothing.
    let keep_all = PlanSettings {
        head_ratio: 0.0,
        ffn_ratio: 0.0,
        module_ratio: 0.0,
        rank_ratio: 0.0,
        ..*settings
    };
    let again = make_plan(&scores_for(&pruned_spec, 3), &keep_all);
    let (spec2, pruned2) = prune(&pruned_spec, &pruned, &again).unwrap();
    assert_eq!(spec2, pruned_spec);
    assert_eq!(pruned2, pruned);

    // The report counts what is there.
    let report = param_report(spec, &tensors, &pruned_spec, &pruned);
    assert!(report.backbone_after <= report.backbone_before);
    assert_eq!(report.peft_modules_after, pruned_spec.peft.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn masked_equals_pruned(
        layers in prop::collection::vec((1usize..5, 1usize..9), 1..4),
        lora in any::<bool>(),
        rank in 1usize..5,
        regression in any::<bool>(),
        family in families(),
        ratios in (0.0f64..0.95, 0.0f64..0.95, 0.0f64..0.95, 0.0f64..0.95),
        scopes in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        score_seed in 0u64..1000,
        weight_seed in 0u64..1000,
    ) {
        let spec = spec_for(&layers, lora, rank, regression, family);
        let settings = PlanSettings {
            head_ratio: ratios.0, ffn_ratio: ratios.1, module_ratio: ratios.2, rank_ratio: ratios.3,
            head_scope: scope(scopes.0), ffn_scope: scope(scopes.1), module_scope: scope(scopes.2), rank_scope: scope(scopes.3),
        };
        check(&spec, &settings, score_seed, weight_seed);
    }
}

#[test]
fn whole_layers_pruned_to_zero_width() {
    // Global FFN and head pruning at high ratios empties some layers entirely.
    let spec = spec_for(&[(4, 6), (2, 3), (3, 8)], true, 3, false, Family::Bert);
    let s = PlanSettings {
        head_ratio: 0.9,
        ffn_ratio: 0.9,
        module_ratio: 0.5,
        rank_ratio: 0.5,
        head_scope: Scope::Global,
        ffn_scope: Scope::Global,
        module_scope: Scope::Global,
        rank_scope: Scope::Global,
    };
    for seed in 0..6 {
        let plan = make_plan(&scores_for(&spec, seed), &s);
        assert!(
            plan.kept_heads.iter().any(Vec::is_empty)
                || plan.kept_neurons.iter().any(Vec::is_empty)
        );
        check(&spec, &s, seed, 7);
    }
}

/// MPNet: after surgery each layer's relative bias is the columns of its kept original heads
/// (not the first ones), and the pruned model still equals the masked one.
#[test]
fn mpnet_layers_keep_the_relative_bias_of_their_kept_heads() {
    let spec = spec_for(&[(4, 6), (4, 6), (4, 6)], true, 2, false, Family::Mpnet);
    let model = Model::build(&spec, &mut AllRandom(5), &device()).unwrap();
    let tensors: Tensors = named_tensors(&model);
    let s = PlanSettings {
        head_ratio: 0.5,
        ffn_ratio: 0.0,
        module_ratio: 0.0,
        rank_ratio: 0.0,
        head_scope: Scope::Global,
        ffn_scope: Scope::Layerwise,
        module_scope: Scope::Global,
        rank_scope: Scope::Layerwise,
    };
    let mut plan = make_plan(&scores_for(&spec, 1), &s);
    plan.kept_heads = vec![vec![1, 3], vec![], vec![2]];
    let (pruned_spec, pruned) = prune(&spec, &tensors, &plan).unwrap();
    let bias = |t: &Tensors, l: usize| {
        t.get(&format!("encoder.layers.{l}.attention.relative_bias"))
            .cloned()
    };
    for (l, kept) in plan.kept_heads.iter().enumerate() {
        let Some((shape, full)) = bias(&tensors, l) else {
            panic!("layer {l} of the unpruned model has a relative bias")
        };
        assert_eq!(shape, vec![32, 4]);
        let want: Vec<f32> = (0..32)
            .flat_map(|b| kept.iter().map(move |&h| (b, h)))
            .map(|(b, h)| full[b * 4 + h])
            .collect();
        match bias(&pruned, l) {
            None => assert!(kept.is_empty(), "layer {l} lost its bias"),
            Some((shape, got)) => {
                assert_eq!(shape, vec![32, kept.len()], "layer {l}");
                assert_eq!(got, want, "layer {l} keeps heads {kept:?}");
            }
        }
    }
    let masked = masked_equivalent(&spec, &tensors, &plan).unwrap();
    let masked_model = build_model(&spec, &masked, &device()).unwrap();
    let pruned_model = build_model(&pruned_spec, &pruned, &device()).unwrap();
    let (h0, y0) = outputs(&masked_model, &spec, 4);
    let (h1, y1) = outputs(&pruned_model, &pruned_spec, 4);
    assert_close(&h0, &h1, "hidden");
    assert_close(&y0, &y1, "logits");
}

#[test]
fn all_keep_plan_is_the_identity() {
    for (lora, regression) in [(true, false), (false, true)] {
        let spec = spec_for(&[(3, 5), (2, 4)], lora, 2, regression, Family::Bert);
        let model = Model::build(&spec, &mut AllRandom(1), &device()).unwrap();
        let tensors = named_tensors(&model);
        let keep = PlanSettings {
            head_ratio: 0.0,
            ffn_ratio: 0.0,
            module_ratio: 0.0,
            rank_ratio: 0.0,
            head_scope: Scope::Layerwise,
            ffn_scope: Scope::Global,
            module_scope: Scope::Global,
            rank_scope: Scope::Global,
        };
        let plan = make_plan(&scores_for(&spec, 5), &keep);
        let (pspec, pruned) = prune(&spec, &tensors, &plan).unwrap();
        let without_masks: Tensors = tensors
            .iter()
            .filter(|(k, _)| !k.ends_with("_mask"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(pruned, without_masks);
        assert_eq!(
            pspec,
            ModelSpec {
                masks: false,
                ..spec.clone()
            }
        );
        // Unmasked original ≡ pruned-with-nothing-pruned.
        let mut unmasked_spec = spec.clone();
        unmasked_spec.masks = false;
        let original = build_model(&unmasked_spec, &without_masks, &device()).unwrap();
        let same = build_model(&pspec, &pruned, &device()).unwrap();
        let (a, b) = (outputs(&original, &spec, 2), outputs(&same, &pspec, 2));
        assert_eq!(a, b);
    }
}

#[test]
fn rank_pruning_keeps_the_lora_scale_and_drops_empty_modules() {
    let spec = spec_for(&[(2, 4), (2, 4)], true, 4, false, Family::Bert);
    let model = Model::build(&spec, &mut AllRandom(2), &device()).unwrap();
    let tensors = named_tensors(&model);
    let s = PlanSettings {
        head_ratio: 0.0,
        ffn_ratio: 0.0,
        module_ratio: 0.5,
        rank_ratio: 0.6,
        head_scope: Scope::Layerwise,
        ffn_scope: Scope::Global,
        module_scope: Scope::Global,
        rank_scope: Scope::Global,
    };
    let plan = make_plan(&scores_for(&spec, 9), &s);
    let (pspec, pruned) = prune(&spec, &tensors, &plan).unwrap();
    assert_eq!(
        plan.kept_modules.len(),
        12 - (0.5f64 * 11.0).floor() as usize - 1
    );
    for m in &pspec.peft {
        assert!(m.rank > 0 && m.rank <= 4);
        assert_eq!(m.original_rank, 4);
        assert_eq!(m.scale, 2.0, "scale stays alpha / r_original");
    }
    let dropped: Vec<_> = plan
        .kept_ranks
        .iter()
        .filter(|k| k.ranks.is_empty())
        .collect();
    for k in dropped {
        assert!(!pspec.peft.iter().any(|m| m.id == k.id));
        assert!(!pruned.keys().any(|n| tensor_of(n, k.id)));
    }
}

/// Whether `name` is a factor of PEFT module `id`.
fn tensor_of(name: &str, id: lpeft_schema::model::PeftModuleId) -> bool {
    use lpeft_model::names::{LayerTensor, TensorName};
    matches!(
        TensorName::parse(name),
        Some(TensorName::Layer { layer, part: LayerTensor::Peft { site, .. } })
            if layer == id.layer && site == id.site
    )
}

#[test]
fn pruned_checkpoint_loads_back_identically() {
    let spec = spec_for(&[(4, 6), (3, 5)], false, 3, true, Family::Roberta);
    let model = Model::build(&spec, &mut AllRandom(4), &device()).unwrap();
    let tensors = named_tensors(&model);
    let s = PlanSettings {
        head_ratio: 0.5,
        ffn_ratio: 0.4,
        module_ratio: 0.25,
        rank_ratio: 0.3,
        head_scope: Scope::Layerwise,
        ffn_scope: Scope::Global,
        module_scope: Scope::Global,
        rank_scope: Scope::Layerwise,
    };
    let plan = make_plan(&scores_for(&spec, 1), &s);
    let (pspec, pruned) = prune(&spec, &tensors, &plan).unwrap();
    let pm = build_model(&pspec, &pruned, &device()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    lpeft_model::checkpoint::save(&pm, dir.path()).unwrap();
    let back = lpeft_model::checkpoint::load(dir.path(), &device()).unwrap();
    assert_eq!(back.spec, pspec);
    assert_eq!(named_tensors(&back), pruned);
    assert_eq!(outputs(&back, &pspec, 5), outputs(&pm, &pspec, 5));
}

#[test]
fn bad_plans_are_refused_with_the_offending_unit() {
    use lpeft_surgery::apply::SurgeryError;
    let spec = spec_for(&[(2, 4), (2, 4)], true, 2, false, Family::Bert);
    let model = Model::build(&spec, &mut AllRandom(1), &device()).unwrap();
    let tensors = named_tensors(&model);
    let s = PlanSettings {
        head_ratio: 0.0,
        ffn_ratio: 0.0,
        module_ratio: 0.0,
        rank_ratio: 0.0,
        head_scope: Scope::Layerwise,
        ffn_scope: Scope::Global,
        module_scope: Scope::Global,
        rank_scope: Scope::Global,
    };
    let good = make_plan(&scores_for(&spec, 1), &s);
    let mut p = good.clone();
    p.kept_heads[1] = vec![0, 2];
    assert_eq!(
        prune(&spec, &tensors, &p).unwrap_err(),
        SurgeryError::HeadOutOfRange {
            layer: 1,
            head: 2,
            heads: 2
        }
    );
    let mut p = good.clone();
    p.kept_neurons[0] = vec![3, 1];
    assert!(matches!(
        prune(&spec, &tensors, &p).unwrap_err(),
        SurgeryError::Unsorted { .. }
    ));
    let mut p = good.clone();
    p.kept_ranks[0].ranks = vec![0, 5];
    assert!(matches!(
        prune(&spec, &tensors, &p).unwrap_err(),
        SurgeryError::RankOutOfRange {
            rank: 5,
            have: 2,
            ..
        }
    ));
    let mut p = good.clone();
    p.kept_heads.pop();
    assert_eq!(
        masked_equivalent(&spec, &tensors, &p).unwrap_err(),
        SurgeryError::LayerCount { plan: 1, model: 2 }
    );
    let unmasked = ModelSpec {
        masks: false,
        ..spec.clone()
    };
    assert_eq!(
        masked_equivalent(&unmasked, &tensors, &good).unwrap_err(),
        SurgeryError::NoMasks
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Folding the learned masks keeps the estimation model's function, and the folded
    /// tensors then prune like any others (masks at 1 carry nothing more).
    #[test]
    fn folded_masks_keep_the_masked_function(
        layers in prop::collection::vec((1usize..5, 1usize..9), 1..4),
        lora in any::<bool>(),
        rank in 1usize..4,
        family in families(),
        weight_seed in 0u64..1000,
    ) {
        let spec = spec_for(&layers, lora, rank, false, family);
        let model = Model::build(&spec, &mut AllRandom(weight_seed), &device()).unwrap();
        let tensors: Tensors = named_tensors(&model);
        let folded = fold_masks(&spec, &tensors).unwrap();
        prop_assert!(folded.iter().filter(|(k, _)| k.ends_with("_mask")).all(|(_, (_, v))| v.iter().all(|&x| x == 1.0)));
        let folded_model = build_model(&spec, &folded, &device()).unwrap();
        let (h0, y0) = outputs(&model, &spec, 5);
        let (h1, y1) = outputs(&folded_model, &spec, 5);
        assert_close(&h0, &h1, "hidden");
        assert_close(&y0, &y1, "logits");
    }
}

#[test]
fn folding_needs_masks() {
    let mut spec = spec_for(&[(2, 3)], true, 2, false, Family::Bert);
    let model = Model::build(&spec, &mut AllRandom(1), &device()).unwrap();
    let tensors: Tensors = named_tensors(&model);
    spec.masks = false;
    assert!(fold_masks(&spec, &tensors).is_err());
}
