//! A linear layer that may carry a LoRA / DoRA adapter and can merge it into its weight.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use super::lora::{column_norm, LoraAdapter, LoraConfig};
use crate::error::{PeftError, Result};

/// `y = x W + b`, plus an optional low-rank adapter.
///
/// Module paths: `<path>.base.weight` `[d_input, d_output]`, `<path>.base.bias` `[d_output]`,
/// `<path>.lora.{a, b, magnitude}`.
#[derive(Module, Debug)]
pub struct PeftLinear<B: Backend> {
    /// The (frozen) pre-trained layer.
    pub base: Linear<B>,
    /// The adapter, when one is injected.
    pub lora: Option<LoraAdapter<B>>,
    /// The adapter's update is folded into `base.weight`.
    pub merged: bool,
    /// DoRA only: the per-output norms `||W + delta W||` used at merge time, `[d_output]`,
    /// kept so that unmerging restores the base weight exactly.
    pub dora_norm: Option<Tensor<B, 1>>,
}

impl<B: Backend> From<Linear<B>> for PeftLinear<B> {
    fn from(base: Linear<B>) -> Self {
        Self {
            base,
            lora: None,
            merged: false,
            dora_norm: None,
        }
    }
}

impl<B: Backend> PeftLinear<B> {
    /// A plain layer from Burn's config.
    pub fn new(config: &LinearConfig, device: &B::Device) -> Self {
        crate::params::materialize(config.init(device)).into()
    }

    /// Input width.
    pub fn d_input(&self) -> usize {
        self.base.weight.dims()[0]
    }

    /// Output width.
    pub fn d_output(&self) -> usize {
        self.base.weight.dims()[1]
    }

    /// Apply the layer. `x`: `[..., d_input]` -> `[..., d_output]`.
    ///
    /// The leading dimensions are folded into one before the products: a `[rows, d_input]` x
    /// `[d_input, d_output]` matrix product is one large GEMM that the backend can split over
    /// its threads, where `[B, N, d_input]` x `[1, d_input, d_output]` is `B` small ones (and,
    /// backwards, one more broadcast product per batch entry). docs/benchmarks.md measures it.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let y = self.forward_rows(x.reshape([rows, dims[D - 1]]));
        let mut out = dims;
        out[D - 1] = self.d_output();
        y.reshape(out)
    }

    /// [`Self::forward`] on rows: `[rows, d_input]` -> `[rows, d_output]`.
    fn forward_rows(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let base_out = self.base.forward(x.clone());
        match &self.lora {
            Some(lora) if lora.enabled && !self.merged => lora.forward(
                x,
                self.base.weight.val(),
                self.base.bias.as_ref().map(|b| b.val()),
                base_out,
            ),
            _ => base_out,
        }
    }

    /// Attach a fresh adapter. Errors if one is already attached.
    pub fn inject(&mut self, config: &LoraConfig, path: &str) -> Result<()> {
        if self.lora.is_some() {
            return Err(PeftError::AlreadyAdapted(path.to_string()));
        }
        if config.rank == 0 {
            return Err(PeftError::InvalidConfig(format!(
                "LoRA rank must be positive (layer `{path}`)"
            )));
        }
        self.lora = Some(config.init(&self.base.weight.val()));
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
                norm: column_norm,
                per_out: |v| v.unsqueeze::<2>(),
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
                norm: column_norm,
                per_out: |v| v.unsqueeze::<2>(),
            },
        );
        self.merged = false;
        self
    }
}
