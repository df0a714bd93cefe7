//! Shared model pieces every model crate builds from: activations by their Hugging Face names,
//! the two-layer (optionally gated) MLP, and one transformer block - pre- or post-norm, with
//! padding / attention masks and an optional cross-attention to a context - whose attention is
//! the crate's one [`MultiHeadAttention`](crate::MultiHeadAttention).
//!
//! A block's module paths are `attn`, `cross_attn`, `mlp.fc1`, `mlp.fc2` (and the norms), so
//! LoRA / DoRA / Coeff-Tuning attach to every model built from it by the same patterns.

pub mod activation;
pub mod block;
pub mod mlp;

pub use activation::Activation;
pub use block::{BlockCache, BlockInput, NormPlacement, TransformerBlock, TransformerBlockConfig};
pub use mlp::{Mlp, MlpConfig};
