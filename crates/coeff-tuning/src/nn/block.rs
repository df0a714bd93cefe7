//! One transformer block for every model crate: self-attention, an optional cross-attention to
//! a context, and an MLP, each in a residual branch, with the norms before (pre-norm: ViT,
//! CLIP, DINOv2, the SDXL UNet's `BasicTransformerBlock`) or after (post-norm: BERT, BART).
//!
//! ```text
//! pre-norm:   x += ls1 * attn(norm1(x));  x += cross_attn(cross_norm(x), ctx);  x += ls2 * mlp(norm2(x))
//! post-norm:  x = norm1(x + attn(x));     x = cross_norm(x + cross_attn(x, ctx)); x = norm2(x + mlp(x))
//! ```
//!
//! Module paths: `norm1`, `attn`, `ls1`, `cross_norm`, `cross_attn`, `norm2`, `mlp.fc1`,
//! `mlp.fc2`, `ls2`.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{backend::Backend, Bool, Tensor};
use serde::{Deserialize, Serialize};

use super::{Activation, Mlp, MlpConfig};
use crate::attention::{AttentionInput, KvCache, MultiHeadAttention, MultiHeadAttentionConfig};
use crate::error::PeftResult;
use crate::peft::{join, Adaptable, Site};

/// Where a block's norms sit relative to its residual branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NormPlacement {
    /// Norm on the branch input (ViT, CLIP, GPT-2, the UNet's transformer blocks).
    #[default]
    Pre,
    /// Norm after the residual sum (BERT, BART).
    Post,
}

/// Configuration of [`TransformerBlock`].
#[derive(Config, Debug)]
pub struct TransformerBlockConfig {
    /// Token width `D`.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// MLP hidden width.
    pub d_hidden: usize,
    /// MLP activation.
    pub activation: Activation,
    /// Norm placement.
    #[config(default = "NormPlacement::Pre")]
    pub norm: NormPlacement,
    /// Epsilon of every LayerNorm.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Bias on the query/key/value projections (of both attentions).
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Bias on the attention output projections.
    #[config(default = true)]
    pub output_bias: bool,
    /// Per-head width; defaults to `d_model / n_heads`.
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Learned per-channel scales on the residual branches (DINOv2's layer-scale), init 1.
    #[config(default = false)]
    pub layer_scale: bool,
    /// Width of the cross-attention context; `None` = no cross-attention.
    #[config(default = "None")]
    pub cross_attention: Option<usize>,
    /// Gated (GEGLU) MLP.
    #[config(default = false)]
    pub gated_mlp: bool,
    /// Query chunk of the memory-bounded attention path (see [`MultiHeadAttentionConfig`]).
    #[config(default = "None")]
    pub query_chunk: Option<usize>,
}

impl TransformerBlockConfig {
    /// Build with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerBlock<B> {
        let d = self.d_model;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let attention = |d_kv: Option<usize>| {
            MultiHeadAttentionConfig::new(d, self.n_heads)
                .with_d_kv(d_kv)
                .with_head_dim(self.head_dim)
                .with_qkv_bias(self.qkv_bias)
                .with_output_bias(self.output_bias)
                .with_query_chunk(self.query_chunk)
                .init(device)
        };
        let ls = || {
            self.layer_scale
                .then(|| Param::initialized(ParamId::new(), Tensor::ones([d], device)))
        };
        TransformerBlock {
            norm1: ln(),
            attn: attention(None),
            ls1: ls(),
            cross_norm: self.cross_attention.map(|_| ln()),
            cross_attn: self.cross_attention.map(|c| attention(Some(c))),
            norm2: ln(),
            mlp: MlpConfig::new(d, self.d_hidden, self.activation)
                .with_gated(self.gated_mlp)
                .init(device),
            ls2: ls(),
            norm: self.norm,
        }
    }
}

/// A transformer block (see the module docs).
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    /// Norm of the self-attention branch.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: MultiHeadAttention<B>,
    /// Layer-scale of the self-attention branch, `[D]`.
    pub ls1: Option<Param<Tensor<B, 1>>>,
    /// Norm of the cross-attention branch.
    pub cross_norm: Option<LayerNorm<B>>,
    /// Cross-attention to the context.
    pub cross_attn: Option<MultiHeadAttention<B>>,
    /// Norm of the MLP branch.
    pub norm2: LayerNorm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
    /// Layer-scale of the MLP branch, `[D]`.
    pub ls2: Option<Param<Tensor<B, 1>>>,
    /// Norm placement.
    #[module(skip)]
    pub norm: NormPlacement,
}

/// Inputs of [`TransformerBlock::forward`].
#[derive(Debug, Clone)]
pub struct BlockInput<B: Backend> {
    /// `[batch, n, D]`
    pub x: Tensor<B, 3>,
    /// `[batch, n]`, true where a token is padding (self-attention never attends to it).
    pub mask_pad: Option<Tensor<B, 2, Bool>>,
    /// `[batch, n, n]`, true where query `i` must not attend to key `j` (e.g. causal).
    pub mask_attn: Option<Tensor<B, 3, Bool>>,
    /// Cross-attention context `[batch, m, d_context]`.
    pub context: Option<Tensor<B, 3>>,
    /// `[batch, m]`, true where a context token is padding.
    pub context_mask_pad: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> BlockInput<B> {
    /// Tokens only.
    pub fn new(x: Tensor<B, 3>) -> Self {
        Self {
            x,
            mask_pad: None,
            mask_attn: None,
            context: None,
            context_mask_pad: None,
        }
    }

    /// Padding mask of the tokens, `[batch, n]`, true = padding.
    pub fn mask_pad(mut self, mask: Tensor<B, 2, Bool>) -> Self {
        self.mask_pad = Some(mask);
        self
    }

    /// Attention mask `[batch, n, n]`, true = blocked.
    pub fn mask_attn(mut self, mask: Tensor<B, 3, Bool>) -> Self {
        self.mask_attn = Some(mask);
        self
    }

    /// Cross-attention context `[batch, m, d_context]`.
    pub fn context(mut self, context: Tensor<B, 3>) -> Self {
        self.context = Some(context);
        self
    }

    /// Padding mask of the context, `[batch, m]`, true = padding.
    pub fn context_mask_pad(mut self, mask: Tensor<B, 2, Bool>) -> Self {
        self.context_mask_pad = Some(mask);
        self
    }
}

fn scaled<B: Backend>(t: Tensor<B, 3>, ls: &Option<Param<Tensor<B, 1>>>) -> Tensor<B, 3> {
    match ls {
        Some(g) => t * g.val().unsqueeze::<3>(),
        None => t,
    }
}

impl<B: Backend> TransformerBlock<B> {
    /// `[batch, n, D] -> [batch, n, D]`. A context given to a block without cross-attention is
    /// ignored only if `cross_attn` is `None` and no context is passed; passing one to such a
    /// block panics in debug builds (a wiring bug of the calling model).
    pub fn forward(&self, input: BlockInput<B>) -> Tensor<B, 3> {
        debug_assert!(
            input.context.is_none() || self.cross_attn.is_some(),
            "a context was given to a block without cross-attention"
        );
        let BlockInput {
            x,
            mask_pad,
            mask_attn,
            context,
            context_mask_pad,
        } = input;
        let self_input = |h: Tensor<B, 3>| {
            let mut i = AttentionInput::self_attn(h);
            i.mask_pad = mask_pad.clone();
            i.mask_attn = mask_attn.clone();
            i
        };
        let cross = |h: Tensor<B, 3>| -> Option<Tensor<B, 3>> {
            let (attn, ctx) = (self.cross_attn.as_ref()?, context.clone()?);
            let mut i = AttentionInput::cross_attn(h, ctx);
            i.mask_pad = context_mask_pad.clone();
            Some(attn.forward(i).context)
        };
        match self.norm {
            NormPlacement::Pre => {
                let a = self.attn.forward(self_input(self.norm1.forward(x.clone())));
                let mut x = x + scaled(a.context, &self.ls1);
                if let Some(norm) = &self.cross_norm {
                    if let Some(c) = cross(norm.forward(x.clone())) {
                        x = x + c;
                    }
                }
                let m = self.mlp.forward(self.norm2.forward(x.clone()));
                x + scaled(m, &self.ls2)
            }
            NormPlacement::Post => {
                let a = self.attn.forward(self_input(x.clone())).context;
                let mut x = self.norm1.forward(x + scaled(a, &self.ls1));
                if let Some(norm) = &self.cross_norm {
                    if let Some(c) = cross(x.clone()) {
                        x = norm.forward(x + c);
                    }
                }
                let m = self.mlp.forward(x.clone());
                self.norm2.forward(x + scaled(m, &self.ls2))
            }
        }
    }
}

/// What a decoder block keeps between generation steps: its self-attention's keys and values
/// so far, and its cross-attention's (computed once from the context).
#[derive(Debug, Clone)]
pub struct BlockCache<B: Backend> {
    /// Self-attention keys/values of the tokens seen so far, `[batch, H, t, d]`.
    pub self_kv: Option<KvCache<B>>,
    /// Cross-attention keys/values of the context, `[batch, H, m, d]`.
    pub cross_kv: Option<KvCache<B>>,
}

impl<B: Backend> BlockCache<B> {
    /// Rows of the batch picked by `indices` (beam search).
    pub fn select(self, indices: Tensor<B, 1, burn::tensor::Int>) -> Self {
        Self {
            self_kv: self.self_kv.map(|c| c.select(indices.clone())),
            cross_kv: self.cross_kv.map(|c| c.select(indices)),
        }
    }
}

impl<B: Backend> TransformerBlock<B> {
    /// A fresh cache for incremental decoding: the cross-attention's keys and values of
    /// `context: [batch, m, d_context]` (none without cross-attention), no tokens yet.
    pub fn start_cache(&self, context: Option<Tensor<B, 3>>) -> BlockCache<B> {
        let cross_kv = match (&self.cross_attn, context) {
            (Some(attn), Some(ctx)) => Some(attn.project_kv(ctx.clone(), ctx)),
            _ => None,
        };
        BlockCache {
            self_kv: None,
            cross_kv,
        }
    }

    /// Causal decoding of the next `t` tokens `x: [batch, t, D]` given the cache (the tokens
    /// before them and the context); the cache grows by `t`. Equal to the rows of
    /// [`forward`](Self::forward) on the whole sequence with a causal mask.
    /// `context_mask_pad: [batch, m]`, true = padding.
    pub fn forward_step(
        &self,
        x: Tensor<B, 3>,
        cache: &mut BlockCache<B>,
        context_mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [batch, t, _] = x.dims();
        let self_step = |h: Tensor<B, 3>, cache: &mut BlockCache<B>| {
            let new = self.attn.project_kv(h.clone(), h.clone());
            let kv = match cache.self_kv.take() {
                Some(past) => past.append(new),
                None => new,
            };
            let total = kv.len();
            // Token i of the step sits at position total - t + i and sees keys up to it.
            let mask = (t > 1).then(|| {
                let device = h.device();
                let rows = Tensor::<B, 1, burn::tensor::Int>::arange(0..t as i64, &device)
                    .add_scalar((total - t) as i64)
                    .reshape([t, 1]);
                let cols = Tensor::<B, 1, burn::tensor::Int>::arange(0..total as i64, &device)
                    .reshape([1, total]);
                cols.greater(rows)
                    .unsqueeze::<3>()
                    .expand([batch, t, total])
            });
            let out = self.attn.forward_cached(h, &kv, None, mask);
            cache.self_kv = Some(kv);
            out
        };
        let cross_step = |h: Tensor<B, 3>, cache: &BlockCache<B>| -> Option<Tensor<B, 3>> {
            let (attn, kv) = (self.cross_attn.as_ref()?, cache.cross_kv.as_ref()?);
            Some(attn.forward_cached(h, kv, context_mask_pad.clone(), None))
        };
        match self.norm {
            NormPlacement::Pre => {
                let a = self_step(self.norm1.forward(x.clone()), cache);
                let mut x = x + scaled(a, &self.ls1);
                if let Some(norm) = &self.cross_norm {
                    if let Some(c) = cross_step(norm.forward(x.clone()), cache) {
                        x = x + c;
                    }
                }
                let m = self.mlp.forward(self.norm2.forward(x.clone()));
                x + scaled(m, &self.ls2)
            }
            NormPlacement::Post => {
                let a = self_step(x.clone(), cache);
                let mut x = self.norm1.forward(x + scaled(a, &self.ls1));
                if let Some(norm) = &self.cross_norm {
                    if let Some(c) = cross_step(x.clone(), cache) {
                        x = norm.forward(x + c);
                    }
                }
                let m = self.mlp.forward(x.clone());
                self.norm2.forward(x + scaled(m, &self.ls2))
            }
        }
    }
}

impl<B: Backend> Adaptable<B> for TransformerBlock<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
    ) -> PeftResult<()> {
        self.attn.visit_sites(&join(path, "attn"), f)?;
        self.cross_attn.visit_sites(&join(path, "cross_attn"), f)?;
        self.mlp.fc1.visit_sites(&join(path, "mlp.fc1"), f)?;
        self.mlp.fc2.visit_sites(&join(path, "mlp.fc2"), f)
    }
}
