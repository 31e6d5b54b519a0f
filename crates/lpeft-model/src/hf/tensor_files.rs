//! Reading a checkpoint file's float tensors as f32, whatever float type it stores:
//! safetensors (mapped) and `torch.save` state dicts (without Python).

use std::path::Path;

use crate::error::ModelError;
use crate::source::TensorMap;

fn to_f32(bytes: &[u8], dtype: &str, file: &Path, name: &str) -> Result<Vec<f32>, ModelError> {
    let out = match dtype {
        "F32" => widen(bytes, f32::from_le_bytes),
        "F16" => widen(bytes, |b: [u8; 2]| half::f16::from_le_bytes(b).to_f32()),
        "BF16" => widen(bytes, |b: [u8; 2]| half::bf16::from_le_bytes(b).to_f32()),
        "F64" => widen(bytes, |b: [u8; 8]| f64::from_le_bytes(b) as f32),
        other => {
            return Err(ModelError::UnsupportedDtype {
                file: file.to_path_buf(),
                name: name.into(),
                dtype: other.into(),
            });
        }
    };
    Ok(out)
}

/// Little-endian elements of `W` bytes to f32, in blocks on every core: an embedding matrix
/// alone is a third of roberta-base's 0.44 GB, and every stage that loads a checkpoint
/// converts all of it.
fn widen<const W: usize>(bytes: &[u8], f: impl Fn([u8; W]) -> f32 + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 16;
    let mut out = vec![0f32; bytes.len() / W];
    out.par_chunks_mut(BLOCK)
        .zip(bytes.par_chunks(BLOCK * W))
        .for_each(|(out, bytes)| {
            for (x, b) in out.iter_mut().zip(bytes.chunks_exact(W)) {
                *x = f(b.try_into().expect("W bytes"));
            }
        });
    out
}

/// Reads every float tensor of a safetensors file (integer buffers such as `position_ids` are
/// skipped). The file is mapped, not read into memory: its bytes are touched once, by the
/// conversion.
pub fn read_safetensors(file: &Path) -> Result<TensorMap, ModelError> {
    let f = std::fs::File::open(file).map_err(|e| ModelError::io(file, e))?;
    // SAFETY: mapped read-only and dropped before returning; a checkpoint rewritten while it
    // is read can give wrong values (as a plain read would), which its hash in the artifacts
    // that use it then shows.
    #[allow(unsafe_code)]
    let bytes = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ModelError::io(file, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::BadFile {
        file: file.to_path_buf(),
        message: format!("not a safetensors file: {e}"),
    })?;
    let mut map = TensorMap::default();
    for (name, view) in st.tensors() {
        let dtype = format!("{:?}", view.dtype());
        if matches!(
            dtype.as_str(),
            "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL" | "U16" | "U32" | "U64"
        ) {
            continue;
        }
        let values = to_f32(view.data(), &dtype, file, &name)?;
        map.tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(map)
}

/// Reads a `torch.save` state dict (`pytorch_model.bin`) without Python.
pub fn read_pytorch_bin(file: &Path) -> Result<TensorMap, ModelError> {
    use burn::store::pytorch_reader::{DType, PytorchReader};
    let reader = PytorchReader::new(file).map_err(|e| ModelError::BadFile {
        file: file.to_path_buf(),
        message: format!("not a readable PyTorch checkpoint: {e}"),
    })?;
    let mut map = TensorMap::default();
    for (name, t) in reader.into_tensors() {
        let dtype = match t.dtype() {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            _ => continue,
        };
        let shape = t.shape().to_vec();
        let bytes = t.read().map_err(|e| ModelError::BadFile {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        map.tensors
            .insert(name.clone(), (shape, to_f32(&bytes, dtype, file, &name)?));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    /// The blocked, parallel conversion is the element-by-element one, across block edges and
    /// for every float type a checkpoint may hold.
    #[test]
    fn conversion_matches_the_plain_one() {
        let path = std::path::Path::new("t.safetensors");
        let check = |dtype: &str, bytes: Vec<u8>, want: Vec<f32>| {
            let n = want.len();
            assert_eq!(
                super::to_f32(&bytes, dtype, path, "t").unwrap(),
                want,
                "{dtype} {n}"
            );
        };
        for n in [0usize, 1, 3, (1 << 16) - 1, (1 << 16) + 5, 3 << 16] {
            let xs: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
            let bytes = |b: fn(f32) -> Vec<u8>| xs.iter().flat_map(|&x| b(x)).collect::<Vec<u8>>();
            let each = |f: fn(f32) -> f32| xs.iter().map(|&x| f(x)).collect::<Vec<f32>>();
            check("F32", bytes(|x| x.to_le_bytes().to_vec()), xs.clone());
            check(
                "F64",
                bytes(|x| f64::from(x).to_le_bytes().to_vec()),
                xs.clone(),
            );
            check(
                "F16",
                bytes(|x| half::f16::from_f32(x).to_le_bytes().to_vec()),
                each(|x| half::f16::from_f32(x).to_f32()),
            );
            check(
                "BF16",
                bytes(|x| half::bf16::from_f32(x).to_le_bytes().to_vec()),
                each(|x| half::bf16::from_f32(x).to_f32()),
            );
        }
        assert!(super::to_f32(&[0u8; 4], "I32", path, "t").is_err());
    }
}
