//! Small file helpers shared by every crate of the workspace: the one atomic file writer, f32
//! safetensors in and out, and the `[rows, cols] -> [cols, rows]` transpose that checkpoint
//! conversion needs. Reading checkpoints lives in [`crate::checkpoint`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, TensorView};

/// Write `bytes` to `path` atomically: see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write `path` atomically through `write`, the one file writer every crate of the workspace
/// uses.
///
/// The data goes to a temporary file in the same directory, named after the target, this
/// process and a counter (created with `create_new`, so concurrent writers - threads or
/// processes - never share one), is flushed and `fsync`ed, then renamed over `path`; on Unix the
/// directory is `fsync`ed too, so the rename itself survives a crash. A reader therefore sees
/// the old file or the new one, never a mix, and after return the new one is on disk. On any
/// error the temporary file is removed and `path` is untouched. The error is the bare I/O error;
/// callers add the path.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the target path has no file name",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = create_temp(&dir, &name.to_string_lossy())?;
    let result = (|| {
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        // After a successful rename the temporary name is gone and this is a no-op.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new, exclusively created temporary file `.<name>.<pid>.<n>.tmp` in `dir`.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // Left behind by a killed process that had our pid: take the next number.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < u64::MAX => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Make a rename in `dir` durable (Unix; elsewhere renames are not `fsync`able this way).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Serialise f32 tensors `(name, shape, values)` as safetensors bytes.
pub fn f32_safetensors<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, s, v)| {
            (
                k.to_string(),
                s.to_vec(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (k.clone(), v)))
        .collect::<Result<Vec<_>, _>>()?;
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, &(!meta.is_empty()).then_some(meta))
}

/// A float tensor view (F32, F64, F16, BF16) as f32 values; `None` for other dtypes.
pub fn view_to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// The tensor a malformed safetensors header is wrong about, for the errors the parser reports
/// without a name (`TensorInvalidInfo`, `ValidationOverflow`, `MetadataIncompleteBuffer`).
///
/// Re-reads the header of `file` (the whole file, or at least its first `8 + n` bytes) and
/// walks its tensors in offset order as the parser does: the first whose element count
/// overflows, whose byte span is not `numel * dtype size`, or (when `file` is the whole file)
/// whose span ends past the data section, is the one named. `None` where the header cannot be
/// read or no tensor is at fault.
pub fn blame_safetensors_header(file: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(file.get(..8)?.try_into().ok()?)).ok()?;
    let header = file.get(8..8usize.checked_add(n)?)?;
    let map: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).ok()?;
    let mut tensors: Vec<(String, safetensors::tensor::TensorInfo)> = map
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| serde_json::from_value(v).map(|info| (k, info)))
        .collect::<Result<_, _>>()
        .ok()?;
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let data_len = file.len() - 8 - n;
    tensors.into_iter().find_map(|(name, info)| {
        let (s, e) = info.data_offsets;
        let bytes = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|numel| numel.checked_mul(info.dtype.size()));
        let bad = e < s || bytes != Some(e - s) || e > data_len;
        bad.then_some(name)
    })
}

/// Transpose a row-major `[rows, cols]` matrix.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_roundtrip_through_safetensors() {
        let t = transpose(&[1., 2., 3., 4., 5., 6.], 2, 3);
        assert_eq!(t, vec![1., 4., 2., 5., 3., 6.]);
        let bytes =
            f32_safetensors([("x", &[3usize, 2][..], &t[..])], &[("format", "pt")]).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let v = st.tensor("x").unwrap();
        assert_eq!(v.shape(), &[3, 2]);
        assert_eq!(view_to_f32(&v).unwrap(), t);
    }

    #[test]
    fn a_malformed_header_names_the_tensor() {
        let file = |header: &str, data: usize| {
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header.as_bytes());
            b.extend(std::iter::repeat_n(0u8, data));
            b
        };
        let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
        // Span does not match shape * dtype size.
        let bad = file(
            &format!(r#"{ok},"b":{{"dtype":"F16","shape":[3],"data_offsets":[8,12]}}}}"#),
            12,
        );
        assert!(safetensors::SafeTensors::deserialize(&bad).is_err());
        assert_eq!(blame_safetensors_header(&bad).as_deref(), Some("b"));
        // Element count overflows.
        let bad = file(
            &format!(
                r#"{ok},"c":{{"dtype":"F32","shape":[{m},{m}],"data_offsets":[8,8]}}}}"#,
                m = usize::MAX
            ),
            8,
        );
        assert_eq!(blame_safetensors_header(&bad).as_deref(), Some("c"));
        // Data section shorter than the offsets.
        let bad = file(&format!("{ok}}}"), 4);
        assert_eq!(blame_safetensors_header(&bad).as_deref(), Some("a"));
        // A good file blames nothing.
        assert_eq!(blame_safetensors_header(&file(&format!("{ok}}}"), 8)), None);
    }

    #[test]
    fn write_atomic_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        // A failing writer leaves the old file and no temporary file behind.
        let err = write_atomic_with(&target, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }
}
