//! OPT against transformers (fixtures made by tools/reference/opt_fixtures.py): a tiny random
//! pre-LayerNorm `OPTForSequenceClassification`, a post-LayerNorm `OPTModel` (as opt-350m), and
//! a pre-LayerNorm model cut to uneven layers (a zero-head layer, a zero-width layer, a layer
//! that keeps the original heads 1 and 3). The inputs are right-padded with one left-padded
//! row, so positions and the last real token come from the attention mask.

mod common;

use std::path::Path;

use common::*;
use lpeft_model::head::HeadOutput;
use lpeft_model::hf::{HfCheckpoint, load_spec, unused_keys};
use lpeft_model::model::Model;
use lpeft_schema::model::{Family, HeadStyle, LayerShape, ModelSpec, TaskHeadSpec};

const TOL: f64 = 1e-4;

const HEAD: TaskHeadSpec = TaskHeadSpec::Classification {
    num_labels: 3,
    style: HeadStyle::LastToken,
};

#[allow(clippy::print_stderr)]
fn report(what: &str, max_abs_diff: f64) {
    eprintln!("parity {what}: max|diff| {max_abs_diff:.2e}");
}

/// The model and the non-empty checkpoint tensors it did not use.
fn load(dir: &Path) -> (Model, Vec<String>) {
    let ckpt = HfCheckpoint::open(dir).unwrap();
    let encoder = load_spec(dir, &ckpt).unwrap();
    let spec = ModelSpec {
        encoder,
        head: HEAD,
        peft: vec![],
        masks: false,
    };
    let mut src = ckpt.source(spec.encoder.family, HEAD, 0);
    let model = Model::build(&spec, &mut src, &device()).unwrap();
    let unused = unused_keys(&ckpt, &src.used)
        .into_iter()
        .filter(|k| ckpt.tensors.tensors[k].0.iter().product::<usize>() > 0)
        .collect();
    (model, unused)
}

fn check(name: &str, shapes: &[(usize, usize)], pre_norm: bool, logits: bool) -> Model {
    let dir = fixtures().join(name);
    let r = read_reference(&dir.join("reference.safetensors"));
    let (model, unused) = load(&dir);
    let e = &model.spec.encoder;
    assert_eq!(e.family, Family::Opt);
    assert_eq!((e.type_vocab_size, e.pad_token_id), (0, 1));
    assert_eq!(e.max_position_embeddings, 32 + 2, "the table's rows");
    assert_eq!(e.pre_norm, pre_norm);
    assert!(model.encoder.embeddings.token_type.is_none());
    assert!(model.encoder.embeddings.norm.is_none());
    assert_eq!(model.encoder.final_norm.is_some(), pre_norm);
    let want: Vec<LayerShape> = shapes
        .iter()
        .map(|&(heads, ffn)| LayerShape { heads, ffn })
        .collect();
    assert_eq!(
        e.layers, want,
        "per-layer shapes are read off the checkpoint"
    );
    assert_eq!(
        unused,
        Vec::<String>::new(),
        "every checkpoint tensor is used"
    );
    let out = model.forward(&reference_input(&r, &device()));
    let d = max_abs_diff(&values(out.hidden), &r["last_hidden_state"].1);
    report(&format!("{name} hidden"), d);
    assert!(d < TOL, "{name}: hidden max|diff| {d:e}");
    if logits {
        let HeadOutput::Logits(logits) = out.head else {
            panic!("a classification head gives logits")
        };
        let d = max_abs_diff(&values(logits), &r["logits"].1);
        report(&format!("{name} logits"), d);
        assert!(d < TOL, "{name}: logits max|diff| {d:e}");
    }
    model
}

#[test]
fn tiny_opt_matches_transformers() {
    check("tiny-opt-full", &[(4, 24), (4, 24), (4, 24)], true, true);
}

#[test]
fn post_layer_norm_opt_matches_transformers() {
    check("tiny-opt-post", &[(4, 24), (4, 24), (4, 24)], false, false);
}

#[test]
fn uneven_opt_matches_transformers() {
    let model = check("tiny-opt", &[(4, 24), (0, 7), (2, 0)], true, true);
    let layers = &model.encoder.layers;
    assert!(layers[1].attention.query.is_none());
    assert!(layers[2].ffn.input.is_none());
}

fn config_error(json: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    lpeft_model::hf::read_config(dir.path())
        .unwrap_err()
        .to_string()
}

const BASE: &str = r#""model_type": "opt", "vocab_size": 50, "hidden_size": 16,
    "num_attention_heads": 4, "num_hidden_layers": 2, "ffn_dim": 24,
    "max_position_embeddings": 32"#;

#[test]
fn opt_configs_it_cannot_represent_are_refused_naming_the_field() {
    let cases = [
        (r#""word_embed_proj_dim": 8"#, "word_embed_proj_dim"),
        (r#""enable_bias": false"#, "enable_bias"),
        (
            r#""layer_norm_elementwise_affine": false"#,
            "layer_norm_elementwise_affine",
        ),
        (
            r#""_remove_final_layer_norm": true"#,
            "_remove_final_layer_norm",
        ),
        (r#""activation_function": "silu""#, "activation_function"),
    ];
    for (extra, field) in cases {
        let err = config_error(&format!("{{{BASE}, {extra}}}"));
        assert!(err.contains(field), "{field} missing from: {err}");
        assert!(err.contains("config.json"), "{err}");
    }
    // What it can: defaults as OPTConfig's (pre-LN, ReLU, pad 1, dropout 0.1).
    let dir = tempfile::tempdir().unwrap();
    let json = format!("{{{BASE}, \"word_embed_proj_dim\": 16}}");
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    let e = lpeft_model::hf::read_config(dir.path()).unwrap();
    assert_eq!(e.family, Family::Opt);
    assert!(e.pre_norm);
    assert_eq!(e.hidden_act, lpeft_schema::model::Activation::Relu);
    assert_eq!((e.pad_token_id, e.head_dim, e.layers.len()), (1, 4, 2));
    assert_eq!((e.hidden_dropout, e.attention_dropout), (0.1, 0.0));
}

#[test]
fn an_unsupported_model_type_names_opt_among_the_supported_ones() {
    let err = config_error(r#"{"model_type": "gpt2", "hidden_size": 16}"#);
    for part in ["model_type", "\"gpt2\"", "\"opt\"", "\"mpnet\"", "\"bert\""] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
}

/// OPTForCausalLM on tiny-opt-full's decoder: logits through the tied embedding matrix and
/// the next-token loss that ignores padded targets.
#[test]
fn causal_lm_logits_and_loss_match_transformers() {
    let dir = fixtures().join("tiny-opt-full");
    let r = read_reference(&dir.join("reference.safetensors"));
    let (model, _) = load(&dir);
    let input = reference_input(&r, &device());
    let hidden = model.forward(&input).hidden;
    let logits = lpeft_model::opt::lm_logits(&model, hidden);
    assert_eq!(logits.dims(), [4, 12, 50]);
    let d = max_abs_diff(&values(logits.clone()), &r["lm_logits"].1);
    report("tiny-opt-full lm logits", d);
    assert!(d < TOL, "lm logits max|diff| {d:e}");
    let loss = lpeft_model::opt::causal_lm_loss(logits, &input);
    let d = max_abs_diff(&values(loss), &r["lm_loss"].1);
    report("tiny-opt-full lm loss", d);
    assert!(d < TOL, "lm loss max|diff| {d:e}");
}
