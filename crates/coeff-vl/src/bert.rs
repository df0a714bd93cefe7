//! BERT (Devlin et al., 2019) as transformers' `BertModel`: word + position + token-type
//! embeddings, post-norm encoder blocks (the core crate's shared block), and the tanh pooler.
//! MiniLM and the sentence-transformers encoders are BERTs.
//!
//! ```text
//! x = LayerNorm(word[ids] + position[0..L] + token_type[types])   [B, L, D]
//! x = block_i(x, padding mask)   i = 0..num_hidden_layers          (post-norm)
//! pooler_output = tanh(pooler(x[:, 0]))                            [B, D]
//! ```
//!
//! Module paths: `layers.{i}.attn.{query,key,value,output}`, `layers.{i}.mlp.{fc1,fc2}`.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor};
use coeff_tuning::nn::{BlockInput, NormPlacement, TransformerBlock, TransformerBlockConfig};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, Site};

use crate::config::BertConfig;
use crate::error::{Result, VlError};
use crate::inputs::{check_ids, mean_pool, padding_mask, positions};

/// A BERT encoder with its (optional) pooler.
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    /// `[vocab, D]`
    pub word_embeddings: Embedding<B>,
    /// `[max_position_embeddings, D]`
    pub position_embeddings: Embedding<B>,
    /// `[type_vocab_size, D]`
    pub token_type_embeddings: Embedding<B>,
    /// The embeddings' LayerNorm.
    pub embeddings_norm: LayerNorm<B>,
    /// Post-norm encoder blocks.
    pub layers: Vec<TransformerBlock<B>>,
    /// `dense` of the pooler (tanh after it), when the checkpoint has one.
    pub pooler: Option<Linear<B>>,
    /// The config the model was built from.
    #[module(skip)]
    pub config: BertConfig,
}

/// Outputs of [`Bert::forward`].
#[derive(Debug, Clone)]
pub struct BertOutput<B: Backend> {
    /// `[B, L, D]`
    pub last_hidden_state: Tensor<B, 3>,
    /// `[B, D]`, when the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

impl BertConfig {
    /// The encoder block of this config (BERT's layout on the core block).
    pub fn block(&self) -> TransformerBlockConfig {
        TransformerBlockConfig::new(
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
            self.activation,
        )
        .with_norm(NormPlacement::Post)
        .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// A randomly initialised model (`pooler`: with the pooler layer).
    pub fn init<B: Backend>(&self, pooler: bool, device: &B::Device) -> Bert<B> {
        let d = self.hidden_size;
        let embedding = |n| EmbeddingConfig::new(n, d).init(device);
        Bert {
            word_embeddings: embedding(self.vocab_size),
            position_embeddings: embedding(self.max_position_embeddings),
            token_type_embeddings: embedding(self.type_vocab_size),
            embeddings_norm: LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| self.block().init(device))
                .collect(),
            pooler: pooler.then(|| LinearConfig::new(d, d).init(device)),
            config: self.clone(),
        }
    }
}

impl<B: Backend> Bert<B> {
    /// `input_ids: [B, L]`, `attention_mask: [B, L]` (1 = token, 0 = padding),
    /// `token_type_ids: [B, L]` (zeros when absent). Ids, types and the length are checked
    /// against the config.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Result<BertOutput<B>> {
        let c = &self.config;
        let dims = check_ids(
            &input_ids,
            "input_ids",
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        let [batch, len] = dims;
        let device = input_ids.device();
        let types = match token_type_ids {
            Some(t) => {
                if t.dims() != dims {
                    return Err(VlError::Input(format!(
                        "`token_type_ids` has shape {:?}, the ids {dims:?}",
                        t.dims()
                    )));
                }
                check_ids(&t, "token_type_ids", c.type_vocab_size, usize::MAX)?;
                t
            }
            None => Tensor::zeros(dims, &device),
        };
        let pad = padding_mask(attention_mask.as_ref(), "attention_mask", dims)?;
        let mut x = self.word_embeddings.forward(input_ids)
            + self
                .position_embeddings
                .forward(positions(batch, len, 0, &device))
            + self.token_type_embeddings.forward(types);
        x = self.embeddings_norm.forward(x);
        for block in &self.layers {
            let mut input = BlockInput::new(x);
            input.mask_pad = pad.clone();
            x = block.forward(input);
        }
        let d = c.hidden_size;
        let pooler_output = self.pooler.as_ref().map(|p| {
            let first = x.clone().slice([0..batch, 0..1]).reshape([batch, d]);
            p.forward(first).tanh()
        });
        Ok(BertOutput {
            last_hidden_state: x,
            pooler_output,
        })
    }

    /// Sentence embeddings as sentence-transformers computes them for MiniLM-style models:
    /// the mean of the last hidden states over the real tokens, L2-normalised, `[B, D]`.
    pub fn sentence_embeddings(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 2>> {
        let out = self.forward(input_ids, Some(attention_mask.clone()), None)?;
        Ok(crate::inputs::l2_normalize(mean_pool(
            out.last_hidden_state,
            Some(&attention_mask),
        )))
    }
}

impl<B: Backend> Adaptable<B> for Bert<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.layers.visit_sites(&join(path, "layers"), f)
    }
}
