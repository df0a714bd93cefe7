//! `tune`: Coeff-Tuning (and LoRA / DoRA) of one's own checkpoint on one's own data.
//!
//! - [`classify`]: a ViT folder (Hugging Face ViT / DINOv2 / CLIP vision, timm) and an image
//!   folder with one sub-folder per class; writes the adapter in our format and, for Hugging
//!   Face ViTs, in PEFT's, with `metrics.json`, a loss / accuracy curve and a confusion matrix.

pub mod classify;

/// The `tune` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TuneCommand {
    /// Image classification: a ViT checkpoint folder + `root/<class>/<image>` folders.
    Classify(classify::ClassifyArgs),
}

/// Arguments of `tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// What to tune.
    #[command(subcommand)]
    pub command: TuneCommand,
}

/// Run `tune` on the backend `B` (an autodiff backend).
pub fn run<B: burn::tensor::backend::AutodiffBackend>(
    args: &TuneArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    match &args.command {
        TuneCommand::Classify(a) => classify::run::<B>(a, device),
    }
}
