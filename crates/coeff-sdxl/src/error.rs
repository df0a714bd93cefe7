//! Errors of the UNet crate: each names the file, field or key at fault.

use std::path::PathBuf;

use coeff_tuning::{CheckpointError, LoadError, PeftError};

/// What can go wrong reading a config, loading weights or running the UNet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnetError {
    /// A file, config, checkpoint or adapter error (the core crate's shared kinds: I/O on a
    /// path, a bad config, a checkpoint that does not fit, adapter injection, export or import).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The config asks for a feature this crate does not implement.
    #[error("config {path}: `{field}` = {value} is not supported by coeff-sdxl ({why})")]
    Unsupported {
        /// The config file (or `<inline>`).
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value, as JSON.
        value: String,
        /// What is supported.
        why: String,
    },
    /// An input of [`crate::UNet2DConditionModel::forward`] has the wrong shape or is missing.
    #[error("input `{name}`: {message}")]
    Input {
        /// The input's name (`sample`, `timestep`, ...).
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A text encoder or tokenizer of a pipeline failed (the image-text crate's error).
    #[error(transparent)]
    Text(#[from] coeff_vl::VlError),
}

impl From<CheckpointError> for UnetError {
    fn from(e: CheckpointError) -> Self {
        Self::Load(e.into())
    }
}

impl From<PeftError> for UnetError {
    fn from(e: PeftError) -> Self {
        Self::Load(e.into())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, UnetError>;
