//! Our encoder against Hugging Face transformers' reference outputs (made by
//! tools/reference/make_model_fixtures.py): tiny random BERT and RoBERTa with uneven per-layer
//! heads and widths (including a zero-head and a zero-width layer), and the real MiniLM.

mod common;

use std::path::Path;

use common::*;
use lpeft_model::head::HeadOutput;
use lpeft_model::hf::{HfCheckpoint, load_spec};
use lpeft_model::model::Model;
use lpeft_schema::model::{Family, HeadStyle, LayerShape, ModelSpec, TaskHeadSpec};

const TOL: f64 = 1e-4;

/// The measured error, shown with `cargo test -- --nocapture`.
#[allow(clippy::print_stderr)]
fn report(what: &str, max_abs_diff: f64) {
    eprintln!("parity {what}: max|diff| {max_abs_diff:.2e}");
}

fn load(dir: &Path, head: TaskHeadSpec) -> Model {
    let ckpt = HfCheckpoint::open(dir).unwrap();
    let encoder = load_spec(dir, &ckpt).unwrap();
    let spec = ModelSpec {
        encoder,
        head,
        peft: vec![],
        masks: false,
    };
    let mut src = ckpt.source(spec.encoder.family, head, 0);
    Model::build(&spec, &mut src, &device()).unwrap()
}

fn check_tiny(name: &str, style: HeadStyle, model_dir: &Path) {
    let r = read_reference(&fixtures().join(name).join("reference.safetensors"));
    let head = TaskHeadSpec::Classification {
        num_labels: 3,
        style,
    };
    let model = load(model_dir, head);
    assert_eq!(
        model.spec.encoder.layers,
        vec![
            LayerShape { heads: 4, ffn: 48 },
            LayerShape { heads: 0, ffn: 17 },
            LayerShape { heads: 2, ffn: 0 }
        ],
        "per-layer shapes are read off the checkpoint"
    );
    let out = model.forward(&reference_input(&r, &device()));
    let d = max_abs_diff(&values(out.hidden), &r["last_hidden_state"].1);
    report(&format!("{name} hidden"), d);
    assert!(d < TOL, "{name}: hidden max|diff| {d:e}");
    let HeadOutput::Logits(logits) = out.head else {
        panic!()
    };
    let d = max_abs_diff(&values(logits), &r["logits"].1);
    report(&format!("{name} logits"), d);
    assert!(d < TOL, "{name}: logits max|diff| {d:e}");
}

#[test]
fn tiny_bert_matches_transformers() {
    check_tiny(
        "tiny-bert",
        HeadStyle::BertPooler,
        &fixtures().join("tiny-bert"),
    );
}

#[test]
fn tiny_bert_from_pytorch_bin_matches_transformers() {
    check_tiny(
        "tiny-bert",
        HeadStyle::BertPooler,
        &fixtures().join("tiny-bert").join("bin"),
    );
}

#[test]
fn tiny_roberta_matches_transformers() {
    let m = load(
        &fixtures().join("tiny-roberta"),
        TaskHeadSpec::Classification {
            num_labels: 3,
            style: HeadStyle::RobertaDenseTanh,
        },
    );
    assert_eq!(m.spec.encoder.family, Family::Roberta);
    assert_eq!(m.spec.encoder.pad_token_id, 1);
    check_tiny(
        "tiny-roberta",
        HeadStyle::RobertaDenseTanh,
        &fixtures().join("tiny-roberta"),
    );
}

#[test]
fn minilm_matches_transformers() {
    let dir = shared().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: the real-model parity test needs ../shared",
        dir.display()
    );
    let r = read_reference(&fixtures().join("minilm-reference.safetensors"));
    let model = load(
        &dir,
        TaskHeadSpec::Classification {
            num_labels: 2,
            style: HeadStyle::BertPooler,
        },
    );
    let out = model.forward(&reference_input(&r, &device()));
    let got = values(out.hidden);
    // Compare real tokens only (padding positions are not part of anyone's output contract).
    let (shape, mask) = &r["attention_mask"];
    let h = model.spec.encoder.hidden_size;
    let mut worst: f64 = 0.0;
    for row in 0..shape[0] {
        for t in 0..shape[1] {
            if mask[row * shape[1] + t] == 0.0 {
                continue;
            }
            let off = (row * shape[1] + t) * h;
            worst = worst.max(max_abs_diff(
                &got[off..off + h],
                &r["last_hidden_state"].1[off..off + h],
            ));
        }
    }
    report("MiniLM hidden", worst);
    assert!(worst < TOL, "MiniLM hidden max|diff| {worst:e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-bert");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut map = lpeft_model::hf::read_safetensors(&src.join("model.safetensors")).unwrap();
    map.tensors
        .remove("bert.encoder.layer.2.output.LayerNorm.weight");
    lpeft_model::checkpoint::write_safetensors(
        &dir.path().join("model.safetensors"),
        &map.tensors.into_iter().collect(),
    )
    .unwrap();
    let ckpt = HfCheckpoint::open(dir.path()).unwrap();
    let encoder = load_spec(dir.path(), &ckpt).unwrap();
    let head = TaskHeadSpec::Classification {
        num_labels: 3,
        style: HeadStyle::BertPooler,
    };
    let spec = ModelSpec {
        encoder,
        head,
        peft: vec![],
        masks: false,
    };
    let err = Model::build(&spec, &mut ckpt.source(Family::Bert, head, 0), &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bert.encoder.layer.2.output.LayerNorm.weight")
            && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn misshaped_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-bert");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut map = lpeft_model::hf::read_safetensors(&src.join("model.safetensors")).unwrap();
    map.tensors.insert(
        "bert.encoder.layer.0.attention.self.key.weight".into(),
        (vec![32, 31], vec![0.0; 32 * 31]),
    );
    lpeft_model::checkpoint::write_safetensors(
        &dir.path().join("model.safetensors"),
        &map.tensors.into_iter().collect(),
    )
    .unwrap();
    let ckpt = HfCheckpoint::open(dir.path()).unwrap();
    let encoder = load_spec(dir.path(), &ckpt).unwrap();
    let head = TaskHeadSpec::Classification {
        num_labels: 3,
        style: HeadStyle::BertPooler,
    };
    let spec = ModelSpec {
        encoder,
        head,
        peft: vec![],
        masks: false,
    };
    let err = Model::build(&spec, &mut ckpt.source(Family::Bert, head, 0), &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention.self.key.weight")
            && err.contains("[32, 31]")
            && err.contains("expected [32, 32]"),
        "{err}"
    );
}

#[test]
fn bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 32, "num_attention_heads": 5}"#,
    )
    .unwrap();
    let err = lpeft_model::hf::read_config(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json")
            && err.contains("num_attention_heads")
            && err.contains("does not divide"),
        "{err}"
    );
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = lpeft_model::hf::read_config(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_type") && err.contains("gpt2"), "{err}");
}

#[test]
fn encode_tokenizes_like_the_tokenizers_library_and_matches_transformers() {
    // Texts and the ids Python's `tokenizers` gave them, with HF's hidden states.
    let dir = shared().join("models/all-MiniLM-L6-v2");
    let texts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm-texts.json")).unwrap(),
    )
    .unwrap();
    let r = read_reference(&fixtures().join("minilm-reference.safetensors"));
    let tok = lpeft_tokenizer::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let model = lpeft_model::encode::load_pretrained_encoder(&dir, &device()).unwrap();
    let t_max = r["input_ids"].0[1];
    for (row, item) in texts.as_array().unwrap().iter().enumerate() {
        let e = tok
            .encode(item["text"].as_str().unwrap(), item["pair"].as_str(), None)
            .unwrap();
        let want: Vec<u32> = item["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want_types: Vec<u32> = item["type_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(e.ids, want, "ids of row {row}");
        assert_eq!(e.type_ids, want_types, "type ids of row {row}");
        let enc = lpeft_model::encode::encode_ids(&model, &e.ids, &e.type_ids, &device());
        let h = enc.hidden_size;
        let off = row * t_max * h;
        let d = max_abs_diff(
            &enc.last_hidden_state,
            &r["last_hidden_state"].1[off..off + e.ids.len() * h],
        );
        assert!(d < TOL, "row {row}: max|diff| {d:e}");
    }
}
