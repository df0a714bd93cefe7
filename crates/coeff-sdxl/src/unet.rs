//! `UNet2DConditionModel`: conv_in, time (+ SDXL's text_time) embedding, down blocks, the
//! cross-attention mid block, up blocks with skip connections, GroupNorm + SiLU + conv_out.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, PeftResult, Site};

use crate::blocks::{
    timestep_embedding, Downsample2D, ResnetBlock2D, TimestepEmbedding, Transformer2D, Upsample2D,
};
use crate::config::{DownBlockType, UnetConfig, UpBlockType};
use crate::error::{Result, UnetError};

/// A down block: resnets, each followed by a transformer in `CrossAttnDownBlock2D`, and a
/// downsampler on every level but the last.
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    /// `resnets.{j}`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions.{j}` (empty in a `DownBlock2D`).
    pub attentions: Vec<Transformer2D<B>>,
    /// `downsamplers.0`.
    pub downsampler: Option<Downsample2D<B>>,
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    /// `resnets.{0,1}`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions.0`.
    pub attentions: Vec<Transformer2D<B>>,
}

/// An up block: `layers + 1` resnets over the concatenated skip connections, transformers in
/// `CrossAttnUpBlock2D`, and an upsampler on every level but the last.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    /// `resnets.{j}`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions.{j}` (empty in an `UpBlock2D`).
    pub attentions: Vec<Transformer2D<B>>,
    /// `upsamplers.0`.
    pub upsampler: Option<Upsample2D<B>>,
}

/// diffusers' `UNet2DConditionModel` on Burn. Module paths follow diffusers' names
/// (`down_blocks.1.attentions.0.transformer_blocks.0.attn`, ...), except inside the
/// transformer blocks, which are the core crate's (`attn`, `cross_attn`, `mlp.fc1`/`fc2`; see
/// [`crate::loader`]).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    /// `[in] -> [C0]`, 3x3.
    pub conv_in: Conv2d<B>,
    /// Timestep sinusoid `[C0]` -> `[4 C0]`.
    pub time_embedding: TimestepEmbedding<B>,
    /// SDXL: `[pooled text ++ 6 time-id sinusoids]` -> `[4 C0]`, added to the time embedding.
    pub add_embedding: Option<TimestepEmbedding<B>>,
    /// Highest resolution first.
    pub down_blocks: Vec<DownBlock<B>>,
    /// At the lowest resolution.
    pub mid_block: MidBlock<B>,
    /// Lowest resolution first.
    pub up_blocks: Vec<UpBlock<B>>,
    /// GroupNorm over `C0`.
    pub conv_norm_out: GroupNorm<B>,
    /// `[C0] -> [out]`, 3x3.
    pub conv_out: Conv2d<B>,
    /// Timestep sinusoid settings: width `C0`, `[cos, sin]` order, frequency shift.
    pub time_proj_dim: usize,
    /// See [`UnetConfig::flip_sin_to_cos`].
    pub flip_sin_to_cos: bool,
    /// See [`UnetConfig::freq_shift`].
    pub freq_shift: f64,
    /// Sinusoid width of each SDXL time id (0 without text_time).
    pub add_time_dim: usize,
    /// Width of the pooled text embedding SDXL's add-embedding expects (0 without).
    pub text_embeds_dim: usize,
    /// Cross-attention context width.
    pub cross_attention_dim: usize,
}

/// The conditioning of one UNet call besides the noisy sample.
#[derive(Debug, Clone)]
pub struct UnetInput<B: Backend> {
    /// Noisy latents `[B, in, H, W]`.
    pub sample: Tensor<B, 4>,
    /// One timestep per sample, `[B]` (float, as diffusers accepts).
    pub timestep: Tensor<B, 1>,
    /// Text context `[B, M, cross_attention_dim]`.
    pub encoder_hidden_states: Tensor<B, 3>,
    /// SDXL: pooled text embedding `[B, text_embeds_dim]`.
    pub text_embeds: Option<Tensor<B, 2>>,
    /// SDXL: `[B, 6]` = original size (h, w), crop top-left (y, x), target size (h, w).
    pub time_ids: Option<Tensor<B, 2>>,
}

impl UnetConfig {
    /// A model with fresh weights (use [`crate::loader::load_unet`] for a checkpoint).
    pub fn init<B: Backend>(&self, dev: &B::Device) -> UNet2DConditionModel<B> {
        let ch = &self.block_out_channels;
        let levels = ch.len();
        let temb = self.time_embed_dim();
        let g = self.norm_num_groups;
        let eps = self.norm_eps;
        let ctx = self.cross_attention_dim;
        let lin = self.use_linear_projection;
        let transformer = |c: usize, level: usize, depth: usize| {
            Transformer2D::new(c, self.num_attention_heads[level], depth, ctx, g, lin, dev)
        };

        let mut down_blocks = Vec::with_capacity(levels);
        let mut out_c = ch[0];
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let in_c = out_c;
            out_c = ch[i];
            let n = self.layers_per_block[i];
            down_blocks.push(DownBlock {
                resnets: (0..n)
                    .map(|j| {
                        ResnetBlock2D::new(
                            if j == 0 { in_c } else { out_c },
                            out_c,
                            Some(temb),
                            g,
                            eps,
                            dev,
                        )
                    })
                    .collect(),
                attentions: match kind {
                    DownBlockType::CrossAttnDown => (0..n)
                        .map(|_| transformer(out_c, i, self.transformer_layers_per_block[i]))
                        .collect(),
                    DownBlockType::Down => Vec::new(),
                },
                downsampler: (i + 1 < levels).then(|| Downsample2D::new(out_c, dev)),
            });
        }

        let last = ch[levels - 1];
        let mid_block = MidBlock {
            resnets: (0..2)
                .map(|_| ResnetBlock2D::new(last, last, Some(temb), g, eps, dev))
                .collect(),
            attentions: vec![transformer(
                last,
                levels - 1,
                self.transformer_layers_per_block[levels - 1],
            )],
        };

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(levels);
        let mut out_c = rev[0];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let level = levels - 1 - i;
            let prev_c = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(levels - 1)];
            let n = self.layers_per_block[level] + 1;
            up_blocks.push(UpBlock {
                resnets: (0..n)
                    .map(|j| {
                        let skip = if j == n - 1 { in_c } else { out_c };
                        let res_in = if j == 0 { prev_c } else { out_c };
                        ResnetBlock2D::new(res_in + skip, out_c, Some(temb), g, eps, dev)
                    })
                    .collect(),
                attentions: match kind {
                    UpBlockType::CrossAttnUp => (0..n)
                        .map(|_| {
                            transformer(out_c, level, self.transformer_layers_per_block[level])
                        })
                        .collect(),
                    UpBlockType::Up => Vec::new(),
                },
                upsampler: (i + 1 < levels).then(|| Upsample2D::new(out_c, dev)),
            });
        }

        let conv3 = |a: usize, b: usize| {
            Conv2dConfig::new([a, b], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(dev)
        };
        UNet2DConditionModel {
            conv_in: conv3(self.in_channels, ch[0]),
            time_embedding: TimestepEmbedding::new(ch[0], temb, dev),
            add_embedding: self
                .text_time
                .map(|tt| TimestepEmbedding::new(tt.input_dim, temb, dev)),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNormConfig::new(g, ch[0]).with_epsilon(eps).init(dev),
            conv_out: conv3(ch[0], self.out_channels),
            time_proj_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            add_time_dim: self.text_time.map_or(0, |t| t.time_embed_dim),
            text_embeds_dim: self
                .text_time
                .map_or(0, |t| t.input_dim - 6 * t.time_embed_dim),
            cross_attention_dim: ctx,
        }
    }
}

fn input_err(name: &'static str, message: String) -> UnetError {
    UnetError::Input { name, message }
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Check the inputs' shapes against the model and each other.
    fn check(&self, input: &UnetInput<B>) -> Result<()> {
        let [b, c, h, w] = input.sample.dims();
        let c_in = self.conv_in.weight.dims()[1];
        if c != c_in || h == 0 || w == 0 {
            return Err(input_err(
                "sample",
                format!(
                    "shape {:?}, expected [batch, {c_in}, H, W]",
                    input.sample.dims()
                ),
            ));
        }
        if input.timestep.dims() != [b] {
            return Err(input_err(
                "timestep",
                format!(
                    "shape {:?}, expected [{b}] (one per sample)",
                    input.timestep.dims()
                ),
            ));
        }
        let [eb, _, ed] = input.encoder_hidden_states.dims();
        if eb != b || ed != self.cross_attention_dim {
            return Err(input_err(
                "encoder_hidden_states",
                format!(
                    "shape {:?}, expected [{b}, tokens, {}]",
                    input.encoder_hidden_states.dims(),
                    self.cross_attention_dim
                ),
            ));
        }
        if self.add_embedding.is_some() {
            match (&input.text_embeds, &input.time_ids) {
                (Some(te), Some(ti)) => {
                    if te.dims() != [b, self.text_embeds_dim] {
                        return Err(input_err(
                            "text_embeds",
                            format!("shape {:?}, expected [{b}, {}]", te.dims(), self.text_embeds_dim),
                        ));
                    }
                    if ti.dims() != [b, 6] {
                        return Err(input_err(
                            "time_ids",
                            format!("shape {:?}, expected [{b}, 6]", ti.dims()),
                        ));
                    }
                }
                _ => {
                    return Err(input_err(
                        "text_embeds",
                        "this UNet's config has addition_embed_type = \"text_time\": pass text_embeds and time_ids".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The combined time (+ text_time) embedding, `[B, 4 C0]`.
    fn embedding(&self, input: &UnetInput<B>) -> Tensor<B, 2> {
        let t = timestep_embedding(
            input.timestep.clone(),
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        );
        let mut emb = self.time_embedding.forward(t);
        if let (Some(add), Some(te), Some(ti)) =
            (&self.add_embedding, &input.text_embeds, &input.time_ids)
        {
            let b = ti.dims()[0];
            let ids = timestep_embedding(
                ti.clone().reshape([b * 6]),
                self.add_time_dim,
                self.flip_sin_to_cos,
                self.freq_shift,
            )
            .reshape([b, 6 * self.add_time_dim]);
            emb = emb + add.forward(Tensor::cat(vec![te.clone(), ids], 1));
        }
        emb
    }

    /// Predict the noise (or v, per the training objective): `[B, in, H, W] -> [B, out, H, W]`.
    pub fn forward(&self, input: UnetInput<B>) -> Result<Tensor<B, 4>> {
        self.check(&input)?;
        let emb = self.embedding(&input);
        let ctx = input.encoder_hidden_states;
        let mut x = self.conv_in.forward(input.sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(x, Some(emb.clone()));
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(x, ctx.clone());
                }
                skips.push(x.clone());
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(x);
                skips.push(x.clone());
            }
        }
        x = self.mid_block.resnets[0].forward(x, Some(emb.clone()));
        x = self.mid_block.attentions[0].forward(x, ctx.clone());
        x = self.mid_block.resnets[1].forward(x, Some(emb.clone()));
        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up resnet");
                x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(emb.clone()));
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(x, ctx.clone());
                }
            }
            if let Some(up) = &block.upsampler {
                // The next skip's size (differs from 2x when a side was odd going down).
                let size = skips.last().map(|s| {
                    let [_, _, h, w] = s.dims();
                    [h, w]
                });
                x = up.forward(x, size);
            }
        }
        Ok(self.conv_out.forward(silu(self.conv_norm_out.forward(x))))
    }
}

/// Down, mid and up blocks expose the same sites: their resnets' convolutions and their
/// transformers' attentions.
macro_rules! block_sites {
    ($($block:ident),*) => {$(
        impl<B: Backend> Adaptable<B> for $block<B> {
            fn visit_sites(
                &mut self,
                path: &str,
                f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
            ) -> PeftResult<()> {
                self.resnets.visit_sites(&join(path, "resnets"), f)?;
                self.attentions.visit_sites(&join(path, "attentions"), f)
            }
        }
    )*};
}

block_sites!(DownBlock, MidBlock, UpBlock);

impl<B: Backend> Adaptable<B> for UNet2DConditionModel<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
    ) -> PeftResult<()> {
        self.down_blocks
            .visit_sites(&join(path, "down_blocks"), f)?;
        self.mid_block.visit_sites(&join(path, "mid_block"), f)?;
        self.up_blocks.visit_sites(&join(path, "up_blocks"), f)
    }
}
