//! The arguments every `infer` family takes.

use std::path::PathBuf;

/// Arguments of `infer`.
#[derive(Debug, Clone, clap::Args)]
pub struct InferArgs {
    /// Checkpoint directory: `config.json` (Hugging Face or timm) + `model.safetensors`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// safetensors file holding `pixel_values [B, C, H, W]`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (safetensors); must not be one of the input files.
    #[arg(long)]
    pub output: PathBuf,
    /// Adapter directory (`coeff_adapter_config.json` + `coeff_adapter.safetensors`) to load
    /// onto the checkpoint first: one saved for the bare ViT, or a few-shot run's `adapter/`
    /// (then `logits` are its classification head's).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}
