//! The device work of one training step, shared by the plain and the graphed path.

use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use lpeft_artifacts::dataset::Batch;
use lpeft_model::head::{Labels, distill_loss, task_loss};
use lpeft_model::importance::rank_taylor_parts;
use lpeft_model::optim::AdamW;
use lpeft_model::peft::NormRatioRecorder;
use lpeft_model::{EncoderInput, Model};
use lpeft_schema::model::PeftModuleId;

use crate::{Capture, CaptureLayout, Distill, TrainConfig, TrainError, graphs, to_f32};

/// The device work of one step: forward, loss, backward, captures, update; nothing is read
/// back (the values to read are stacked in the returned tensor).
#[allow(clippy::too_many_arguments)]
pub(crate) fn device_step(
    opt: &mut AdamW,
    config: &TrainConfig,
    distill: Option<&Distill>,
    batch: &Batch,
    model: Model,
    input: &EncoderInput,
    labels: &Labels,
    capture: Capture,
    lr: f64,
) -> Result<graphs::DeviceStep, TrainError> {
    let mut rec = capture
        .importance
        .then(|| NormRatioRecorder::new(&input.attention_mask));
    let out = match rec.as_mut() {
        Some(r) => model.forward_recording(input, r),
        None => model.forward(input),
    };
    let task = task_loss(&out.head, labels);
    let objective = match distill {
        None => task.clone(),
        Some(d) => {
            let rows = d.rows(batch)?;
            let teacher = Tensor::<2>::from_data(
                TensorData::new(rows, [batch.batch_size, d.width]),
                &task.device(),
            );
            let regression = matches!(labels, Labels::Score(_));
            let kd = distill_loss(&out.head, teacher, d.temperature, regression)
                .ok_or_else(|| TrainError::Teacher("span heads cannot be distilled".into()))?;
            task.clone().mul_scalar(1.0 - d.weight) + kd.mul_scalar(d.weight)
        }
    };
    let loss = match model.mask_l1() {
        Some(l1) if config.l1 != 0.0 => objective + l1.mul_scalar(config.l1),
        _ => objective,
    };
    let grads = loss.backward();

    // Everything this step reports, stacked so that it crosses from the device once; the
    // gradient norm joins it after the update. Captures go in as the few tensors they were
    // computed in; the host puts their values in module order after the read.
    let mut parts: Vec<Tensor<1>> = vec![loss.inner(), task.inner()];
    let mut layout: Option<CaptureLayout> = None;
    if let Some(rec) = rec.take() {
        let taylor = rank_taylor_parts(&model, &grads);
        let ids: Vec<PeftModuleId> = taylor.modules.iter().map(|m| m.id).collect();
        // Offsets after loss, task loss and gradient norm.
        let mut at = 3;
        let mut p2_at: Vec<Option<usize>> = vec![None; ids.len()];
        for (recorded, t) in rec.parts() {
            for (k, id) in recorded.iter().enumerate() {
                if let Some(i) = ids.iter().position(|m| m == id) {
                    p2_at[i] = Some(at + k);
                }
            }
            at += t.dims()[0];
            parts.push(t.clone());
        }
        let taylor_at = at;
        parts.extend(taylor.tensors.iter().cloned());
        layout = Some(CaptureLayout {
            ids,
            p2_at,
            taylor_at,
            taylor,
        });
    }

    let gp = GradientsParams::from_grads(grads, &model);
    let (head_coef, neuron_coef) = (config.head_mask_lr_coef, config.neuron_mask_lr_coef);
    let group = move |path: &[String]| match path.last().map(String::as_str) {
        Some("head_mask") => head_coef,
        Some("neuron_mask") => neuron_coef,
        _ => 1.0,
    };
    let (model, norm) = opt.step_grouped_lazy(model, gp, lr, &group);
    let device = parts[0].device();
    // No trainable tensor received a gradient: nothing to clip, the norm is 0.
    let none = if config.max_grad_norm.is_some() {
        0.0
    } else {
        f32::NAN
    };
    let norm = norm.unwrap_or_else(|| Tensor::full([1], none, &device));
    parts.insert(2, norm);
    let parts = parts.into_iter().map(to_f32).collect();
    Ok((model, Tensor::cat(parts, 0), layout))
}
