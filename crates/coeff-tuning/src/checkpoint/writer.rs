//! Writing safetensors files atomically, streamed tensor by tensor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, TensorData};
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensorError;

use super::error::{CheckpointError, Result};

/// Write tensors in any dtype Burn and safetensors share (F64, F32, F16, BF16, signed and
/// unsigned integers, bool) as one safetensors file, through
/// [`crate::io::write_atomic_with`].
///
/// The layout is the `safetensors` crate's own (tensors ordered by dtype, then name; header
/// padded to 8 bytes), and the data is streamed from the tensors to the file, so no second
/// copy of the checkpoint is built in memory.
pub fn write_safetensors<'a, S: AsRef<str>>(
    path: &Path,
    tensors: impl IntoIterator<Item = (S, &'a TensorData)>,
    metadata: &[(&str, &str)],
) -> Result<()> {
    let mut entries = Vec::new();
    for (name, data) in tensors {
        let name = name.as_ref().to_string();
        let dtype = stored_dtype(data.dtype).ok_or_else(|| CheckpointError::Dtype {
            path: path.to_path_buf(),
            key: name.clone(),
            dtype: format!("{:?}", data.dtype),
            wanted: "safetensors holds F64, F32, F16, BF16, integers and bool",
        })?;
        entries.push((name, dtype, data.shape.to_vec(), le_bytes(data)));
    }
    write_entries(path, entries, metadata)
}

/// Write f32 tensors (name -> `(shape, values)`) with PEFT's `format: pt` metadata: the form
/// of adapter exports and of the `infer` command's outputs.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let entries = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), Dtype::F32, shape.clone(), Cow::Owned(bytes))
        })
        .collect();
    write_entries(path, entries, &[("format", "pt")])
}

type Entry<'a> = (String, Dtype, Vec<usize>, Cow<'a, [u8]>);

fn write_entries(
    path: &Path,
    mut entries: Vec<Entry<'_>>,
    metadata: &[(&str, &str)],
) -> Result<()> {
    let bad = |name: &str, source| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        tensor: Some(name.to_string()),
        source,
    };
    // The `safetensors` crate's order: larger dtypes first (keeps every tensor aligned to
    // its element size), then by name.
    entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut header = String::from("{");
    if !metadata.is_empty() {
        let meta: BTreeMap<&str, &str> = metadata.iter().copied().collect();
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(&meta).expect("strings serialise"));
    }
    let mut offset = 0usize;
    for (i, (name, dtype, shape, bytes)) in entries.iter().enumerate() {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel.and_then(|n| n.checked_mul(dtype.size())) != Some(bytes.len()) {
            let e = SafeTensorError::InvalidTensorView(*dtype, shape.clone(), bytes.len());
            return Err(bad(name, e));
        }
        let end = offset
            .checked_add(bytes.len())
            .ok_or_else(|| bad(name, SafeTensorError::ValidationOverflow))?;
        let info = TensorInfo {
            dtype: *dtype,
            shape: shape.clone(),
            data_offsets: (offset, end),
        };
        if i > 0 || !metadata.is_empty() {
            header.push(',');
        }
        header.push_str(&serde_json::to_string(name).expect("strings serialise"));
        header.push(':');
        header.push_str(&serde_json::to_string(&info).expect("tensor info serialises"));
        offset = end;
    }
    header.push('}');
    let pad = (8 - header.len() % 8) % 8;
    header.extend(std::iter::repeat_n(' ', pad));

    crate::io::write_atomic_with(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        for (_, _, _, bytes) in &entries {
            w.write_all(bytes)?;
        }
        Ok(())
    })
    .map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// safetensors' dtype for a Burn dtype, where it has one.
fn stored_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F64 => Dtype::F64,
        DType::F32 | DType::Flex32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U64 => Dtype::U64,
        DType::U32 => Dtype::U32,
        DType::U16 => Dtype::U16,
        DType::U8 => Dtype::U8,
        DType::Bool(burn::tensor::BoolStore::Native) => Dtype::BOOL,
        _ => return None,
    })
}

/// The tensor's bytes in little-endian order (borrowed on little-endian machines).
fn le_bytes(data: &TensorData) -> Cow<'_, [u8]> {
    let bytes = data.as_bytes();
    let size = data.dtype.size();
    if cfg!(target_endian = "little") || size == 1 {
        Cow::Borrowed(bytes)
    } else {
        Cow::Owned(
            bytes
                .chunks_exact(size)
                .flat_map(|c| c.iter().rev().copied())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same bytes as the `safetensors` crate's own serialiser.
    #[test]
    fn layout_is_the_safetensors_crates() {
        let dir = tempfile::tempdir().unwrap();
        let a = TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
        let b = TensorData::new(vec![half::f16::from_f32(0.5); 3], [3]);
        let c = TensorData::new(vec![7i64, -8], [2]);
        let path = dir.path().join("x.safetensors");
        write_safetensors(
            &path,
            [("b", &b), ("a", &a), ("c", &c)],
            &[("format", "pt")],
        )
        .unwrap();
        let views = [("a", &a), ("b", &b), ("c", &c)].map(|(n, d)| {
            (
                n,
                safetensors::tensor::TensorView::new(
                    stored_dtype(d.dtype).unwrap(),
                    d.shape.to_vec(),
                    d.as_bytes(),
                )
                .unwrap(),
            )
        });
        let meta = Some([("format".to_string(), "pt".to_string())].into());
        let theirs = safetensors::serialize(views, &meta).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), theirs);
    }
}
