//! One config for every ViT family, read from the reference libraries' own `config.json`.
//!
//! - Hugging Face `model_type` `vit` (`ViTModel`, `ViTForImageClassification`),
//!   `clip_vision_model` / `clip` (`CLIPVisionModel[WithProjection]`, `CLIPModel`'s vision
//!   tower), `dinov2` (`Dinov2Model`) - field names as `transformers` writes them.
//! - timm: `{"architecture": "vit_small_patch16_224", ...}` (the hub's `config.json`, with
//!   `num_classes`) or `{"architecture": "...", "model_args": {VisionTransformer kwargs}}`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use coeff_tuning::LoadError;

use crate::error::{Result, VitError};

/// Which reference implementation the weights and numerics follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Hugging Face `ViTModel` / `ViTForImageClassification`.
    HfVit,
    /// Hugging Face CLIP vision tower (pre-layernorm, quick-GELU, class embedding, projection).
    Clip,
    /// Hugging Face `Dinov2Model` (layer-scale).
    Dinov2,
    /// timm `VisionTransformer` (fused qkv).
    Timm,
}

/// MLP activation: the core crate's, shared by every model crate.
pub use coeff_tuning::nn::Activation;

/// The largest config [`VitConfig`] accepts. Every size a `config.json` gives is checked
/// against these before a model is built from it, so a config alone cannot ask for more memory
/// than [`MAX_PARAMS`](limits::MAX_PARAMS) parameters; [`load_pretrained`](crate::load_pretrained)
/// further requires the sizes to match the checkpoint's tensors. Listed in
/// `docs/input-checks.md`.
pub mod limits {
    /// `num_hidden_layers` (ViT-22B has 48).
    pub const MAX_LAYERS: usize = 256;
    /// `hidden_size` (ViT-22B: 6144).
    pub const MAX_HIDDEN_SIZE: usize = 16_384;
    /// `intermediate_size` (or `hidden_size * mlp_ratio`).
    pub const MAX_INTERMEDIATE_SIZE: usize = 131_072;
    /// Either side of `image_size`, and `patch_size`.
    pub const MAX_IMAGE_SIDE: usize = 8_192;
    /// `num_channels`.
    pub const MAX_CHANNELS: usize = 64;
    /// Classes of the head (`id2label` / `num_labels` / timm `num_classes`).
    pub const MAX_LABELS: usize = 1_000_000;
    /// CLIP's `projection_dim`.
    pub const MAX_PROJECTION_DIM: usize = 16_384;
    /// Parameters of the whole model, [`VitConfig::num_params`](super::VitConfig::num_params):
    /// 2^32, 16 GiB in f32.
    pub const MAX_PARAMS: u128 = 1 << 32;
}

fn parse_activation(name: &str, path: &Path) -> Result<Activation> {
    Activation::from_hf_name(name)
        .map_err(|message| config_err(path, format!("hidden_act: {message}")))
}

/// Everything needed to build a vision transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Reference implementation.
    pub family: Family,
    /// Token width `D`.
    pub hidden_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// `[height, width]` the stored position embeddings were trained for.
    pub image_size: [usize; 2],
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub activation: Activation,
    /// Bias on query/key/value.
    pub qkv_bias: bool,
    /// Per-channel layer-scale after attention and MLP (DINOv2, some timm models).
    pub layer_scale: bool,
    /// Classification head size, if the checkpoint has one.
    pub num_labels: Option<usize>,
    /// CLIP's visual projection width, if the checkpoint has one.
    pub projection_dim: Option<usize>,
    /// Hugging Face ViT pooler (`dense` + tanh on the class token), if the checkpoint has one.
    pub hf_pooler: bool,
}

impl VitConfig {
    /// Position grid `[rows, cols]` of the stored embeddings.
    pub fn grid(&self) -> [usize; 2] {
        [
            self.image_size[0] / self.patch_size,
            self.image_size[1] / self.patch_size,
        ]
    }

    /// Width of the classification head's input (see `VisionTransformer::head_input`): `2D`
    /// for DINOv2 (class token and mean patch token), `D` otherwise.
    pub fn head_input_size(&self) -> usize {
        match self.family {
            Family::Dinov2 => 2 * self.hidden_size,
            _ => self.hidden_size,
        }
    }

    /// Number of parameters of the model [`VitConfig::init`] builds (no adapters), computed
    /// without overflow from the sizes alone.
    pub fn num_params(&self) -> u128 {
        let [d, i, c, p] = [
            self.hidden_size,
            self.intermediate_size,
            self.num_channels,
            self.patch_size,
        ]
        .map(|v| v as u128);
        let clip = self.family == Family::Clip;
        let [rows, cols] = self.grid().map(|v| v as u128);
        let norm = 2 * d;
        let embed = d * c * p * p + if clip { 0 } else { d } + d + (1 + rows * cols) * d;
        let attn = 4 * d * d + if self.qkv_bias { 3 * d } else { 0 } + d;
        let mlp = d * i + i + i * d + d;
        let ls = if self.layer_scale { 2 * d } else { 0 };
        let block = 2 * norm + attn + mlp + ls;
        let norms = if clip { 2 * norm } else { norm };
        let pooler = if self.hf_pooler { d * d + d } else { 0 };
        let projection = self.projection_dim.map_or(0, |q| d * q as u128);
        let head_in = self.head_input_size() as u128;
        let head = self
            .num_labels
            .map_or(0, |n| head_in * n as u128 + n as u128);
        embed + self.num_hidden_layers as u128 * block + norms + pooler + projection + head
    }

    /// Read a `config.json` of any supported family (Hugging Face or timm).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::io(path, source))?;
        Self::from_json_str(&text, path)
    }

    /// Parse a config; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| config_err(path, format!("not valid JSON: {e}")))?;
        if v.get("model_type").is_some() {
            Self::from_hf(&v, path)
        } else if v.get("architecture").is_some() {
            Self::from_timm(&v, path)
        } else {
            Err(config_err(
                path,
                "neither `model_type` (Hugging Face) nor `architecture` (timm) is present".into(),
            ))
        }
    }

    fn from_hf(v: &Value, path: &Path) -> Result<Self> {
        let model_type = str_field(v, "model_type", path)?;
        let (family, c) = match model_type {
            "vit" => (Family::HfVit, v),
            "dinov2" => (Family::Dinov2, v),
            "clip_vision_model" => (Family::Clip, v),
            "clip" => (
                Family::Clip,
                v.get("vision_config")
                    .ok_or_else(|| config_err(path, "model_type `clip` without `vision_config`".into()))?,
            ),
            other => {
                return Err(config_err(
                    path,
                    format!("model_type `{other}` is not a supported vision transformer (vit, clip, clip_vision_model, dinov2)"),
                ))
            }
        };
        let hidden_size = usize_field(c, "hidden_size", path, None)?;
        let num_attention_heads = usize_field(c, "num_attention_heads", path, None)?;
        let intermediate_size = match family {
            Family::Dinov2 => {
                if c.get("use_swiglu_ffn").and_then(Value::as_bool) == Some(true) {
                    return Err(config_err(
                        path,
                        "use_swiglu_ffn = true (DINOv2 giant) is not supported yet".into(),
                    ));
                }
                let ratio = f64_field(c, "mlp_ratio", path, 4.0)?;
                intermediate_from_ratio(hidden_size, ratio, path)?
            }
            _ => usize_field(c, "intermediate_size", path, None)?,
        };
        let image_size = pair_field(c, "image_size", path, [224, 224])?;
        let patch_size = square_patch(pair_field(c, "patch_size", path, [16, 16])?, path)?;
        let architectures: Vec<&str> = v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let num_labels = if architectures
            .iter()
            .any(|a| a.ends_with("ForImageClassification"))
        {
            let n = v
                .get("id2label")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .or_else(|| {
                    v.get("num_labels")
                        .and_then(Value::as_u64)
                        .map(|n| n as usize)
                })
                .unwrap_or(2);
            Some(n)
        } else {
            None
        };
        let projection_dim = match family {
            Family::Clip => v
                .get("projection_dim")
                .or_else(|| c.get("projection_dim"))
                .and_then(Value::as_u64)
                .map(|n| n as usize),
            _ => None,
        };
        let default_eps = match family {
            Family::HfVit => 1e-12,
            Family::Clip => 1e-5,
            _ => 1e-6,
        };
        let default_act = match family {
            Family::Clip => "quick_gelu",
            _ => "gelu",
        };
        let config = VitConfig {
            family,
            hidden_size,
            num_hidden_layers: usize_field(c, "num_hidden_layers", path, None)?,
            num_attention_heads,
            intermediate_size,
            patch_size,
            num_channels: usize_field(c, "num_channels", path, Some(3))?,
            image_size,
            layer_norm_eps: f64_field(c, "layer_norm_eps", path, default_eps)?,
            activation: parse_activation(
                c.get("hidden_act")
                    .and_then(Value::as_str)
                    .unwrap_or(default_act),
                path,
            )?,
            qkv_bias: c.get("qkv_bias").and_then(Value::as_bool).unwrap_or(true),
            layer_scale: family == Family::Dinov2,
            num_labels,
            projection_dim,
            hf_pooler: family == Family::HfVit && architectures.iter().all(|a| *a == "ViTModel"),
        };
        config.validate(path)
    }

    fn from_timm(v: &Value, path: &Path) -> Result<Self> {
        let arch = str_field(v, "architecture", path)?;
        let base = arch.split('.').next().unwrap_or(arch);
        // Named timm architectures: (width, depth, heads, patch, image).
        let named = match base {
            "vit_tiny_patch16_224" => Some((192, 12, 3, 16, 224)),
            "vit_small_patch16_224" => Some((384, 12, 6, 16, 224)),
            "vit_base_patch16_224" => Some((768, 12, 12, 16, 224)),
            "vit_large_patch16_224" => Some((1024, 24, 16, 16, 224)),
            "vit_small_patch16_384" => Some((384, 12, 6, 16, 384)),
            "vit_base_patch16_384" => Some((768, 12, 12, 16, 384)),
            "vit_base_patch32_224" => Some((768, 12, 12, 32, 224)),
            _ => None,
        };
        let args = v.get("model_args").cloned().unwrap_or(Value::Null);
        let get = |key: &str| args.get(key).or_else(|| v.get(key));
        let (mut width, mut depth, mut heads, mut patch, image) =
            named.unwrap_or((0, 0, 0, 16, 224));
        if named.is_none() && args.is_null() {
            return Err(config_err(
                path,
                format!("timm architecture `{arch}` is not in the built-in table; give its `model_args`"),
            ));
        }
        let u = |key: &str, cur: usize| -> Result<usize> {
            match get(key) {
                None => Ok(cur),
                Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
                    config_err(
                        path,
                        format!("field `{key}` must be a non-negative integer, got {x}"),
                    )
                }),
            }
        };
        width = u("embed_dim", width)?;
        depth = u("depth", depth)?;
        heads = u("num_heads", heads)?;
        if let Some(p) = get("patch_size") {
            patch = square_patch(pair(p, "patch_size", path)?, path)?;
        }
        let [image, image_w] = match get("img_size") {
            Some(x) => pair(x, "img_size", path)?,
            // `pretrained_cfg.input_size` is `[channels, height, width]`.
            None => match v
                .get("pretrained_cfg")
                .and_then(|p| p.get("input_size"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .skip(1)
                        .filter_map(Value::as_u64)
                        .collect::<Vec<_>>()
                }) {
                Some(hw) if hw.len() == 2 => [hw[0] as usize, hw[1] as usize],
                _ => [image, image],
            },
        };
        let mlp_ratio = match get("mlp_ratio") {
            None => 4.0,
            Some(x) => x.as_f64().ok_or_else(|| {
                config_err(path, format!("field `mlp_ratio` must be a number, got {x}"))
            })?,
        };
        if get("class_token").and_then(Value::as_bool) == Some(false) {
            return Err(config_err(
                path,
                "timm class_token = false is not supported yet".into(),
            ));
        }
        if let Some(pool) = get("global_pool").and_then(Value::as_str) {
            if pool != "token" {
                return Err(config_err(
                    path,
                    format!("timm global_pool `{pool}` is not supported yet (token)"),
                ));
            }
        }
        let num_classes = u("num_classes", 1000)?;
        let config = VitConfig {
            family: Family::Timm,
            hidden_size: width,
            num_hidden_layers: depth,
            num_attention_heads: heads,
            intermediate_size: intermediate_from_ratio(width, mlp_ratio, path)?,
            patch_size: patch,
            num_channels: u("in_chans", 3)?,
            image_size: [image, image_w],
            layer_norm_eps: 1e-6,
            activation: Activation::Gelu,
            qkv_bias: get("qkv_bias").and_then(Value::as_bool).unwrap_or(true),
            layer_scale: get("init_values").map(|x| !x.is_null()).unwrap_or(false),
            num_labels: (num_classes > 0).then_some(num_classes),
            projection_dim: None,
            hf_pooler: false,
        };
        config.validate(path)
    }

    /// Check a config without a file name: every size positive and within [`limits`], the
    /// epsilon positive and finite, the widths consistent. [`VitConfig::from_file`] runs it on
    /// every config it reads.
    pub fn check(&self) -> Result<()> {
        self.clone().validate(Path::new("<config>")).map(|_| ())
    }

    fn validate(self, path: &Path) -> Result<Self> {
        use limits::*;
        let fail = |m: String| Err(config_err(path, m));
        for (field, value, max) in [
            ("hidden_size", self.hidden_size, MAX_HIDDEN_SIZE),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            (
                "num_attention_heads",
                self.num_attention_heads,
                self.hidden_size.max(1),
            ),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE_SIZE,
            ),
            ("patch_size", self.patch_size, MAX_IMAGE_SIDE),
            ("num_channels", self.num_channels, MAX_CHANNELS),
            ("image_size[0]", self.image_size[0], MAX_IMAGE_SIDE),
            ("image_size[1]", self.image_size[1], MAX_IMAGE_SIDE),
            ("num_labels", self.num_labels.unwrap_or(1), MAX_LABELS),
            (
                "projection_dim",
                self.projection_dim.unwrap_or(1),
                MAX_PROJECTION_DIM,
            ),
        ] {
            if value == 0 {
                return fail(format!("`{field}` must be positive, got 0"));
            }
            if value > max {
                return fail(format!(
                    "`{field}` is {value}, above the limit of {max} (see docs/input-checks.md)"
                ));
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return fail(format!(
                "`layer_norm_eps` must be a positive finite number, got {}",
                self.layer_norm_eps
            ));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return fail(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.image_size[0] % self.patch_size != 0 || self.image_size[1] % self.patch_size != 0 {
            return fail(format!(
                "image_size {:?} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        let params = self.num_params();
        if params > MAX_PARAMS {
            return fail(format!(
                "these sizes make a model of {params} parameters, above the limit of {MAX_PARAMS} \
                 (hidden_size {}, num_hidden_layers {}, intermediate_size {}, image_size {:?}, \
                 patch_size {}; see docs/input-checks.md)",
                self.hidden_size,
                self.num_hidden_layers,
                self.intermediate_size,
                self.image_size,
                self.patch_size
            ));
        }
        Ok(self)
    }
}

/// `hidden_size * mlp_ratio` (DINOv2, timm), with the ratio checked first: a NaN, negative or
/// huge ratio would otherwise saturate the cast.
fn intermediate_from_ratio(hidden: usize, ratio: f64, path: &Path) -> Result<usize> {
    if hidden > limits::MAX_HIDDEN_SIZE {
        return Err(config_err(
            path,
            format!(
                "`hidden_size` is {hidden}, above the limit of {} (see docs/input-checks.md)",
                limits::MAX_HIDDEN_SIZE
            ),
        ));
    }
    let width = hidden as f64 * ratio;
    if !(ratio.is_finite() && ratio > 0.0 && width >= 1.0) {
        return Err(config_err(
            path,
            format!("`mlp_ratio` must be a positive number, got {ratio}"),
        ));
    }
    if width > limits::MAX_INTERMEDIATE_SIZE as f64 {
        return Err(config_err(
            path,
            format!(
                "`mlp_ratio` {ratio} makes an MLP of width {width} (hidden_size {hidden}), above the limit of {} (see docs/input-checks.md)",
                limits::MAX_INTERMEDIATE_SIZE
            ),
        ));
    }
    Ok(width as usize)
}

fn f64_field(v: &Value, key: &str, path: &Path, default: f64) -> Result<f64> {
    match v.get(key) {
        None => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| config_err(path, format!("field `{key}` must be a number, got {x}"))),
    }
}

fn config_err(path: &Path, message: String) -> VitError {
    LoadError::config(path, message).into()
}

/// An int `n` (meaning `[n, n]`) or an `[h, w]` pair, as `transformers` and timm write sizes.
fn pair(x: &Value, key: &str, path: &Path) -> Result<[usize; 2]> {
    let int = |x: &Value| x.as_u64().map(|n| n as usize);
    match x {
        Value::Array(a) => match a.as_slice() {
            [h, w] => int(h).zip(int(w)).map(|(h, w)| [h, w]),
            _ => None,
        },
        x => int(x).map(|n| [n, n]),
    }
    .ok_or_else(|| {
        config_err(
            path,
            format!("field `{key}` must be a non-negative integer or an [h, w] pair, got {x}"),
        )
    })
}

fn pair_field(v: &Value, key: &str, path: &Path, default: [usize; 2]) -> Result<[usize; 2]> {
    v.get(key).map_or(Ok(default), |x| pair(x, key, path))
}

/// The model's patches are square; `[p, p]` is accepted, `[ph, pw]` with `ph != pw` is not.
fn square_patch([h, w]: [usize; 2], path: &Path) -> Result<usize> {
    if h == w {
        Ok(h)
    } else {
        Err(config_err(
            path,
            format!("patch_size [{h}, {w}] is not square; only square patches are supported"),
        ))
    }
}

fn str_field<'a>(v: &'a Value, key: &str, path: &Path) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| config_err(path, format!("missing string field `{key}`")))
}

fn usize_field(v: &Value, key: &str, path: &Path, default: Option<usize>) -> Result<usize> {
    match v.get(key) {
        Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
            config_err(
                path,
                format!("field `{key}` must be a non-negative integer, got {x}"),
            )
        }),
        None => default.ok_or_else(|| config_err(path, format!("missing field `{key}`"))),
    }
}
