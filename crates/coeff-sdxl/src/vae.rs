//! diffusers' `AutoencoderKL`: the encoder to a diagonal Gaussian over latents, the decoder
//! back to pixels, and the scaling factor from its `config.json`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use coeff_tuning::checkpoint::{Checkpoint, KeyTable, Kind, Row};
use coeff_tuning::{AttentionInput, LoadError, MultiHeadAttention, MultiHeadAttentionConfig};
use serde_json::Value;

use crate::blocks::{conv, group_norm, ResnetBlock2D, Upsample2D};
use crate::error::{Result, UnetError};

/// The VAE's architecture, from diffusers' `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Channels per level (encoder order).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Groups of every GroupNorm.
    pub norm_num_groups: usize,
    /// Latents are multiplied by this before the UNet (SDXL: 0.13025, SD 1.x: 0.18215).
    pub scaling_factor: f64,
    /// Subtracted before scaling (`None` for SD / SDXL).
    pub shift_factor: Option<f64>,
    /// `quant_conv` after the encoder.
    pub use_quant_conv: bool,
    /// `post_quant_conv` before the decoder.
    pub use_post_quant_conv: bool,
    /// The mid blocks' attention.
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    /// Read `config.json` (a file, or a folder holding one). Fields this crate does not
    /// implement must hold their neutral values; unknown fields are errors.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (path, text) = crate::config::read_config(path.as_ref())?;
        let err = |message: String| UnetError::from(LoadError::config(&path, message));
        let v: Value =
            serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let map = v
            .as_object()
            .ok_or_else(|| err("not a JSON object".into()))?;
        let unsupported = |field: &str, value: &Value, why: &str| UnetError::Unsupported {
            path: path.clone(),
            field: field.into(),
            value: value.to_string(),
            why: why.into(),
        };
        for (key, value) in map {
            match key.as_str() {
                k if k.starts_with('_') => {}
                "in_channels" | "out_channels" | "block_out_channels" | "layers_per_block"
                | "latent_channels" | "norm_num_groups" | "scaling_factor" | "shift_factor"
                | "use_quant_conv" | "use_post_quant_conv" | "mid_block_add_attention"
                | "sample_size" | "force_upcast" => {}
                "act_fn" if value == "silu" => {}
                "latents_mean" | "latents_std" if value.is_null() => {}
                "down_block_types"
                    if value
                        .as_array()
                        .is_some_and(|a| a.iter().all(|t| t == "DownEncoderBlock2D")) => {}
                "up_block_types"
                    if value
                        .as_array()
                        .is_some_and(|a| a.iter().all(|t| t == "UpDecoderBlock2D")) => {}
                "act_fn" | "latents_mean" | "latents_std" | "down_block_types"
                | "up_block_types" => {
                    return Err(unsupported(
                        key,
                        value,
                        "supported: act_fn \"silu\", null latents_mean/std, DownEncoderBlock2D / UpDecoderBlock2D",
                    ))
                }
                _ => return Err(err(format!("unknown field `{key}` (= {value})"))),
            }
        }
        let int = |name: &str, default: usize| -> Result<usize> {
            match map.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                    err(format!("`{name}` must be a non-negative integer, got {v}"))
                }),
            }
        };
        let flag = |name: &str| map.get(name).and_then(Value::as_bool).unwrap_or(true);
        let block_out_channels: Vec<usize> = map
            .get("block_out_channels")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
            .ok_or_else(|| err("`block_out_channels` must be a list of integers".into()))?;
        let groups = int("norm_num_groups", 32)?;
        if block_out_channels.is_empty()
            || groups == 0
            || block_out_channels
                .iter()
                .any(|&c| c == 0 || c % groups != 0)
        {
            return Err(err(format!(
                "`block_out_channels` {block_out_channels:?} must be non-empty and divisible into {groups} groups"
            )));
        }
        Ok(Self {
            in_channels: int("in_channels", 3)?,
            out_channels: int("out_channels", 3)?,
            layers_per_block: int("layers_per_block", 1)?,
            latent_channels: int("latent_channels", 4)?,
            norm_num_groups: groups,
            scaling_factor: map
                .get("scaling_factor")
                .and_then(Value::as_f64)
                .unwrap_or(0.18215),
            shift_factor: map.get("shift_factor").and_then(Value::as_f64),
            use_quant_conv: flag("use_quant_conv"),
            use_post_quant_conv: flag("use_post_quant_conv"),
            mid_block_add_attention: flag("mid_block_add_attention"),
            block_out_channels,
        })
    }

    /// A model with fresh weights.
    pub fn init<B: Backend>(&self, dev: &B::Device) -> AutoencoderKL<B> {
        let ch = &self.block_out_channels;
        let g = self.norm_num_groups;
        let eps = 1e-6;
        let last = *ch.last().expect("checked non-empty");
        let mid = || VaeMidBlock {
            resnets: (0..2)
                .map(|_| ResnetBlock2D::new(last, last, None, g, eps, dev))
                .collect(),
            attentions: if self.mid_block_add_attention {
                vec![VaeAttention {
                    group_norm: group_norm(g, last, eps, dev),
                    attn: MultiHeadAttentionConfig::new(last, 1).init(dev),
                }]
            } else {
                Vec::new()
            },
        };
        let mut out_c = ch[0];
        let down_blocks = (0..ch.len())
            .map(|i| {
                let in_c = out_c;
                out_c = ch[i];
                EncoderBlock {
                    resnets: (0..self.layers_per_block)
                        .map(|j| {
                            ResnetBlock2D::new(
                                if j == 0 { in_c } else { out_c },
                                out_c,
                                None,
                                g,
                                eps,
                                dev,
                            )
                        })
                        .collect(),
                    downsampler: (i + 1 < ch.len()).then(|| EncoderDownsample {
                        conv: Conv2dConfig::new([out_c, out_c], [3, 3])
                            .with_stride([2, 2])
                            .with_padding(PaddingConfig2d::Valid)
                            .init(dev),
                    }),
                }
            })
            .collect();
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut out_c = rev[0];
        let up_blocks = (0..rev.len())
            .map(|i| {
                let in_c = out_c;
                out_c = rev[i];
                DecoderBlock {
                    resnets: (0..=self.layers_per_block)
                        .map(|j| {
                            ResnetBlock2D::new(
                                if j == 0 { in_c } else { out_c },
                                out_c,
                                None,
                                g,
                                eps,
                                dev,
                            )
                        })
                        .collect(),
                    upsampler: (i + 1 < rev.len()).then(|| Upsample2D::new(out_c, dev)),
                }
            })
            .collect();
        let lat = self.latent_channels;
        AutoencoderKL {
            encoder: Encoder {
                conv_in: conv(self.in_channels, ch[0], 3, 1, dev),
                down_blocks,
                mid_block: mid(),
                conv_norm_out: group_norm(g, last, eps, dev),
                conv_out: conv(last, 2 * lat, 3, 1, dev),
            },
            decoder: Decoder {
                conv_in: conv(lat, last, 3, 1, dev),
                mid_block: mid(),
                up_blocks,
                conv_norm_out: group_norm(g, ch[0], eps, dev),
                conv_out: conv(ch[0], self.out_channels, 3, 1, dev),
            },
            quant_conv: self
                .use_quant_conv
                .then(|| conv(2 * lat, 2 * lat, 1, 1, dev)),
            post_quant_conv: self.use_post_quant_conv.then(|| conv(lat, lat, 1, 1, dev)),
            scaling_factor: self.scaling_factor,
            shift_factor: self.shift_factor.unwrap_or(0.0),
        }
    }
}

/// The encoder's downsampler: pad right and bottom by one, then a 3x3 convolution with
/// stride 2 and no padding (diffusers' `Downsample2D(padding=0)`).
#[derive(Module, Debug)]
pub struct EncoderDownsample<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
}

/// Single-head self-attention over the pixels of the mid block, with GroupNorm and residual.
#[derive(Module, Debug)]
pub struct VaeAttention<B: Backend> {
    /// GroupNorm (eps 1e-6).
    pub group_norm: GroupNorm<B>,
    /// One head of width C (`to_q`, `to_k`, `to_v`, `to_out.0`).
    pub attn: MultiHeadAttention<B>,
}

/// `UNetMidBlock2D`: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    /// `resnets.{0,1}`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions.0` (empty without `mid_block_add_attention`).
    pub attentions: Vec<VaeAttention<B>>,
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    /// `resnets.{j}`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `downsamplers.0`.
    pub downsampler: Option<EncoderDownsample<B>>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    /// `resnets.{j}`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `upsamplers.0`.
    pub upsampler: Option<Upsample2D<B>>,
}

/// Pixels -> latent moments.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// 3x3 in.
    pub conv_in: Conv2d<B>,
    /// Highest resolution first.
    pub down_blocks: Vec<EncoderBlock<B>>,
    /// At the lowest resolution.
    pub mid_block: VaeMidBlock<B>,
    /// GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// 3x3 to `2 * latent_channels` (mean, log-variance).
    pub conv_out: Conv2d<B>,
}

/// Latents -> pixels.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// 3x3 in.
    pub conv_in: Conv2d<B>,
    /// At the lowest resolution.
    pub mid_block: VaeMidBlock<B>,
    /// Lowest resolution first.
    pub up_blocks: Vec<DecoderBlock<B>>,
    /// GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// 3x3 to image channels.
    pub conv_out: Conv2d<B>,
}

/// diffusers' `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    /// Pixels -> moments.
    pub encoder: Encoder<B>,
    /// Latents -> pixels.
    pub decoder: Decoder<B>,
    /// 1x1 on the moments.
    pub quant_conv: Option<Conv2d<B>>,
    /// 1x1 on the latents.
    pub post_quant_conv: Option<Conv2d<B>>,
    /// See [`VaeConfig::scaling_factor`].
    pub scaling_factor: f64,
    /// See [`VaeConfig::shift_factor`] (0 when absent).
    pub shift_factor: f64,
}

impl<B: Backend> VaeAttention<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let t = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let out = self.attn.forward(AttentionInput::self_attn(t)).context;
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

impl<B: Backend> VaeMidBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(a) = self.attentions.first() {
            x = a.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// `[B, in, H, W]` pixels in [-1, 1] -> latent `(mean, logvar)`, each
    /// `[B, latent, H / 2^(levels-1), W / 2^(levels-1)]`.
    pub fn encode(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let e = &self.encoder;
        let mut x = e.conv_in.forward(x);
        for block in &e.down_blocks {
            for r in &block.resnets {
                x = r.forward(x, None);
            }
            if let Some(d) = &block.downsampler {
                let [b, c, h, w] = x.dims();
                let padded = Tensor::zeros([b, c, h + 1, w + 1], &x.device())
                    .slice_assign([0..b, 0..c, 0..h, 0..w], x);
                x = d.conv.forward(padded);
            }
        }
        x = e.mid_block.forward(x);
        x = e.conv_out.forward(silu(e.conv_norm_out.forward(x)));
        if let Some(q) = &self.quant_conv {
            x = q.forward(x);
        }
        let [mean, logvar]: [Tensor<B, 4>; 2] = x
            .chunk(2, 1)
            .try_into()
            .expect("the moments have an even channel count");
        // diffusers' DiagonalGaussianDistribution clamps the log-variance.
        (mean, logvar.clamp(-30.0, 20.0))
    }

    /// Latents (unscaled) -> pixels `[B, out, H * 2^(levels-1), W * 2^(levels-1)]`.
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = &self.decoder;
        let mut z = match &self.post_quant_conv {
            Some(p) => p.forward(z),
            None => z,
        };
        z = d.conv_in.forward(z);
        z = d.mid_block.forward(z);
        for block in &d.up_blocks {
            for r in &block.resnets {
                z = r.forward(z, None);
            }
            if let Some(u) = &block.upsampler {
                z = u.forward(z, None);
            }
        }
        d.conv_out.forward(silu(d.conv_norm_out.forward(z)))
    }

    /// Latents as the UNet sees them: `(mean - shift) * scaling_factor`.
    pub fn to_unet(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        (latents - self.shift_factor) * self.scaling_factor
    }

    /// The inverse of [`Self::to_unet`].
    pub fn from_unet(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        latents / self.scaling_factor + self.shift_factor
    }
}

/// Rows of a mid block's attention (`$p` = `encoder.mid_block` / `decoder.mid_block`).
macro_rules! vae_attention_rows {
    ($p:literal) => {
        [
            (
                concat!($p, ".attentions.{j}.group_norm"),
                concat!($p, ".attentions.{j}.group_norm"),
                Kind::Norm,
            ),
            (
                concat!($p, ".attentions.{j}.to_q"),
                concat!($p, ".attentions.{j}.attn.query"),
                Kind::Linear,
            ),
            (
                concat!($p, ".attentions.{j}.to_k"),
                concat!($p, ".attentions.{j}.attn.key"),
                Kind::Linear,
            ),
            (
                concat!($p, ".attentions.{j}.to_v"),
                concat!($p, ".attentions.{j}.attn.value"),
                Kind::Linear,
            ),
            (
                concat!($p, ".attentions.{j}.to_out.0"),
                concat!($p, ".attentions.{j}.attn.output"),
                Kind::Linear,
            ),
        ]
    };
}

const VAE_TOP: &[Row] = &[
    ("encoder.conv_in", "encoder.conv_in", Kind::Conv),
    (
        "encoder.down_blocks.{i}.downsamplers.0.conv",
        "encoder.down_blocks.{i}.downsampler.conv",
        Kind::Conv,
    ),
    ("encoder.conv_norm_out", "encoder.conv_norm_out", Kind::Norm),
    ("encoder.conv_out", "encoder.conv_out", Kind::Conv),
    ("decoder.conv_in", "decoder.conv_in", Kind::Conv),
    (
        "decoder.up_blocks.{i}.upsamplers.0.conv",
        "decoder.up_blocks.{i}.upsampler.conv",
        Kind::Conv,
    ),
    ("decoder.conv_norm_out", "decoder.conv_norm_out", Kind::Norm),
    ("decoder.conv_out", "decoder.conv_out", Kind::Conv),
    ("quant_conv", "quant_conv", Kind::Conv),
    ("post_quant_conv", "post_quant_conv", Kind::Conv),
];

/// The VAE's key table.
pub fn vae_rows() -> Vec<Row> {
    let mut rows = VAE_TOP.to_vec();
    rows.extend(crate::loader::resnet_rows!("encoder.down_blocks.{i}"));
    rows.extend(crate::loader::resnet_rows!("encoder.mid_block"));
    rows.extend(crate::loader::resnet_rows!("decoder.mid_block"));
    rows.extend(crate::loader::resnet_rows!("decoder.up_blocks.{i}"));
    rows.extend(vae_attention_rows!("encoder.mid_block"));
    rows.extend(vae_attention_rows!("decoder.mid_block"));
    rows
}

/// Load a diffusers VAE folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`).
pub fn load_vae<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(VaeConfig, AutoencoderKL<B>)> {
    let dir: PathBuf = dir.as_ref().to_path_buf();
    let config = VaeConfig::from_file(&dir)?;
    let ckpt = Checkpoint::open_dir(&dir)?;
    let rows = vae_rows();
    let table = KeyTable {
        rows: &rows,
        prefixes: &[],
        ignored: &[],
    };
    let model = table.load(config.init(device), &ckpt)?;
    Ok((config, model))
}
