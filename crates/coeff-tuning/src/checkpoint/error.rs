//! [`CheckpointError`]: what went wrong reading, mapping or writing a checkpoint, naming the
//! file, the key and (where it matters) the shape, dtype or model parameter.

use std::path::PathBuf;

/// Errors of the checkpoint layer. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file is malformed (header, offsets, sizes) or could not be serialised.
    #[error("{path}: safetensors{}: {source}", tensor.as_ref().map(|t| format!(" tensor `{t}`")).unwrap_or_default())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The tensor the error is about, where it is about one.
        tensor: Option<String>,
        /// The parser's complaint.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A `*.safetensors.index.json` is not valid JSON or not in the expected layout.
    #[error("{path}: not a safetensors index: {message}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A shard named by an index does not exist.
    #[error("{index}: shard {shard} does not exist (it should hold {} tensor(s), e.g. `{}`)", keys.len(), keys.first().map(String::as_str).unwrap_or(""))]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard it names.
        shard: PathBuf,
        /// Keys the index places in that shard.
        keys: Vec<String>,
    },
    /// A shard's header disagrees with the index: a key the index places in the shard is not
    /// there, or the shard holds a key the index does not list.
    #[error("{index}: {message} `{key}` (shard {shard})")]
    IndexMismatch {
        /// The index file.
        index: PathBuf,
        /// The shard.
        shard: PathBuf,
        /// The key at fault.
        key: String,
        /// `the shard's header lacks` or `the index does not list`.
        message: &'static str,
    },
    /// A tensor that was asked for by name is not in the checkpoint.
    #[error("checkpoint {path} has no tensor `{key}`")]
    MissingKey {
        /// The checkpoint (file or index).
        path: PathBuf,
        /// The key asked for.
        key: String,
    },
    /// The checkpoint and the model do not fit: model parameters nothing feeds, and
    /// checkpoint tensors nothing uses. Both lists are complete.
    #[error(
        "checkpoint {path} does not fit the model: {} missing, {} unexpected{}{}{}",
        missing.len(),
        unexpected.len(),
        list("\n  missing (checkpoint key -> model parameter):", missing),
        list("\n  unexpected (checkpoint key, what it would feed):", unexpected),
        if prefixes.is_empty() { String::new() } else { format!("\n  (keys may carry the prefix {})", prefixes.join(" or ")) }
    )]
    KeysMismatch {
        /// The checkpoint (file or index).
        path: PathBuf,
        /// One line per model parameter without a source: `` `key` (model parameter `path`) ``.
        missing: Vec<String>,
        /// One line per checkpoint key without a use.
        unexpected: Vec<String>,
        /// Optional key prefixes the table strips, for reading `missing`.
        prefixes: Vec<String>,
    },
    /// Two checkpoint keys feed the same model parameter (e.g. a file that holds a tensor both
    /// with and without an optional prefix).
    #[error("checkpoint {path}: `{first}` and `{second}` both feed model parameter `{param}`")]
    FedTwice {
        /// The checkpoint.
        path: PathBuf,
        /// Model parameter.
        param: String,
        /// One key.
        first: String,
        /// The other key.
        second: String,
    },
    /// A tensor's shape does not fit the model parameter it feeds.
    #[error(transparent)]
    Shape(Box<ShapeMismatch>),
    /// A tensor's dtype cannot be read the way it is asked for.
    #[error("checkpoint {path}: `{key}` has dtype {dtype}; {wanted}")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// Checkpoint key.
        key: String,
        /// The dtype found.
        dtype: String,
        /// What would have been accepted.
        wanted: &'static str,
    },
    /// No weights file in a model folder, or more than one candidate.
    #[error("{dir}: {message}; looked for {}", looked_for.join(", "))]
    WeightsNotFound {
        /// The folder.
        dir: PathBuf,
        /// `no weights file` or `ambiguous: a, b`.
        message: String,
        /// The file names looked for, in order of preference.
        looked_for: Vec<String>,
    },
    /// A key table row is malformed (a programming error in a model crate's table).
    #[error("key table row `{row}`: {message}")]
    BadTable {
        /// The row's checkpoint pattern.
        row: String,
        /// What is wrong.
        message: String,
    },
}

/// The details of [`CheckpointError::Shape`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint {path}: `{key}` has shape {found:?}{note}, model parameter `{param}` needs {expected:?}")]
pub struct ShapeMismatch {
    /// The checkpoint file.
    pub path: PathBuf,
    /// Checkpoint key.
    pub key: String,
    /// Model parameter it feeds.
    pub param: String,
    /// Shape in the file.
    pub found: Vec<usize>,
    /// What the table row makes of it, e.g. ` (transposed: [64, 32])`; may be empty.
    pub note: String,
    /// Shape the model has.
    pub expected: Vec<usize>,
}

impl From<ShapeMismatch> for CheckpointError {
    fn from(m: ShapeMismatch) -> Self {
        CheckpointError::Shape(Box::new(m))
    }
}

fn list(title: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{title}\n    {}", items.join("\n    "))
    }
}

/// Result alias of the checkpoint layer.
pub type Result<T> = std::result::Result<T, CheckpointError>;
