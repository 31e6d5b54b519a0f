//! Zero-width layers, rank-0 modules, masks on/off, merged vs unmerged LoRA, checkpoints,
//! and the importance hooks.

mod common;

use burn::module::Param;
use burn::tensor::{Int, Tensor};
use common::*;
use lpeft_model::checkpoint;
use lpeft_model::head::{HeadOutput, Labels, task_loss};
use lpeft_model::importance::rank_taylor_scores;
use lpeft_model::merge::merge_lora;
use lpeft_model::model::Model;
use lpeft_model::peft::NormRatioRecorder;
use lpeft_model::rng::SeededRng;
use lpeft_model::source::{Init, RandomSource, Role, WeightSource};
use lpeft_model::testing::*;
use lpeft_schema::model::{Family, HeadStyle, LoraTarget, PeftModuleId, PeftSite, TaskHeadSpec};

const CLS: TaskHeadSpec = TaskHeadSpec::Classification {
    num_labels: 3,
    style: HeadStyle::BertPooler,
};

/// LoRA B random (not zero) so LoRA changes the output.
struct LiveLora(u64);
impl WeightSource for LiveLora {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, lpeft_model::ModelError> {
        let init = match init {
            Init::Zeros if role == Role::Peft => Init::Normal { std: 0.3 },
            Init::Normal { .. } => Init::Normal { std: 0.3 },
            other => other,
        };
        RandomSource { seed: self.0 }.fetch(name, shape, init, role)
    }
}

fn logits(m: &Model, input: &lpeft_model::EncoderInput) -> Vec<f32> {
    match m.forward(input).head {
        HeadOutput::Logits(l) => values(l),
        HeadOutput::Span { .. } => unreachable!(),
    }
}

#[test]
fn zero_width_layers_add_only_their_bias() {
    // A layer with no heads and no neurons is LN(x + b_o) then LN(. + b_fc2).
    let spec = tiny_spec(
        Family::Bert,
        &[(0, 0)],
        CLS,
        lora_everywhere(1, 2, 0.0),
        true,
    );
    let m = Model::build(&spec, &mut LiveLora(1), &device()).unwrap();
    let l = &m.encoder.layers[0];
    assert!(
        l.attention.query.is_none() && l.attention.head_mask.is_none() && l.ffn.input.is_none()
    );
    assert!(
        l.attention.lora_query.is_none() && l.attention.lora_output.is_none(),
        "LoRA on empty matrices is dropped"
    );
    assert!(l.ffn.lora_output.is_none() && l.ffn.neuron_mask.is_none());
    let input = random_input(&spec.encoder, 2, 5, 3, &device());
    let hidden = values(m.forward(&input).hidden);
    let emb = m.encoder.embeddings.forward(&input);
    let bo = l
        .attention
        .output
        .bias
        .as_ref()
        .unwrap()
        .val()
        .reshape([1, 1, 16]);
    let b2 = l
        .ffn
        .output
        .bias
        .as_ref()
        .unwrap()
        .val()
        .reshape([1, 1, 16]);
    let expect = l.ffn.norm.forward(l.attention.norm.forward(emb + bo) + b2);
    assert!(max_diff(&hidden, &values(expect)) < 1e-6);
}

#[test]
fn rank_zero_modules_are_absent() {
    let mut peft = lora_everywhere(1, 2, 0.0);
    peft[0].rank = 0;
    let spec = tiny_spec(Family::Bert, &[(2, 4)], CLS, peft, false);
    let m = Model::build(&spec, &mut RandomSource { seed: 1 }, &device()).unwrap();
    assert!(m.encoder.layers[0].attention.lora_query.is_none());
    assert!(m.encoder.layers[0].attention.lora_key.is_some());
    assert_eq!(m.peft_modules().len(), 5);
}

#[test]
fn masks_of_one_change_nothing_and_masks_can_be_switched_off() {
    let with = tiny_spec(Family::Bert, &[(4, 8), (2, 3)], CLS, vec![], true);
    let without = tiny_spec(Family::Bert, &[(4, 8), (2, 3)], CLS, vec![], false);
    let a = Model::build(&with, &mut LiveLora(4), &device()).unwrap();
    let b = Model::build(&without, &mut LiveLora(4), &device()).unwrap();
    let input = random_input(&with.encoder, 3, 6, 2, &device());
    assert!(max_diff(&logits(&a, &input), &logits(&b, &input)) < 1e-6);
    assert!(a.mask_l1().is_some() && b.mask_l1().is_none());
    // A zero head mask removes that head's contribution: output differs.
    let mut c = a.clone();
    let m = c.encoder.layers[0].attention.head_mask.take().unwrap();
    let zeroed = m.val().slice_assign(0..1, Tensor::zeros([1], &device()));
    c.encoder.layers[0].attention.head_mask = Some(Param::from_tensor(zeroed));
    assert!(max_diff(&logits(&a, &input), &logits(&c, &input)) > 1e-4);
}

#[test]
fn merged_lora_equals_unmerged() {
    for family in [Family::Roberta, Family::Mpnet] {
        let spec = tiny_spec(
            family,
            &[(4, 8), (1, 5)],
            TaskHeadSpec::Classification {
                num_labels: 2,
                style: HeadStyle::RobertaDenseTanh,
            },
            lora_everywhere(2, 3, 0.0),
            false,
        );
        let m = Model::build(&spec, &mut LiveLora(8), &device()).unwrap();
        let input = random_input(&spec.encoder, 2, 12, 5, &device());
        let before = logits(&m, &input);
        let merged = merge_lora(m.clone());
        assert!(merged.peft_modules().is_empty() && merged.spec.peft.is_empty());
        let d = max_diff(&before, &logits(&merged, &input));
        assert!(d < 1e-5, "{family:?}: merged vs unmerged {d}");
        assert!(
            max_diff(
                &before,
                &logits(
                    &Model::build(&spec, &mut RandomSource { seed: 8 }, &device()).unwrap(),
                    &input
                )
            ) > 1e-4,
            "LoRA is live"
        );
    }
}

/// LoRA on some projections only (q, v): merging keeps the other projections' weights (it
/// once dropped every weight without a LoRA beside it).
#[test]
fn merging_keeps_the_weights_without_lora() {
    use lpeft_schema::model::{LoraTarget, PeftSite};
    let mut peft = lora_everywhere(2, 3, 0.0);
    peft.retain(|m| {
        matches!(
            m.id.site,
            PeftSite::Lora(LoraTarget::Query | LoraTarget::Value)
        )
    });
    let spec = tiny_spec(Family::Bert, &[(4, 8), (2, 5)], CLS, peft, false);
    let m = Model::build(&spec, &mut LiveLora(8), &device()).unwrap();
    let input = random_input(&spec.encoder, 2, 7, 5, &device());
    let before = logits(&m, &input);
    let merged = merge_lora(m.clone());
    let d = max_diff(&before, &logits(&merged, &input));
    assert!(d < 1e-5, "merged vs unmerged {d}");
    let names = lpeft_model::checkpoint::named_tensors(&merged);
    assert!(names.contains_key("encoder.layers.0.attention.key.weight"));
    assert!(names.contains_key("encoder.layers.1.ffn.input.weight"));
}

#[test]
fn checkpoint_round_trip_is_exact() {
    let mut peft = lora_everywhere(2, 3, 0.0);
    peft.extend(adapters_everywhere(2, 2, 0.0));
    peft[4].rank = 1; // a pruned rank: scale stays alpha / r_original
    let spec = tiny_spec(Family::Bert, &[(3, 0), (0, 6)], CLS, peft, true);
    let m = Model::build(&spec, &mut LiveLora(2), &device()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&m, dir.path()).unwrap();
    let back = checkpoint::load(dir.path(), &device()).unwrap();
    assert_eq!(back.spec, m.spec);
    assert_eq!(
        checkpoint::named_tensors(&back),
        checkpoint::named_tensors(&m)
    );
    let input = random_input(&spec.encoder, 2, 5, 1, &device());
    assert_eq!(logits(&m, &input), logits(&back, &input));
}

#[test]
fn checkpoint_with_extra_tensor_is_refused() {
    let spec = tiny_spec(Family::Bert, &[(2, 4)], CLS, vec![], false);
    let m = Model::build(&spec, &mut RandomSource { seed: 1 }, &device()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&m, dir.path()).unwrap();
    let mut other = spec.clone();
    other.encoder.layers[0].ffn = 3;
    std::fs::write(
        dir.path().join(checkpoint::SPEC_FILE),
        serde_json::to_string(&other).unwrap(),
    )
    .unwrap();
    let err = checkpoint::load(dir.path(), &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights.safetensors")
            && err.contains("ffn.input.weight")
            && err.contains("[16, 4]"),
        "{err}"
    );
}

#[test]
fn norm_ratio_is_the_masked_token_mean() {
    let dev = device();
    let mask = Tensor::<2, Int>::from_ints([[1, 1, 0]], &dev);
    let mut rec = NormRatioRecorder::new(&mask);
    // tokens: |delta| = (3, 4, 9), |base| = (1, 2, 0) -> ratios 3, 2, (padding, and inf)
    let delta = Tensor::<3>::from_floats([[[3.0, 0.0], [0.0, 4.0], [9.0, 0.0]]], &dev);
    let base = Tensor::<3>::from_floats([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]], &dev);
    let id = PeftModuleId {
        layer: 0,
        site: PeftSite::Lora(LoraTarget::Query),
    };
    rec.record(id, &delta, &base);
    assert_eq!(rec.ratios()[0].1.clone().into_scalar::<f32>(), 2.5);
}

#[test]
fn taylor_scores_follow_the_reference_formula() {
    let spec = tiny_spec(
        Family::Bert,
        &[(2, 4)],
        CLS,
        lora_everywhere(1, 3, 0.0),
        false,
    );
    let ad = device().autodiff();
    let m = Model::build(&spec, &mut LiveLora(3), &ad).unwrap();
    let input = random_input(&spec.encoder, 2, 5, 1, &ad);
    let out = m.forward(&input);
    let labels = Labels::Class(Tensor::<1, Int>::from_ints([0, 2], &ad));
    let grads = task_loss(&out.head, &labels).backward();
    let scores = rank_taylor_scores(&m, &grads);
    assert_eq!(scores.len(), 6);
    let (id, s) = &scores[0];
    assert_eq!(id.site, PeftSite::Lora(LoraTarget::Query));
    let lora = m.encoder.layers[0].attention.lora_query.as_ref().unwrap();
    let a = values(lora.a.val().inner());
    let ga = values(lora.a.val().grad(&grads).unwrap());
    let b = values(lora.b.val().inner());
    let gb = values(lora.b.val().grad(&grads).unwrap());
    let (d_in, r, d_out) = (16, 3, 8);
    let got = values(s.clone());
    for j in 0..r {
        let sa: f64 = (0..d_in)
            .map(|i| f64::from(a[i * r + j] * ga[i * r + j]))
            .sum::<f64>()
            / d_in as f64;
        let sb: f64 = (0..d_out)
            .map(|o| f64::from(b[j * d_out + o] * gb[j * d_out + o]))
            .sum::<f64>()
            / d_out as f64;
        let want = sa.abs() + sb.abs();
        assert!(
            (f64::from(got[j]) - want).abs() < 1e-6 + 1e-4 * want,
            "rank {j}: {} vs {want}",
            got[j]
        );
    }
}

/// The stacked (per shape) scores are bit for bit the per-module formula, on a model whose
/// modules come in several shapes (q/k/v/o, fc1, fc2; a pruned layer of another width).
#[test]
fn stacked_taylor_scores_equal_the_per_module_computation() {
    let spec = tiny_spec(
        Family::Bert,
        &[(2, 4), (1, 3), (2, 4)],
        CLS,
        lora_everywhere(3, 3, 0.0),
        false,
    );
    let ad = device().autodiff();
    let m = Model::build(&spec, &mut LiveLora(5), &ad).unwrap();
    let input = random_input(&spec.encoder, 2, 5, 1, &ad);
    let labels = Labels::Class(Tensor::<1, Int>::from_ints([1, 2], &ad));
    let grads = task_loss(&m.forward(&input).head, &labels).backward();
    let scores = rank_taylor_scores(&m, &grads);
    let modules = m.peft_modules();
    assert_eq!(scores.len(), modules.len());
    for ((id, got), (mid, f)) in scores.iter().zip(&modules) {
        assert_eq!(id, mid);
        let side = |w: Tensor<2>, dim: usize| {
            let g = w.grad(&grads).unwrap();
            let r = g.dims()[1 - dim];
            (w.inner() * g).mean_dim(dim).abs().reshape([r])
        };
        let want = side(f.a.val(), 0) + side(f.b.val(), 1);
        let (got, want) = (values(got.clone()), values(want));
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{id}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn recording_forward_gives_one_ratio_per_module() {
    let mut peft = lora_everywhere(2, 2, 0.0);
    peft.extend(adapters_everywhere(2, 8, 0.0));
    let spec = tiny_spec(Family::Bert, &[(2, 4), (1, 3)], CLS, peft, true);
    let m = Model::build(&spec, &mut LiveLora(1), &device()).unwrap();
    let input = random_input(&spec.encoder, 2, 5, 1, &device());
    let mut rec = NormRatioRecorder::new(&input.attention_mask);
    let out = m.forward_recording(&input, &mut rec);
    assert_eq!(rec.ratios().len(), 16);
    let r: Vec<f32> = rec
        .ratios()
        .iter()
        .map(|(_, t)| t.clone().into_scalar::<f32>())
        .collect();
    assert!(r.iter().all(|x| *x > 0.0 && x.is_finite()), "{r:?}");
    assert_eq!(
        values(out.hidden),
        values(m.forward(&input).hidden),
        "recording does not change the output"
    );
    let _ = SeededRng::new(0);
}

#[test]
fn specs_with_impossible_probabilities_or_scales_are_refused() {
    use lpeft_model::model::validate;
    let base = lpeft_model::testing::tiny_spec(
        lpeft_schema::model::Family::Bert,
        &[(2, 4)],
        lpeft_schema::model::TaskHeadSpec::Regression {
            style: lpeft_schema::model::HeadStyle::BertPooler,
        },
        lpeft_model::testing::lora_everywhere(1, 2, 0.1),
        false,
    );
    assert!(validate(&base).is_ok());
    let mut s = base.clone();
    s.peft[0].dropout = 1.0;
    let e = validate(&s).unwrap_err().to_string();
    assert!(e.contains("dropout 1 must be in [0, 1)"), "{e}");
    let mut s = base.clone();
    s.encoder.attention_dropout = -0.1;
    assert!(
        validate(&s)
            .unwrap_err()
            .to_string()
            .contains("attention_dropout")
    );
    let mut s = base.clone();
    s.encoder.layer_norm_eps = 0.0;
    assert!(
        validate(&s)
            .unwrap_err()
            .to_string()
            .contains("layer_norm_eps")
    );
    let mut s = base;
    s.peft[1].scale = f64::INFINITY;
    assert!(validate(&s).unwrap_err().to_string().contains("scale"));
}
