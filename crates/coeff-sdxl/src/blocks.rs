//! The UNet's building blocks, named as diffusers names them (so the key table is short):
//! timestep embeddings, `ResnetBlock2D`, `Downsample2D`, `Upsample2D` and
//! `Transformer2DModel` (whose blocks are the core crate's `TransformerBlock`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::nn::{Activation, BlockInput, TransformerBlock, TransformerBlockConfig};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, PeftConv2d, PeftResult, Site};

pub(crate) fn conv<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    dev: &B::Device,
) -> Conv2d<B> {
    let pad = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(dev)
}

fn peft_conv<B: Backend>(c_in: usize, c_out: usize, k: usize, dev: &B::Device) -> PeftConv2d<B> {
    conv(c_in, c_out, k, 1, dev).into()
}

pub(crate) fn group_norm<B: Backend>(
    groups: usize,
    channels: usize,
    eps: f64,
    dev: &B::Device,
) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(dev)
}

/// diffusers' `get_timestep_embedding`: `t: [B]` -> `[B, dim]` sinusoids with frequencies
/// `exp(-ln(10000) * i / (dim/2 - shift))`, as `[sin, cos]` or, flipped, `[cos, sin]`.
pub fn timestep_embedding<B: Backend>(
    t: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
) -> Tensor<B, 2> {
    let half = dim / 2;
    // The exponent in f32 exactly as diffusers computes it (`-ln(10000) * arange / (half - shift)`).
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((-(10000f64.ln()) as f32 * i as f32) / (half as f32 - shift as f32)).exp())
        .collect();
    let device = t.device();
    let n = t.dims()[0];
    let freqs = Tensor::<B, 2>::from_data(TensorData::new(freqs, [1, half]), &device);
    let args = t.reshape([n, 1]) * freqs;
    let (first, second) = if flip_sin_to_cos {
        (args.clone().cos(), args.sin())
    } else {
        (args.clone().sin(), args.cos())
    };
    let emb = Tensor::cat(vec![first, second], 1);
    if dim % 2 == 1 {
        Tensor::cat(vec![emb, Tensor::zeros([n, 1], &device)], 1)
    } else {
        emb
    }
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// `[d_in] -> [d_out]`.
    pub linear_1: Linear<B>,
    /// `[d_out] -> [d_out]`.
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    /// Fresh weights.
    pub fn new(d_in: usize, d_out: usize, dev: &B::Device) -> Self {
        Self {
            linear_1: LinearConfig::new(d_in, d_out).init(dev),
            linear_2: LinearConfig::new(d_out, d_out).init(dev),
        }
    }

    /// `[B, d_in] -> [B, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

/// `ResnetBlock2D` (time-scale-shift "default", output scale 1):
/// `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb)))))`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// GroupNorm over the input channels.
    pub norm1: GroupNorm<B>,
    /// 3x3, in -> out (a LoRA site).
    pub conv1: PeftConv2d<B>,
    /// Time embedding -> out channels (`None` in the VAE's resnets).
    pub time_emb_proj: Option<Linear<B>>,
    /// GroupNorm over the output channels.
    pub norm2: GroupNorm<B>,
    /// 3x3, out -> out (a LoRA site).
    pub conv2: PeftConv2d<B>,
    /// 1x1 when the channel count changes.
    pub conv_shortcut: Option<PeftConv2d<B>>,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// Fresh weights; `temb`: width of the time embedding, `None` for no time input (VAE).
    pub fn new(
        c_in: usize,
        c_out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        dev: &B::Device,
    ) -> Self {
        Self {
            norm1: group_norm(groups, c_in, eps, dev),
            conv1: peft_conv(c_in, c_out, 3, dev),
            time_emb_proj: temb.map(|t| LinearConfig::new(t, c_out).init(dev)),
            norm2: group_norm(groups, c_out, eps, dev),
            conv2: peft_conv(c_out, c_out, 3, dev),
            conv_shortcut: (c_in != c_out).then(|| peft_conv(c_in, c_out, 1, dev)),
        }
    }

    /// `x: [B, C_in, H, W]`, `temb: [B, T]` (used when the block has a time projection) ->
    /// `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h + proj.forward(silu(temb)).unsqueeze_dims::<4>(&[2, 3]);
        }
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        x + h
    }
}

impl<B: Backend> Adaptable<B> for ResnetBlock2D<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
    ) -> PeftResult<()> {
        self.conv1.visit_sites(&join(path, "conv1"), f)?;
        self.conv2.visit_sites(&join(path, "conv2"), f)?;
        if let Some(c) = self.conv_shortcut.as_mut() {
            c.visit_sites(&join(path, "conv_shortcut"), f)?;
        }
        Ok(())
    }
}

/// `Downsample2D`: a 3x3 convolution with stride 2 (padding 1).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
}

/// `Upsample2D`: nearest-neighbour 2x, then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// Fresh weights.
    pub fn new(c: usize, dev: &B::Device) -> Self {
        Self {
            conv: conv(c, c, 3, 2, dev),
        }
    }

    /// `[B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

impl<B: Backend> Upsample2D<B> {
    /// Fresh weights.
    pub fn new(c: usize, dev: &B::Device) -> Self {
        Self {
            conv: conv(c, c, 3, 1, dev),
        }
    }

    /// `[B, C, H, W] -> [B, C, 2H, 2W]`; `size` overrides the output side (diffusers' up
    /// blocks pass the skip connection's size when a side was odd).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let up = match size {
            Some(s) if s != [2 * h, 2 * w] => burn::tensor::module::interpolate(
                x,
                s,
                burn::tensor::ops::InterpolateOptions::new(
                    burn::tensor::ops::InterpolateMode::Nearest,
                ),
            ),
            // Nearest 2x as a broadcast: differentiable on every backend.
            _ => x
                .reshape([b, c, h, 1, w, 1])
                .expand([b, c, h, 2, w, 2])
                .reshape([b, c, 2 * h, 2 * w]),
        };
        self.conv.forward(up)
    }
}

/// The input and output projections of a `Transformer2DModel`: linear over channels (SDXL,
/// SD 2.x) or a 1x1 convolution (SD 1.x).
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// `use_linear_projection = true`.
    pub linear: Option<Linear<B>>,
    /// `use_linear_projection = false`.
    pub conv: Option<Conv2d<B>>,
}

/// `Transformer2DModel` (continuous input): GroupNorm, `proj_in`, `transformer_blocks` over
/// the `H*W` tokens with cross-attention to the text, `proj_out`, plus the input.
#[derive(Module, Debug)]
pub struct Transformer2D<B: Backend> {
    /// GroupNorm (eps 1e-6).
    pub norm: GroupNorm<B>,
    /// Channels -> inner width.
    pub proj_in: Projection<B>,
    /// The blocks: self-attention (`attn`), cross-attention (`cross_attn`), GEGLU MLP.
    pub transformer_blocks: Vec<TransformerBlock<B>>,
    /// Inner width -> channels.
    pub proj_out: Projection<B>,
}

impl<B: Backend> Transformer2D<B> {
    /// Fresh weights: `channels` = heads x head width, `depth` blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channels: usize,
        heads: usize,
        depth: usize,
        context: usize,
        groups: usize,
        linear: bool,
        dev: &B::Device,
    ) -> Self {
        let proj = || Projection {
            linear: linear.then(|| LinearConfig::new(channels, channels).init(dev)),
            conv: (!linear).then(|| conv(channels, channels, 1, 1, dev)),
        };
        let block = TransformerBlockConfig::new(channels, heads, 4 * channels, Activation::Gelu)
            .with_qkv_bias(false)
            .with_cross_attention(Some(context))
            .with_gated_mlp(true);
        Self {
            norm: group_norm(groups, channels, 1e-6, dev),
            proj_in: proj(),
            transformer_blocks: (0..depth).map(|_| block.init(dev)).collect(),
            proj_out: proj(),
        }
    }

    /// `x: [B, C, H, W]`, `context: [B, M, D_ctx]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, context: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = |t: Tensor<B, 4>| t.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        let image = |t: Tensor<B, 3>| t.reshape([b, h, w, c]).permute([0, 3, 1, 2]);
        let normed = self.norm.forward(x.clone());
        let mut t = match (&self.proj_in.linear, &self.proj_in.conv) {
            (Some(l), _) => l.forward(tokens(normed)),
            (None, Some(cv)) => tokens(cv.forward(normed)),
            (None, None) => tokens(normed),
        };
        for block in &self.transformer_blocks {
            t = block.forward(BlockInput::new(t).context(context.clone()));
        }
        let out = match (&self.proj_out.linear, &self.proj_out.conv) {
            (Some(l), _) => image(l.forward(t)),
            (None, Some(cv)) => cv.forward(image(t)),
            (None, None) => image(t),
        };
        out + x
    }
}

impl<B: Backend> Adaptable<B> for Transformer2D<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
    ) -> PeftResult<()> {
        self.transformer_blocks
            .visit_sites(&join(path, "transformer_blocks"), f)
    }
}
