//! The layers that carry weight-space adapters: a linear and a 2-D convolution, each with an
//! optional LoRA / DoRA adapter that can be merged into its weight and unmerged again.
//!
//! This module depends on nothing else in the crate but the error type and
//! [`params`](crate::params); the attention operator builds its projections from
//! [`PeftLinear`], and the PEFT machinery ([`peft`](crate::peft)) injects into both.

pub mod conv;
pub mod linear;
pub mod lora;

pub use conv::{LoraConvAdapter, PeftConv2d};
pub use linear::PeftLinear;
pub use lora::{LoraAdapter, LoraConfig};

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor};

/// Per-output-feature operations of a weight layout (linear `[in, out]`, conv
/// `[out, in, kh, kw]`): the L2 norm of each output's weights, and broadcasting a per-output
/// vector to the weight's shape.
pub(crate) struct OutputAxis<B: Backend, const D: usize> {
    pub norm: fn(Tensor<B, D>) -> Tensor<B, 1>,
    pub per_out: fn(Tensor<B, 1>) -> Tensor<B, D>,
}

/// Fold `delta` (and, for DoRA, the magnitude) into `weight`. Returns the merged weight and,
/// for DoRA, the norms `||W + delta||` needed to unmerge exactly.
pub(crate) fn merge_weight<B: Backend, const D: usize>(
    weight: Param<Tensor<B, D>>,
    delta: Tensor<B, D>,
    magnitude: Option<Tensor<B, 1>>,
    axis: OutputAxis<B, D>,
) -> (Param<Tensor<B, D>>, Option<Tensor<B, 1>>) {
    match magnitude {
        None => (weight.map(|w| w + delta), None),
        Some(m) => {
            let mut cached = None;
            let weight = weight.map(|w| {
                let v = w + delta;
                let norm = (axis.norm)(v.clone());
                cached = Some(norm.clone());
                v * (axis.per_out)(m.div(norm))
            });
            (weight, cached)
        }
    }
}

/// Undo [`merge_weight`].
pub(crate) fn unmerge_weight<B: Backend, const D: usize>(
    weight: Param<Tensor<B, D>>,
    delta: Tensor<B, D>,
    magnitude: Option<Tensor<B, 1>>,
    merged_norm: Option<Tensor<B, 1>>,
    axis: OutputAxis<B, D>,
) -> Param<Tensor<B, D>> {
    match (magnitude, merged_norm) {
        (Some(m), Some(norm)) => {
            let factor = (axis.per_out)(norm.div(m));
            weight.map(|w| w * factor - delta)
        }
        _ => weight.map(|w| w - delta),
    }
}
