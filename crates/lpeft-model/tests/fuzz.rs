//! Fuzzing model loading: mutated safetensors files, our own `model.json` (loaded with its
//! weights) and Hugging Face `config.json` are read or refused with an error, never a panic.
//! See tests/fuzz/mutate.rs.

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use burn::tensor::Device;

use lpeft_model::checkpoint;
use lpeft_model::model::Model;
use lpeft_model::source::RandomSource;
use lpeft_model::testing::{lora_everywhere, tiny_spec};
use lpeft_schema::model::{Family, HeadStyle, TaskHeadSpec};

fn saved_tiny_model(dir: &std::path::Path) {
    let spec = tiny_spec(
        Family::Roberta,
        &[(2, 4), (1, 0)],
        TaskHeadSpec::Classification {
            num_labels: 2,
            style: HeadStyle::RobertaDenseTanh,
        },
        lora_everywhere(2, 2, 0.0),
        false,
    );
    let model = Model::build(&spec, &mut RandomSource { seed: 1 }, &Device::flex()).unwrap();
    checkpoint::save(&model, dir).unwrap();
}

#[test]
fn safetensors_files() {
    let dir = tempfile::tempdir().unwrap();
    saved_tiny_model(dir.path());
    let weights = dir.path().join(checkpoint::WEIGHTS_FILE);
    let seed = std::fs::read(&weights).unwrap();
    let file = dir.path().join("fuzzed.safetensors");
    mutate::run("safetensors", &[seed], mutate::cases(2_000), |input| {
        std::fs::write(&file, input).unwrap();
        let _ = lpeft_model::hf::read_safetensors(&file);
    });
}

#[test]
fn model_json_with_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    saved_tiny_model(dir.path());
    let spec_file = dir.path().join(checkpoint::SPEC_FILE);
    let seed = std::fs::read(&spec_file).unwrap();
    mutate::run("model.json", &[seed], mutate::cases(2_000), |input| {
        std::fs::write(&spec_file, input).unwrap();
        let _ = checkpoint::load(dir.path(), &Device::flex());
    });
}

#[test]
fn hugging_face_config_json() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/all-MiniLM-L6-v2/config.json");
    let seed = std::fs::read(&path).expect("../shared/models/all-MiniLM-L6-v2/config.json");
    mutate::run("config.json", &[seed], mutate::cases(2_000), |input| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) {
            let _ = lpeft_model::hf::parse_config(&v, std::path::Path::new("config.json"));
        }
    });
}
