//! Tokenizers read from a Hugging Face `tokenizer.json` through the `tokenizers` crate (the
//! Rust library the Python `tokenizers` package wraps), so ids are those of the Python side.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use coeff_tuning::LoadError;

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
            return Err(LoadError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            )
            .into());
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| VlError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self { inner, path })
    }

    /// The tokenizer of a Hugging Face folder: its `tokenizer.json`, or, for a CLIP tokenizer
    /// saved in the slow format (`vocab.json` + `merges.txt` + `tokenizer_config.json`, as the
    /// SDXL repositories ship it), the same tokenizer built as transformers converts it
    /// ([`Self::clip_from_bpe_files`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_file(json);
        }
        if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
            return Self::clip_from_bpe_files(dir);
        }
        Err(VlError::Tokenizer {
            path: dir.to_path_buf(),
            message: "neither tokenizer.json nor vocab.json + merges.txt".into(),
        })
    }

    /// A CLIP tokenizer from `vocab.json`, `merges.txt` and `tokenizer_config.json` (special
    /// tokens, `model_max_length`), exactly as transformers converts the slow CLIP tokenizer:
    /// NFC, whitespace runs -> one space, lower case; split on CLIP's pattern; byte-level BPE
    /// with the `</w>` end-of-word suffix; `<|startoftext|> ... <|endoftext|>`. Padded (with
    /// `pad_token`) and truncated to `model_max_length`, as diffusers' pipelines call it.
    pub fn clip_from_bpe_files(dir: impl AsRef<Path>) -> Result<Self> {
        use serde_json::{json, Value};
        let dir = dir.as_ref();
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| LoadError::io(path, source).into())
        };
        let bad = |name: &str, message: String| VlError::Tokenizer {
            path: dir.join(name),
            message,
        };
        let vocab: serde_json::Map<String, Value> = serde_json::from_str(&read("vocab.json")?)
            .map_err(|e| bad("vocab.json", format!("not a JSON object: {e}")))?;
        let merges: Vec<String> = read("merges.txt")?
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let config: Value = match read("tokenizer_config.json") {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| bad("tokenizer_config.json", format!("not JSON: {e}")))?,
            Err(_) => json!({}),
        };
        // A token may be a string or transformers' AddedToken object.
        let token = |key: &str, default: &str| -> String {
            match config.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_string(),
                _ => default.to_string(),
            }
        };
        let (bos, eos) = (
            token("bos_token", "<|startoftext|>"),
            token("eos_token", "<|endoftext|>"),
        );
        let (unk, pad) = (
            token("unk_token", "<|endoftext|>"),
            token("pad_token", &eos),
        );
        let id = |t: &str| -> Result<u64> {
            vocab
                .get(t)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("vocab.json", format!("no token {t:?} in the vocabulary")))
        };
        let max_len = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| n <= 1 << 20)
            .unwrap_or(77) as usize;
        let special = |content: &str| -> Result<Value> {
            Ok(
                json!({"id": id(content)?, "content": content, "single_word": false,
                      "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
            )
        };
        let mut added = vec![special(&bos)?, special(&eos)?];
        if pad != eos {
            added.insert(0, special(&pad)?);
        }
        let spec = json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": max_len, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": max_len}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": id(&pad)?, "pad_type_id": 0, "pad_token": pad},
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex":
                    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
            "post_processor": {"type": "RobertaProcessing", "sep": [eos, id(&eos)?], "cls": [bos, id(&bos)?],
                               "trim_offsets": false, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| bad("vocab.json", format!("building the CLIP tokenizer: {e}")))?;
        Ok(Self {
            inner,
            path: dir.to_path_buf(),
        })
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
