//! The Coeff-Tuning operator: recombine the `H` post-softmax maps of one attention layer.
//!
//! Coeff-Tuning (Miao, Chen, Qiu, CVPR 2025, arXiv 2503.18337) reads head `i`'s map `A_i` as a
//! graph-convolution filter and learns a coefficient matrix `alpha: [H, H]` per layer:
//!
//! ```text
//! alpha_eff = I_H + dropout_p(alpha)            # residual, alpha initialised to zero
//! A_hat[b, h] = sum_i alpha_eff[h, i] * A[b, i]   # row h = output head, column i = source map
//! ```
//!
//! Our reading of details the paper leaves open (see `docs/method.md`):
//! - dropout acts on `alpha` only, never on the identity, and only in training (Burn's
//!   convention: when the backend records gradients); it is inverted dropout (kept entries
//!   scaled by `1 / (1 - p)`), as `torch.nn.Dropout` does;
//! - no renormalisation after mixing: rows of `A_hat` need not sum to one, entries may be
//!   negative - that is what lets outputs leave the convex hull of the values.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{backend::Backend, Tensor};

/// Configuration of the Coeff-Tuning coefficients of one attention layer.
#[derive(Config, Debug, PartialEq)]
pub struct CoeffConfig {
    /// Number of attention heads `H`; `alpha` is `[H, H]`.
    pub n_heads: usize,
    /// Dropout rate on `alpha` during training. The paper's ablation peaks at 0.2.
    #[config(default = 0.2)]
    pub dropout: f64,
}

impl CoeffConfig {
    /// Zero-initialised coefficients, so the layer starts exactly as the pre-trained one.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Coeff<B> {
        let alpha = Tensor::zeros([self.n_heads, self.n_heads], device);
        Coeff {
            alpha: Param::initialized(ParamId::new(), alpha),
            dropout: DropoutConfig::new(self.dropout).init(),
            enabled: true,
        }
    }
}

/// Per-layer head-mixing coefficients.
#[derive(Module, Debug)]
pub struct Coeff<B: Backend> {
    /// Shape `[H, H]`: `alpha[h, i]` weights source map `i` in output head `h`.
    pub alpha: Param<Tensor<B, 2>>,
    /// Dropout on `alpha` (training only).
    pub dropout: Dropout,
    /// When false the layer behaves as if no coefficients were attached.
    pub enabled: bool,
}

impl<B: Backend> Coeff<B> {
    /// Number of heads `H`.
    pub fn n_heads(&self) -> usize {
        self.alpha.dims()[0]
    }

    /// `I + dropout(alpha)`, shape `[H, H]`.
    pub fn effective(&self) -> Tensor<B, 2> {
        let alpha = self.alpha.val();
        let h = alpha.dims()[0];
        // In the parameter's dtype (f16/bf16 models): a no-op cast for f32.
        let eye = Tensor::<B, 2>::eye(h, &alpha.device()).cast(alpha.dtype());
        eye + self.dropout.forward(alpha)
    }

    /// Mix the maps. `maps`: `[batch, H, n, m]` -> `[batch, H, n, m]`.
    ///
    /// Returns `maps` untouched when disabled.
    pub fn mix(&self, maps: Tensor<B, 4>) -> Tensor<B, 4> {
        if !self.enabled {
            return maps;
        }
        mix_heads(maps, self.effective())
    }
}

/// `A_hat[b, h] = sum_i coeffs[h, i] * maps[b, i]`.
///
/// - `maps`: `[batch, H, n, m]`
/// - `coeffs`: `[H, H]`, row = output head, column = source map
/// - returns `[batch, H, n, m]`
pub fn mix_heads<B: Backend>(maps: Tensor<B, 4>, coeffs: Tensor<B, 2>) -> Tensor<B, 4> {
    let [batch, heads, n, m] = maps.dims();
    let flat = maps.reshape([batch, heads, n * m]);
    let coeffs = coeffs.unsqueeze::<3>().expand([batch, heads, heads]);
    coeffs.matmul(flat).reshape([batch, heads, n, m])
}

/// Same as [`mix_heads`], computed as one `[H, H] x [H, batch*n*m]` product (heads moved to
/// the front). Kept to compare kernels on each backend (`bench-mix`).
pub fn mix_heads_2d<B: Backend>(maps: Tensor<B, 4>, coeffs: Tensor<B, 2>) -> Tensor<B, 4> {
    let [batch, heads, n, m] = maps.dims();
    let flat = maps.swap_dims(0, 1).reshape([heads, batch * n * m]);
    coeffs
        .matmul(flat)
        .reshape([heads, batch, n, m])
        .swap_dims(0, 1)
}
