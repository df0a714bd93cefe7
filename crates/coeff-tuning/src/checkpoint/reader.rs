//! [`Checkpoint`]: safetensors files, single or sharded, memory-mapped and read one tensor at
//! a time in the dtype they are stored in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use burn::tensor::{DType, TensorData};
use memmap2::Mmap;
use safetensors::tensor::Dtype;
use safetensors::SafeTensorError;
use serde_json::Value;

use super::error::{CheckpointError, Result};

/// One `.safetensors` file, mapped.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// The header's `__metadata__` strings.
    metadata: BTreeMap<String, String>,
    /// Offset of the data section: 8 + header length.
    data_start: usize,
}

/// Where one tensor lives.
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range inside the shard's mapping (header already skipped).
    start: usize,
    end: usize,
}

/// Dtype and shape of a stored tensor, known from the header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The stored element type.
    pub dtype: Dtype,
    /// The stored shape.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements (checked: shapes come from untrusted files).
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// A stored tensor's raw little-endian bytes, borrowed from the mapping.
#[derive(Debug, Clone, Copy)]
pub struct TensorBytes<'a> {
    /// The stored element type.
    pub dtype: Dtype,
    /// The stored shape.
    pub shape: &'a [usize],
    /// `numel * dtype.size()` bytes, little-endian, row-major.
    pub bytes: &'a [u8],
}

/// A safetensors checkpoint opened for reading: one file, or the shards of a
/// `*.safetensors.index.json`, memory-mapped.
///
/// Opening reads and checks the headers only (offsets, sizes, and for an index, that every
/// shard exists and holds exactly the keys the index places in it). Tensor data is touched
/// when a tensor is read, and reading one tensor allocates that tensor only; the mapped pages
/// are the operating system's page cache, not this process's heap.
///
/// The files must not be modified while a `Checkpoint` maps them (as with any memory map,
/// truncating a mapped file makes later reads fault).
pub struct Checkpoint {
    path: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Open a `.safetensors` file, or a sharded checkpoint through its `*.index.json`
    /// (`{"weight_map": {key: shard file}}`, shard names relative to the index's folder).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let is_index = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".json"));
        if is_index {
            Self::open_index(path)
        } else {
            let (shard, header) = map_shard(&path)?;
            let mut ckpt = Self {
                path,
                shards: Vec::new(),
                tensors: BTreeMap::new(),
            };
            ckpt.add_shard(shard, header);
            Ok(ckpt)
        }
    }

    /// Open the weights of a Hugging Face / diffusers model folder (see [`find_weights`]).
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(find_weights(dir.as_ref(), &[])?)
    }

    fn open_index(index: PathBuf) -> Result<Self> {
        let bad = |message: String| CheckpointError::BadIndex {
            path: index.clone(),
            message,
        };
        let text = std::fs::read_to_string(&index).map_err(|source| CheckpointError::Io {
            path: index.clone(),
            source,
        })?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        if map.is_empty() {
            return Err(bad("`weight_map` is empty".into()));
        }
        let mut by_shard: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (key, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("`weight_map[\"{key}\"]` is not a file name")))?;
            by_shard.entry(file).or_default().insert(key.as_str());
        }
        let folder = index.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut ckpt = Self {
            path: index.clone(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for (file, keys) in by_shard {
            let plain = Path::new(file)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if !plain || file.is_empty() {
                return Err(bad(format!(
                    "shard name `{file}` must be a relative path inside the index's folder"
                )));
            }
            let shard_path = folder.join(file);
            if !shard_path.is_file() {
                return Err(CheckpointError::MissingShard {
                    index: index.clone(),
                    shard: shard_path,
                    keys: keys.iter().map(|k| k.to_string()).collect(),
                });
            }
            let (shard, header) = map_shard(&shard_path)?;
            let held: BTreeSet<&str> = header.iter().map(|(k, _)| k.as_str()).collect();
            let mismatch = |key: &str, message| CheckpointError::IndexMismatch {
                index: index.clone(),
                shard: shard_path.clone(),
                key: key.to_string(),
                message,
            };
            if let Some(k) = keys.iter().find(|k| !held.contains(*k)) {
                return Err(mismatch(k, "the shard's header lacks"));
            }
            if let Some(k) = held.iter().find(|k| !keys.contains(*k)) {
                return Err(mismatch(k, "the index does not list the shard's"));
            }
            ckpt.add_shard(shard, header);
        }
        Ok(ckpt)
    }

    fn add_shard(&mut self, shard: Shard, header: Vec<(String, safetensors::tensor::TensorInfo)>) {
        let index = self.shards.len();
        let data_start = shard.data_start;
        for (key, info) in header {
            let (s, e) = info.data_offsets;
            self.tensors.insert(
                key,
                Entry {
                    shard: index,
                    dtype: info.dtype,
                    shape: info.shape,
                    start: data_start + s,
                    end: data_start + e,
                },
            );
        }
        self.shards.push(shard);
    }

    /// The `__metadata__` strings of the header (of every shard, the first shard's value
    /// where they differ), e.g. `format: pt`, diffusers' `lora_adapter_metadata`.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for shard in &self.shards {
            for (k, v) in &shard.metadata {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// The file or index this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `.safetensors` files it maps (one, or every shard).
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    fn entry(&self, key: &str) -> Result<&Entry> {
        self.tensors
            .get(key)
            .ok_or_else(|| CheckpointError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// Dtype and shape of `key`, from the header (no data is read).
    pub fn info(&self, key: &str) -> Result<TensorInfo> {
        let e = self.entry(key)?;
        Ok(TensorInfo {
            dtype: e.dtype,
            shape: e.shape.clone(),
        })
    }

    /// The `.safetensors` file holding `key`.
    pub fn file_of(&self, key: &str) -> Result<&Path> {
        Ok(&self.shards[self.entry(key)?.shard].path)
    }

    /// The stored bytes of `key`, borrowed from the mapping (nothing is copied).
    pub fn bytes(&self, key: &str) -> Result<TensorBytes<'_>> {
        let e = self.entry(key)?;
        Ok(TensorBytes {
            dtype: e.dtype,
            shape: &e.shape,
            bytes: &self.shards[e.shard].mmap[e.start..e.end],
        })
    }

    /// Hand the pages of `key` back to the operating system once its data has been copied out
    /// (`MADV_DONTNEED` on Unix; a no-op elsewhere), so that loading a whole checkpoint does
    /// not leave it all mapped into this process. The pages stay in the page cache, and a
    /// later read maps them again.
    pub(crate) fn release(&self, key: &str) {
        #[cfg(unix)]
        if let Some(e) = self.tensors.get(key).filter(|e| e.end > e.start) {
            // SAFETY: the mapping is shared, read-only and file-backed: after DONTNEED the next
            // access reads the same bytes back from the file. The only caller releases a
            // tensor after its bytes were copied, with no borrow of them alive.
            let _ = unsafe {
                self.shards[e.shard].mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    e.start,
                    e.end - e.start,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = key;
    }

    /// One tensor in its stored dtype: F64, F32, F16 and BF16 stay as they are (convert once
    /// the model's dtype is known, e.g. with `TensorData::convert_dtype`); integer dtypes
    /// become I64. BOOL and the F8 types are refused.
    pub fn read(&self, key: &str) -> Result<TensorData> {
        let t = self.bytes(key)?;
        let shape = t.shape.to_vec();
        Ok(match t.dtype {
            Dtype::F64 => TensorData::new(decode::<f64>(t.bytes), shape),
            Dtype::F32 => TensorData::new(decode::<f32>(t.bytes), shape),
            Dtype::F16 => TensorData::new(decode::<half::f16>(t.bytes), shape),
            Dtype::BF16 => TensorData::new(decode::<half::bf16>(t.bytes), shape),
            _ => TensorData::new(self.ints(key, t)?, shape),
        })
    }

    /// One float tensor (F64, F32, F16, BF16) as f32 values with its shape.
    pub fn read_f32(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.bytes(key)?;
        let data = match t.dtype {
            Dtype::F32 => decode::<f32>(t.bytes),
            Dtype::F64 => decode::<f64>(t.bytes)
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            Dtype::F16 => decode::<half::f16>(t.bytes)
                .into_iter()
                .map(half::f16::to_f32)
                .collect(),
            Dtype::BF16 => decode::<half::bf16>(t.bytes)
                .into_iter()
                .map(half::bf16::to_f32)
                .collect(),
            other => return Err(self.dtype_err(key, other, "expected F32, F16, BF16 or F64")),
        };
        Ok((t.shape.to_vec(), data))
    }

    /// One integer tensor (any signed or unsigned width) as i64 values with its shape.
    pub fn read_i64(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let t = self.bytes(key)?;
        Ok((t.shape.to_vec(), self.ints(key, t)?))
    }

    fn ints(&self, key: &str, t: TensorBytes<'_>) -> Result<Vec<i64>> {
        Ok(match t.dtype {
            Dtype::I64 => decode::<i64>(t.bytes),
            Dtype::I32 => widen::<i32>(t.bytes),
            Dtype::I16 => widen::<i16>(t.bytes),
            Dtype::I8 => widen::<i8>(t.bytes),
            Dtype::U32 => widen::<u32>(t.bytes),
            Dtype::U16 => widen::<u16>(t.bytes),
            Dtype::U8 => widen::<u8>(t.bytes),
            Dtype::U64 => decode::<u64>(t.bytes)
                .into_iter()
                .map(i64::try_from)
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| self.dtype_err(key, Dtype::U64, "a value exceeds i64"))?,
            other => {
                return Err(self.dtype_err(
                    key,
                    other,
                    "expected a float (F64, F32, F16, BF16) or integer dtype",
                ))
            }
        })
    }

    pub(crate) fn dtype_err(
        &self,
        key: &str,
        dtype: Dtype,
        wanted: &'static str,
    ) -> CheckpointError {
        let path = self
            .file_of(key)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| self.path.clone());
        CheckpointError::Dtype {
            path,
            key: key.to_string(),
            dtype: format!("{dtype:?}"),
            wanted,
        }
    }
}

/// Burn's dtype for a stored float dtype.
pub(crate) fn burn_float_dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F64 => Some(DType::F64),
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Map one file and read its header (validated by `safetensors`: header size, offsets that
/// tile the data section exactly, element counts that do not overflow).
fn map_shard(path: &Path) -> Result<(Shard, Vec<(String, safetensors::tensor::TensorInfo)>)> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the mapping is read-only and private to this `Checkpoint`; the documented
    // contract is that the file is not modified while mapped.
    let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
    let (n, meta) = safetensors::SafeTensors::read_metadata(&mmap).map_err(|source| {
        CheckpointError::Safetensors {
            path: path.to_path_buf(),
            // The parser names the tensor only for some errors; find it for the others.
            tensor: tensor_named(&source).or_else(|| crate::io::blame_safetensors_header(&mmap)),
            source,
        }
    })?;
    let header = meta
        .tensors()
        .into_iter()
        .map(|(k, info)| (k, info.clone()))
        .collect();
    Ok((
        Shard {
            path: path.to_path_buf(),
            metadata: meta
                .metadata()
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            mmap,
            // `read_metadata` checked that 8 + n + data length is the file's length.
            data_start: 8 + n,
        },
        header,
    ))
}

/// The tensor a safetensors error is about, where it names one.
pub(crate) fn tensor_named(e: &SafeTensorError) -> Option<String> {
    match e {
        SafeTensorError::InvalidOffset(t) | SafeTensorError::TensorNotFound(t) => Some(t.clone()),
        _ => None,
    }
}

/// An element type stored little-endian in safetensors.
pub(crate) trait Le: Copy {
    const SIZE: usize;
    fn from_le(b: &[u8]) -> Self;
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("chunk of the element size"))
            }
        }
    )*};
}
le!(
    f64,
    f32,
    i64,
    i32,
    i16,
    i8,
    u64,
    u32,
    u16,
    u8,
    half::f16,
    half::bf16
);

/// Little-endian bytes to values (one allocation).
pub(crate) fn decode<T: Le>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
}

fn widen<T: Le + Into<i64>>(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(T::SIZE)
        .map(|c| T::from_le(c).into())
        .collect()
}

/// Weight file names of Hugging Face (`transformers`) and `diffusers` folders, most preferred
/// first: the full-precision names, then the `fp16` variants (`diffusers`/`transformers`
/// spell a variant `model.fp16.safetensors`, `model.safetensors.index.fp16.json`).
pub const WEIGHT_FILES: [&[&str]; 2] = [
    &[
        "model.safetensors",
        "model.safetensors.index.json",
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
    ],
    &[
        "model.fp16.safetensors",
        "model.safetensors.index.fp16.json",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.safetensors.index.fp16.json",
    ],
];

/// The weights file (or index) of a model folder.
///
/// Looks for [`WEIGHT_FILES`] (plus `extra` names, which rank with the full-precision
/// names): the first group with any file present must have exactly one. Several candidates
/// in one group (say `model.safetensors` and `model.safetensors.index.json`) are an error
/// naming them, and so is none at all; both list what was looked for.
pub fn find_weights(dir: &Path, extra: &[&str]) -> Result<PathBuf> {
    let first: Vec<&str> = WEIGHT_FILES[0].iter().chain(extra).copied().collect();
    let groups = [first, WEIGHT_FILES[1].to_vec()];
    let looked_for = || groups.iter().flatten().map(|s| s.to_string()).collect();
    for group in &groups {
        let found: Vec<&str> = group
            .iter()
            .copied()
            .filter(|f| dir.join(f).is_file())
            .collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(dir.join(one)),
            many => {
                return Err(CheckpointError::WeightsNotFound {
                    dir: dir.to_path_buf(),
                    message: format!("ambiguous: {} are all present; keep one", many.join(", ")),
                    looked_for: looked_for(),
                })
            }
        }
    }
    Err(CheckpointError::WeightsNotFound {
        dir: dir.to_path_buf(),
        message: "no weights file".into(),
        looked_for: looked_for(),
    })
}
