//! Typed errors: every variant names the file, key, field, shape or value at fault.

use std::path::PathBuf;

/// Errors of config parsing, weight loading, tokenizing and the models' input checks.
#[derive(Debug, thiserror::Error)]
pub enum VlError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` is not valid JSON, lacks a field, or asks for what is not implemented.
    #[error("config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Reading a checkpoint or fitting it to the model failed; the error names file and keys.
    #[error(transparent)]
    Checkpoint(#[from] coeff_tuning::CheckpointError),
    /// The vision tower (the ViT crate) failed.
    #[error(transparent)]
    Vit(#[from] coeff_vit::VitError),
    /// Injecting or loading adapters failed.
    #[error(transparent)]
    Peft(#[from] coeff_tuning::PeftError),
    /// Fetching a pretrained asset failed.
    #[error(transparent)]
    Asset(#[from] coeff_assets::AssetError),
    /// A `tokenizer.json` could not be read or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An input does not fit the model (shape, id range, length).
    #[error("input: {0}")]
    Input(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, VlError>;
