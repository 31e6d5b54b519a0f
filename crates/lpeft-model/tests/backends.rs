//! A training step (forward, backward, AdamW on PEFT + masks + head) on every backend compiled
//! into this build: the default `flex`, plus `tch` (libtorch) or others when built with their
//! feature (`cargo test -p lpeft-model --features tch`). Forward outputs agree with flex.

mod common;

use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor};
use common::*;
use lpeft_model::device;
use lpeft_model::head::{HeadOutput, Labels, task_loss};
use lpeft_model::model::Model;
use lpeft_model::optim::{AdamW, AdamWConfig};
use lpeft_model::source::RandomSource;
use lpeft_model::testing::*;
use lpeft_schema::model::{Family, HeadStyle, TaskHeadSpec};

fn spec() -> lpeft_schema::model::ModelSpec {
    let mut peft = lora_everywhere(2, 4, 0.0);
    peft.extend(adapters_everywhere(2, 2, 0.0));
    tiny_spec(
        Family::Bert,
        &[(4, 12), (2, 0)],
        TaskHeadSpec::Classification {
            num_labels: 3,
            style: HeadStyle::BertPooler,
        },
        peft,
        true,
    )
}

#[test]
fn a_training_step_runs_on_every_compiled_backend() {
    let spec = spec();
    let reference = {
        let m = Model::build(&spec, &mut RandomSource { seed: 11 }, &device()).unwrap();
        let HeadOutput::Logits(l) = m
            .forward(&random_input(&spec.encoder, 3, 7, 2, &device()))
            .head
        else {
            unreachable!()
        };
        values(l)
    };
    let names = device::available();
    assert!(names.contains(&"flex"), "the default build has flex");
    for name in names
        .into_iter()
        .filter(|n| *n != "tch-cuda" && *n != "cuda" && *n != "vulkan" && *n != "wgpu")
    {
        let plain = device::device(name).unwrap();
        let ad = plain.clone().autodiff();
        let mut model = Model::build(&spec, &mut RandomSource { seed: 11 }, &ad).unwrap();
        let input = random_input(&spec.encoder, 3, 7, 2, &ad);
        let HeadOutput::Logits(l) = model.forward(&input).head else {
            unreachable!()
        };
        let d = values(l)
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-4, "{name}: forward differs from flex by {d}");
        let labels = Labels::Class(Tensor::<1, Int>::from_ints([0, 1, 2], &ad));
        let mut opt = AdamW::new(AdamWConfig::reference(0.0));
        let mut losses = vec![];
        for _ in 0..5 {
            let out = model.forward(&input);
            let loss = task_loss(&out.head, &labels) + model.mask_l1().unwrap().mul_scalar(1e-4);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(model, grads, 1e-2).0;
        }
        assert!(
            losses.iter().all(|l| l.is_finite()) && losses[4] < losses[0],
            "{name}: {losses:?}"
        );
    }
}
