//! Typed errors naming the file, offset, opcode or value at fault.

use std::path::PathBuf;

/// Errors of reading and preparing datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Download, checksum or archive problem while fetching a dataset.
    #[error(transparent)]
    Asset(#[from] coeff_assets::AssetError),
    /// I/O on a path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what its format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the byte offset where it helps).
        message: String,
    },
    /// A pickle uses an opcode or a global this reader refuses (a pickle is a program; only
    /// the opcodes and NumPy globals that array files use are accepted).
    #[error("{path}: pickle opcode {opcode} at byte {offset} is not allowed: {why}")]
    PickleRefused {
        /// The file.
        path: PathBuf,
        /// Opcode name or byte.
        opcode: String,
        /// Offset in the decompressed stream.
        offset: usize,
        /// Why.
        why: String,
    },
    /// A k-shot request the data cannot satisfy.
    #[error("class `{class}` has {available} training images, {requested} were requested")]
    NotEnough {
        /// The class name.
        class: String,
        /// Images available.
        available: usize,
        /// Images requested.
        requested: usize,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, DataError>;

pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
