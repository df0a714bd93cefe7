//! # coeff-vit
//!
//! Vision transformers for Burn whose attention is `coeff_tuning::MultiHeadAttention`, so
//! Coeff-Tuning, LoRA and DoRA apply to them by module path. One module tree serves four
//! reference implementations, chosen by [`VitConfig::family`]:
//!
//! - Hugging Face `ViTModel` / `ViTForImageClassification` (Dosovitskiy et al., 2021);
//! - timm `VisionTransformer` (`vit_*`, fused qkv);
//! - the CLIP vision tower, `CLIPVisionModel[WithProjection]` (Radford et al., 2021);
//! - DINOv2, `Dinov2Model` (Oquab et al., 2023; layer-scale, interpolated positions).
//!
//! Configs are read from the reference `config.json` ([`VitConfig::from_file`]); weights
//! from safetensors in the reference key names through the tables in [`loader`] (read and
//! checked by `coeff_tuning::checkpoint`); the input normalisation from the checkpoint folder
//! ([`Normalization::from_dir`]).
//!
//! ```ignore
//! let model = coeff_vit::load_pretrained::<B>("path/to/checkpoint", &device)?;
//! let out = model.forward(pixel_values)?;     // last_hidden_state, pooled, logits, ...
//! ```

pub mod config;
pub mod error;
pub mod interpolate;
pub mod loader;
pub mod model;
pub mod normalization;
pub mod peft_format;
#[cfg(feature = "pretrained")]
pub mod pretrained;

pub use config::{Activation, Family, VitConfig};
pub use error::{Result, VitError};
pub use loader::{load_pretrained, load_weights, Checkpoint};
pub use model::{VisionTransformer, VitOutput};
pub use normalization::Normalization;

/// Where `cargo xtask fetch` puts converted checkpoints (`$COEFF_TUNING_CACHE`, else
/// `$XDG_CACHE_HOME/coeff-tuning`, else `~/.cache/coeff-tuning`); available without the
/// `pretrained` feature, as loading a converted checkpoint does not need it.
pub use coeff_assets::cache_dir;
