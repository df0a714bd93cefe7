//! The vision transformer: one module tree for Hugging Face ViT, CLIP's vision tower, DINOv2
//! and timm's ViT, differing only by [`VitConfig`].
//!
//! ```text
//! pixel_values [B, C, H, W]
//!   -> patch_embed (conv, stride = patch) -> [B, N, D]; prepend cls_token; + pos_embed
//!      (resized to the input's patch grid when it differs, as the reference does)
//!   -> pre_norm (CLIP only)
//!   -> layers: x += ls1 * attn(norm1(x)); x += ls2 * mlp(norm2(x))     (pre-norm blocks)
//!   -> norm (HF ViT, DINOv2, timm: whole sequence)  = last_hidden_state
//!   -> pooled:  HF ViT tanh(pooler(cls)) | CLIP post_norm(cls) | DINOv2, timm: cls
//!   -> head(cls) = logits (HF ViT, timm);  projection(pooled) = image_embeds (CLIP)
//! ```
//!
//! Attention is `coeff_tuning::MultiHeadAttention` and every linear layer a `PeftLinear`, so
//! LoRA / DoRA / Coeff-Tuning attach by module path: `layers.{i}.attn`,
//! `layers.{i}.attn.{query,key,value,output}`, `layers.{i}.mlp.{fc1,fc2}`, `pooler`, `head`.

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use coeff_tuning::nn::{BlockInput, TransformerBlock, TransformerBlockConfig};
use coeff_tuning::peft::{join, params::materialize};
use coeff_tuning::{Adaptable, PeftLinear, Site};

use crate::config::{Family, VitConfig};
use crate::error::{Result, VitError};
use crate::interpolate::{resize_grid, Resize};

/// Outputs of [`VisionTransformer::forward`], named as the reference libraries name them.
#[derive(Debug, Clone)]
pub struct VitOutput<B: Backend> {
    /// `[B, 1 + N, D]`
    pub last_hidden_state: Tensor<B, 3>,
    /// `[B, D]`: HF ViT `pooler_output`, CLIP `pooler_output`, DINOv2 `pooler_output`,
    /// timm `pre_logits`.
    pub pooler_output: Tensor<B, 2>,
    /// `[B, num_labels]`, when the model has a classification head.
    pub logits: Option<Tensor<B, 2>>,
    /// `[B, projection_dim]`, CLIP with projection.
    pub image_embeds: Option<Tensor<B, 2>>,
}

/// A vision transformer of any supported family.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// Patch embedding, weight `[D, C, P, P]`.
    pub patch_embed: Conv2d<B>,
    /// Class token `[1, 1, D]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Position embeddings `[1, 1 + rows*cols, D]` for the config's image size.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// CLIP's `pre_layrnorm`.
    pub pre_norm: Option<LayerNorm<B>>,
    /// The blocks (pre-norm; the core crate's shared block).
    pub layers: Vec<TransformerBlock<B>>,
    /// Final norm over the whole sequence (not CLIP).
    pub norm: Option<LayerNorm<B>>,
    /// CLIP's `post_layernorm` on the class token.
    pub post_norm: Option<LayerNorm<B>>,
    /// HF ViT pooler dense layer (followed by tanh).
    pub pooler: Option<PeftLinear<B>>,
    /// CLIP's visual projection (no bias), weight `[D, projection_dim]`.
    pub projection: Option<Linear<B>>,
    /// Classification head on the class token.
    pub head: Option<PeftLinear<B>>,
    /// The config the model was built from.
    #[module(skip)]
    pub config: VitConfig,
}

impl VitConfig {
    /// A randomly initialised model (weights as in the references' init, roughly).
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionTransformer<B> {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i: usize, o: usize| PeftLinear::new(&LinearConfig::new(i, o), device);
        let block = TransformerBlockConfig::new(
            d,
            self.num_attention_heads,
            self.intermediate_size,
            self.activation,
        )
        .with_layer_norm_eps(self.layer_norm_eps)
        .with_qkv_bias(self.qkv_bias)
        .with_layer_scale(self.layer_scale);
        let layers = (0..self.num_hidden_layers)
            .map(|_| block.init(device))
            .collect();
        let [rows, cols] = self.grid();
        let normal = |shape: [usize; 3]| {
            Param::initialized(
                ParamId::new(),
                Tensor::random(shape, Distribution::Normal(0.0, 0.02), device),
            )
        };
        let clip = self.family == Family::Clip;
        let model = VisionTransformer {
            patch_embed: Conv2dConfig::new([self.num_channels, d], [self.patch_size; 2])
                .with_stride([self.patch_size; 2])
                .with_bias(!clip)
                .init(device),
            cls_token: normal([1, 1, d]),
            pos_embed: normal([1, 1 + rows * cols, d]),
            pre_norm: clip.then(ln),
            layers,
            norm: (!clip).then(ln),
            post_norm: clip.then(ln),
            pooler: self.hf_pooler.then(|| lin(d, d)),
            projection: self
                .projection_dim
                .map(|p| LinearConfig::new(d, p).with_bias(false).init(device)),
            head: self.num_labels.map(|n| lin(self.head_input_size(), n)),
            config: self.clone(),
        };
        materialize(model)
    }

    /// How this family resizes position embeddings for a `[rows, cols]` patch grid.
    pub fn resize_method(&self) -> Resize {
        match self.family {
            Family::HfVit | Family::Clip => Resize::Bicubic,
            Family::Timm => Resize::BicubicAntialias,
            // transformers >= 5 (Dinov2Embeddings.interpolate_pos_encoding): bicubic to the
            // target size in float32. Older releases used a scale factor with a 0.1 offset
            // (`Resize::BicubicScaleFactor`), as do checkpoints exported from them.
            Family::Dinov2 => Resize::Bicubic,
        }
    }
}

impl<B: Backend> VisionTransformer<B> {
    /// Token sequence after embedding: `[B, C, H, W] -> [B, 1 + N, D]`.
    pub fn embed(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let cfg = &self.config;
        let [batch, channels, h, w] = pixel_values.dims();
        if batch == 0 {
            return Err(VitError::Input(
                "pixel_values holds 0 images ([B, C, H, W] with B = 0); give at least one".into(),
            ));
        }
        if channels != cfg.num_channels {
            return Err(VitError::Input(format!(
                "pixel_values has {channels} channels, the model expects {} ([B, C, H, W])",
                cfg.num_channels
            )));
        }
        let p = cfg.patch_size;
        if h < p || w < p {
            return Err(VitError::Input(format!(
                "image {h}x{w} is smaller than one {p}x{p} patch"
            )));
        }
        let grid = [h / p, w / p];
        let d = cfg.hidden_size;
        let x = self.patch_embed.forward(pixel_values); // [B, D, rows, cols]
        let x = x.reshape([batch, d, grid[0] * grid[1]]).swap_dims(1, 2);
        let cls = self.cls_token.val().expand([batch, 1, d]);
        let x = Tensor::cat(vec![cls, x], 1);
        let pos = self.pos_embed.val();
        let stored = cfg.grid();
        let tokens = pos.dims()[1];
        let cls_pos = pos.clone().slice([0..1, 0..1]);
        let patch_pos = pos.slice([0..1, 1..tokens]);
        let patch_pos = resize_grid(patch_pos, stored, grid, cfg.resize_method());
        Ok(x + Tensor::cat(vec![cls_pos, patch_pos], 1))
    }

    /// The classification head's input `[B, D_in]` from the final hidden states
    /// `hidden: [B, 1 + N, D]`, as each family's `*ForImageClassification` computes it:
    ///
    /// | family | head input | `D_in` |
    /// |---|---|---|
    /// | HF ViT (`ViTForImageClassification`), timm (`global_pool="token"`) | class token | `D` |
    /// | DINOv2 (`Dinov2ForImageClassification`) | `[class token, mean of the patch tokens]` | `2D` |
    /// | CLIP (`CLIPForImageClassification`) | mean of the patch tokens (before `post_layernorm`) | `D` |
    pub fn head_input(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, tokens, d] = hidden.dims();
        let cls = || hidden.clone().slice([0..batch, 0..1]).reshape([batch, d]);
        let patches = || {
            hidden
                .clone()
                .slice([0..batch, 1..tokens.max(2)])
                .mean_dim(1)
                .reshape([batch, d])
        };
        match self.config.family {
            Family::HfVit | Family::Timm => cls(),
            Family::Dinov2 => Tensor::cat(vec![cls(), patches()], 1),
            Family::Clip => patches(),
        }
    }

    /// Replace the classification head by `head` (`[D_in] -> [classes]`, `D_in` =
    /// [`VitConfig::head_input_size`]); the config's `num_labels` follows.
    pub fn with_head(mut self, head: PeftLinear<B>) -> Result<Self> {
        let want = self.config.head_input_size();
        if head.d_input() != want {
            return Err(VitError::Head(format!(
                "a classification head of this {:?} model takes {want} inputs, the head given \
                 takes {}",
                self.config.family,
                head.d_input()
            )));
        }
        self.config.num_labels = Some(head.d_output());
        self.head = Some(head);
        Ok(self)
    }

    /// Run the model on `pixel_values: [B, C, H, W]` (any size at least one patch).
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Result<VitOutput<B>> {
        let mut x = self.embed(pixel_values)?;
        if let Some(n) = &self.pre_norm {
            x = n.forward(x);
        }
        for block in &self.layers {
            x = block.forward(BlockInput::new(x));
        }
        if let Some(n) = &self.norm {
            x = n.forward(x);
        }
        let [batch, _, d] = x.dims();
        let cls = x.clone().slice([0..batch, 0..1]).reshape([batch, d]);
        let mut pooled = cls.clone();
        if let Some(n) = &self.post_norm {
            pooled = n.forward(pooled);
        }
        if let Some(p) = &self.pooler {
            pooled = p.forward(pooled).tanh();
        }
        let logits = self
            .head
            .as_ref()
            .map(|h| h.forward(self.head_input(x.clone())));
        let image_embeds = self.projection.as_ref().map(|p| p.forward(pooled.clone()));
        Ok(VitOutput {
            last_hidden_state: x,
            pooler_output: pooled,
            logits,
            image_embeds,
        })
    }
}

impl<B: Backend> Adaptable<B> for VisionTransformer<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.layers.visit_sites(&join(path, "layers"), f)?;
        if let Some(p) = self.pooler.as_mut() {
            p.visit_sites(&join(path, "pooler"), f)?;
        }
        if let Some(h) = self.head.as_mut() {
            h.visit_sites(&join(path, "head"), f)?;
        }
        Ok(())
    }
}
