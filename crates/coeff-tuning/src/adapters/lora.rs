//! LoRA (Hu et al., 2021) and DoRA (Liu et al., 2024) factors for a linear layer.
//!
//! Weights follow Burn's layout `W: [d_input, d_output]`, so `y = x W + b`, and the low-rank
//! update is `delta W = scaling * A B` with `A: [d_input, r]`, `B: [r, d_output]`.
//! (PEFT stores the transposes: `lora_A.weight: [r, in]`, `lora_B.weight: [out, r]`.)
//!
//! `B` starts at zero so an injected model equals its base. `A` is drawn as PEFT draws it
//! (Kaiming-uniform with `a = sqrt(5)`, i.e. `U(-1/sqrt(in), 1/sqrt(in))`).
//!
//! DoRA decomposes `W' = m * (W + delta W) / ||W + delta W||`, the norm taken per output
//! feature (over `d_input`), `m: [d_output]` initialised to the base weight's norms. As in the
//! DoRA paper (Sec. 4.3) and PEFT, the norm is detached from the graph during training.

use burn::config::Config;
use burn::module::{Initializer, Module, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::module::linear;
use burn::tensor::{backend::Backend, Tensor};

/// Configuration of a LoRA / DoRA adapter, shared by every layer it is injected into.
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    #[config(default = 8)]
    pub rank: usize,
    /// `lora_alpha`; the update is scaled by `alpha / rank` (PEFT's convention).
    #[config(default = 8.0)]
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Use DoRA's magnitude/direction decomposition.
    #[config(default = false)]
    pub use_dora: bool,
}

impl LoraConfig {
    /// The scale applied to `A B`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Create the factors for a base weight `[d_input, d_output]`.
    pub fn init<B: Backend>(&self, base_weight: &Tensor<B, 2>) -> LoraAdapter<B> {
        let [d_input, d_output] = base_weight.dims();
        let device = base_weight.device();
        let bound = 1.0 / (d_input as f64).sqrt();
        let a = Initializer::Uniform {
            min: -bound,
            max: bound,
        }
        .init([d_input, self.rank], &device);
        let b = Param::initialized(
            ParamId::new(),
            Tensor::zeros([self.rank, d_output], &device),
        );
        let magnitude = self.use_dora.then(|| {
            // Rebuilt from data so the parameter is a leaf of the autodiff graph.
            let norm = column_norm(base_weight.clone().detach()).into_data();
            Param::initialized(ParamId::new(), Tensor::from_data(norm, &device))
        });
        LoraAdapter {
            a,
            b,
            magnitude,
            dropout: DropoutConfig::new(self.dropout).init(),
            scaling: self.scaling(),
            enabled: true,
        }
    }
}

/// The trainable factors attached to one linear layer.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// Down-projection, shape `[d_input, r]`.
    pub a: Param<Tensor<B, 2>>,
    /// Up-projection, shape `[r, d_output]`, zero-initialised.
    pub b: Param<Tensor<B, 2>>,
    /// DoRA magnitude, shape `[d_output]`; `None` for plain LoRA.
    pub magnitude: Option<Param<Tensor<B, 1>>>,
    /// Dropout on the adapter input (training only).
    pub dropout: Dropout,
    /// `alpha / rank`.
    pub scaling: f64,
    /// When false the layer computes its base output only.
    pub enabled: bool,
}

impl<B: Backend> LoraAdapter<B> {
    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// Whether this is a DoRA adapter.
    pub fn is_dora(&self) -> bool {
        self.magnitude.is_some()
    }

    /// `scaling * A B`, shape `[d_input, d_output]`.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scaling)
    }

    /// Dropout on the adapter input is active (training with p > 0).
    fn dropout_active<const D: usize>(&self, x: &Tensor<B, D>) -> bool {
        self.dropout.prob > 0.0 && B::ad_enabled(&x.device())
    }

    /// Output of the adapted layer given the base layer's weight, bias and output.
    ///
    /// - `x`: `[..., d_input]`, `base_out = x W + b`: `[..., d_output]`
    pub(crate) fn forward<const D: usize>(
        &self,
        x: Tensor<B, D>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
        base_out: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let x_d = self.dropout.forward(x.clone());
        let low_rank = linear(linear(x_d.clone(), self.a.val(), None), self.b.val(), None)
            .mul_scalar(self.scaling);
        let Some(magnitude) = &self.magnitude else {
            return base_out + low_rank;
        };
        // DoRA: scale = m / ||W + delta W||, detached norm.
        let norm = column_norm(weight.clone() + self.delta_weight()).detach();
        let scale = magnitude.val().div(norm).unsqueeze::<D>(); // [1, ..., 1, out]
        if self.dropout_active(&x) {
            // PEFT's form, exact when the adapter sees a dropped-out input:
            // y = base(x) + (scale - 1) * (x_d W) + scale * lowrank(x_d)
            let x_d_w = linear(x_d, weight, None);
            base_out + (scale.clone() - 1.0) * x_d_w + scale * low_rank
        } else {
            // Same value, one matmul fewer: y = scale * (x W + lowrank(x)) + b
            let x_w = match bias.clone() {
                Some(b) => base_out - b.unsqueeze::<D>(),
                None => base_out,
            };
            let y = scale * (x_w + low_rank);
            match bias {
                Some(b) => y + b.unsqueeze::<D>(),
                None => y,
            }
        }
    }
}

/// L2 norm of each output column: `[d_input, d_output] -> [d_output]`.
pub(crate) fn column_norm<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 1> {
    w.powi_scalar(2).sum_dim(0).sqrt().squeeze_dim(0)
}
