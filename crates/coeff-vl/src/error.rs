//! Typed errors: every variant names the file, key, field, shape or value at fault.

use std::path::PathBuf;

use coeff_tuning::{CheckpointError, LoadError, PeftError};

/// Errors of config parsing, weight loading, tokenizing and the models' input checks.
#[derive(Debug, thiserror::Error)]
pub enum VlError {
    /// A file, config, checkpoint or adapter error (the core crate's shared kinds: I/O on a
    /// path, a bad `config.json`, a checkpoint that does not fit, adapter injection or loading).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The vision tower (the ViT crate) failed.
    #[error(transparent)]
    Vit(#[from] coeff_vit::VitError),
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

impl From<CheckpointError> for VlError {
    fn from(e: CheckpointError) -> Self {
        Self::Load(e.into())
    }
}

impl From<PeftError> for VlError {
    fn from(e: PeftError) -> Self {
        Self::Load(e.into())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, VlError>;
