//! The encoder: embeddings and layers whose head count and FFN width are set per layer, with the
//! estimation masks and PEFT modules where spec §2.2 and §3.1 put them.

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor};

use lpeft_schema::model::{
    Activation, AdapterSite, Family, LoraTarget, PeftModuleId, PeftSite, RelativeAttention,
};

use crate::fused::{self, Act, Compute, FusedPolicy, Fusing, Island};
use crate::layers::{Dense, Norm};
use crate::peft::{Adapter, Lora, NormRatioRecorder};

/// Additive score for padded keys; exp() of it is exactly 0 in f32 and bf16.
const MASKED_SCORE: f64 = -1e9;

/// One batch of token ids, `[B, T]` each; `attention_mask` is 1 on real tokens, 0 on padding.
#[derive(Debug, Clone)]
pub struct EncoderInput {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    pub attention_mask: Tensor<2, Int>,
}

#[derive(Module, Debug)]
pub struct Embeddings {
    pub word: Param<Tensor<2>>,
    pub position: Param<Tensor<2>>,
    /// Absent for MPNet and OPT, which have no token types.
    pub token_type: Option<Param<Tensor<2>>>,
    /// Absent for OPT, whose embeddings go to the first layer as they are (no dropout either).
    pub norm: Option<Norm>,
    pub dropout: Dropout,
    #[module(skip)]
    pub family: Family,
    pub pad_token_id: usize,
}

impl Embeddings {
    pub fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        let ids = input.input_ids.clone();
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = match self.family {
            Family::Bert => Tensor::<1, Int>::arange(0..t as i64, &device)
                .reshape([1, t])
                .expand([b, t]),
            // HF create_position_ids_from_input_ids: cumsum over real tokens, offset by pad id.
            Family::Roberta | Family::Mpnet => {
                let real = ids.clone().not_equal_elem(self.pad_token_id as i64).int();
                real.clone()
                    .cumsum(1)
                    .mul(real)
                    .add_scalar(self.pad_token_id as i64)
            }
            Family::Opt => crate::opt::positions(&input.attention_mask),
        };
        let mut x = embedding(self.word.val(), ids) + embedding(self.position.val(), positions);
        if let Some(types) = &self.token_type {
            x = x + embedding(types.val(), input.token_type_ids.clone());
        }
        match &self.norm {
            Some(norm) => self.dropout.forward(norm.forward(x)),
            None => x,
        }
    }
}

/// Projection plus optional LoRA, recording the norm ratio when asked. With `fused`, one
/// libtorch node computes it (and records the ratio itself).
/// `stream`: x is the f32 residual stream (a norm's output: q, k, v, FC1), see [`FusedCall`].
#[allow(clippy::too_many_arguments)]
fn project(
    dense: &Dense,
    lora: Option<&Lora>,
    x: Option<Tensor<3>>,
    dims: (usize, usize, &Device),
    id: PeftModuleId,
    rec: &mut Option<&mut NormRatioRecorder>,
    fused: Option<Fusing>,
    stream: bool,
) -> Tensor<3> {
    let (b, t, device) = dims;
    let call = |f| FusedCall {
        from_stream: stream,
        ..FusedCall::new(f, id)
    };
    if let Some(f) = fused
        && let Some(y) = project_fused(dense, lora, x.clone(), call(f), rec, device)
    {
        return y;
    }
    let base = dense.forward(x.clone(), b, t, device);
    match (lora, x) {
        (Some(lora), Some(x)) => {
            let delta = lora.forward(x);
            if let Some(r) = rec.as_deref_mut() {
                r.record(id, &delta, &base);
            }
            base + delta
        }
        _ => base,
    }
}

/// How a fused projection is called: its activation, `(pad_in, pad_out)` and input scale
/// (an estimation mask, `[1, 1, I]`) as in [`Island::Linear`], and the module it records for.
struct FusedCall {
    act: Option<Act>,
    padding: (usize, usize),
    rank_align: usize,
    compute: Compute,
    hand_off: bool,
    /// [`Fusing::norm_kernel`]: the add-norm kernels' numerics (bf16-mixed's f32 ∂x from the
    /// stream's GEMMs; under TF32 ∂x is f32 anyway).
    norm_kernel: bool,
    in_scale: Option<Tensor<3>>,
    /// x is the f32 residual stream ([`Island::Linear`]'s `f32_grad`).
    from_stream: bool,
    id: PeftModuleId,
}

impl FusedCall {
    /// A plain call under `f`: no activation, padding or input scale.
    fn new(f: Fusing, id: PeftModuleId) -> Self {
        Self {
            act: None,
            padding: (0, 0),
            rank_align: f.rank_align,
            compute: f.compute,
            hand_off: f.hand_off,
            norm_kernel: f.norm_kernel,
            in_scale: None,
            from_stream: false,
            id,
        }
    }
}

/// The fused projection, where the layer has a weight, a bias and an input.
fn project_fused(
    dense: &Dense,
    lora: Option<&Lora>,
    x: Option<Tensor<3>>,
    call: FusedCall,
    rec: &mut Option<&mut NormRatioRecorder>,
    device: &Device,
) -> Option<Tensor<3>> {
    let (Some(w), Some(bias), Some(x)) = (&dense.weight, &dense.bias, x) else {
        return None;
    };
    let (lora_scale, lora_dropout) = lora.map_or((0.0, 0.0), |l| {
        (l.scale, fused::effective_dropout(&l.dropout, device))
    });
    let record = lora.is_some() && rec.is_some();
    let in_scale = call.in_scale.is_some();
    let y = fused::linear(
        x,
        w.val(),
        bias.val(),
        lora.map(|l| (l.a.val(), l.b.val())),
        call.in_scale,
        Island::Linear {
            lora_scale,
            lora_dropout,
            act: call.act,
            pad_in: call.padding.0,
            pad_out: call.padding.1,
            rank_align: call.rank_align,
            record,
            compute: call.compute,
            hand_off: call.hand_off,
            in_scale,
            f32_grad: call.from_stream && call.norm_kernel,
        },
    );
    if record && let Some(r) = rec.as_deref_mut() {
        r.note_fused(call.id);
    }
    Some(y)
}

fn apply_adapter(
    h: Tensor<3>,
    adapter: Option<&Adapter>,
    id: PeftModuleId,
    rec: &mut Option<&mut NormRatioRecorder>,
) -> Tensor<3> {
    match adapter {
        Some(adapter) => {
            let delta = adapter.forward(h.clone());
            if let Some(r) = rec.as_deref_mut() {
                r.record(id, &delta, &h);
            }
            h + delta
        }
        None => h,
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    /// Q, K, V projections; absent when every head of the layer is pruned.
    pub query: Option<Dense>,
    pub key: Option<Dense>,
    pub value: Option<Dense>,
    /// MPNet's relative position bias of this layer's heads, `[buckets, heads]`; absent for
    /// other families and where every head is pruned.
    pub relative_bias: Option<Param<Tensor<2>>>,
    pub output: Dense,
    pub norm: Norm,
    /// One scalar per head, on the head's context (== on its attention probabilities).
    pub head_mask: Option<Param<Tensor<1>>>,
    pub lora_query: Option<Lora>,
    pub lora_key: Option<Lora>,
    pub lora_value: Option<Lora>,
    pub lora_output: Option<Lora>,
    pub adapter: Option<Adapter>,
    pub attention_dropout: Dropout,
    pub hidden_dropout: Dropout,
    pub heads: usize,
    pub head_dim: usize,
    pub layer: usize,
    /// `norm` on the sublayer's input, residual after (OPT); `norm(dropout(out) + x)` otherwise.
    pub pre_norm: bool,
}

impl Attention {
    /// `score_bias`: `[B, 1, 1, T]` (padded keys), or `[B, 1, T, T]` where attention is
    /// causal too. `buckets`: the relative-position bucket ids `[T, T]`, where the model has a
    /// relative bias.
    pub fn forward(
        &self,
        residual: Tensor<3>,
        score_bias: &Tensor<4>,
        buckets: Option<&Tensor<2, Int>>,
        rec: &mut Option<&mut NormRatioRecorder>,
        fused: Option<Fusing>,
    ) -> Tensor<3> {
        let [b, t, _] = residual.dims();
        let device = residual.device();
        let x = if self.pre_norm {
            self.norm.forward(residual.clone())
        } else {
            residual.clone()
        };
        let id = |target| PeftModuleId {
            layer: self.layer,
            site: PeftSite::Lora(target),
        };
        // The head mask where the fused output projection applies it.
        let mut context_scale = None;
        let context = match (&self.query, &self.key, &self.value) {
            (Some(q), Some(k), Some(v)) if self.heads > 0 => {
                let (h, d) = (self.heads, self.head_dim);
                let dims = (b, t, &device);
                // The fused core was built and checked for a padding bias broadcast over heads
                // and queries only, so a layer with MPNet's per-head bias, or OPT's causal bias
                // `[B, 1, T, T]`, runs the plain core (its projections and norms stay fused;
                // under bf16-mixed that core stays f32).
                let fused_core = (self.relative_bias.is_none() || buckets.is_none())
                    && score_bias.dims()[2] == 1;
                // q, k and v go to the fused core alone.
                let qkv_fused = fused.map(|f| f.handing_off(fused_core));
                let mut proj = |dense, lora: &Option<Lora>, target| {
                    project(
                        dense,
                        lora.as_ref(),
                        Some(x.clone()),
                        dims,
                        id(target),
                        rec,
                        qkv_fused,
                        true,
                    )
                };
                let q = proj(q, &self.lora_query, LoraTarget::Query);
                let k = proj(k, &self.lora_key, LoraTarget::Key);
                let v = proj(v, &self.lora_value, LoraTarget::Value);
                let relative = self
                    .relative_bias
                    .as_ref()
                    .zip(buckets)
                    .map(|(table, ids)| crate::mpnet::layer_bias(table, ids));
                if let Some(f) = fused.filter(|_| fused_core) {
                    debug_assert!(relative.is_none());
                    let dropout = fused::effective_dropout(&self.attention_dropout, &device);
                    // The head mask on the merged context: each head's d columns by its value.
                    let head_scale = self.head_mask.as_ref().map(|mask| {
                        mask.val()
                            .reshape([h, 1])
                            .repeat_dim(1, d)
                            .reshape([1, 1, h * d])
                    });
                    // The context goes to the fused output projection alone when no head mask
                    // sits between, or when that projection applies it.
                    let o_fused = self.output.weight.is_some() && self.output.bias.is_some();
                    let mask_in_o = o_fused && f.masks_in_islands;
                    let f = f.handing_off(o_fused && (head_scale.is_none() || mask_in_o));
                    let ctx = fused::attention(q, k, v, score_bias.clone(), h, dropout, f);
                    Some(match head_scale {
                        Some(s) if mask_in_o => {
                            context_scale = Some(s);
                            ctx
                        }
                        Some(s) => ctx * s,
                        None => ctx,
                    })
                } else {
                    let split = |y: Tensor<3>| y.reshape([b, t, h, d]).swap_dims(1, 2);
                    let (q, k, v) = (split(q), split(k), split(v));
                    let mut scores = q
                        .matmul(k.swap_dims(2, 3))
                        .mul_scalar(1.0 / (d as f64).sqrt());
                    // HF adds the relative bias before the padding mask.
                    if let Some(rel) = relative {
                        scores = scores + rel;
                    }
                    let scores = scores + score_bias.clone();
                    let probs = self.attention_dropout.forward(softmax(scores, 3));
                    let mut ctx = probs.matmul(v);
                    if let Some(mask) = &self.head_mask {
                        ctx = ctx * mask.val().reshape([1, h, 1, 1]);
                    }
                    Some(ctx.swap_dims(1, 2).reshape([b, t, h * d]))
                }
            }
            _ => None,
        };
        // The output projection hands its output to the add-norm kernels in bf16 where they
        // alone consume it.
        let to_norm = fused.map(|f| f.to_add_norm(self.adapter.is_none() && !self.pre_norm));
        let out = match (context_scale, to_norm) {
            (Some(s), Some(f)) => {
                let call = FusedCall {
                    in_scale: Some(s),
                    ..FusedCall::new(f, id(LoraTarget::AttnOut))
                };
                let lora = self.lora_output.as_ref();
                project_fused(&self.output, lora, context, call, rec, &device)
                    .expect("a context scale only where the output projection runs fused")
            }
            _ => project(
                &self.output,
                self.lora_output.as_ref(),
                context,
                (b, t, &device),
                id(LoraTarget::AttnOut),
                rec,
                to_norm,
                false,
            ),
        };
        let adapter_id = PeftModuleId {
            layer: self.layer,
            site: PeftSite::Adapter(AdapterSite::Attention),
        };
        let out = apply_adapter(out, self.adapter.as_ref(), adapter_id, rec);
        if self.pre_norm {
            return residual + self.hidden_dropout.forward(out);
        }
        if let Some(f) = fused {
            let p = fused::effective_dropout(&self.hidden_dropout, &device);
            return self.norm.forward_fused(out, residual, p, f);
        }
        self.norm
            .forward(self.hidden_dropout.forward(out) + residual)
    }
}

#[derive(Module, Debug)]
pub struct Ffn {
    /// FC1; absent when every neuron of the layer is pruned.
    pub input: Option<Dense>,
    pub output: Dense,
    pub norm: Norm,
    /// One scalar per neuron, after the activation.
    pub neuron_mask: Option<Param<Tensor<1>>>,
    pub lora_input: Option<Lora>,
    pub lora_output: Option<Lora>,
    pub adapter: Option<Adapter>,
    pub dropout: Dropout,
    #[module(skip)]
    pub activation: Activation,
    pub width: usize,
    pub layer: usize,
    /// As [`Attention::pre_norm`].
    pub pre_norm: bool,
}

impl Ffn {
    pub fn forward(
        &self,
        residual: Tensor<3>,
        rec: &mut Option<&mut NormRatioRecorder>,
        fused: Option<Fusing>,
    ) -> Tensor<3> {
        let [b, t, _] = residual.dims();
        let device = residual.device();
        let x = if self.pre_norm {
            self.norm.forward(residual.clone())
        } else {
            residual.clone()
        };
        let id = |target| PeftModuleId {
            layer: self.layer,
            site: PeftSite::Lora(target),
        };
        let hidden = match &self.input {
            Some(fc1) if self.width > 0 => {
                if let Some(f) = fused {
                    let lora = self.lora_input.as_ref();
                    // Padded hidden units only where FC2 runs fused too and takes them back,
                    // and never under a neuron mask (estimation runs the full, aligned widths).
                    let fc2_fused = self.output.weight.is_some() && self.output.bias.is_some();
                    let pad = if fc2_fused && self.neuron_mask.is_none() {
                        f.padding(self.width)
                    } else {
                        0
                    };
                    let neuron_scale = self
                        .neuron_mask
                        .as_ref()
                        .map(|mask| mask.val().reshape([1, 1, self.width]));
                    let mask_in_fc2 = fc2_fused && f.masks_in_islands;
                    // The activations go to the fused FC2 alone, unless a mask sits between
                    // that FC2 does not apply.
                    let to_fc2 = fc2_fused && (neuron_scale.is_none() || mask_in_fc2);
                    let call = FusedCall {
                        act: Some(Act::from(self.activation)),
                        padding: (0, pad),
                        hand_off: f.handing_off(to_fc2).hand_off,
                        from_stream: true,
                        ..FusedCall::new(f, id(LoraTarget::FfnIn))
                    };
                    let z = project_fused(fc1, lora, Some(x.clone()), call, rec, &device);
                    if let Some(z) = z {
                        let (z, fc2_scale) = match neuron_scale {
                            Some(s) if mask_in_fc2 => (z, Some(s)),
                            Some(s) => (z * s, None),
                            None => (z, None),
                        };
                        return self.finish(Some(z), residual, rec, fused, (pad, fc2_scale));
                    }
                }
                let z = project(
                    fc1,
                    self.lora_input.as_ref(),
                    Some(x.clone()),
                    (b, t, &device),
                    id(LoraTarget::FfnIn),
                    rec,
                    fused,
                    true,
                );
                let mut z = match self.activation {
                    Activation::Gelu => gelu(z),
                    Activation::GeluTanh => burn::tensor::activation::gelu_approximate(z),
                    Activation::Relu => relu(z),
                };
                if let Some(mask) = &self.neuron_mask {
                    z = z * mask.val().reshape([1, 1, self.width]);
                }
                Some(z)
            }
            _ => None,
        };
        self.finish(hidden, residual, rec, fused, (0, None))
    }

    /// FC2, adapter, dropout, residual and (post-LN) LayerNorm after the hidden activations;
    /// `(padding, scale)`: zero hidden units a fused FC1 appended, and the neuron mask FC2 is to
    /// apply to its input (either makes FC2 run fused: it drops the one, applies the other).
    fn finish(
        &self,
        hidden: Option<Tensor<3>>,
        x: Tensor<3>,
        rec: &mut Option<&mut NormRatioRecorder>,
        fused: Option<Fusing>,
        (padding, scale): (usize, Option<Tensor<3>>),
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let device = x.device();
        let lora = self.lora_output.as_ref();
        let id = PeftModuleId {
            layer: self.layer,
            site: PeftSite::Lora(LoraTarget::FfnOut),
        };
        // As the attention's output projection: FC2 hands over to the add-norm kernels.
        let to_norm = fused.map(|f| f.to_add_norm(self.adapter.is_none() && !self.pre_norm));
        let out = if let Some(f) = to_norm.filter(|_| padding > 0 || scale.is_some()) {
            let call = FusedCall {
                padding: (padding, 0),
                in_scale: scale,
                ..FusedCall::new(f, id)
            };
            project_fused(&self.output, lora, hidden, call, rec, &device)
                .expect("FC1 pads or hands a mask on only where FC2 has a weight and a bias")
        } else {
            project(
                &self.output,
                lora,
                hidden,
                (b, t, &device),
                id,
                rec,
                to_norm,
                false,
            )
        };
        let adapter_id = PeftModuleId {
            layer: self.layer,
            site: PeftSite::Adapter(AdapterSite::Ffn),
        };
        let out = apply_adapter(out, self.adapter.as_ref(), adapter_id, rec);
        if self.pre_norm {
            return x + self.dropout.forward(out);
        }
        if let Some(f) = fused {
            let p = fused::effective_dropout(&self.dropout, &device);
            return self.norm.forward_fused(out, x, p, f);
        }
        self.norm.forward(self.dropout.forward(out) + x)
    }
}

#[derive(Module, Debug)]
pub struct Layer {
    pub attention: Attention,
    pub ffn: Ffn,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    /// The LayerNorm after the last layer of pre-LayerNorm models (OPT's
    /// `decoder.final_layer_norm`).
    pub final_norm: Option<Norm>,
    /// MPNet's relative position buckets; `None` for other families.
    #[module(skip)]
    pub relative: Option<RelativeAttention>,
    /// Whether a query sees only keys at or before it (OPT).
    pub causal: bool,
    /// Whether and how the fused libtorch nodes run (default: wherever libtorch runs).
    #[module(skip)]
    pub fused: FusedPolicy,
}

impl Encoder {
    /// Final hidden states `[B, T, H]`.
    pub fn forward(
        &self,
        input: &EncoderInput,
        mut rec: Option<&mut NormRatioRecorder>,
    ) -> Tensor<3> {
        let mut x = self.embeddings.forward(input);
        let [b, t] = input.attention_mask.dims();
        // 0 on real keys, a large negative score on padded keys: [B, 1, 1, T]; where causal,
        // on later keys too: [B, 1, T, T].
        let padded = input
            .attention_mask
            .clone()
            .equal_elem(0)
            .float()
            .reshape([b, 1, 1, t]);
        let masked = if self.causal {
            let future = crate::opt::future_keys(t, &x.device()).expand([b, 1, t, t]);
            (padded.expand([b, 1, t, t]) + future).clamp_max(1.0)
        } else {
            padded
        };
        let score_bias = masked.mul_scalar(MASKED_SCORE);
        // Bucket ids once per forward, shared by every layer (as HF computes the bias once).
        let buckets = self
            .relative
            .map(|rel| crate::mpnet::bucket_ids(t, rel, &x.device()));
        // Fused libtorch nodes wherever libtorch runs; they record ratios themselves.
        let fused = self.fused.on(&x.device());
        if fused.is_some() && rec.is_some() {
            fused::discard_recorded_ratios();
        }
        for layer in &self.layers {
            x = layer
                .attention
                .forward(x, &score_bias, buckets.as_ref(), &mut rec, fused);
            x = layer.ffn.forward(x, &mut rec, fused);
        }
        if let Some(norm) = &self.final_norm {
            x = norm.forward(x);
        }
        if let Some(r) = rec {
            r.collect_fused();
        }
        x
    }
}
