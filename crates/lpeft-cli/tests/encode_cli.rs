//! `lpeft encode` end to end: the real MiniLM in ../shared, compared with the hidden states
//! Hugging Face transformers gave for the same text (lpeft-model's parity fixture).

use std::path::Path;
use std::process::Command;

fn read(file: &Path) -> Tensors {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = match v.dtype() {
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                d => panic!("{d:?}"),
            };
            (n, (v.shape().to_vec(), vals))
        })
        .collect()
}

type Tensors = std::collections::HashMap<String, (Vec<usize>, Vec<f64>)>;

/// `lpeft encode --model MODEL` of a fixture item's `text` (and `pair`) into `out`: what it
/// wrote, once its `input_ids` are checked to be the item's `ids` (which it also returns).
fn encode_item(model: &Path, item: &serde_json::Value, out: &Path) -> (Tensors, Vec<f64>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lpeft"));
    cmd.arg("encode").arg("--model").arg(model);
    cmd.args(["--text", item["text"].as_str().unwrap(), "--output"])
        .arg(out);
    if let Some(p) = item["pair"].as_str() {
        cmd.arg("--pair").arg(p);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = read(out);
    let ids: Vec<f64> = item["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got["input_ids"].1, ids);
    (got, ids)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn encode_writes_hidden_states_that_match_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("../shared/models/all-MiniLM-L6-v2");
    let fixtures = root.join("crates/lpeft-model/tests/fixtures");
    let texts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("minilm-texts.json")).unwrap())
            .unwrap();
    let reference = read(&fixtures.join("minilm-reference.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    for row in [1usize, 3] {
        let item = &texts[row];
        let out = dir.path().join(format!("row{row}.safetensors"));
        let (got, ids) = encode_item(&model, item, &out);
        let (t, h) = (ids.len(), 384);
        assert_eq!(got["last_hidden_state"].0, vec![1, t, h]);
        let t_max = reference["input_ids"].0[1];
        let want = &reference["last_hidden_state"].1[row * t_max * h..(row * t_max + t) * h];
        let d = max_abs_diff(&got["last_hidden_state"].1, want);
        assert!(d < 1e-4, "row {row}: max|diff| {d:e}");
    }
}

#[test]
fn encode_names_a_missing_model_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_lpeft"))
        .args([
            "encode",
            "--model",
            "/nonexistent/model",
            "--text",
            "hi",
            "--output",
            "/tmp/x.safetensors",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn encode_cuts_a_long_text_to_the_models_positions_and_says_so() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("../shared/models/all-MiniLM-L6-v2");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long.safetensors");
    let text = "word ".repeat(2000);
    let run = Command::new(env!("CARGO_BIN_EXE_lpeft"))
        .arg("encode")
        .arg("--model")
        .arg(&model)
        .args(["--text", &text, "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("cut to 512 tokens (the model's 512 positions)"),
        "{stdout}"
    );
    assert_eq!(read(&out)["last_hidden_state"].0, vec![1, 512, 384]);
}

/// An OPT directory as the hub ships it (vocab.json + merges.txt, no tokenizer.json): the
/// tokens are transformers' GPT2Tokenizer's (`</s> A`, `</s> A </s> B`) and the hidden states
/// OPTModel's (tools/reference/opt_tokenizer_fixtures.py); a text past the model's 64 positions
/// is cut to them.
#[test]
fn encode_reads_opts_own_tokenizer() {
    let dir_in =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lpeft-model/tests/fixtures/tiny-opt-bpe");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir_in.join("expected.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, item) in expected["encode"].as_array().unwrap().iter().enumerate() {
        let out = dir.path().join(format!("opt{i}.safetensors"));
        let (got, ids) = encode_item(&dir_in, item, &out);
        let want: Vec<f64> = item["last_hidden_state"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(got["last_hidden_state"].0, vec![1, ids.len(), 16]);
        let d = max_abs_diff(&got["last_hidden_state"].1, &want);
        assert!(d < 1e-4, "case {i}: max|diff| {d:e}");
    }
    let out = dir.path().join("long.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_lpeft"))
        .arg("encode")
        .arg("--model")
        .arg(&dir_in)
        .args(["--text", &"the cat sat ".repeat(40), "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("cut to 64 tokens"), "{stdout}");
    let ids = &read(&out)["input_ids"].1;
    assert_eq!((ids.len(), ids[0]), (64, 2.0));
}
