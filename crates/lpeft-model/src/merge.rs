//! Folding LoRA into the frozen weights (`W ← W + scale·A·B`) for inference or export.
//! Training never does this: it would make ranks unprunable and cost a dense `[d_in, d_out]`
//! gradient (burn-notes §6).

use burn::module::Param;
use burn::tensor::Tensor;

use lpeft_schema::model::PeftSite;

use crate::layers::Dense;
use crate::model::Model;
use crate::peft::Lora;

fn fold(dense: &mut Dense, lora: Option<Lora>) {
    // Take the weight only when there is a LoRA to fold into it.
    let Some(lora) = lora else {
        return;
    };
    let Some(w) = dense.weight.take() else {
        return;
    };
    let delta: Tensor<2> = lora.a.val().matmul(lora.b.val()).mul_scalar(lora.scale);
    let merged = w.val().inner() + delta.inner();
    let require = w.val().is_require_grad();
    dense.weight = Some(Param::from_tensor(Tensor::from_inner(merged)).set_require_grad(require));
}

/// The same function with every LoRA module folded into its projection.
pub fn merge_lora(mut model: Model) -> Model {
    for layer in &mut model.encoder.layers {
        let a = &mut layer.attention;
        if let (Some(q), l) = (a.query.as_mut(), a.lora_query.take()) {
            fold(q, l);
        }
        if let (Some(k), l) = (a.key.as_mut(), a.lora_key.take()) {
            fold(k, l);
        }
        if let (Some(v), l) = (a.value.as_mut(), a.lora_value.take()) {
            fold(v, l);
        }
        let l = a.lora_output.take();
        fold(&mut a.output, l);
        let f = &mut layer.ffn;
        if let (Some(fc1), l) = (f.input.as_mut(), f.lora_input.take()) {
            fold(fc1, l);
        }
        let l = f.lora_output.take();
        fold(&mut f.output, l);
    }
    model
        .spec
        .peft
        .retain(|m| !matches!(m.id.site, PeftSite::Lora(_)));
    model
}
