//! The feed-forward part of a transformer block: `fc2(act(fc1(x)))`, or the gated form
//! `fc2(h * act(g))` with `[h, g] = fc1(x)` (diffusers' GEGLU: `fc1` twice as wide).

use burn::config::Config;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{backend::Backend, Tensor};

use super::Activation;
use crate::adapters::PeftLinear;

/// Configuration of [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input and output width `D`.
    pub d_model: usize,
    /// Hidden width.
    pub d_hidden: usize,
    /// Activation.
    pub activation: Activation,
    /// Gated (GEGLU-style): `fc1` outputs `2 * d_hidden`, the first half gated by the second.
    #[config(default = false)]
    pub gated: bool,
    /// Biases on both layers.
    #[config(default = true)]
    pub bias: bool,
}

impl MlpConfig {
    /// Build with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let width = if self.gated { 2 } else { 1 } * self.d_hidden;
        Mlp {
            fc1: PeftLinear::new(
                &LinearConfig::new(self.d_model, width).with_bias(self.bias),
                device,
            ),
            fc2: PeftLinear::new(
                &LinearConfig::new(self.d_hidden, self.d_model).with_bias(self.bias),
                device,
            ),
            activation: self.activation,
            gated: self.gated,
        }
    }
}

/// Two linear layers (LoRA / DoRA attach to `fc1`, `fc2`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[D] -> [hidden]` (or `[2 * hidden]` when gated)
    pub fc1: PeftLinear<B>,
    /// `[hidden] -> [D]`
    pub fc2: PeftLinear<B>,
    /// Activation between them.
    #[module(skip)]
    pub activation: Activation,
    /// GEGLU-style gating.
    #[module(skip)]
    pub gated: bool,
}

impl<B: Backend> Mlp<B> {
    /// `x: [..., D] -> [..., D]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = self.fc1.forward(x);
        let h = if self.gated {
            let [value, gate]: [Tensor<B, D>; 2] = h
                .chunk(2, D - 1)
                .try_into()
                .expect("fc1 width is even when gated");
            value * self.activation.forward(gate)
        } else {
            self.activation.forward(h)
        };
        self.fc2.forward(h)
    }
}
