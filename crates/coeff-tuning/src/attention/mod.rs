//! The one multi-head attention every model crate calls, with Coeff-Tuning built in.
//!
//! ```text
//! Q = query(x_q)  : [B, N, H*d] -> [B, H, N, d]
//! K = key(x_kv)   : [B, M, H*d] -> [B, H, M, d]
//! V = value(x_kv) : [B, M, H*d] -> [B, H, M, d]
//! A     = dropout(softmax(Q K^T / sqrt(d) + bias + masks))   : [B, H, N, M]
//! A_hat = (I + dropout(alpha)) mixed over heads              : [B, H, N, M]   (Coeff-Tuning)
//! out   = output(concat_h(A_hat[:, h] V_h))                  : [B, N, d_out]
//! ```
//!
//! Self-attention, cross-attention (key width may differ from the query width), padding and
//! boolean masks, additive biases, and a query-chunked path that never holds all `[B, H, N, M]`
//! maps at once (for SDXL's 4096-token levels). Every projection is a [`PeftLinear`], so LoRA /
//! DoRA attach to `query`, `key`, `value`, `output` by module path.
//!
//! Ours or `burn::nn::attention::MultiHeadAttention`? Burn's layer has the same four
//! projections, but it cannot carry adapters, has no Coeff mix, takes a key width equal to the
//! query width, and its masks are `[batch, seq]` / `[batch, n, m]` with a different input type
//! (`MhaInput`). Use this one in any model you want to tune with this crate; the module paths
//! (`query`, `key`, `value`, `output`) are the same as Burn's, so weights map one to one.

pub mod coeff;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Bool, Tensor};

pub mod recompute;

pub use coeff::{mix_heads, mix_heads_2d, Coeff, CoeffConfig};

use crate::adapters::PeftLinear;

/// Configuration of [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Width of the query input (and of the output unless `d_output` is set).
    pub d_model: usize,
    /// Number of heads `H`.
    pub n_heads: usize,
    /// Width of the key/value input; defaults to `d_model` (self-attention).
    #[config(default = "None")]
    pub d_kv: Option<usize>,
    /// Per-head width `d`; defaults to `d_model / n_heads`.
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Output width; defaults to `d_model`.
    #[config(default = "None")]
    pub d_output: Option<usize>,
    /// Bias on the query/key/value projections.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Bias on the output projection.
    #[config(default = true)]
    pub output_bias: bool,
    /// Dropout on the attention maps (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Process queries in chunks of this many rows (memory-bounded path); `None` = eager.
    /// On an autodiff backend with [`recompute::enable`] the backward pass recomputes each
    /// chunk's maps instead of keeping them.
    #[config(default = "None")]
    pub query_chunk: Option<usize>,
    /// Score given to masked positions before the softmax. Finite, so a fully masked row
    /// gives a uniform map instead of NaN.
    #[config(default = -1.0e9)]
    pub mask_value: f64,
}

/// Multi-head attention with optional Coeff-Tuning coefficients.
///
/// Module paths: `query`, `key`, `value`, `output` ([`PeftLinear`]), `coeff.alpha` `[H, H]`.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    /// `[d_model] -> [H * d]`
    pub query: PeftLinear<B>,
    /// `[d_kv] -> [H * d]`
    pub key: PeftLinear<B>,
    /// `[d_kv] -> [H * d]`
    pub value: PeftLinear<B>,
    /// `[H * d] -> [d_output]`
    pub output: PeftLinear<B>,
    /// Coeff-Tuning coefficients, when injected.
    pub coeff: Option<Coeff<B>>,
    /// Dropout on the maps.
    pub dropout: Dropout,
    /// `H`
    pub n_heads: usize,
    /// `d`
    pub head_dim: usize,
    /// See [`MultiHeadAttentionConfig::query_chunk`].
    pub query_chunk: Option<usize>,
    /// See [`MultiHeadAttentionConfig::mask_value`].
    pub mask_value: f64,
}

impl MultiHeadAttentionConfig {
    /// Build the layer with freshly initialised projections and no adapters.
    ///
    /// Panics if `d_model` is not divisible by `n_heads` and `head_dim` is unset; model
    /// configs validate this before calling (with an error naming the config field).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        let head_dim = self.head_dim.unwrap_or_else(|| {
            assert!(
                self.d_model % self.n_heads == 0,
                "d_model {} is not divisible by n_heads {}",
                self.d_model,
                self.n_heads
            );
            self.d_model / self.n_heads
        });
        let inner = self.n_heads * head_dim;
        let d_kv = self.d_kv.unwrap_or(self.d_model);
        let d_out = self.d_output.unwrap_or(self.d_model);
        let linear = |d_in, d_out, bias| {
            PeftLinear::new(&LinearConfig::new(d_in, d_out).with_bias(bias), device)
        };
        MultiHeadAttention {
            query: linear(self.d_model, inner, self.qkv_bias),
            key: linear(d_kv, inner, self.qkv_bias),
            value: linear(d_kv, inner, self.qkv_bias),
            output: linear(inner, d_out, self.output_bias),
            coeff: None,
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
            head_dim,
            query_chunk: self.query_chunk,
            mask_value: self.mask_value,
        }
    }
}

/// Inputs of [`MultiHeadAttention::forward`].
#[derive(Debug, Clone)]
pub struct AttentionInput<B: Backend> {
    /// `[batch, n, d_model]`
    pub query: Tensor<B, 3>,
    /// `[batch, m, d_kv]`
    pub key: Tensor<B, 3>,
    /// `[batch, m, d_kv]`
    pub value: Tensor<B, 3>,
    /// `[batch, m]`, true where the key is padding (never attended to).
    pub mask_pad: Option<Tensor<B, 2, Bool>>,
    /// `[batch, n, m]`, true where query `n` must not attend to key `m`.
    pub mask_attn: Option<Tensor<B, 3, Bool>>,
    /// Additive score bias broadcastable to `[batch, H, n, m]` (e.g. `[1, 1, n, m]`).
    pub bias: Option<Tensor<B, 4>>,
    /// Return the maps (forces the eager path).
    pub return_maps: bool,
}

impl<B: Backend> AttentionInput<B> {
    /// Self-attention on `x: [batch, n, d_model]`.
    pub fn self_attn(x: Tensor<B, 3>) -> Self {
        Self::new(x.clone(), x.clone(), x)
    }

    /// Cross-attention: queries `x: [batch, n, d_model]`, context `ctx: [batch, m, d_kv]`.
    pub fn cross_attn(x: Tensor<B, 3>, ctx: Tensor<B, 3>) -> Self {
        Self::new(x, ctx.clone(), ctx)
    }

    /// General form with distinct query, key and value inputs.
    pub fn new(query: Tensor<B, 3>, key: Tensor<B, 3>, value: Tensor<B, 3>) -> Self {
        Self {
            query,
            key,
            value,
            mask_pad: None,
            mask_attn: None,
            bias: None,
            return_maps: false,
        }
    }

    /// Padding mask `[batch, m]`, true = padding.
    pub fn mask_pad(mut self, mask: Tensor<B, 2, Bool>) -> Self {
        self.mask_pad = Some(mask);
        self
    }

    /// Attention mask `[batch, n, m]`, true = blocked.
    pub fn mask_attn(mut self, mask: Tensor<B, 3, Bool>) -> Self {
        self.mask_attn = Some(mask);
        self
    }

    /// Additive score bias broadcastable to `[batch, H, n, m]`.
    pub fn bias(mut self, bias: Tensor<B, 4>) -> Self {
        self.bias = Some(bias);
        self
    }

    /// Ask for the maps in the output.
    pub fn with_maps(mut self) -> Self {
        self.return_maps = true;
        self
    }
}

/// Outputs of [`MultiHeadAttention::forward`].
#[derive(Debug, Clone)]
pub struct AttentionOutput<B: Backend> {
    /// `[batch, n, d_output]`
    pub context: Tensor<B, 3>,
    /// Post-softmax maps `A`, `[batch, H, n, m]`, when asked for.
    pub maps: Option<Tensor<B, 4>>,
    /// Mixed maps `A_hat` (what multiplies `V`), `[batch, H, n, m]`, when asked for and
    /// Coeff-Tuning is active.
    pub mixed_maps: Option<Tensor<B, 4>>,
}

/// Keys and values already projected and split into heads, `[batch, H, m, d]` each: what a
/// decoder keeps between generation steps ([`MultiHeadAttention::forward_cached`]).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// `[batch, H, m, d]`
    pub key: Tensor<B, 4>,
    /// `[batch, H, m, d]`
    pub value: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Number of cached positions `m`.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }

    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positions of `self` followed by those of `new` (same batch and heads).
    pub fn append(self, new: KvCache<B>) -> Self {
        Self {
            key: Tensor::cat(vec![self.key, new.key], 2),
            value: Tensor::cat(vec![self.value, new.value], 2),
        }
    }

    /// Rows of the batch picked by `indices: [batch']` (beam search reorders its beams).
    pub fn select(self, indices: Tensor<B, 1, burn::tensor::Int>) -> Self {
        Self {
            key: self.key.select(0, indices.clone()),
            value: self.value.select(0, indices),
        }
    }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Attach zero-initialised Coeff-Tuning coefficients with the given dropout rate.
    pub fn inject_coeff(&mut self, dropout: f64, path: &str) -> crate::error::Result<()> {
        if self.coeff.is_some() {
            return Err(crate::PeftError::AlreadyAdapted(path.to_string()));
        }
        let device = self.query.base.weight.device();
        self.coeff = Some(
            CoeffConfig::new(self.n_heads)
                .with_dropout(dropout)
                .init(&device),
        );
        Ok(())
    }

    /// Split `[batch, len, H*d]` into heads `[batch, H, len, d]`.
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, len, _] = x.dims();
        x.reshape([batch, len, self.n_heads, self.head_dim])
            .swap_dims(1, 2)
    }

    /// Project a key/value input into heads: `[batch, m, d_kv]` -> [`KvCache`] with
    /// `[batch, H, m, d]` keys and values. Cross-attention of a decoder computes this once per
    /// sequence; self-attention appends to it token by token ([`KvCache::append`]).
    pub fn project_kv(&self, key: Tensor<B, 3>, value: Tensor<B, 3>) -> KvCache<B> {
        KvCache {
            key: self.split_heads(self.key.forward(key)),
            value: self.split_heads(self.value.forward(value)),
        }
    }

    /// Run attention. See the module docs for the computation.
    pub fn forward(&self, input: AttentionInput<B>) -> AttentionOutput<B> {
        let kv = self.project_kv(input.key, input.value);
        self.forward_projected(
            input.query,
            &kv,
            input.mask_pad,
            input.mask_attn,
            input.bias,
            input.return_maps,
        )
    }

    /// Attention of `query: [batch, n, d_model]` to keys and values already projected
    /// (`cache`: `[batch, H, m, d]`), e.g. a decoder's past tokens. Masks as in
    /// [`AttentionInput`]: `mask_pad: [batch, m]`, `mask_attn: [batch, n, m]`, true = blocked.
    /// Returns `[batch, n, d_output]`; identical to [`forward`](Self::forward) on the
    /// unprojected inputs.
    pub fn forward_cached(
        &self,
        query: Tensor<B, 3>,
        cache: &KvCache<B>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        mask_attn: Option<Tensor<B, 3, Bool>>,
    ) -> Tensor<B, 3> {
        self.forward_projected(query, cache, mask_pad, mask_attn, None, false)
            .context
    }

    fn forward_projected(
        &self,
        query: Tensor<B, 3>,
        kv: &KvCache<B>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        mask_attn: Option<Tensor<B, 3, Bool>>,
        bias: Option<Tensor<B, 4>>,
        return_maps: bool,
    ) -> AttentionOutput<B> {
        let [batch, n, _] = query.dims();
        let m = kv.len();
        let q = self.split_heads(self.query.forward(query));
        let k_t = kv.key.clone().swap_dims(2, 3);
        let v = kv.value.clone();

        // Both masks folded into one boolean mask `[batch, 1, n|1, m]`.
        let mask = combine_masks(mask_pad, mask_attn, batch, n, m);

        let Some(c) = self.query_chunk.filter(|&c| c < n && !return_maps) else {
            let (heads_out, maps, mixed) = self.attend(q, k_t, v, mask, bias, None, return_maps);
            return self.finish(heads_out, batch, n, maps, mixed);
        };
        // One draw of alpha's dropout for the whole layer, as in the eager path.
        let mix = self
            .coeff
            .as_ref()
            .filter(|co| co.enabled)
            .map(|co| co.effective());
        // The recomputing backward, where the backend has it (see [`recompute`]): no map
        // dropout and no additive bias on that path.
        let (q, k_t, v, mask, mix) = if bias.is_none() && self.dropout.prob == 0.0 {
            let input = recompute::RecomputeInput {
                mix,
                scale: (self.head_dim as f64).powf(-0.5),
                mask_value: finite_mask_value(self.mask_value, q.dtype()),
                q,
                k_t,
                v,
                mask,
                chunk: c,
            };
            match recompute::try_recompute(input) {
                Ok(heads_out) => return self.finish(heads_out, batch, n, None, None),
                Err(i) => (i.q, i.k_t, i.v, i.mask, i.mix),
            }
        } else {
            (q, k_t, v, mask, mix)
        };
        let mut outs = Vec::with_capacity(n.div_ceil(c));
        for start in (0..n).step_by(c) {
            let end = (start + c).min(n);
            let q_c = q.clone().slice([0..batch, 0..self.n_heads, start..end]);
            let mask_c = mask.clone().map(|mk| slice_rows(mk, start, end));
            let bias_c = bias.clone().map(|b| slice_rows(b, start, end));
            let (out, _, _) = self.attend(
                q_c,
                k_t.clone(),
                v.clone(),
                mask_c,
                bias_c,
                mix.clone(),
                false,
            );
            outs.push(out);
        }
        self.finish(Tensor::cat(outs, 2), batch, n, None, None)
    }

    /// Merge the heads `[B, H, n, d]` and project.
    fn finish(
        &self,
        heads_out: Tensor<B, 4>,
        batch: usize,
        n: usize,
        maps: Option<Tensor<B, 4>>,
        mixed: Option<Tensor<B, 4>>,
    ) -> AttentionOutput<B> {
        let merged = heads_out
            .swap_dims(1, 2)
            .reshape([batch, n, self.n_heads * self.head_dim]);
        AttentionOutput {
            context: self.output.forward(merged),
            maps,
            mixed_maps: mixed,
        }
    }

    /// Attention for a block of queries. `q: [B, H, n, d]`, `k_t: [B, H, d, m]`,
    /// `v: [B, H, m, d]`, `mask: [B, 1, n|1, m]` -> `[B, H, n, d]`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k_t: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<Tensor<B, 4, Bool>>,
        bias: Option<Tensor<B, 4>>,
        mix: Option<Tensor<B, 2>>,
        return_maps: bool,
    ) -> (Tensor<B, 4>, Option<Tensor<B, 4>>, Option<Tensor<B, 4>>) {
        let mut scores = q.matmul(k_t).mul_scalar((self.head_dim as f64).powf(-0.5));
        if let Some(bias) = bias {
            scores = scores + bias;
        }
        if let Some(mask) = mask {
            let dims = scores.dims();
            let value = finite_mask_value(self.mask_value, scores.dtype());
            scores = scores.mask_fill(mask.expand(dims), value);
        }
        let maps = self.dropout.forward(softmax(scores, 3));
        let (mixed, kept_maps, kept_mixed) = match self.coeff.as_ref().filter(|c| c.enabled) {
            Some(coeff) => {
                let mixed = match mix {
                    Some(m) => mix_heads(maps.clone(), m),
                    None => coeff.mix(maps.clone()),
                };
                let keep_mixed = return_maps.then(|| mixed.clone());
                (mixed, return_maps.then_some(maps), keep_mixed)
            }
            None => (maps.clone(), return_maps.then_some(maps), None),
        };
        (mixed.matmul(v), kept_maps, kept_mixed)
    }
}

/// The mask value clamped to the float type's finite range: -1e9 is -inf in f16, and a fully
/// masked row of -inf scores would give NaN maps. `finfo(dtype).min`, as PyTorch masks.
pub fn finite_mask_value(value: f64, dtype: burn::tensor::DType) -> f64 {
    use burn::tensor::DType;
    let lowest = match dtype {
        DType::F16 => f64::from(half::f16::MIN),
        DType::BF16 => f64::from(half::bf16::MIN),
        DType::F32 | DType::Flex32 => f64::from(f32::MIN),
        _ => f64::MIN,
    };
    value.max(lowest)
}

/// Rows `start..end` of the query axis (dim 2) of a `[B, H|1, n|1, m]` tensor; broadcast
/// rows (size 1) are kept whole.
pub(crate) fn slice_rows<B: Backend, K: burn::tensor::BasicOps<B>>(
    t: Tensor<B, 4, K>,
    start: usize,
    end: usize,
) -> Tensor<B, 4, K> {
    let [b, h, rows, cols] = t.dims();
    if rows == 1 {
        t
    } else {
        t.slice([0..b, 0..h, start..end, 0..cols])
    }
}

/// Fold the padding mask `[B, m]` and the attention mask `[B, n, m]` into `[B, 1, n|1, m]`.
fn combine_masks<B: Backend>(
    pad: Option<Tensor<B, 2, Bool>>,
    attn: Option<Tensor<B, 3, Bool>>,
    batch: usize,
    n: usize,
    m: usize,
) -> Option<Tensor<B, 4, Bool>> {
    let pad = pad.map(|p| p.reshape([batch, 1, 1, m]));
    let attn = attn.map(|a| a.reshape([batch, 1, n, m]));
    match (pad, attn) {
        (None, None) => None,
        (Some(p), None) => Some(p),
        (None, Some(a)) => Some(a),
        (Some(p), Some(a)) => Some(a.bool_or(p.expand([batch, 1, n, m]))),
    }
}
