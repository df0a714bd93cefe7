//! Typed errors: every variant names the file, key, field, shape or value at fault.

use std::path::PathBuf;

use coeff_tuning::{CheckpointError, LoadError, PeftError};

/// Errors of config parsing, weight loading and the forward pass's input checks.
#[derive(Debug, thiserror::Error)]
pub enum VitError {
    /// A file, config, checkpoint or adapter error (the core crate's shared kinds: I/O on a
    /// path, a bad config, a checkpoint that does not fit, adapter injection or loading).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A weight of a checkpoint holds NaN or infinite values (after conversion to the model's
    /// dtype).
    #[error("checkpoint {path}: tensor `{key}` has {count} non-finite value(s) (NaN or ±inf) out of {numel} (model parameter `{param}`)")]
    NonFinite {
        /// The safetensors file holding the tensor.
        path: PathBuf,
        /// The checkpoint key.
        key: String,
        /// The model parameter it feeds.
        param: String,
        /// How many values are not finite.
        count: usize,
        /// The parameter's number of values.
        numel: usize,
    },
    /// The input image batch does not fit the model.
    #[error("input: {0}")]
    Input(String),
    /// A classification head that does not fit the model.
    #[error("classification head: {0}")]
    Head(String),
}

impl From<CheckpointError> for VitError {
    fn from(e: CheckpointError) -> Self {
        Self::Load(e.into())
    }
}

impl From<PeftError> for VitError {
    fn from(e: PeftError) -> Self {
        Self::Load(e.into())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, VitError>;
