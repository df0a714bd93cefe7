//! A 2-D convolution that may carry a LoRA / DoRA adapter, as PEFT and diffusers adapt a UNet's
//! `conv1`, `conv2`, `conv_shortcut` and 1x1-conv `proj_in` / `proj_out`.
//!
//! Burn and PyTorch share the weight layout `W: [out, in, kh, kw]`, and the factors are stored
//! exactly as PEFT stores them: `A: [r, in, kh, kw]` (a conv with the base layer's kernel,
//! stride, padding and dilation) and `B: [out, r, 1, 1]` (a 1x1 conv), so
//! `delta W = scaling * reshape(B[out, r] @ A[r, in*kh*kw])`. `B` starts at zero; `A` is drawn as
//! PEFT draws it, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` with `fan_in = in * kh * kw`.
//!
//! DoRA's norm is taken per output channel, over `(in, kh, kw)`, and detached, as for linears.

use burn::module::{Initializer, Module, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{backend::Backend, Tensor};

use super::lora::LoraConfig;
use crate::error::{PeftError, Result};

/// The trainable factors attached to one convolution.
#[derive(Module, Debug)]
pub struct LoraConvAdapter<B: Backend> {
    /// Down-projection conv, `[r, in, kh, kw]`.
    pub a: Param<Tensor<B, 4>>,
    /// Up-projection 1x1 conv, `[out, r, 1, 1]`, zero-initialised.
    pub b: Param<Tensor<B, 4>>,
    /// DoRA magnitude, `[out]`; `None` for plain LoRA.
    pub magnitude: Option<Param<Tensor<B, 1>>>,
    /// Dropout on the adapter input (training only).
    pub dropout: Dropout,
    /// `alpha / rank`.
    pub scaling: f64,
    /// When false the layer computes its base output only.
    pub enabled: bool,
}

impl<B: Backend> LoraConvAdapter<B> {
    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// `scaling * B A` reshaped to the base weight's `[out, in, kh, kw]`.
    pub fn delta_weight(&self) -> Tensor<B, 4> {
        let [r, c_in, kh, kw] = self.a.dims();
        let [c_out, _, _, _] = self.b.dims();
        let a = self.a.val().reshape([r, c_in * kh * kw]);
        let b = self.b.val().reshape([c_out, r]);
        b.matmul(a)
            .reshape([c_out, c_in, kh, kw])
            .mul_scalar(self.scaling)
    }
}

/// Per-output-channel L2 norm: `[out, in, kh, kw] -> [out]`.
fn channel_norm<B: Backend>(w: Tensor<B, 4>) -> Tensor<B, 1> {
    let [c_out, c_in, kh, kw] = w.dims();
    w.reshape([c_out, c_in * kh * kw])
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .reshape([c_out])
}

/// `[out] -> [out, 1, 1, 1]`, to scale a conv weight per output channel.
fn per_channel<B: Backend>(v: Tensor<B, 1>) -> Tensor<B, 4> {
    let [c] = v.dims();
    v.reshape([c, 1, 1, 1])
}

/// `y = conv(x, W) + b`, plus an optional low-rank adapter.
///
/// Module paths: `<path>.base.weight` `[out, in, kh, kw]`, `<path>.base.bias` `[out]`,
/// `<path>.lora.{a, b, magnitude}`.
#[derive(Module, Debug)]
pub struct PeftConv2d<B: Backend> {
    /// The (frozen) pre-trained layer.
    pub base: Conv2d<B>,
    /// The adapter, when one is injected.
    pub lora: Option<LoraConvAdapter<B>>,
    /// The adapter's update is folded into `base.weight`.
    pub merged: bool,
    /// DoRA only: the per-channel norms used at merge time, `[out]` (exact unmerge).
    pub dora_norm: Option<Tensor<B, 1>>,
}

impl<B: Backend> From<Conv2d<B>> for PeftConv2d<B> {
    fn from(base: Conv2d<B>) -> Self {
        Self {
            base,
            lora: None,
            merged: false,
            dora_norm: None,
        }
    }
}

impl<B: Backend> PeftConv2d<B> {
    /// A plain layer from Burn's config.
    pub fn new(config: &burn::nn::conv::Conv2dConfig, device: &B::Device) -> Self {
        crate::params::materialize(config.init(device)).into()
    }

    /// The base layer's hyper-parameters with another weight and bias.
    fn conv_with(
        &self,
        x: Tensor<B, 4>,
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 4> {
        Conv2d {
            weight: Param::initialized(ParamId::new(), weight),
            bias: bias.map(|b| Param::initialized(ParamId::new(), b)),
            stride: self.base.stride,
            kernel_size: self.base.kernel_size,
            dilation: self.base.dilation,
            groups: self.base.groups,
            padding: self.base.padding.clone(),
        }
        .forward(x)
    }

    /// Apply the layer. `x: [batch, in, h, w] -> [batch, out, h', w']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let lora = match &self.lora {
            Some(lora) if lora.enabled && !self.merged => lora,
            _ => return self.base.forward(x),
        };
        let weight = self.base.weight.val();
        let bias = self.base.bias.as_ref().map(|b| b.val());
        let delta = lora.delta_weight();
        let dropout_active = lora.dropout.prob > 0.0 && B::ad_enabled(&x.device());
        match (&lora.magnitude, dropout_active) {
            // Plain LoRA: conv(x, W) + conv(x, dW) = conv(x, W + dW): one convolution.
            (None, false) => self.conv_with(x, weight + delta, bias),
            (None, true) => {
                let x_d = lora.dropout.forward(x.clone());
                self.base.forward(x) + self.conv_with(x_d, delta, None)
            }
            (Some(m), dropout) => {
                let norm = channel_norm(weight.clone() + delta.clone()).detach();
                let scale = m.val().div(norm);
                if dropout {
                    // PEFT's form: base(x) + (s - 1) conv(x_d, W) + s conv(x_d, dW).
                    let x_d = lora.dropout.forward(x.clone());
                    let channels = scale.dims()[0];
                    let s = scale.reshape([1, channels, 1, 1]);
                    self.base.forward(x)
                        + (s.clone() - 1.0) * self.conv_with(x_d.clone(), weight, None)
                        + s * self.conv_with(x_d, delta, None)
                } else {
                    self.conv_with(x, per_channel(scale) * (weight + delta), bias)
                }
            }
        }
    }

    /// Attach a fresh adapter. Errors if one is already attached or the layer is grouped.
    pub fn inject(&mut self, config: &LoraConfig, path: &str) -> Result<()> {
        if self.lora.is_some() {
            return Err(PeftError::AlreadyAdapted(path.to_string()));
        }
        if config.rank == 0 {
            return Err(PeftError::InvalidConfig(format!(
                "LoRA rank must be positive (layer `{path}`)"
            )));
        }
        if self.base.groups != 1 {
            return Err(PeftError::InvalidConfig(format!(
                "LoRA on a grouped convolution ({} groups) is not supported (layer `{path}`)",
                self.base.groups
            )));
        }
        let [c_out, c_in, kh, kw] = self.base.weight.dims();
        let device = self.base.weight.device();
        let bound = 1.0 / ((c_in * kh * kw) as f64).sqrt();
        let a = Initializer::Uniform {
            min: -bound,
            max: bound,
        }
        .init([config.rank, c_in, kh, kw], &device);
        let b = Param::initialized(
            ParamId::new(),
            Tensor::zeros([c_out, config.rank, 1, 1], &device),
        );
        let magnitude = config.use_dora.then(|| {
            let norm = channel_norm(self.base.weight.val().detach()).into_data();
            Param::initialized(ParamId::new(), Tensor::from_data(norm, &device))
        });
        self.lora = Some(LoraConvAdapter {
            a,
            b,
            magnitude,
            dropout: DropoutConfig::new(config.dropout).init(),
            scaling: config.scaling(),
            enabled: true,
        });
        Ok(())
    }

    /// Fold the adapter into the base weight (no-op without an adapter or when merged).
    pub fn merge(mut self) -> Self {
        let Some(lora) = &self.lora else { return self };
        if self.merged {
            return self;
        }
        let (weight, norm) = super::merge_weight(
            self.base.weight,
            lora.delta_weight(),
            lora.magnitude.as_ref().map(|m| m.val()),
            super::OutputAxis {
                norm: channel_norm,
                per_out: per_channel,
            },
        );
        self.base.weight = weight;
        self.dora_norm = norm;
        self.merged = true;
        self
    }

    /// Undo [`merge`](Self::merge), restoring the base weight.
    pub fn unmerge(mut self) -> Self {
        let Some(lora) = &self.lora else { return self };
        if !self.merged {
            return self;
        }
        self.base.weight = super::unmerge_weight(
            self.base.weight,
            lora.delta_weight(),
            lora.magnitude.as_ref().map(|m| m.val()),
            self.dora_norm.take(),
            super::OutputAxis {
                norm: channel_norm,
                per_out: per_channel,
            },
        );
        self.merged = false;
        self
    }
}
