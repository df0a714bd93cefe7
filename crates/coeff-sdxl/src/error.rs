//! Errors of the UNet crate: each names the file, field or key at fault.

use std::path::PathBuf;

/// What can go wrong reading a config, loading weights or running the UNet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnetError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A config is not valid JSON, lacks a field, or asks for something inconsistent.
    #[error("config {path}: {message}")]
    Config {
        /// The config file (or `<inline>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
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
    /// Reading a checkpoint or fitting it to the model failed (missing, unexpected or
    /// mis-shaped tensors, bad files); the error names the file and keys.
    #[error(transparent)]
    Checkpoint(#[from] coeff_tuning::CheckpointError),
    /// Injecting, exporting or importing adapters failed.
    #[error(transparent)]
    Peft(#[from] coeff_tuning::PeftError),
    /// A text encoder or tokenizer of a pipeline failed (the image-text crate's error).
    #[error(transparent)]
    Text(#[from] coeff_vl::VlError),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, UnetError>;
