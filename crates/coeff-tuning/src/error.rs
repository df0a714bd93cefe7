//! Typed errors of the core crate. Every variant names the file, key, shape or value at fault.
//!
//! [`PeftError`] is what injecting, saving and loading adapters reports; [`LoadError`] is the
//! vocabulary the model crates share for building a model from files: a file that cannot be
//! read, a bad config, a checkpoint that does not fit, an adapter that fails. Each model
//! crate's error wraps it in one transparent variant and adds only the kinds that are its own.

use std::path::PathBuf;

/// Everything that can go wrong while injecting, saving or loading adapters.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// A `target_modules` / `coeff_targets` / `modules_to_save` pattern matched no module.
    #[error(
        "pattern `{pattern}` in `{field}` matched no {kind}; available {kind}s are:\n  {}",
        available.join("\n  ")
    )]
    PatternMatchedNothing {
        /// The config field the pattern came from.
        field: &'static str,
        /// The pattern that matched nothing.
        pattern: String,
        /// What the pattern was looked up in ("linear layer", "attention layer", "module").
        kind: &'static str,
        /// Every module path of that kind that exists in the model.
        available: Vec<String>,
    },
    /// A pattern is not a valid regular expression.
    #[error("pattern `{pattern}` in `{field}` is not a valid regular expression: {source}")]
    BadPattern {
        /// The config field the pattern came from.
        field: &'static str,
        /// The offending pattern.
        pattern: String,
        /// The regex parser's complaint.
        #[source]
        source: regex::Error,
    },
    /// The config asks for nothing to adapt.
    #[error(
        "the adapter config enables neither LoRA/DoRA nor Coeff-Tuning nor any modules_to_save"
    )]
    EmptyConfig,
    /// A config value is out of range.
    #[error("invalid adapter config: {0}")]
    InvalidConfig(String),
    /// A model's `Adaptable::visit_sites` reported a path that is not a module path of the
    /// model (a typo in the model crate): adapting it would leave the real layer untouched.
    #[error(
        "the model reports a {kind} layer at `{path}`, but it has no parameter `{witness}`: \
         the path given to `visit_sites` does not match the module's field names"
    )]
    BadSitePath {
        /// The reported path.
        path: String,
        /// The site kind (`linear`, `conv2d`, `attention`).
        kind: &'static str,
        /// The parameter such a layer must have.
        witness: String,
    },
    /// Training cannot go on: a non-finite gradient, a trainable parameter without a
    /// gradient, or an optimizer state that does not fit the model.
    #[error("training: {0}")]
    Training(String),
    /// An adapter is injected twice into the same layer.
    #[error(
        "module `{0}` already carries an adapter; unload or merge it before injecting another"
    )]
    AlreadyAdapted(String),
    /// An adapter file lacks a tensor the model needs.
    #[error("adapter file {file} has no tensor `{key}` (the model expects shape {expected:?})")]
    MissingKey {
        /// The adapter safetensors file.
        file: PathBuf,
        /// The missing key.
        key: String,
        /// The shape the model expects for it.
        expected: Vec<usize>,
    },
    /// An adapter file holds tensors the model has no place for.
    #[error("adapter file {file} has tensors the model does not use: {}", keys.join(", "))]
    UnexpectedKeys {
        /// The adapter safetensors file.
        file: PathBuf,
        /// The keys left over.
        keys: Vec<String>,
    },
    /// A tensor in an adapter file has the wrong shape.
    #[error(
        "adapter file {file}: tensor `{key}` has shape {found:?}, the model expects {expected:?}"
    )]
    ShapeMismatch {
        /// The adapter safetensors file.
        file: PathBuf,
        /// The key whose shape differs.
        key: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor in an adapter file has a dtype we cannot read.
    #[error(
        "adapter file {file}: tensor `{key}` has dtype {dtype}, expected F32, F16, BF16 or F64"
    )]
    BadDtype {
        /// The adapter safetensors file.
        file: PathBuf,
        /// The key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// The adapter config names a method or version this build does not know.
    #[error("adapter config {file}: {message}")]
    BadAdapterConfig {
        /// The JSON config file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A training checkpoint that cannot be resumed from.
    #[error("training checkpoint {path}: {message}")]
    RunCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An I/O error with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors (de)serialisation error with the path it happened on.
    #[error("{path}: safetensors{}: {source}", tensor.as_ref().map(|t| format!(" tensor `{t}`")).unwrap_or_default())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The tensor the error is about, where it is about one.
        tensor: Option<String>,
        /// The underlying error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Reading or writing a safetensors file of an adapter failed (names the file and keys).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A tensor of an adapter file holds NaN or infinite values.
    #[error("adapter file {file}: tensor `{key}` has {count} non-finite value(s) (NaN or ±inf) out of {numel}")]
    NonFinite {
        /// The adapter safetensors file.
        file: PathBuf,
        /// The tensor.
        key: String,
        /// How many of its values are not finite.
        count: usize,
        /// Its number of values.
        numel: usize,
    },
}

/// Reading a model's files: the error kinds every model crate shares (one transparent
/// variant of `VitError`, `VlError`, `UnetError`, ...). Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read (or written).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON, lacks a field, or asks for what is not implemented.
    #[error("config {path}: {message}")]
    Config {
        /// The config file (or `<inline>`).
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Reading a checkpoint or fitting it to the model failed (missing, unexpected or
    /// mis-shaped tensors, bad files); the error names the file and keys.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Injecting, saving or loading adapters failed.
    #[error(transparent)]
    Peft(#[from] PeftError),
}

impl LoadError {
    /// [`LoadError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// [`LoadError::Config`] about the config file `path`.
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, PeftError>;

/// [`Result`] under a name that does not shadow `std::result::Result` in `use coeff_tuning::*`.
pub type PeftResult<T> = Result<T>;
