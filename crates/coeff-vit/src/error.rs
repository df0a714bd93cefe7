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
    /// A safetensors file could not be parsed.
    #[error("{path}: safetensors: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Checkpoint tensors the model needs are absent.
    #[error("checkpoint {path} lacks {} tensor(s) the model needs: {}", keys.len(), keys.join(", "))]
    MissingKeys {
        /// The checkpoint.
        path: PathBuf,
        /// Checkpoint key names that were expected.
        keys: Vec<String>,
    },
    /// Checkpoint tensors the key table does not map.
    #[error("checkpoint {path} has {} tensor(s) the model does not use: {}", keys.len(), keys.join(", "))]
    UnexpectedKeys {
        /// The checkpoint.
        path: PathBuf,
        /// The unused keys.
        keys: Vec<String>,
    },
    /// A checkpoint tensor has the wrong shape for the config.
    #[error("checkpoint {path}: `{key}` has shape {found:?}, the config implies {expected:?}")]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// Checkpoint key.
        key: String,
        /// Shape found.
        found: Vec<usize>,
        /// Shape expected.
        expected: Vec<usize>,
    },
    /// A checkpoint tensor has an unsupported dtype.
    #[error("checkpoint {path}: `{key}` has dtype {dtype}; expected F32, F16, BF16 or F64")]
    Dtype {
        /// The checkpoint.
        path: PathBuf,
        /// Checkpoint key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// The input image batch does not fit the model.
    #[error("input: {0}")]
    Input(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, VitError>;
