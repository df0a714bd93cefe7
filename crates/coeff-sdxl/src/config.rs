//! `UNet2DConditionModel`'s `config.json`, as diffusers writes it.
//!
//! Every field diffusers writes is read: the ones this crate implements become [`UnetConfig`]
//! fields, the ones that switch on something it does not implement must hold their neutral
//! value (an error names the field and its value otherwise), and a field this crate does not
//! know is an error too - never silently ignored. Keys starting with `_` (`_class_name`,
//! `_diffusers_version`, `_name_or_path`) are metadata.

use std::path::{Path, PathBuf};

use coeff_tuning::LoadError;
use serde_json::{Map, Value};

use crate::error::{Result, UnetError};

/// A down block of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    /// `DownBlock2D`: resnets only.
    Down,
    /// `CrossAttnDownBlock2D`: resnets, each followed by a transformer.
    CrossAttnDown,
}

/// An up block of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    /// `UpBlock2D`.
    Up,
    /// `CrossAttnUpBlock2D`.
    CrossAttnUp,
}

/// SDXL's `addition_embed_type = "text_time"`: pooled text embeddings and size/crop ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextTimeConfig {
    /// `addition_time_embed_dim`: sinusoid width of each of the 6 time ids.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim` = pooled text width + 6 * `time_embed_dim`.
    pub input_dim: usize,
}

/// The UNet's architecture, resolved per level (index 0 = the highest resolution).
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Channels of each level.
    pub block_out_channels: Vec<usize>,
    /// Down block of each level.
    pub down_block_types: Vec<DownBlockType>,
    /// Up block of each level, in the order they run (lowest resolution first).
    pub up_block_types: Vec<UpBlockType>,
    /// Resnets per down block, per level (up blocks have one more).
    pub layers_per_block: Vec<usize>,
    /// Transformer blocks in each `Transformer2DModel`, per level; the mid block uses the
    /// last level's.
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per level. diffusers' legacy `attention_head_dim` means this (the number
    /// of heads) unless `num_attention_heads` is given.
    pub num_attention_heads: Vec<usize>,
    /// Width of the text context of every cross-attention.
    pub cross_attention_dim: usize,
    /// Linear `proj_in` / `proj_out` of the transformers (SDXL, SD 2.x); 1x1 convolutions
    /// otherwise (SD 1.x).
    pub use_linear_projection: bool,
    /// Groups of every GroupNorm.
    pub norm_num_groups: usize,
    /// Epsilon of the resnets' and the output GroupNorms (the transformers' GroupNorm uses
    /// 1e-6, their LayerNorms 1e-5, as diffusers does).
    pub norm_eps: f64,
    /// Timestep sinusoid as `[cos, sin]` (true) or `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// `freq_shift` of the timestep sinusoid.
    pub freq_shift: f64,
    /// SDXL's added conditioning.
    pub text_time: Option<TextTimeConfig>,
    /// diffusers computes attention scores in f32 for half-precision models; this crate
    /// computes them in the model's dtype (identical for f32 models).
    pub upcast_attention: bool,
    /// The latent side the model was trained at (informational).
    pub sample_size: Option<usize>,
}

impl UnetConfig {
    /// Width of the time embedding (`4 * block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    /// Transformer blocks of the whole UNet: per level, one `Transformer2DModel` per resnet of
    /// a cross-attention down block (`layers_per_block`) and up block (`layers_per_block + 1`),
    /// plus the mid block's; each holds `transformer_layers_per_block` blocks.
    pub fn transformer_blocks(&self) -> usize {
        let levels = self.block_out_channels.len();
        let down: usize = (0..levels)
            .filter(|&l| self.down_block_types[l] == DownBlockType::CrossAttnDown)
            .map(|l| self.layers_per_block[l] * self.transformer_layers_per_block[l])
            .sum();
        let up: usize = (0..levels)
            .filter(|&i| self.up_block_types[i] == UpBlockType::CrossAttnUp)
            .map(|i| {
                let l = levels - 1 - i;
                (self.layers_per_block[l] + 1) * self.transformer_layers_per_block[l]
            })
            .sum();
        down + self.transformer_layers_per_block[levels - 1] + up
    }

    /// Attention layers (a self- and a cross-attention per transformer block): 140 in SDXL,
    /// 32 in SD 1.5.
    pub fn attention_layers(&self) -> usize {
        2 * self.transformer_blocks()
    }

    /// Read `config.json` (a file, or a folder holding one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (path, text) = read_config(path.as_ref())?;
        Self::from_json(&text, &path)
    }

    /// Parse the text of a `config.json`; `path` only names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| LoadError::config(path, format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(LoadError::config(path, "not a JSON object").into());
        };
        Reader {
            map,
            path: path.to_path_buf(),
        }
        .read()
    }
}

/// The text of `config.json` at `path` (a file, or a folder holding one), and the file's path.
pub(crate) fn read_config(path: &Path) -> Result<(PathBuf, String)> {
    let path = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::io(&path, source))?;
    Ok((path, text))
}

/// Fields this crate reads into [`UnetConfig`].
const IMPLEMENTED: &[&str] = &[
    "in_channels",
    "out_channels",
    "block_out_channels",
    "down_block_types",
    "up_block_types",
    "layers_per_block",
    "transformer_layers_per_block",
    "attention_head_dim",
    "num_attention_heads",
    "cross_attention_dim",
    "use_linear_projection",
    "norm_num_groups",
    "norm_eps",
    "flip_sin_to_cos",
    "freq_shift",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
    "upcast_attention",
    "sample_size",
    "addition_embed_type_num_heads",
];

/// Fields whose only supported value is diffusers' neutral one: `(name, allowed values)`.
const NEUTRAL: &[(&str, &[&str])] = &[
    ("act_fn", &["\"silu\""]),
    ("attention_type", &["\"default\""]),
    ("center_input_sample", &["false"]),
    ("class_embed_type", &["null"]),
    ("class_embeddings_concat", &["false"]),
    ("conv_in_kernel", &["3"]),
    ("conv_out_kernel", &["3"]),
    ("cross_attention_norm", &["null"]),
    ("downsample_padding", &["1"]),
    ("dropout", &["0.0", "0"]),
    ("dual_cross_attention", &["false"]),
    ("encoder_hid_dim", &["null"]),
    ("encoder_hid_dim_type", &["null"]),
    ("mid_block_only_cross_attention", &["null", "false"]),
    ("mid_block_scale_factor", &["1", "1.0"]),
    ("mid_block_type", &["\"UNetMidBlock2DCrossAttn\""]),
    ("num_class_embeds", &["null"]),
    ("only_cross_attention", &["false"]),
    ("resnet_out_scale_factor", &["1", "1.0"]),
    ("resnet_skip_time_act", &["false"]),
    ("resnet_time_scale_shift", &["\"default\""]),
    ("reverse_transformer_layers_per_block", &["null"]),
    ("time_cond_proj_dim", &["null"]),
    ("time_embedding_act_fn", &["null"]),
    ("time_embedding_dim", &["null"]),
    ("time_embedding_type", &["\"positional\""]),
    ("timestep_post_act", &["null"]),
];

struct Reader {
    map: Map<String, Value>,
    path: PathBuf,
}

impl Reader {
    fn err(&self, message: String) -> UnetError {
        LoadError::config(&self.path, message).into()
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn usize_or(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                self.err(format!("`{name}` must be a non-negative integer, got {v}"))
            }),
        }
    }

    fn f64_or(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("`{name}` must be a number, got {v}"))),
        }
    }

    fn bool_or(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{name}` must be true or false, got {v}"))),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>> {
        let v = self
            .get(name)
            .ok_or_else(|| self.err(format!("`{name}` is missing")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
            .ok_or_else(|| self.err(format!("`{name}` must be a list of strings, got {v}")))
    }

    /// An int for every level, or a list with one per level.
    fn per_level(&self, name: &str, levels: usize, default: Option<usize>) -> Result<Vec<usize>> {
        let Some(v) = self.get(name) else {
            return default
                .map(|d| vec![d; levels])
                .ok_or_else(|| self.err(format!("`{name}` is missing")));
        };
        if let Some(n) = v.as_u64() {
            return Ok(vec![n as usize; levels]);
        }
        let list: Option<Vec<usize>> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect());
        match list {
            Some(l) if l.len() == levels => Ok(l),
            Some(l) => Err(self.err(format!(
                "`{name}` has {} entries for {levels} levels (`block_out_channels`)",
                l.len()
            ))),
            None => Err(self.err(format!(
                "`{name}` must be an integer or a list of integers (nested lists are not supported), got {v}"
            ))),
        }
    }

    fn read(self) -> Result<UnetConfig> {
        for (key, value) in &self.map {
            if key.starts_with('_') || IMPLEMENTED.contains(&key.as_str()) {
                continue;
            }
            let Some((_, allowed)) = NEUTRAL.iter().find(|(n, _)| n == key) else {
                return Err(self.err(format!(
                    "unknown field `{key}` (= {value}); this crate implements diffusers' UNet2DConditionModel fields and refuses others rather than ignore them"
                )));
            };
            let shown = value.to_string();
            // `only_cross_attention` may also be a list of `false`.
            let all_false_list = value
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x == &Value::Bool(false)));
            let neutral = allowed.contains(&shown.as_str())
                || (key == "only_cross_attention" && all_false_list);
            if !neutral {
                return Err(UnetError::Unsupported {
                    path: self.path.clone(),
                    field: key.clone(),
                    value: shown,
                    why: format!("supported: {}", allowed.join(" or ")),
                });
            }
        }

        let block_out_channels: Vec<usize> = {
            let v = self
                .get("block_out_channels")
                .ok_or_else(|| self.err("`block_out_channels` is missing".into()))?;
            v.as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
                .ok_or_else(|| {
                    self.err(format!(
                        "`block_out_channels` must be a list of integers, got {v}"
                    ))
                })?
        };
        let levels = block_out_channels.len();
        if levels == 0 || block_out_channels.contains(&0) {
            return Err(self.err(format!(
                "`block_out_channels` must be non-empty and positive, got {block_out_channels:?}"
            )));
        }
        let down_block_types = self
            .strings("down_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "DownBlock2D" => Ok(DownBlockType::Down),
                "CrossAttnDownBlock2D" => Ok(DownBlockType::CrossAttnDown),
                other => Err(UnetError::Unsupported {
                    path: self.path.clone(),
                    field: "down_block_types".into(),
                    value: format!("\"{other}\""),
                    why: "supported: DownBlock2D, CrossAttnDownBlock2D".into(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = self
            .strings("up_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "UpBlock2D" => Ok(UpBlockType::Up),
                "CrossAttnUpBlock2D" => Ok(UpBlockType::CrossAttnUp),
                other => Err(UnetError::Unsupported {
                    path: self.path.clone(),
                    field: "up_block_types".into(),
                    value: format!("\"{other}\""),
                    why: "supported: UpBlock2D, CrossAttnUpBlock2D".into(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        if down_block_types.len() != levels || up_block_types.len() != levels {
            return Err(self.err(format!(
                "{} down and {} up block types for {levels} levels (`block_out_channels`)",
                down_block_types.len(),
                up_block_types.len()
            )));
        }
        // diffusers' legacy naming: `attention_head_dim` is the number of heads unless
        // `num_attention_heads` is given.
        let num_attention_heads = match self.get("num_attention_heads") {
            Some(_) => self.per_level("num_attention_heads", levels, None)?,
            None => self.per_level("attention_head_dim", levels, Some(8))?,
        };
        let norm_num_groups = self.usize_or("norm_num_groups", 32)?;
        for (i, (&c, &h)) in block_out_channels
            .iter()
            .zip(&num_attention_heads)
            .enumerate()
        {
            if norm_num_groups == 0 || c % norm_num_groups != 0 {
                return Err(self.err(format!(
                    "level {i}: {c} channels are not divisible into `norm_num_groups` = {norm_num_groups} groups"
                )));
            }
            if h == 0 || c % h != 0 {
                return Err(self.err(format!(
                    "level {i}: {c} channels are not divisible into {h} attention heads"
                )));
            }
        }
        let cross_attention_dim = match self.get("cross_attention_dim") {
            None => 1280,
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| UnetError::Unsupported {
                    path: self.path.clone(),
                    field: "cross_attention_dim".into(),
                    value: v.to_string(),
                    why: "one integer for every level".into(),
                })?,
        };
        let text_time = match self.get("addition_embed_type") {
            None => None,
            Some(Value::String(s)) if s == "text_time" => Some(TextTimeConfig {
                time_embed_dim: self.usize_or("addition_time_embed_dim", 0)?,
                input_dim: self.usize_or("projection_class_embeddings_input_dim", 0)?,
            }),
            Some(v) => {
                return Err(UnetError::Unsupported {
                    path: self.path.clone(),
                    field: "addition_embed_type".into(),
                    value: v.to_string(),
                    why: "supported: null or \"text_time\"".into(),
                })
            }
        };
        if let Some(tt) = text_time {
            if tt.time_embed_dim == 0 || tt.input_dim <= 6 * tt.time_embed_dim {
                return Err(self.err(format!(
                    "text_time needs `addition_time_embed_dim` > 0 and `projection_class_embeddings_input_dim` > 6 x it, got {} and {}",
                    tt.time_embed_dim, tt.input_dim
                )));
            }
        }
        Ok(UnetConfig {
            in_channels: self.usize_or("in_channels", 4)?,
            out_channels: self.usize_or("out_channels", 4)?,
            layers_per_block: self.per_level("layers_per_block", levels, Some(2))?,
            transformer_layers_per_block: self.per_level(
                "transformer_layers_per_block",
                levels,
                Some(1),
            )?,
            num_attention_heads,
            cross_attention_dim,
            use_linear_projection: self.bool_or("use_linear_projection", false)?,
            norm_num_groups,
            norm_eps: self.f64_or("norm_eps", 1e-5)?,
            flip_sin_to_cos: self.bool_or("flip_sin_to_cos", true)?,
            freq_shift: self.f64_or("freq_shift", 0.0)?,
            text_time,
            upcast_attention: self.bool_or("upcast_attention", false)?,
            sample_size: self
                .get("sample_size")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
            block_out_channels,
            down_block_types,
            up_block_types,
        })
    }
}
