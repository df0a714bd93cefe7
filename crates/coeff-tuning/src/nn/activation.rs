//! Activations named as the reference libraries name them in `config.json`.

use burn::tensor::activation::{gelu, gelu_approximate, relu, sigmoid, silu};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))`, built from `erf` so that autodiff takes the
/// derivative of this function.
///
/// Burn 0.21's own `gelu` computes this forward, but the default `gelu_backward` (used by the
/// NdArray, CubeCL (CUDA, wgpu) backends; Flex and tch override it) is the derivative of the
/// *tanh approximation*, off by up to 8.7e-4 (at x = 2.02) from the erf form's derivative that
/// PyTorch uses. Composing the forward from `erf`, `mul` and scalar ops gives the exact
/// derivative on every backend, at the cost of two more saved tensors of `x`'s size for the
/// backward (`x / sqrt 2` for `erf`, `Phi(x)` for the product) than the fused operator keeps.
/// [`Activation::forward`] uses it only while recording gradients, and not on Flex, whose
/// fused backward is already exact.
pub fn gelu_exact_backward<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let phi = x
        .clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * phi
}

/// Whether training on `B` needs [`gelu_exact_backward`]: while recording gradients, on every
/// autodiff backend but Flex's (whose `gelu_backward` is the erf form's derivative, tested).
fn needs_exact_gelu_backward<B: Backend>(device: &B::Device) -> bool {
    B::ad_enabled(device) && B::name(device) != "autodiff<flex>"
}

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
            Activation::Gelu if needs_exact_gelu_backward::<B>(&x.device()) => {
                gelu_exact_backward(x)
            }
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex, NdArray};

    /// `d gelu / dx = Phi(x) + x phi(x)` (the erf form's derivative, PyTorch's), to f32
    /// rounding, where Burn's default backward is off by up to 8.7e-4 near x = 2. On ndarray
    /// (the composed path) and on Flex (its fused operator, whose backward must stay exact for
    /// the fused path to be taken there).
    #[test]
    fn gelu_gradient_is_the_exact_derivative() {
        check::<Autodiff<NdArray<f32>>>("ndarray");
        check::<Autodiff<Flex>>("flex");
    }

    fn check<B: burn::tensor::backend::AutodiffBackend>(name: &str) {
        let device = Default::default();
        assert_eq!(
            needs_exact_gelu_backward::<B>(&device),
            name != "flex",
            "{}",
            B::name(&device)
        );
        let xs: Vec<f32> = (-60..=60).map(|i| i as f32 / 10.0).collect();
        let x = Tensor::<B, 1>::from_floats(xs.as_slice(), &device).require_grad();
        let y = Activation::Gelu.forward(x.clone());
        let grads = y.clone().sum().backward();
        let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        let values = y.into_data().to_vec::<f32>().unwrap();
        let mut worst = 0.0f64;
        for ((&xi, &gi), &yi) in xs.iter().zip(&g).zip(&values) {
            let x = f64::from(xi);
            let phi = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
            worst = worst.max((f64::from(gi) - (cdf + x * phi)).abs());
            assert!(
                (f64::from(yi) - x * cdf).abs() < 1e-5,
                "{name}: gelu({x}) = {yi}"
            );
        }
        assert!(worst < 1e-5, "{name}: gelu gradient off by {worst}");
    }

    /// erf in f64 for the reference values: its Taylor series up to |x| = 4 (cancellation
    /// leaves ~1e-9), the sign beyond (erfc(4) ~ 1.5e-8).
    fn erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }
}
