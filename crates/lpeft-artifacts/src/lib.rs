//! lpeft-artifacts: what one stage writes and another reads, as typed readers and writers with
//! no burn and no store. A stage crate depends on this crate for another stage's output, never
//! on that stage's crate (ARCHITECTURE.md; `tools/check-deps.sh` in `make test`).
//!
//! - [`dataset`]: the tokenized dataset artifact and batching (written by the data stage).
//! - [`estimation`]: the estimation artifact (mask trajectories, per-step importance, the
//!   estimation model's trained state, teacher outputs) and the aggregation of its scores.
//! - [`surgery`]: the surgery artifact's parameter report (`plan.json`).
//! - [`finetune`]: the fine-tune artifact's layout, settings and result (the trained model).

use std::path::Path;

pub mod dataset;
pub mod estimation;
pub mod finetune;
pub mod surgery;

pub use estimation::{EstimateArtifact, Window, aggregate};

/// BLAKE3 of a file's content, hex. Mapped and hashed on every core: the estimation and the
/// surgery hash the backbone's weights (roberta-base: 0.44 GB) on every run, where reading
/// them into memory and hashing on one core took 0.3 s.
pub fn file_blake3(file: &Path) -> Result<String, std::io::Error> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(file)?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    /// The mapped, parallel hash is the content's BLAKE3, below the size where blake3 reads
    /// instead of mapping and well above it (many chunks for the threads).
    #[test]
    fn file_blake3_is_the_contents_hash() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 5, 16 * 1024 - 1, 3 << 20] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                super::file_blake3(&path).unwrap(),
                blake3::hash(&bytes).to_hex().to_string(),
                "{len} bytes"
            );
        }
        assert!(super::file_blake3(&dir.path().join("missing")).is_err());
    }
}
