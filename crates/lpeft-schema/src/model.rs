//! The model spec: everything needed to rebuild a (possibly pruned) encoder and its PEFT modules
//! before loading weights. It is saved next to every checkpoint, so a pruned model describes
//! itself: weights files hold tensors only, never shapes.

use serde::{Deserialize, Serialize};

/// Encoder family: decides embeddings, special tokens and the classification head's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// BERT, MiniLM: absolute positions from 0, token types, post-LayerNorm.
    Bert,
    /// RoBERTa: positions start at `pad_token_id + 1` and skip padding.
    Roberta,
    /// MPNet: RoBERTa's positions and special tokens, no token types, and a relative position
    /// bias on every layer's attention scores ([`RelativeAttention`]).
    Mpnet,
    /// OPT (facebook/opt), a decoder: learned positions from the attention mask offset by 2
    /// (`cumsum(mask) * mask + 1`), no token types, no embedding LayerNorm, causal attention
    /// combined with the padding mask, ReLU; pre-LayerNorm with a final LayerNorm when
    /// [`EncoderSpec::pre_norm`], post-LayerNorm otherwise.
    Opt,
}

/// MPNet's T5-style relative position bias: relative distances fall into `num_buckets`
/// buckets (half per direction, logarithmic beyond `num_buckets / 4`, saturating at
/// `max_distance`), and each layer adds its heads' columns of a `[num_buckets, heads]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelativeAttention {
    pub num_buckets: usize,
    pub max_distance: usize,
}

/// Hidden activation of the FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact erf GELU (Hugging Face `gelu`).
    Gelu,
    /// tanh approximation (Hugging Face `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// Shape of one encoder layer after pruning. Either count may be zero: the sublayer then
/// contributes only its output bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    pub heads: usize,
    pub ffn: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSpec {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Per-head width; fixed by the pretrained model and unchanged by head pruning.
    pub head_dim: usize,
    pub layers: Vec<LayerShape>,
    /// Rows of the position table (OPT: its config's value + 2, the offset its positions carry).
    pub max_position_embeddings: usize,
    /// Rows of the token-type table; 0 for families without one (MPNet, OPT).
    pub type_vocab_size: usize,
    pub pad_token_id: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    /// MPNet's relative position bias; absent (and left out of the JSON, so older specs and
    /// their keys are unchanged) for BERT and RoBERTa.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_attention: Option<RelativeAttention>,
    /// LayerNorm before each sublayer (its input; the residual adds the sublayer's raw output)
    /// and once more after the last layer: OPT's `do_layer_norm_before`. Left out of the JSON
    /// when false, so the other families' specs and keys are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_norm: bool,
}

/// A matrix of an encoder layer that can carry a LoRA module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    Query,
    Key,
    Value,
    /// Attention output projection (`attention.output.dense`, "o").
    AttnOut,
    /// FFN input projection (`intermediate.dense`, "fc1").
    FfnIn,
    /// FFN output projection (`output.dense`, "fc2").
    FfnOut,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 6] = [
        LoraTarget::Query,
        LoraTarget::Key,
        LoraTarget::Value,
        LoraTarget::AttnOut,
        LoraTarget::FfnIn,
        LoraTarget::FfnOut,
    ];

    /// Short name used in module ids and reports ("q", "k", "v", "o", "fc1", "fc2").
    pub fn short(self) -> &'static str {
        match self {
            LoraTarget::Query => "q",
            LoraTarget::Key => "k",
            LoraTarget::Value => "v",
            LoraTarget::AttnOut => "o",
            LoraTarget::FfnIn => "fc1",
            LoraTarget::FfnOut => "fc2",
        }
    }
}

/// Where a serial bottleneck adapter sits: after a sublayer's output projection, before its
/// residual + LayerNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterSite {
    Attention,
    Ffn,
}

impl AdapterSite {
    pub fn short(self) -> &'static str {
        match self {
            AdapterSite::Attention => "adapter_attn",
            AdapterSite::Ffn => "adapter_ffn",
        }
    }
}

/// Identity of one PEFT module: `(layer, target)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeftSite {
    Lora(LoraTarget),
    Adapter(AdapterSite),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeftModuleId {
    pub layer: usize,
    pub site: PeftSite,
}

impl std::fmt::Display for PeftModuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let site = match self.site {
            PeftSite::Lora(t) => t.short(),
            PeftSite::Adapter(s) => s.short(),
        };
        write!(f, "layer{}.{}", self.layer, site)
    }
}

/// One PEFT module. For LoRA, `rank` is the current rank and `scale` stays `alpha / r_original`
/// after rank pruning (as in the reference). For an adapter, `rank` is the bottleneck size and
/// `scale` the output scaling (1.0 in the reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftModuleSpec {
    pub id: PeftModuleId,
    pub rank: usize,
    pub original_rank: usize,
    pub scale: f64,
    pub dropout: f64,
}

/// Classification head layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadStyle {
    /// BERT: pooler dense+tanh on [CLS] (pretrained, frozen), dropout, classifier (trainable).
    BertPooler,
    /// RoBERTa: dropout, dense, tanh, dropout, out_proj on `<s>` (all trainable).
    RobertaDenseTanh,
    /// OPT: `score` (no bias, trainable) on the hidden state of each row's last real token
    /// (the last position whose attention mask is 1).
    LastToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TaskHeadSpec {
    /// Sequence classification, cross-entropy over `num_labels`.
    Classification { num_labels: usize, style: HeadStyle },
    /// One output, mean squared error.
    Regression { style: HeadStyle },
    /// One score per choice; inputs are `[batch * choices, T]`, logits `[batch, choices]`.
    MultipleChoice { choices: usize, style: HeadStyle },
    /// Start/end logits per token (SQuAD).
    SpanExtraction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub encoder: EncoderSpec,
    pub head: TaskHeadSpec,
    /// PEFT modules, at most one per id. Empty for a plain encoder.
    pub peft: Vec<PeftModuleSpec>,
    /// Whether the trainable head and FFN masks of the estimation stage are present.
    pub masks: bool,
}
