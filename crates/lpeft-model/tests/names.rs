//! The tensor-name grammar against real models: every tensor a built model has is named in
//! it, parses back to the same typed name and formats to the same string; the builder asks
//! its source for the tensors in the model's visit order; unknown names are rejected.

mod common;

use std::collections::BTreeMap;

use common::device;
use lpeft_model::checkpoint::named_tensors;
use lpeft_model::model::Model;
use lpeft_model::names::{
    DenseParam, DenseSite, EmbeddingTensor, HeadDense, LayerTensor, NormParam, PEFT_SITES,
    PeftFactor, Sublayer, TensorKind, TensorName,
};
use lpeft_model::source::{Init, RandomSource, Role, WeightSource};
use lpeft_model::testing::{adapters_everywhere, lora_everywhere, tiny_spec};
use lpeft_schema::model::{Family, HeadStyle, ModelSpec, TaskHeadSpec};
use proptest::prelude::*;

const HEADS: [TaskHeadSpec; 6] = [
    TaskHeadSpec::Classification {
        num_labels: 3,
        style: HeadStyle::BertPooler,
    },
    TaskHeadSpec::Classification {
        num_labels: 2,
        style: HeadStyle::RobertaDenseTanh,
    },
    TaskHeadSpec::Regression {
        style: HeadStyle::BertPooler,
    },
    TaskHeadSpec::Regression {
        style: HeadStyle::RobertaDenseTanh,
    },
    TaskHeadSpec::MultipleChoice {
        choices: 2,
        style: HeadStyle::BertPooler,
    },
    TaskHeadSpec::SpanExtraction,
];

/// Specs with masks, LoRA on all six sites and adapters on both, zero-head and zero-width
/// layers, under every head kind and every family.
fn specs() -> Vec<ModelSpec> {
    let layers = [(4, 8), (0, 5), (2, 0), (3, 7)];
    let n = layers.len();
    let mut out = Vec::new();
    for family in [Family::Bert, Family::Roberta, Family::Mpnet] {
        for head in HEADS {
            for masks in [false, true] {
                let mut peft = lora_everywhere(n, 2, 0.0);
                peft.extend(adapters_everywhere(n, 3, 0.0));
                out.push(tiny_spec(family, &layers, head, peft, masks));
            }
        }
    }
    // OPT's sequence heads are its own (`score` on the last real token).
    for head in [
        TaskHeadSpec::Classification {
            num_labels: 3,
            style: HeadStyle::LastToken,
        },
        TaskHeadSpec::Regression {
            style: HeadStyle::LastToken,
        },
        TaskHeadSpec::SpanExtraction,
    ] {
        for masks in [false, true] {
            let mut peft = lora_everywhere(n, 2, 0.0);
            peft.extend(adapters_everywhere(n, 3, 0.0));
            out.push(tiny_spec(Family::Opt, &layers, head, peft, masks));
        }
    }
    out
}

#[test]
fn every_tensor_of_a_built_model_round_trips() {
    for spec in specs() {
        let model = Model::build(&spec, &mut RandomSource { seed: 1 }, &device()).unwrap();
        let mut elements_by_kind = BTreeMap::<TensorKind, usize>::new();
        for (text, (shape, _)) in named_tensors(&model) {
            let name: TensorName = text
                .parse()
                .unwrap_or_else(|e| panic!("{e} (spec {spec:?})"));
            assert_eq!(name.to_string(), text);
            assert_eq!(TensorName::parse(&name.to_string()), Some(name));
            *elements_by_kind.entry(name.kind()).or_default() += shape.iter().product::<usize>();
        }
        let peft: usize = model
            .peft_modules()
            .iter()
            .map(|(_, f)| f.a.shape().num_elements() + f.b.shape().num_elements())
            .sum();
        assert_eq!(elements_by_kind.get(&TensorKind::Peft).copied(), Some(peft));
        let masks: usize = spec.encoder.layers.iter().map(|l| l.heads + l.ffn).sum();
        let expected_masks = spec.masks.then_some(masks);
        assert_eq!(
            elements_by_kind.get(&TensorKind::Mask).copied(),
            expected_masks
        );
        assert!(elements_by_kind[&TensorKind::Head] > 0);
        assert!(elements_by_kind[&TensorKind::Backbone] > 0);
    }
}

/// Records the names a source is asked for.
struct Asked(Vec<String>);
impl WeightSource for Asked {
    fn fetch(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        role: Role,
    ) -> Result<Vec<f32>, lpeft_model::ModelError> {
        self.0.push(name.to_string());
        RandomSource { seed: 0 }.fetch(name, shape, init, role)
    }
}

/// Sources that draw in call order rely on it, so the builder keeps the visit order.
#[test]
fn the_builder_asks_for_each_tensor_once_in_visit_order() {
    for spec in specs() {
        let mut asked = Asked(Vec::new());
        let model = Model::build(&spec, &mut asked, &device()).unwrap();
        let visited = visit_order(&model);
        assert_eq!(asked.0, visited);
    }
}

fn visit_order(model: &Model) -> Vec<String> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Order {
        path: Vec<String>,
        names: Vec<String>,
    }
    impl ModuleVisitor for Order {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            self.names.push(self.path.join("."));
        }
    }
    let mut order = Order {
        path: Vec::new(),
        names: Vec::new(),
    };
    model.visit(&mut order);
    order.names
}

/// Every part of a layer the grammar knows.
fn layer_parts() -> Vec<LayerTensor> {
    let mut parts = vec![
        LayerTensor::HeadMask,
        LayerTensor::NeuronMask,
        LayerTensor::RelativeBias,
    ];
    for site in DenseSite::ALL {
        for param in DenseParam::ALL {
            parts.push(LayerTensor::Dense { site, param });
        }
    }
    for sublayer in Sublayer::ALL {
        for param in NormParam::ALL {
            parts.push(LayerTensor::Norm { sublayer, param });
        }
    }
    for site in PEFT_SITES {
        for factor in PeftFactor::ALL {
            parts.push(LayerTensor::Peft { site, factor });
        }
    }
    parts
}

fn any_name() -> impl Strategy<Value = TensorName> {
    let embedding = prop_oneof![
        Just(EmbeddingTensor::Word),
        Just(EmbeddingTensor::Position),
        Just(EmbeddingTensor::TokenType),
        Just(EmbeddingTensor::Norm(NormParam::Gamma)),
        Just(EmbeddingTensor::Norm(NormParam::Beta)),
    ]
    .prop_map(TensorName::Embedding);
    let layer = (any::<usize>(), prop::sample::select(layer_parts()))
        .prop_map(|(layer, part)| TensorName::Layer { layer, part });
    let head = (
        prop::sample::select(HeadDense::ALL.to_vec()),
        prop::sample::select(DenseParam::ALL.to_vec()),
    )
        .prop_map(|(dense, param)| TensorName::Head { dense, param });
    let final_norm = prop::sample::select(NormParam::ALL.to_vec()).prop_map(TensorName::FinalNorm);
    prop_oneof![embedding, layer, final_norm, head]
}

proptest! {
    #[test]
    fn typed_names_round_trip(name in any_name()) {
        let text = name.to_string();
        prop_assert_eq!(TensorName::parse(&text), Some(name));
    }

    /// Parsing inverts formatting exactly: whatever parses formats back to the same bytes,
    /// so one name never has two spellings (artifacts are content-hashed).
    #[test]
    fn what_parses_is_canonical(
        name in any_name(),
        at in any::<prop::sample::Index>(),
        edit in prop_oneof![
            Just(None),
            any::<char>().prop_map(Some),
            "[.0-9a-z_]".prop_map(|s| s.chars().next()),
        ],
        delete in any::<bool>(),
    ) {
        let mut text = name.to_string();
        let i = at.index(text.len() + 1);
        if delete && i < text.len() {
            text.remove(i);
        }
        if let Some(c) = edit {
            text.insert(i, c);
        }
        if let Some(parsed) = TensorName::parse(&text) {
            prop_assert_eq!(parsed.to_string(), text);
        }
    }
}
