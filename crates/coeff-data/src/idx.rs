//! The IDX format of MNIST-family datasets (optionally gzip-compressed): a 4-byte magic
//! `0, 0, type, ndims`, `ndims` big-endian u32 sizes, then the data. Only unsigned bytes
//! (`type = 0x08`) occur in these datasets and are accepted.

use std::io::Read;
use std::path::Path;

use crate::error::{format, io, Result};

/// A decoded IDX array of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes, e.g. `[60000, 28, 28]`.
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<u8>,
}

/// Read a file whole, gunzipping when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Read an IDX file (`.gz` or plain).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes, path)
}

/// Parse IDX bytes; `path` names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(format(
            path,
            "not an IDX file (magic must start with two zero bytes)",
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported (0x08 = unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format(
            path,
            format!(
                "truncated IDX header ({} bytes, {ndims} dimensions)",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    let data = &bytes[header..];
    if data.len() != n {
        return Err(format(
            path,
            format!(
                "IDX dims {dims:?} need {n} bytes of data, the file has {}",
                data.len()
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}
