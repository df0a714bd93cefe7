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
    /// Adapter to load onto the checkpoint first, format recognised from its files: our
    /// folder (`coeff_adapter_config.json` + `coeff_adapter.safetensors`; a few-shot run's
    /// `adapter/` gives `logits` of its head), a PEFT folder (`adapter_config.json` +
    /// `adapter_model.safetensors`), or for a UNet a diffusers / kohya LoRA `.safetensors`.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}
