//! VL-BART / VL-T5-style fusion (Cho et al., 2021): image features are projected into the text
//! encoder's width, given positions and an image index, and appended to the encoder's token
//! embeddings; the decoder generates the answer text. One model serves every task (VQA,
//! true/false statements about image pairs, captions) through task prefixes in the text.
//!
//! ```text
//! text   = shared[ids] * scale + positions[0..L]                      [B, L, D]
//! visual = LayerNorm(proj(features)) + vis_pos[0..T] + image[k]       [B, K*T, D]
//! enc    = encoder(layernorm_embedding([text ; visual]), padding mask)
//! answer = decoder(enc)  (teacher-forced loss, or greedy / beam generation)
//! ```
//!
//! The features come from any backbone of the ViT crate (patch tokens or pooled), computed
//! once and cached by the caller. The text model is a [`Bart`]: a real BART checkpoint, or a
//! BERT warm-started into an encoder-decoder ([`Bart::from_bert`], BERT2BERT: the decoder
//! copies the pretrained self-attention and MLP and gets new cross-attention).
//!
//! Module paths: `text.*` (the BART's), `visual.proj` (a `PeftLinear`), `visual.norm`,
//! `visual.positions`, `visual.image_order`.

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Bool, Distribution, Int, Tensor};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, PeftLinear, Site};

use crate::bart::{Bart, GenerationConfig, POSITION_OFFSET};
use crate::bert::Bert;
use crate::config::{BartConfig, BertConfig};
use crate::error::VlError;

use crate::inputs::{check_ids, padding_mask};

/// Configuration of [`VisualEmbedding`].
#[derive(Config, Debug)]
pub struct VisualEmbeddingConfig {
    /// Width of the image features.
    pub d_image: usize,
    /// Width of the text model.
    pub d_model: usize,
    /// Visual tokens per image, at most.
    pub max_tokens: usize,
    /// Images per example, at most (2 for NLVR2-style pairs).
    #[config(default = 2)]
    pub max_images: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

/// Image features -> visual tokens of the text encoder.
#[derive(Module, Debug)]
pub struct VisualEmbedding<B: Backend> {
    /// `[d_image] -> [D]`
    pub proj: PeftLinear<B>,
    /// Norm after the projection.
    pub norm: LayerNorm<B>,
    /// Learned positions of the visual tokens, `[max_tokens, D]` (VL-T5 embeds box
    /// coordinates; a ViT's tokens sit on a fixed grid).
    pub positions: Param<Tensor<B, 2>>,
    /// Which image of the example a token belongs to, `[max_images, D]`.
    pub image_order: Embedding<B>,
}

impl VisualEmbeddingConfig {
    /// Fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisualEmbedding<B> {
        let d = self.d_model;
        VisualEmbedding {
            proj: PeftLinear::new(&LinearConfig::new(self.d_image, d), device),
            norm: LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            positions: Param::initialized(
                ParamId::new(),
                Tensor::random(
                    [self.max_tokens, d],
                    Distribution::Normal(0.0, 0.02),
                    device,
                ),
            ),
            image_order: EmbeddingConfig::new(self.max_images, d).init(device),
        }
    }
}

impl<B: Backend> VisualEmbedding<B> {
    /// `features: [B, K, T, d_image]` (K images of T tokens each) -> `[B, K*T, D]`.
    pub fn forward(&self, features: Tensor<B, 4>) -> crate::Result<Tensor<B, 3>> {
        let [batch, k, t, d_image] = features.dims();
        let [max_tokens, d] = self.positions.dims();
        let max_images = self.image_order.weight.dims()[0];
        let d_in = self.proj.base.weight.dims()[0];
        if d_image != d_in || t > max_tokens || k > max_images || t == 0 || k == 0 {
            return Err(VlError::Input(format!(
                "image features have shape {:?}; the model takes [batch, 1..={max_images} images, 1..={max_tokens} tokens, {d_in}]",
                features.dims()
            )));
        }
        let x = self.norm.forward(self.proj.forward(features));
        let pos = self
            .positions
            .val()
            .slice([0..t, 0..d])
            .reshape([1, 1, t, d]);
        let order = self
            .image_order
            .weight
            .val()
            .slice([0..k, 0..d])
            .reshape([1, k, 1, d]);
        Ok((x + pos + order).reshape([batch, k * t, d]))
    }
}

/// The fused image-text encoder-decoder.
#[derive(Module, Debug)]
pub struct VlBart<B: Backend> {
    /// The text encoder-decoder.
    pub text: Bart<B>,
    /// Image features -> visual tokens.
    pub visual: VisualEmbedding<B>,
}

impl<B: Backend> VlBart<B> {
    /// A text model and fresh visual embeddings for `d_image`-wide features.
    pub fn new(text: Bart<B>, d_image: usize, max_tokens: usize, device: &B::Device) -> Self {
        let visual = VisualEmbeddingConfig::new(d_image, text.config.d_model, max_tokens)
            .with_layer_norm_eps(text.config.layer_norm_eps)
            .init(device);
        Self { text, visual }
    }

    /// Encode `input_ids: [B, L]` (`attention_mask`, 1 = token) with `features: [B, K, T,
    /// d_image]` -> encoder states `[B, L + K*T, D]` and their padding mask (true = padding).
    pub fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        features: Tensor<B, 4>,
    ) -> crate::Result<(Tensor<B, 3>, Tensor<B, 2, Bool>)> {
        let c = &self.text.config;
        let dims = check_ids(
            &input_ids,
            "input_ids",
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        let [batch, len] = dims;
        if features.dims()[0] != batch {
            return Err(VlError::Input(format!(
                "{batch} texts but image features for {}",
                features.dims()[0]
            )));
        }
        let device = input_ids.device();
        let text_pad = padding_mask(attention_mask.as_ref(), "attention_mask", dims)?
            .unwrap_or_else(|| Tensor::<B, 2, Int>::zeros(dims, &device).equal_elem(1));
        let text = self.text.embed_tokens(input_ids) + self.text.encoder_positions(len);
        let visual = self.visual.forward(features)?;
        let v = visual.dims()[1];
        let pad = Tensor::cat(
            vec![
                text_pad,
                Tensor::<B, 2, Int>::zeros([batch, v], &device).equal_elem(1),
            ],
            1,
        );
        let x = self
            .text
            .encoder
            .layernorm_embedding
            .forward(Tensor::cat(vec![text, visual], 1));
        Ok((self.text.encode_embedded(x, Some(pad.clone())), pad))
    }

    /// Teacher-forced cross-entropy of `targets: [B, T]` (the answer tokens, ending with the
    /// end-of-sequence token, padded with `pad_token_id`), averaged over the non-padding
    /// tokens. The decoder reads the start token followed by `targets[.., ..T-1]`.
    pub fn loss(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        features: Tensor<B, 4>,
        targets: Tensor<B, 2, Int>,
    ) -> crate::Result<Tensor<B, 1>> {
        let c = &self.text.config;
        let [batch, t] = check_ids(&targets, "targets", c.vocab_size, c.max_position_embeddings)?;
        let (enc, pad) = self.encode(input_ids, attention_mask, features)?;
        let device = enc.device();
        let start = Tensor::<B, 2, Int>::full([batch, 1], c.decoder_start_token_id as i64, &device);
        let dec_in = match t {
            1 => start,
            _ => Tensor::cat(vec![start, targets.clone().slice([0..batch, 0..t - 1])], 1),
        };
        let logits = self.text.decode(dec_in, enc, Some(pad))?;
        let logp = log_softmax(logits, 2);
        let picked = logp
            .gather(2, targets.clone().reshape([batch, t, 1]))
            .reshape([batch, t]);
        let keep = targets.not_equal_elem(c.pad_token_id as i64).float();
        let count = keep.clone().sum().clamp_min(1.0);
        Ok((picked * keep).sum().neg() / count)
    }

    /// Generate answers (greedy or beam search).
    pub fn generate(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        features: Tensor<B, 4>,
        generation: &GenerationConfig,
    ) -> crate::Result<Vec<Vec<u32>>> {
        let (enc, pad) = self.encode(input_ids, attention_mask, features)?;
        self.text.generate_from(enc, Some(pad), generation)
    }
}

impl<B: Backend> Adaptable<B> for VlBart<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.text.visit_sites(&join(path, "text"), f)?;
        self.visual.proj.visit_sites(&join(path, "visual.proj"), f)
    }
}

/// Token ids a BERT warm start decodes with (BERT has no decoder tokens of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq2SeqTokens {
    /// First decoder token (BERT2BERT: `[CLS]`).
    pub start: u32,
    /// End of sequence (`[SEP]`).
    pub eos: u32,
    /// Padding (`[PAD]`).
    pub pad: u32,
}

impl<B: Backend> Bart<B> {
    /// BERT2BERT (Rothe et al., 2020): an encoder-decoder warm-started from a BERT encoder.
    /// The encoder is the BERT; each decoder block copies the BERT block's self-attention,
    /// MLP and norms, made causal, and gets a freshly initialised cross-attention (and its
    /// norm); the output layer is tied to the word embeddings with a zero bias. BERT's
    /// token-type-0 embedding is folded into the position tables, which gain BART's two
    /// leading unused rows. Train at least the cross-attentions (`re:.*cross_(attn|norm)` in
    /// `modules_to_save`).
    pub fn from_bert(
        bert: Bert<B>,
        tokens: Seq2SeqTokens,
        device: &B::Device,
    ) -> crate::Result<Self> {
        let c: &BertConfig = &bert.config;
        for (name, id) in [
            ("start", tokens.start),
            ("eos", tokens.eos),
            ("pad", tokens.pad),
        ] {
            if id as usize >= c.vocab_size {
                return Err(VlError::Input(format!(
                    "the {name} token {id} is outside BERT's vocabulary 0..{}",
                    c.vocab_size
                )));
            }
        }
        let config = BartConfig {
            vocab_size: c.vocab_size,
            d_model: c.hidden_size,
            encoder_layers: c.num_hidden_layers,
            decoder_layers: c.num_hidden_layers,
            encoder_attention_heads: c.num_attention_heads,
            decoder_attention_heads: c.num_attention_heads,
            encoder_ffn_dim: c.intermediate_size,
            decoder_ffn_dim: c.intermediate_size,
            max_position_embeddings: c.max_position_embeddings,
            activation: c.activation,
            scale_embedding: false,
            pad_token_id: tokens.pad,
            bos_token_id: tokens.start,
            eos_token_id: tokens.eos,
            decoder_start_token_id: tokens.start,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            tie_word_embeddings: true,
            layer_norm_eps: c.layer_norm_eps,
        };
        let mut model = config.init::<B>(device);
        let d = c.hidden_size;
        let positions = Tensor::cat(
            vec![
                Tensor::zeros([POSITION_OFFSET, d], device),
                bert.position_embeddings.weight.val()
                    + bert.token_type_embeddings.weight.val().slice([0..1, 0..d]),
            ],
            0,
        );
        let table = || Embedding {
            weight: Param::initialized(ParamId::new(), positions.clone()),
        };
        model.shared = bert.word_embeddings.clone();
        model.encoder.embed_positions = table();
        model.decoder.embed_positions = table();
        model.encoder.layernorm_embedding = bert.embeddings_norm.clone();
        model.decoder.layernorm_embedding = bert.embeddings_norm.clone();
        // The copies get fresh parameter ids: gradients and optimizer state are per id, and
        // encoder and decoder must train independently.
        let layers = std::mem::take(&mut model.decoder.layers);
        model.decoder.layers = layers
            .into_iter()
            .zip(&bert.layers)
            .map(|(mut dec, enc)| {
                dec.norm1 = enc.norm1.clone().map(&mut FreshIds);
                dec.attn = enc.attn.clone().map(&mut FreshIds);
                dec.norm2 = enc.norm2.clone().map(&mut FreshIds);
                dec.mlp = enc.mlp.clone().map(&mut FreshIds);
                dec
            })
            .collect();
        model.encoder.layers = bert.layers;
        Ok(model)
    }
}

/// Gives every float parameter a new id, values kept.
struct FreshIds;

impl<B: Backend> ModuleMapper<B> for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        Param::initialized(ParamId::new(), param.val())
    }
}
