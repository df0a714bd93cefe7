//! Configs read from transformers' own `config.json`, field names as transformers writes them.
//!
//! Each model reads the fields that shape it; a field that would change the computation in a
//! way this crate does not implement (BERT's relative position embeddings, mBART's pre-norm,
//! ...) is an error naming it, never silently ignored. Fields that only matter to training in
//! PyTorch (dropouts, `initializer_range`, `use_cache`, ...) and generic `PretrainedConfig`
//! fields are read without effect. Every size is bounded ([`limits`]) before a model is built,
//! so a `config.json` alone cannot ask for unbounded memory.

use std::path::{Path, PathBuf};

use coeff_tuning::nn::Activation;
use coeff_tuning::LoadError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, VlError};

/// The largest sizes a config may give (checked before anything is allocated).
pub mod limits {
    /// `vocab_size` (the largest public vocabularies are ~256 k).
    pub const MAX_VOCAB: usize = 1 << 21;
    /// `hidden_size` / `d_model` / `intermediate_size` / `*_ffn_dim` / `projection_dim`.
    pub const MAX_WIDTH: usize = 131_072;
    /// Layers of one stack.
    pub const MAX_LAYERS: usize = 256;
    /// `max_position_embeddings`.
    pub const MAX_POSITIONS: usize = 1 << 20;
    /// Parameters of a whole model: 2^32 (16 GiB in f32).
    pub const MAX_PARAMS: u128 = 1 << 32;
}

/// A `config.json` object with typed, error-naming accessors.
pub(crate) struct Fields<'a> {
    pub path: &'a Path,
    pub map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn err(&self, message: impl Into<String>) -> VlError {
        LoadError::config(self.path, message).into()
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn usize(&self, name: &str, limit: usize) -> Result<usize> {
        let v = self
            .get(name)
            .ok_or_else(|| self.err(format!("missing field `{name}`")))?;
        self.check_usize(name, v, limit)
    }

    pub fn usize_or(&self, name: &str, default: usize, limit: usize) -> Result<usize> {
        match self.get(name) {
            Some(v) => self.check_usize(name, v, limit),
            None => Ok(default),
        }
    }

    pub fn opt_usize(&self, name: &str, limit: usize) -> Result<Option<usize>> {
        self.get(name)
            .map(|v| self.check_usize(name, v, limit))
            .transpose()
    }

    fn check_usize(&self, name: &str, v: &Value, limit: usize) -> Result<usize> {
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(format!("`{name}` is {v}, not a non-negative integer")))?;
        if n == 0 || n > limit as u64 {
            return Err(self.err(format!("`{name}` is {n}; expected 1..={limit}")));
        }
        Ok(n as usize)
    }

    /// A token id (may be 0).
    pub fn token(&self, name: &str) -> Result<Option<u32>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n < limits::MAX_VOCAB as u64)
                .map(|n| Some(n as u32))
                .ok_or_else(|| self.err(format!("`{name}` is {v}, not a token id"))),
        }
    }

    pub fn f64_or(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(format!("`{name}` is {v}, not a finite number"))),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{name}` is {v}, not true/false"))),
        }
    }

    pub fn str_or(&self, name: &str, default: &'a str) -> Result<&'a str> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(format!("`{name}` is {v}, not a string"))),
        }
    }

    pub fn activation(&self, name: &str, default: &str) -> Result<Activation> {
        let value = self.str_or(name, default)?;
        Activation::from_hf_name(value).map_err(|m| self.err(format!("`{name}`: {m}")))
    }

    /// Error unless the field is absent or holds one of `neutral` (what this crate computes).
    pub fn require(&self, name: &str, neutral: &[Value], what: &str) -> Result<()> {
        match self.get(name) {
            Some(v) if !neutral.contains(v) => Err(self.err(format!(
                "`{name}` is {v}: {what} is not implemented (supported: {})",
                neutral
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Ok(()),
        }
    }

    pub fn model_type(&self, allowed: &[&str]) -> Result<&'a str> {
        let t = self.str_or("model_type", "")?;
        if !allowed.contains(&t) {
            return Err(self.err(format!(
                "`model_type` is {t:?}; this loader reads {}",
                allowed.join(", ")
            )));
        }
        Ok(t)
    }

    pub fn heads(&self, width: usize, width_name: &str, heads_name: &str) -> Result<usize> {
        let heads = self.usize(heads_name, limits::MAX_WIDTH)?;
        if width % heads != 0 {
            return Err(self.err(format!(
                "`{width_name}` {width} is not divisible by `{heads_name}` {heads}"
            )));
        }
        Ok(heads)
    }
}

/// Read a JSON object from `path`.
pub(crate) fn read_json(path: &Path) -> Result<(PathBuf, Map<String, Value>)> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::io(path, source))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| LoadError::config(path, format!("not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok((path.to_path_buf(), map)),
        _ => Err(LoadError::config(path, "not a JSON object").into()),
    }
}

fn check_params(fields: &Fields, params: u128) -> Result<()> {
    if params > limits::MAX_PARAMS {
        return Err(fields.err(format!(
            "the sizes give {params} parameters, more than the limit {}",
            limits::MAX_PARAMS
        )));
    }
    Ok(())
}

/// BERT (`model_type` `bert`; MiniLM and most sentence-transformers encoders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Token width `D`.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Learned positions.
    pub max_position_embeddings: usize,
    /// Segment (token type) vocabulary.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation (`hidden_act`).
    pub activation: Activation,
    /// Padding id.
    pub pad_token_id: u32,
}

impl BertConfig {
    /// Read `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (path, map) = read_json(path.as_ref())?;
        Self::from_fields(&Fields {
            path: &path,
            map: &map,
        })
    }

    pub(crate) fn from_fields(f: &Fields) -> Result<Self> {
        f.model_type(&["bert"])?;
        f.require(
            "position_embedding_type",
            &["absolute".into()],
            "relative position embeddings",
        )?;
        f.require("is_decoder", &[false.into()], "a causal BERT decoder")?;
        f.require(
            "add_cross_attention",
            &[false.into()],
            "BERT with cross-attention (use the warm-started decoder of the VL model)",
        )?;
        let hidden_size = f.usize("hidden_size", limits::MAX_WIDTH)?;
        let config = Self {
            vocab_size: f.usize("vocab_size", limits::MAX_VOCAB)?,
            hidden_size,
            num_hidden_layers: f.usize("num_hidden_layers", limits::MAX_LAYERS)?,
            num_attention_heads: f.heads(hidden_size, "hidden_size", "num_attention_heads")?,
            intermediate_size: f.usize("intermediate_size", limits::MAX_WIDTH)?,
            max_position_embeddings: f.usize("max_position_embeddings", limits::MAX_POSITIONS)?,
            type_vocab_size: f.usize_or("type_vocab_size", 2, limits::MAX_VOCAB)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-12)?,
            activation: f.activation("hidden_act", "gelu")?,
            pad_token_id: f.token("pad_token_id")?.unwrap_or(0),
        };
        check_params(f, config.num_params())?;
        Ok(config)
    }

    /// Parameters of the model with its pooler, from the sizes alone.
    pub fn num_params(&self) -> u128 {
        let [v, d, i, p, t, l] = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
            self.num_hidden_layers,
        ]
        .map(|x| x as u128);
        (v + p + t) * d + 2 * d + l * (4 * d * d + 4 * d + 2 * d * i + i + d + 4 * d) + d * d + d
    }
}

/// The CLIP text transformer (`clip_text_model`, or the `text_config` of a `clip` config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Token width `D`.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Context length.
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub activation: Activation,
    /// End-of-text id; the pooled token is its first occurrence. transformers' legacy configs
    /// say 2, meaning "the largest id of the row" (OpenAI's EOT is the largest id).
    pub eos_token_id: u32,
    /// Width of `text_projection`, when the checkpoint has one.
    pub projection_dim: Option<usize>,
}

impl ClipTextConfig {
    /// Read a `clip_text_model` or `clip` `config.json` (its `text_config` and
    /// `projection_dim`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (path, map) = read_json(path.as_ref())?;
        let f = Fields {
            path: &path,
            map: &map,
        };
        match f.model_type(&["clip_text_model", "clip"])? {
            "clip" => {
                let text = map
                    .get("text_config")
                    .and_then(Value::as_object)
                    .ok_or_else(|| f.err("a `clip` config without `text_config`"))?;
                let mut config = Self::from_fields(
                    &Fields {
                        path: &path,
                        map: text,
                    },
                    false,
                )?;
                config.projection_dim = f.opt_usize("projection_dim", limits::MAX_WIDTH)?;
                Ok(config)
            }
            _ => Self::from_fields(&f, true),
        }
    }

    pub(crate) fn from_fields(f: &Fields, standalone: bool) -> Result<Self> {
        if standalone {
            f.model_type(&["clip_text_model"])?;
        }
        let hidden_size = f.usize("hidden_size", limits::MAX_WIDTH)?;
        let config = Self {
            vocab_size: f.usize_or("vocab_size", 49_408, limits::MAX_VOCAB)?,
            hidden_size,
            num_hidden_layers: f.usize_or("num_hidden_layers", 12, limits::MAX_LAYERS)?,
            num_attention_heads: f.heads(hidden_size, "hidden_size", "num_attention_heads")?,
            intermediate_size: f.usize("intermediate_size", limits::MAX_WIDTH)?,
            max_position_embeddings: f.usize_or(
                "max_position_embeddings",
                77,
                limits::MAX_POSITIONS,
            )?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-5)?,
            activation: f.activation("hidden_act", "quick_gelu")?,
            eos_token_id: f.token("eos_token_id")?.unwrap_or(49_407),
            projection_dim: if standalone {
                f.opt_usize("projection_dim", limits::MAX_WIDTH)?
            } else {
                None
            },
        };
        check_params(f, config.num_params())?;
        Ok(config)
    }

    /// Parameters, with the projection when there is one.
    pub fn num_params(&self) -> u128 {
        let [v, d, i, p, l] = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.max_position_embeddings,
            self.num_hidden_layers,
        ]
        .map(|x| x as u128);
        let proj = self.projection_dim.map_or(0, |q| q as u128 * d);
        (v + p) * d + l * (4 * d * d + 4 * d + 2 * d * i + i + d + 4 * d) + 2 * d + proj
    }
}

/// BART (`model_type` `bart`): post-norm encoder-decoder with learned positions (offset 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BartConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width `D` of both stacks.
    pub d_model: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Encoder heads.
    pub encoder_attention_heads: usize,
    /// Decoder heads.
    pub decoder_attention_heads: usize,
    /// Encoder MLP width.
    pub encoder_ffn_dim: usize,
    /// Decoder MLP width.
    pub decoder_ffn_dim: usize,
    /// Learned positions (the tables hold two more rows: BART's offset).
    pub max_position_embeddings: usize,
    /// MLP activation (`activation_function`).
    pub activation: Activation,
    /// Token embeddings times `sqrt(d_model)`.
    pub scale_embedding: bool,
    /// Padding id.
    pub pad_token_id: u32,
    /// Begin-of-sequence id.
    pub bos_token_id: u32,
    /// End-of-sequence id.
    pub eos_token_id: u32,
    /// First decoder token.
    pub decoder_start_token_id: u32,
    /// Token forced right after the start token (bart-large's generation forces `<s>`).
    pub forced_bos_token_id: Option<u32>,
    /// Token forced as the last one the length limit allows (bart-large forces `</s>`).
    #[serde(default)]
    pub forced_eos_token_id: Option<u32>,
    /// `lm_head` shares the token embeddings.
    pub tie_word_embeddings: bool,
    /// Epsilon of every LayerNorm (BART: PyTorch's default 1e-5; a BERT warm start: BERT's).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-5
}

impl BartConfig {
    /// Read `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (path, map) = read_json(path.as_ref())?;
        Self::from_fields(&Fields {
            path: &path,
            map: &map,
        })
    }

    pub(crate) fn from_fields(f: &Fields) -> Result<Self> {
        f.model_type(&["bart"])?;
        f.require("normalize_before", &[false.into()], "pre-norm BART (mBART)")?;
        f.require(
            "add_final_layer_norm",
            &[false.into()],
            "a final layer norm (mBART)",
        )?;
        f.require(
            "normalize_embedding",
            &[true.into()],
            "BART without `layernorm_embedding`",
        )?;
        f.require(
            "static_position_embeddings",
            &[false.into()],
            "sinusoidal positions",
        )?;
        let d_model = f.usize("d_model", limits::MAX_WIDTH)?;
        let eos = f.token("eos_token_id")?.unwrap_or(2);
        let config = Self {
            vocab_size: f.usize("vocab_size", limits::MAX_VOCAB)?,
            d_model,
            encoder_layers: f.usize("encoder_layers", limits::MAX_LAYERS)?,
            decoder_layers: f.usize("decoder_layers", limits::MAX_LAYERS)?,
            encoder_attention_heads: f.heads(d_model, "d_model", "encoder_attention_heads")?,
            decoder_attention_heads: f.heads(d_model, "d_model", "decoder_attention_heads")?,
            encoder_ffn_dim: f.usize("encoder_ffn_dim", limits::MAX_WIDTH)?,
            decoder_ffn_dim: f.usize("decoder_ffn_dim", limits::MAX_WIDTH)?,
            max_position_embeddings: f.usize("max_position_embeddings", limits::MAX_POSITIONS)?,
            activation: f.activation("activation_function", "gelu")?,
            scale_embedding: f.bool_or("scale_embedding", false)?,
            pad_token_id: f.token("pad_token_id")?.unwrap_or(1),
            bos_token_id: f.token("bos_token_id")?.unwrap_or(0),
            eos_token_id: eos,
            decoder_start_token_id: f.token("decoder_start_token_id")?.unwrap_or(eos),
            forced_bos_token_id: f.token("forced_bos_token_id")?,
            forced_eos_token_id: f.token("forced_eos_token_id")?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
            layer_norm_eps: default_eps(),
        };
        for (name, id) in [
            ("pad_token_id", config.pad_token_id),
            ("eos_token_id", config.eos_token_id),
            ("decoder_start_token_id", config.decoder_start_token_id),
        ] {
            if id as usize >= config.vocab_size {
                return Err(f.err(format!(
                    "`{name}` {id} is outside the vocabulary (vocab_size {})",
                    config.vocab_size
                )));
            }
        }
        check_params(f, config.num_params())?;
        Ok(config)
    }

    /// Parameters (tied head), from the sizes alone.
    pub fn num_params(&self) -> u128 {
        let [v, d, p] = [
            self.vocab_size,
            self.d_model,
            self.max_position_embeddings + 2,
        ]
        .map(|x| x as u128);
        let [le, ld, fe, fd] = [
            self.encoder_layers,
            self.decoder_layers,
            self.encoder_ffn_dim,
            self.decoder_ffn_dim,
        ]
        .map(|x| x as u128);
        let attn = 4 * d * d + 4 * d;
        let enc = le * (attn + 2 * d * fe + fe + d + 4 * d);
        let dec = ld * (2 * attn + 2 * d * fd + fd + d + 6 * d);
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + 2 * (p * d + 2 * d) + enc + dec + v + head
    }
}
