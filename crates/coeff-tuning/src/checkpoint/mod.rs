//! Checkpoints: reading safetensors (one file or a sharded `*.index.json`, memory-mapped, in
//! the stored dtype), loading them into a Burn module through a visible key table one
//! parameter at a time, and writing safetensors atomically.
//!
//! ```ignore
//! use coeff_tuning::checkpoint::{Checkpoint, KeyTable, Kind, Row};
//! let ckpt = Checkpoint::open_dir("path/to/model")?;      // model.safetensors, *.index.json, ...
//! const ROWS: &[Row] = &[("encoder.layer.{i}.output.dense", "layers.{i}.mlp.fc2", Kind::Linear)];
//! let model = KeyTable { rows: ROWS, prefixes: &["vit."], ignored: &[] }.load(model, &ckpt)?;
//! ```
//!
//! What a caller can rely on is written down in `docs/checkpoints.md`.

mod error;
mod reader;
mod table;
mod writer;

pub use error::{CheckpointError, Result, ShapeMismatch};
pub use reader::{find_weights, Checkpoint, TensorBytes, TensorInfo, WEIGHT_FILES};
pub use safetensors::Dtype;
pub use table::{KeyTable, Kind, Row};
pub use writer::{write_f32_safetensors, write_safetensors};
