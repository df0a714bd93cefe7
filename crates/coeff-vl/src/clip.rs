//! CLIP (Radford et al., 2021) as transformers' `CLIPTextModel[WithProjection]` and
//! `CLIPModel`: the causal text transformer (SDXL's text encoders are two of them) and the
//! dual encoder with the ViT crate's CLIP vision tower.
//!
//! ```text
//! x = token[ids] + position[0..L]                          [B, L, D]
//! x = block_i(x, causal + padding masks)  (pre-norm, quick-GELU)
//! last_hidden_state = final_layer_norm(x)
//! pooler_output = last_hidden_state[b, first eos of row b]   [B, D]
//! text_embeds = text_projection(pooler_output)               [B, P]
//! CLIP: logits_per_image = exp(logit_scale) * norm(image_embeds) norm(text_embeds)^T
//! ```
//!
//! Module paths: `layers.{i}.attn.*`, `layers.{i}.mlp.*` (text), `text.*` / `vision.*` (CLIP).

use burn::module::{Module, Param, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, ElementConversion, Int, Tensor, TensorData};
use coeff_tuning::nn::{BlockInput, TransformerBlock, TransformerBlockConfig};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, Site};
use coeff_vit::VisionTransformer;

use crate::config::ClipTextConfig;
use crate::error::{Result, VlError};
use crate::inputs::{causal_mask, check_ids, l2_normalize, padding_mask, positions};

/// The CLIP text transformer, with its projection when the checkpoint has one.
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    /// `[vocab, D]`
    pub token_embedding: Embedding<B>,
    /// `[max_position_embeddings, D]`
    pub position_embedding: Embedding<B>,
    /// Pre-norm causal blocks.
    pub layers: Vec<TransformerBlock<B>>,
    /// Norm of the last hidden state.
    pub final_layer_norm: LayerNorm<B>,
    /// `text_projection` (no bias), `[D] -> [projection_dim]`.
    pub text_projection: Option<Linear<B>>,
    /// The config the model was built from.
    #[module(skip)]
    pub config: ClipTextConfig,
}

/// Outputs of [`ClipTextModel::forward`].
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// `[B, L, D]`, after the final norm.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[B, L, D]`: the output of the second-to-last block, before any norm
    /// (transformers' `hidden_states[-2]`, what SDXL conditions on).
    pub penultimate_hidden_state: Tensor<B, 3>,
    /// `[B, D]`: the final-normed state at each row's first end-of-text token.
    pub pooler_output: Tensor<B, 2>,
    /// `[B, P]`: `text_projection(pooler_output)`, when the model has the projection.
    pub text_embeds: Option<Tensor<B, 2>>,
}

impl ClipTextConfig {
    /// A randomly initialised model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipTextModel<B> {
        let d = self.hidden_size;
        let block = TransformerBlockConfig::new(
            d,
            self.num_attention_heads,
            self.intermediate_size,
            self.activation,
        )
        .with_layer_norm_eps(self.layer_norm_eps);
        ClipTextModel {
            token_embedding: EmbeddingConfig::new(self.vocab_size, d).init(device),
            position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d).init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| block.init(device))
                .collect(),
            final_layer_norm: LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            text_projection: self
                .projection_dim
                .map(|p| LinearConfig::new(d, p).with_bias(false).init(device)),
            config: self.clone(),
        }
    }
}

impl<B: Backend> ClipTextModel<B> {
    /// `input_ids: [B, L]`, `attention_mask: [B, L]` (1 = token). Each row must hold the
    /// end-of-text token (`eos_token_id`; with the legacy id 2, the row's largest id is taken,
    /// as transformers does).
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<ClipTextOutput<B>> {
        let c = &self.config;
        let dims = check_ids(
            &input_ids,
            "input_ids",
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        let [batch, len] = dims;
        let device = input_ids.device();
        let pad = padding_mask(attention_mask.as_ref(), "attention_mask", dims)?;
        let eos = self.eos_positions(&input_ids)?;
        let mut x = self.token_embedding.forward(input_ids)
            + self
                .position_embedding
                .forward(positions(batch, len, 0, &device));
        let causal = causal_mask::<B>(batch, len, &device);
        let mut penultimate = x.clone();
        let n = self.layers.len();
        for (i, block) in self.layers.iter().enumerate() {
            let mut input = BlockInput::new(x).mask_attn(causal.clone());
            input.mask_pad = pad.clone();
            x = block.forward(input);
            if i + 2 == n {
                penultimate = x.clone();
            }
        }
        let x = self.final_layer_norm.forward(x);
        let d = c.hidden_size;
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(eos, [batch]), &device)
            .reshape([batch, 1, 1])
            .expand([batch, 1, d]);
        let pooled = x.clone().gather(1, index).reshape([batch, d]);
        Ok(ClipTextOutput {
            last_hidden_state: x,
            penultimate_hidden_state: penultimate,
            text_embeds: self
                .text_projection
                .as_ref()
                .map(|p| p.forward(pooled.clone())),
            pooler_output: pooled,
        })
    }

    /// Per row, the position of the first end-of-text token (legacy id 2: the largest id).
    fn eos_positions(&self, ids: &Tensor<B, 2, Int>) -> Result<Vec<i64>> {
        let [batch, len] = ids.dims();
        let values: Vec<i64> = ids
            .to_data()
            .iter::<B::IntElem>()
            .map(|v| v.elem::<i64>())
            .collect();
        let eos = self.config.eos_token_id as i64;
        (0..batch)
            .map(|b| {
                let row = &values[b * len..(b + 1) * len];
                let found = if eos == 2 {
                    // argmax, first occurrence
                    let max = *row.iter().max().expect("non-empty row");
                    row.iter().position(|&v| v == max)
                } else {
                    row.iter().position(|&v| v == eos)
                };
                found.map(|p| p as i64).ok_or_else(|| {
                    VlError::Input(format!(
                        "row {b} of `input_ids` has no end-of-text token {eos} (CLIP pools at it)"
                    ))
                })
            })
            .collect()
    }
}

impl<B: Backend> Adaptable<B> for ClipTextModel<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.layers.visit_sites(&join(path, "layers"), f)
    }
}

/// The dual encoder: text transformer + the ViT crate's CLIP vision tower, both projected,
/// and the learned temperature.
#[derive(Module, Debug)]
pub struct Clip<B: Backend> {
    /// Text tower with `text_projection`.
    pub text: ClipTextModel<B>,
    /// Vision tower with `projection` (`visual_projection`).
    pub vision: VisionTransformer<B>,
    /// `logit_scale` (a log temperature), `[1]`.
    pub logit_scale: Param<Tensor<B, 1>>,
}

/// Outputs of [`Clip::forward`].
#[derive(Debug, Clone)]
pub struct ClipOutput<B: Backend> {
    /// `[B_img, B_txt]`
    pub logits_per_image: Tensor<B, 2>,
    /// `[B_txt, B_img]`
    pub logits_per_text: Tensor<B, 2>,
    /// `[B_txt, P]`, L2-normalised.
    pub text_embeds: Tensor<B, 2>,
    /// `[B_img, P]`, L2-normalised.
    pub image_embeds: Tensor<B, 2>,
}

impl<B: Backend> Clip<B> {
    /// Assemble from the two towers (each with its projection) and the initial log scale.
    pub fn new(text: ClipTextModel<B>, vision: VisionTransformer<B>, logit_scale: f32) -> Self {
        let device = text.token_embedding.weight.device();
        Self {
            text,
            vision,
            logit_scale: Param::initialized(
                ParamId::new(),
                Tensor::from_data(TensorData::new(vec![logit_scale], [1]), &device),
            ),
        }
    }

    /// Texts `input_ids` / `attention_mask: [B_txt, L]` against images
    /// `pixel_values: [B_img, 3, H, W]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        pixel_values: Tensor<B, 4>,
    ) -> Result<ClipOutput<B>> {
        let text = self.text.forward(input_ids, attention_mask)?;
        let image = self.vision.forward(pixel_values)?;
        let missing = |what: &str| {
            VlError::Input(format!(
                "the CLIP model has no {what} (the checkpoint lacks it)"
            ))
        };
        let text_embeds = l2_normalize(text.text_embeds.ok_or_else(|| missing("text_projection"))?);
        let image_embeds = l2_normalize(
            image
                .image_embeds
                .ok_or_else(|| missing("visual_projection"))?,
        );
        let scale = self.logit_scale.val().exp().reshape([1, 1]);
        let logits_per_text = text_embeds.clone().matmul(image_embeds.clone().transpose()) * scale;
        Ok(ClipOutput {
            logits_per_image: logits_per_text.clone().transpose(),
            logits_per_text,
            text_embeds,
            image_embeds,
        })
    }
}

impl<B: Backend> Adaptable<B> for Clip<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.text.visit_sites(&join(path, "text"), f)?;
        self.vision.visit_sites(&join(path, "vision"), f)
    }
}
