//! Tokenizers read from a Hugging Face `tokenizer.json` through the `tokenizers` crate (the
//! Rust library the Python `tokenizers` package wraps), so ids are those of the Python side.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::error::{Result, VlError};

/// A tokenizer and the file it came from.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

/// A batch of encodings, padded to one length.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// `[batch][len]` token ids.
    pub ids: Vec<Vec<u32>>,
    /// `[batch][len]`, 1 = token, 0 = padding.
    pub attention_mask: Vec<Vec<u32>>,
}

impl Encoded {
    /// `(input_ids, attention_mask)` as `[batch, len]` tensors.
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let batch = self.ids.len();
        let len = self.ids.first().map_or(0, Vec::len);
        let flat =
            |rows: &[Vec<u32>]| -> Vec<i64> { rows.iter().flatten().map(|&v| v as i64).collect() };
        (
            Tensor::from_data(TensorData::new(flat(&self.ids), [batch, len]), device),
            Tensor::from_data(
                TensorData::new(flat(&self.attention_mask), [batch, len]),
                device,
            ),
        )
    }
}

impl TextTokenizer {
    /// Read `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(VlError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| VlError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self { inner, path })
    }

    /// The underlying `tokenizers::Tokenizer` (to change padding or truncation).
    pub fn inner_mut(&mut self) -> &mut tokenizers::Tokenizer {
        &mut self.inner
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> VlError {
        VlError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Encode with the file's own settings (special tokens added; the file's padding and
    /// truncation, if any, applied). Rows are then padded to the longest with the padding id
    /// of the file (0 when it names none), so the batch is rectangular.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Encoded> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| self.err(e))?;
        let pad_id = self.inner.get_padding().map_or(0, |p| p.pad_id);
        let longest = encs.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut out = Encoded {
            ids: Vec::with_capacity(encs.len()),
            attention_mask: Vec::with_capacity(encs.len()),
        };
        for e in encs {
            let mut ids = e.get_ids().to_vec();
            let mut mask = e.get_attention_mask().to_vec();
            ids.resize(longest, pad_id);
            mask.resize(longest, 0);
            out.ids.push(ids);
            out.attention_mask.push(mask);
        }
        Ok(out)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.err(e))
    }

    /// The id of a token of the vocabulary (`[CLS]`, `</s>`, ...).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
