//! Activations named as the reference libraries name them in `config.json`.

use burn::tensor::activation::{gelu, gelu_approximate, relu, sigmoid, silu};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// An elementwise activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU: transformers `gelu`.
    Gelu,
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP's `quick_gelu`.
    QuickGelu,
    /// tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `x * sigmoid(x)`: `silu` / `swish`.
    Silu,
}

impl Activation {
    /// The names transformers / diffusers / timm write, and what each maps to.
    pub const HF_NAMES: &'static [(&'static str, Activation)] = &[
        ("gelu", Activation::Gelu),
        ("quick_gelu", Activation::QuickGelu),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("gelu_fast", Activation::GeluTanh),
        ("gelu_tanh", Activation::GeluTanh),
        ("relu", Activation::Relu),
        ("silu", Activation::Silu),
        ("swish", Activation::Silu),
    ];

    /// Parse a `hidden_act` / `activation_function` value; the error lists the names known.
    pub fn from_hf_name(name: &str) -> Result<Self, String> {
        Self::HF_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::HF_NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "activation `{name}` is not supported (known: {})",
                    known.join(", ")
                )
            })
    }

    /// Apply to any tensor.
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
        }
    }
}
