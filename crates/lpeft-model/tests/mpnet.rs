//! MPNet against transformers (fixtures made by tools/reference/mpnet_fixtures.py): a tiny
//! random `MPNetModel` / `MPNetForSequenceClassification` in HF's own layout, the same kind of
//! model cut to uneven layers (a zero-head layer, a zero-width layer, and a layer that keeps
//! the original heads 1 and 3, so its relative bias is not a prefix of the table), HF's
//! bucket function, and the real all-mpnet-base-v2 when it is on disk.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lpeft_model::head::HeadOutput;
use lpeft_model::hf::{HfCheckpoint, load_spec, unused_keys};
use lpeft_model::model::Model;
use lpeft_model::mpnet::relative_position_bucket;
use lpeft_schema::model::{Family, HeadStyle, LayerShape, ModelSpec, TaskHeadSpec};

const TOL: f64 = 1e-4;

const HEAD: TaskHeadSpec = TaskHeadSpec::Classification {
    num_labels: 3,
    style: HeadStyle::RobertaDenseTanh,
};

#[allow(clippy::print_stderr)]
fn report(what: &str, max_abs_diff: f64) {
    eprintln!("parity {what}: max|diff| {max_abs_diff:.2e}");
}

/// The model and the non-empty checkpoint tensors it did not use.
fn load(dir: &Path, head: TaskHeadSpec) -> (Model, Vec<String>) {
    let ckpt = HfCheckpoint::open(dir).unwrap();
    let encoder = load_spec(dir, &ckpt).unwrap();
    let spec = ModelSpec {
        encoder,
        head,
        peft: vec![],
        masks: false,
    };
    let mut src = ckpt.source(spec.encoder.family, head, 0);
    let model = Model::build(&spec, &mut src, &device()).unwrap();
    // Zero-size weights of pruned layers have no place in the model.
    let unused = unused_keys(&ckpt, &src.used)
        .into_iter()
        .filter(|k| ckpt.tensors.tensors[k].0.iter().product::<usize>() > 0)
        .collect();
    (model, unused)
}

fn check(name: &str, shapes: &[(usize, usize)]) -> Model {
    let dir = fixtures().join(name);
    let r = read_reference(&dir.join("reference.safetensors"));
    let (model, unused) = load(&dir, HEAD);
    let e = &model.spec.encoder;
    assert_eq!(e.family, Family::Mpnet);
    assert_eq!((e.type_vocab_size, e.pad_token_id), (0, 1));
    assert!(model.encoder.embeddings.token_type.is_none());
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
    let HeadOutput::Logits(logits) = out.head else {
        panic!("a classification head gives logits")
    };
    let d = max_abs_diff(&values(logits), &r["logits"].1);
    report(&format!("{name} logits"), d);
    assert!(d < TOL, "{name}: logits max|diff| {d:e}");
    model
}

#[test]
fn tiny_mpnet_matches_transformers() {
    check("tiny-mpnet-full", &[(4, 48), (4, 48), (4, 48)]);
}

#[test]
fn uneven_mpnet_matches_transformers_with_each_layer_on_its_kept_heads_bias() {
    let model = check("tiny-mpnet", &[(4, 48), (0, 17), (2, 0)]);
    let dir = fixtures().join("tiny-mpnet");
    let map = lpeft_model::hf::read_safetensors(&dir.join("model.safetensors")).unwrap();
    let (shape, table) = &map.tensors["mpnet.encoder.relative_attention_bias.weight"];
    assert_eq!(shape, &vec![32, 4]);
    let columns = |heads: &[usize]| -> Vec<f32> {
        (0..32)
            .flat_map(|b| heads.iter().map(move |&h| table[b * 4 + h]))
            .collect()
    };
    let layers = &model.encoder.layers;
    let bias = |l: usize| {
        layers[l]
            .attention
            .relative_bias
            .as_ref()
            .map(|p| values(p.val()))
    };
    assert_eq!(bias(0), Some(columns(&[0, 1, 2, 3])));
    assert_eq!(bias(1), None, "a layer without heads has no bias");
    // Layer 2 kept the original heads 1 and 3: its columns, not the first two.
    assert_eq!(bias(2), Some(columns(&[1, 3])));
}

#[test]
fn buckets_match_transformers() {
    let r = read_reference(&fixtures().join("tiny-mpnet").join("reference.safetensors"));
    let rel = lpeft_schema::model::RelativeAttention {
        num_buckets: 32,
        max_distance: 128,
    };
    let (positions, buckets) = (&r["relative_positions"].1, &r["buckets"].1);
    assert_eq!(positions.len(), 401);
    for (p, b) in positions.iter().zip(buckets) {
        assert_eq!(relative_position_bucket(*p as i64, rel), *b as usize, "{p}");
    }
}

fn config_error(json: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    lpeft_model::hf::read_config(dir.path())
        .unwrap_err()
        .to_string()
}

#[test]
fn an_unsupported_model_type_is_named_with_the_supported_ones() {
    let err = config_error(r#"{"model_type": "deberta-v2", "hidden_size": 32}"#);
    for part in [
        "config.json",
        "model_type",
        "\"deberta-v2\"",
        "\"bert\"",
        "\"roberta\"",
        "\"mpnet\"",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    let err = config_error(r#"{"hidden_size": 32}"#);
    assert!(
        err.contains("model_type") && err.contains("\"mpnet\""),
        "{err}"
    );
}

#[test]
fn mpnet_bucket_table_of_another_size_is_refused() {
    let base = std::fs::read_to_string(fixtures().join("tiny-mpnet-full/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["relative_attention_num_buckets"] = 16.into();
    let err = config_error(&v.to_string());
    assert!(
        err.contains("relative_attention_num_buckets") && err.contains("16") && err.contains("32"),
        "{err}"
    );
    v["relative_attention_num_buckets"] = 32.into();
    v["pad_token_id"] = 0.into();
    let err = config_error(&v.to_string());
    assert!(err.contains("pad_token_id"), "{err}");
}

/// The real model: `LPEFT_MPNET_DIR`, else `make fetch-mpnet`'s `.whl/all-mpnet-base-v2`, else
/// `../shared/models/all-mpnet-base-v2`.
fn real_model_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("LPEFT_MPNET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root.join(".whl/all-mpnet-base-v2"),
            shared().join("models/all-mpnet-base-v2"),
        ])
        .find(|d| d.join("model.safetensors").is_file())
}

#[test]
#[allow(clippy::print_stderr)]
fn all_mpnet_base_v2_matches_transformers() {
    let Some(dir) = real_model_dir() else {
        eprintln!(
            "skipped: all-mpnet-base-v2 is not on disk (make fetch-mpnet, or LPEFT_MPNET_DIR)"
        );
        return;
    };
    let texts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("mpnet-texts.json")).unwrap(),
    )
    .unwrap();
    let r = read_reference(&fixtures().join("mpnet-reference.safetensors"));
    let reference = &r["last_hidden_state"].1;
    let tok = lpeft_tokenizer::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let model = lpeft_model::encode::load_pretrained_encoder(&dir, &device()).unwrap();
    assert_eq!(model.spec.encoder.family, Family::Mpnet);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let (mut offset, mut worst) = (0, 0.0f64);
    for (row, item) in texts.as_array().unwrap().iter().enumerate() {
        let e = tok
            .encode(item["text"].as_str().unwrap(), item["pair"].as_str(), None)
            .unwrap();
        assert_eq!(e.ids, ids(&item["ids"]), "ids of row {row}");
        assert_eq!(e.type_ids, ids(&item["type_ids"]), "type ids of row {row}");
        let enc = lpeft_model::encode::encode_ids(&model, &e.ids, &e.type_ids, &device());
        let n = e.ids.len() * enc.hidden_size;
        let d = max_abs_diff(&enc.last_hidden_state, &reference[offset..offset + n]);
        worst = worst.max(d);
        offset += n;
    }
    assert_eq!(offset, reference.len(), "every reference row compared");
    report("all-mpnet-base-v2 hidden", worst);
    assert!(worst < TOL, "all-mpnet-base-v2 hidden max|diff| {worst:e}");
}

/// A pruned layer without its own bias columns cannot take the whole shared table: which
/// heads it kept is unknown, so the load fails naming the table and both shapes.
#[test]
fn a_pruned_layer_without_its_bias_columns_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-mpnet");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut map = lpeft_model::hf::read_safetensors(&src.join("model.safetensors")).unwrap();
    let own = "mpnet.encoder.layer.2.attention.attn.relative_attention_bias.weight";
    assert!(map.tensors.remove(own).is_some());
    lpeft_model::checkpoint::write_safetensors(
        &dir.path().join("model.safetensors"),
        &map.tensors.into_iter().collect(),
    )
    .unwrap();
    let ckpt = HfCheckpoint::open(dir.path()).unwrap();
    let spec = ModelSpec {
        encoder: load_spec(dir.path(), &ckpt).unwrap(),
        head: HEAD,
        peft: vec![],
        masks: false,
    };
    let err = Model::build(&spec, &mut ckpt.source(Family::Mpnet, HEAD, 0), &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mpnet.encoder.relative_attention_bias.weight")
            && err.contains("[32, 4]")
            && err.contains("[32, 2]"),
        "{err}"
    );
}
