//! # coeff-sdxl
//!
//! diffusers' `UNet2DConditionModel` (SDXL, SD 1.x / 2.x) for Burn, generic over the backend.
//! Every self- and cross-attention is `coeff_tuning::MultiHeadAttention`, so Coeff-Tuning,
//! LoRA and DoRA attach to all of them by module path (`...transformer_blocks.0.attn`,
//! `...cross_attn`); the resnets' convolutions are LoRA sites too.
//!
//! - [`UnetConfig`]: read from diffusers' `config.json`; a field this crate does not implement
//!   is an error naming it, never ignored;
//! - [`UNet2DConditionModel`]: the model ([`blocks`] holds its parts);
//! - [`loader`]: the key table and [`load_unet`] for a diffusers folder (fp32, fp16, sharded;
//!   streamed one tensor at a time);
//! - [`vae`]: `AutoencoderKL` (encode to latent moments, decode, scaling factor);
//! - [`scheduler`]: DDPM's forward process (epsilon / v targets), DDIM and Euler discrete,
//!   classifier-free guidance.
//!
//! ```ignore
//! let (config, unet) = coeff_sdxl::load_unet::<B>("sdxl/unet", &device)?;
//! let eps = unet.forward(UnetInput { sample, timestep, encoder_hidden_states,
//!                                    text_embeds: Some(pooled), time_ids: Some(ids) })?;
//! ```

pub mod blocks;
pub mod config;
pub mod error;
pub mod loader;
pub mod lora_format;
pub mod pipeline;
pub mod scheduler;
pub mod unet;
pub mod vae;

pub use config::{DownBlockType, TextTimeConfig, UnetConfig, UpBlockType};
pub use error::{Result, UnetError};
pub use loader::{load_unet, load_weights};
pub use pipeline::{SampleConfig, SdxlPipeline};
pub use unet::{UNet2DConditionModel, UnetInput};
pub use vae::{load_vae, AutoencoderKL, VaeConfig};
