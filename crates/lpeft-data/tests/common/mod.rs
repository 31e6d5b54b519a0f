//! Shared test helpers: the shared GLUE files and the MiniLM tokenizer (CI has both).
#![allow(dead_code)]

use std::path::PathBuf;

pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// `GLUE_DIR`, else `../shared/data/glue`; fails (never skips) when missing.
pub fn glue_dir() -> PathBuf {
    let dir = std::env::var_os("GLUE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared().join("data/glue"));
    assert!(
        dir.join("SST-2/train.tsv").is_file(),
        "GLUE files not found in {} (set GLUE_DIR or provide ../shared/data/glue)",
        dir.display()
    );
    dir
}

pub fn model_dir() -> PathBuf {
    let dir = shared().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "MiniLM tokenizer not found in {}",
        dir.display()
    );
    dir
}

pub fn config(task: &str, data_dir: PathBuf) -> lpeft_data::DataConfig {
    serde_json::from_value(serde_json::json!({
        "task": task,
        "data_dir": data_dir,
        "model": model_dir(),
    }))
    .expect("valid config")
}

pub fn write(dir: &std::path::Path, rel: &str, text: &str) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}
