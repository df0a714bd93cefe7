//! Typed errors: every variant names the file, key, field, shape or value at fault.

use std::path::PathBuf;

/// Errors of config parsing, weight loading and the forward pass's input checks.
#[derive(Debug, thiserror::Error)]
pub enum VitError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON or lacks a field.
    #[error("config {path}: {message}")]
    Config {
        /// The config file (or `<inline>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading a checkpoint or fitting it to the model failed (missing, unexpected or
    /// mis-shaped tensors, bad files); the error names the file and keys.
    #[error(transparent)]
    Checkpoint(#[from] coeff_tuning::CheckpointError),
    /// Injecting or loading adapters failed.
    #[error(transparent)]
    Peft(#[from] coeff_tuning::PeftError),
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
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, VitError>;
