//! The names of a model's tensors, as one typed grammar: the builder formats them, checkpoints
//! store them, surgery and parameter counts parse them. A name is the tensor's burn module
//! path (`encoder.layers.3.attention.lora_query.a`), so what [`crate::checkpoint`] collects
//! from a model parses here too. Artifacts are content-hashed: the strings must never change.

use std::fmt;
use std::str::FromStr;

use lpeft_schema::model::{AdapterSite, LoraTarget, PeftModuleId, PeftSite};

const EMBEDDINGS: &str = "encoder.embeddings";
const LAYERS: &str = "encoder.layers";
const FINAL_NORM: &str = "encoder.final_norm";
const HEAD: &str = "head";

/// One tensor of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TensorName {
    Embedding(EmbeddingTensor),
    Layer {
        layer: usize,
        part: LayerTensor,
    },
    /// The LayerNorm after the last layer (pre-LayerNorm models: OPT's `final_layer_norm`).
    FinalNorm(NormParam),
    Head {
        dense: HeadDense,
        param: DenseParam,
    },
}

/// A tensor of the embeddings block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EmbeddingTensor {
    Word,
    Position,
    TokenType,
    Norm(NormParam),
}

/// A tensor of one encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerTensor {
    Dense {
        site: DenseSite,
        param: DenseParam,
    },
    Norm {
        sublayer: Sublayer,
        param: NormParam,
    },
    /// MPNet's relative position bias of the layer's heads, `[buckets, heads]`: the model's
    /// one shared table, cut to the heads this layer keeps (so pruned layers differ).
    RelativeBias,
    /// One scalar per attention head (estimation).
    HeadMask,
    /// One scalar per FFN neuron (estimation).
    NeuronMask,
    Peft {
        site: PeftSite,
        factor: PeftFactor,
    },
}

/// The projections of an encoder layer (the matrices LoRA can sit beside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenseSite {
    Query,
    Key,
    Value,
    AttnOut,
    FfnIn,
    FfnOut,
}

/// The two sublayers of an encoder layer, each ending in a residual LayerNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sublayer {
    Attention,
    Ffn,
}

/// The dense layers of the task head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeadDense {
    /// BERT pooler or RoBERTa's head `dense`.
    Pooler,
    /// Classifier / `out_proj` / `qa_outputs`.
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenseParam {
    Weight,
    Bias,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NormParam {
    Gamma,
    Beta,
}

/// The low-rank factors of a PEFT module, `A: [d_in, r]` and `B: [r, d_out]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeftFactor {
    A,
    B,
}

/// What a tensor is for, as parameter counts and surgery group them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TensorKind {
    /// Embeddings and encoder-layer projections and norms.
    Backbone,
    /// LoRA and adapter factors.
    Peft,
    /// Head and neuron masks.
    Mask,
    /// Task-head layers.
    Head,
}

/// A name that is not one of the model's tensors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a tensor name of the model")]
pub struct UnknownTensorName(pub String);

impl DenseSite {
    pub const ALL: [DenseSite; 6] = [
        DenseSite::Query,
        DenseSite::Key,
        DenseSite::Value,
        DenseSite::AttnOut,
        DenseSite::FfnIn,
        DenseSite::FfnOut,
    ];

    /// Module path inside a layer.
    pub fn path(self) -> &'static str {
        match self {
            DenseSite::Query => "attention.query",
            DenseSite::Key => "attention.key",
            DenseSite::Value => "attention.value",
            DenseSite::AttnOut => "attention.output",
            DenseSite::FfnIn => "ffn.input",
            DenseSite::FfnOut => "ffn.output",
        }
    }

    pub fn sublayer(self) -> Sublayer {
        match self {
            DenseSite::Query | DenseSite::Key | DenseSite::Value | DenseSite::AttnOut => {
                Sublayer::Attention
            }
            DenseSite::FfnIn | DenseSite::FfnOut => Sublayer::Ffn,
        }
    }

    pub fn lora_target(self) -> LoraTarget {
        match self {
            DenseSite::Query => LoraTarget::Query,
            DenseSite::Key => LoraTarget::Key,
            DenseSite::Value => LoraTarget::Value,
            DenseSite::AttnOut => LoraTarget::AttnOut,
            DenseSite::FfnIn => LoraTarget::FfnIn,
            DenseSite::FfnOut => LoraTarget::FfnOut,
        }
    }
}

impl From<LoraTarget> for DenseSite {
    fn from(target: LoraTarget) -> Self {
        match target {
            LoraTarget::Query => DenseSite::Query,
            LoraTarget::Key => DenseSite::Key,
            LoraTarget::Value => DenseSite::Value,
            LoraTarget::AttnOut => DenseSite::AttnOut,
            LoraTarget::FfnIn => DenseSite::FfnIn,
            LoraTarget::FfnOut => DenseSite::FfnOut,
        }
    }
}

impl Sublayer {
    pub const ALL: [Sublayer; 2] = [Sublayer::Attention, Sublayer::Ffn];

    fn norm_path(self) -> &'static str {
        match self {
            Sublayer::Attention => "attention.norm",
            Sublayer::Ffn => "ffn.norm",
        }
    }
}

impl HeadDense {
    pub const ALL: [HeadDense; 2] = [HeadDense::Pooler, HeadDense::Out];

    fn path(self) -> &'static str {
        match self {
            HeadDense::Pooler => "pooler",
            HeadDense::Out => "out",
        }
    }
}

impl DenseParam {
    pub const ALL: [DenseParam; 2] = [DenseParam::Weight, DenseParam::Bias];

    fn leaf(self) -> &'static str {
        match self {
            DenseParam::Weight => "weight",
            DenseParam::Bias => "bias",
        }
    }
}

impl NormParam {
    pub const ALL: [NormParam; 2] = [NormParam::Gamma, NormParam::Beta];

    fn leaf(self) -> &'static str {
        match self {
            NormParam::Gamma => "gamma",
            NormParam::Beta => "beta",
        }
    }
}

impl PeftFactor {
    pub const ALL: [PeftFactor; 2] = [PeftFactor::A, PeftFactor::B];

    fn leaf(self) -> &'static str {
        match self {
            PeftFactor::A => "a",
            PeftFactor::B => "b",
        }
    }
}

/// Every PEFT site, in [`PeftSite`]'s order.
pub const PEFT_SITES: [PeftSite; 8] = [
    PeftSite::Lora(LoraTarget::Query),
    PeftSite::Lora(LoraTarget::Key),
    PeftSite::Lora(LoraTarget::Value),
    PeftSite::Lora(LoraTarget::AttnOut),
    PeftSite::Lora(LoraTarget::FfnIn),
    PeftSite::Lora(LoraTarget::FfnOut),
    PeftSite::Adapter(AdapterSite::Attention),
    PeftSite::Adapter(AdapterSite::Ffn),
];

/// Module path of a PEFT module inside a layer.
fn peft_path(site: PeftSite) -> &'static str {
    match site {
        PeftSite::Lora(LoraTarget::Query) => "attention.lora_query",
        PeftSite::Lora(LoraTarget::Key) => "attention.lora_key",
        PeftSite::Lora(LoraTarget::Value) => "attention.lora_value",
        PeftSite::Lora(LoraTarget::AttnOut) => "attention.lora_output",
        PeftSite::Lora(LoraTarget::FfnIn) => "ffn.lora_input",
        PeftSite::Lora(LoraTarget::FfnOut) => "ffn.lora_output",
        PeftSite::Adapter(AdapterSite::Attention) => "attention.adapter",
        PeftSite::Adapter(AdapterSite::Ffn) => "ffn.adapter",
    }
}

const HEAD_MASK: &str = "attention.head_mask";
const RELATIVE_BIAS: &str = "attention.relative_bias";
const NEURON_MASK: &str = "ffn.neuron_mask";

impl TensorName {
    /// `None` for anything that is not a tensor name of the model.
    pub fn parse(name: &str) -> Option<TensorName> {
        if let Some(rest) = strip_module(name, EMBEDDINGS) {
            return parse_embedding(rest).map(TensorName::Embedding);
        }
        if let Some(rest) = strip_module(name, LAYERS) {
            let (layer, rest) = rest.split_once('.')?;
            let layer = parse_index(layer)?;
            return parse_layer(rest).map(|part| TensorName::Layer { layer, part });
        }
        if let Some(param) = strip_module(name, FINAL_NORM) {
            return NormParam::ALL
                .into_iter()
                .find(|p| p.leaf() == param)
                .map(TensorName::FinalNorm);
        }
        let (dense, param) = strip_module(name, HEAD)?.split_once('.')?;
        Some(TensorName::Head {
            dense: *HeadDense::ALL.iter().find(|d| d.path() == dense)?,
            param: *DenseParam::ALL.iter().find(|p| p.leaf() == param)?,
        })
    }

    pub fn layer(layer: usize, part: LayerTensor) -> TensorName {
        TensorName::Layer { layer, part }
    }

    /// Factor `A` or `B` of a PEFT module.
    pub fn peft(id: PeftModuleId, factor: PeftFactor) -> TensorName {
        TensorName::layer(
            id.layer,
            LayerTensor::Peft {
                site: id.site,
                factor,
            },
        )
    }

    /// The layer a tensor lies in, if any.
    pub fn layer_index(self) -> Option<usize> {
        match self {
            TensorName::Layer { layer, .. } => Some(layer),
            _ => None,
        }
    }

    pub fn kind(self) -> TensorKind {
        match self {
            TensorName::Embedding(_) | TensorName::FinalNorm(_) => TensorKind::Backbone,
            TensorName::Layer { part, .. } => match part {
                LayerTensor::Dense { .. }
                | LayerTensor::Norm { .. }
                | LayerTensor::RelativeBias => TensorKind::Backbone,
                LayerTensor::HeadMask | LayerTensor::NeuronMask => TensorKind::Mask,
                LayerTensor::Peft { .. } => TensorKind::Peft,
            },
            TensorName::Head { .. } => TensorKind::Head,
        }
    }
}

impl FromStr for TensorName {
    type Err = UnknownTensorName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TensorName::parse(s).ok_or_else(|| UnknownTensorName(s.to_string()))
    }
}

/// `rest` of `"{module}.{rest}"`.
fn strip_module<'a>(name: &'a str, module: &str) -> Option<&'a str> {
    name.strip_prefix(module)?.strip_prefix('.')
}

/// A layer index as `Display` writes it (no sign, no leading zeros), so parsing inverts it.
fn parse_index(digits: &str) -> Option<usize> {
    let canonical =
        digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

fn parse_embedding(rest: &str) -> Option<EmbeddingTensor> {
    Some(match rest {
        "word" => EmbeddingTensor::Word,
        "position" => EmbeddingTensor::Position,
        "token_type" => EmbeddingTensor::TokenType,
        _ => {
            let param = strip_module(rest, "norm")?;
            EmbeddingTensor::Norm(*NormParam::ALL.iter().find(|p| p.leaf() == param)?)
        }
    })
}

fn parse_layer(rest: &str) -> Option<LayerTensor> {
    match rest {
        HEAD_MASK => return Some(LayerTensor::HeadMask),
        RELATIVE_BIAS => return Some(LayerTensor::RelativeBias),
        NEURON_MASK => return Some(LayerTensor::NeuronMask),
        _ => {}
    }
    let (module, leaf) = rest.rsplit_once('.')?;
    if let Some(&site) = DenseSite::ALL.iter().find(|s| s.path() == module) {
        let param = *DenseParam::ALL.iter().find(|p| p.leaf() == leaf)?;
        return Some(LayerTensor::Dense { site, param });
    }
    if let Some(&sublayer) = Sublayer::ALL.iter().find(|s| s.norm_path() == module) {
        let param = *NormParam::ALL.iter().find(|p| p.leaf() == leaf)?;
        return Some(LayerTensor::Norm { sublayer, param });
    }
    let site = *PEFT_SITES.iter().find(|&&s| peft_path(s) == module)?;
    let factor = *PeftFactor::ALL.iter().find(|f| f.leaf() == leaf)?;
    Some(LayerTensor::Peft { site, factor })
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TensorName::Embedding(t) => {
                write!(f, "{EMBEDDINGS}.")?;
                match t {
                    EmbeddingTensor::Word => f.write_str("word"),
                    EmbeddingTensor::Position => f.write_str("position"),
                    EmbeddingTensor::TokenType => f.write_str("token_type"),
                    EmbeddingTensor::Norm(p) => write!(f, "norm.{}", p.leaf()),
                }
            }
            TensorName::Layer { layer, part } => {
                write!(f, "{LAYERS}.{layer}.")?;
                match part {
                    LayerTensor::Dense { site, param } => {
                        write!(f, "{}.{}", site.path(), param.leaf())
                    }
                    LayerTensor::Norm { sublayer, param } => {
                        write!(f, "{}.{}", sublayer.norm_path(), param.leaf())
                    }
                    LayerTensor::RelativeBias => f.write_str(RELATIVE_BIAS),
                    LayerTensor::HeadMask => f.write_str(HEAD_MASK),
                    LayerTensor::NeuronMask => f.write_str(NEURON_MASK),
                    LayerTensor::Peft { site, factor } => {
                        write!(f, "{}.{}", peft_path(site), factor.leaf())
                    }
                }
            }
            TensorName::FinalNorm(p) => write!(f, "{FINAL_NORM}.{}", p.leaf()),
            TensorName::Head { dense, param } => {
                write!(f, "{HEAD}.{}.{}", dense.path(), param.leaf())
            }
        }
    }
}

/// A dense layer, whose tensors are its `weight` and `bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseModule {
    Layer { layer: usize, site: DenseSite },
    Head(HeadDense),
}

impl DenseModule {
    pub fn tensor(self, param: DenseParam) -> TensorName {
        match self {
            DenseModule::Layer { layer, site } => {
                TensorName::layer(layer, LayerTensor::Dense { site, param })
            }
            DenseModule::Head(dense) => TensorName::Head { dense, param },
        }
    }
}

/// A LayerNorm, whose tensors are its `gamma` and `beta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormModule {
    Embeddings,
    Layer {
        layer: usize,
        sublayer: Sublayer,
    },
    /// After the last layer (pre-LayerNorm models).
    Final,
}

impl NormModule {
    pub fn tensor(self, param: NormParam) -> TensorName {
        match self {
            NormModule::Embeddings => TensorName::Embedding(EmbeddingTensor::Norm(param)),
            NormModule::Final => TensorName::FinalNorm(param),
            NormModule::Layer { layer, sublayer } => {
                TensorName::layer(layer, LayerTensor::Norm { sublayer, param })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_module_paths() {
        let cases = [
            (
                TensorName::Embedding(EmbeddingTensor::TokenType),
                "encoder.embeddings.token_type",
            ),
            (
                NormModule::Embeddings.tensor(NormParam::Beta),
                "encoder.embeddings.norm.beta",
            ),
            (
                DenseModule::Layer {
                    layer: 11,
                    site: DenseSite::AttnOut,
                }
                .tensor(DenseParam::Weight),
                "encoder.layers.11.attention.output.weight",
            ),
            (
                TensorName::layer(3, LayerTensor::RelativeBias),
                "encoder.layers.3.attention.relative_bias",
            ),
            (
                TensorName::layer(0, LayerTensor::NeuronMask),
                "encoder.layers.0.ffn.neuron_mask",
            ),
            (
                TensorName::peft(
                    PeftModuleId {
                        layer: 2,
                        site: PeftSite::Lora(LoraTarget::FfnIn),
                    },
                    PeftFactor::B,
                ),
                "encoder.layers.2.ffn.lora_input.b",
            ),
            (
                DenseModule::Head(HeadDense::Pooler).tensor(DenseParam::Bias),
                "head.pooler.bias",
            ),
            (
                NormModule::Final.tensor(NormParam::Gamma),
                "encoder.final_norm.gamma",
            ),
        ];
        for (name, text) in cases {
            assert_eq!(name.to_string(), text);
            assert_eq!(text.parse::<TensorName>(), Ok(name));
        }
    }

    #[test]
    fn unknown_names_do_not_parse() {
        for text in [
            "",
            "encoder",
            "encoder.embeddings",
            "encoder.embeddings.norm",
            "encoder.embeddings.norm.weight",
            "encoder.embeddings.word.weight",
            "encoder.layers.0",
            "encoder.layers.x.ffn.norm.gamma",
            "encoder.layers.+1.ffn.norm.gamma",
            "encoder.layers.01.ffn.norm.gamma",
            "encoder.layers.-1.ffn.norm.gamma",
            "encoder.layers.0.attention.query",
            "encoder.layers.0.attention.query.gamma",
            "encoder.layers.0.attention.norm.weight",
            "encoder.layers.0.attention.lora_query.c",
            "encoder.layers.0.attention.neuron_mask",
            "encoder.layers.0.ffn.lora_query.a",
            "encoder.layers.0.attention.head_mask.a",
            "encoder.layers.0.attention.relative_bias.weight",
            "encoder.relative_attention_bias",
            "encoder.final_norm",
            "encoder.final_norm.weight",
            "encoder.final_norm.gamma.a",
            "head.out",
            "head.out.gamma",
            "head.classifier.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "encoder.layers.99999999999999999999999.ffn.norm.gamma",
        ] {
            assert_eq!(TensorName::parse(text), None, "{text}");
            assert_eq!(
                text.parse::<TensorName>(),
                Err(UnknownTensorName(text.to_string()))
            );
        }
    }

    #[test]
    fn kinds() {
        let kind = |s: &str| TensorName::parse(s).unwrap().kind();
        assert_eq!(kind("encoder.embeddings.word"), TensorKind::Backbone);
        assert_eq!(
            kind("encoder.layers.1.ffn.norm.gamma"),
            TensorKind::Backbone
        );
        assert_eq!(
            kind("encoder.layers.1.attention.head_mask"),
            TensorKind::Mask
        );
        assert_eq!(kind("encoder.layers.1.ffn.adapter.a"), TensorKind::Peft);
        assert_eq!(kind("head.out.bias"), TensorKind::Head);
    }

    #[test]
    fn dense_sites_and_lora_targets_correspond() {
        for target in LoraTarget::ALL {
            assert_eq!(DenseSite::from(target).lora_target(), target);
        }
        for site in DenseSite::ALL {
            assert!(site.path().starts_with(match site.sublayer() {
                Sublayer::Attention => "attention.",
                Sublayer::Ffn => "ffn.",
            }));
        }
    }
}
