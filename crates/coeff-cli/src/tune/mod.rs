//! `tune`: Coeff-Tuning (and LoRA / DoRA) of one's own checkpoint on one's own data.
//!
//! - [`classify`]: a ViT folder (Hugging Face ViT / DINOv2 / CLIP vision, timm) and an image
//!   folder with one sub-folder per class; writes the adapter in our format and, for Hugging
//!   Face ViTs, in PEFT's, with `metrics.json`, a loss / accuracy curve and a confusion matrix.
//! - [`dreambooth`]: a diffusers SDXL folder, a few subject images and an instance prompt;
//!   writes the UNet's LoRA in diffusers' format and the adapter (with Coeff's alpha) in ours,
//!   with validation grids and `metrics.json`.

pub mod classify;
pub mod dreambooth;

/// The `tune` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TuneCommand {
    /// Image classification: a ViT checkpoint folder + `root/<class>/<image>` folders.
    Classify(Box<classify::ClassifyArgs>),
    /// DreamBooth: a diffusers SDXL folder + a folder of subject images + an instance prompt.
    Dreambooth(Box<dreambooth::DreamboothArgs>),
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
        TuneCommand::Dreambooth(a) => dreambooth::run::<B>(a, device),
    }
}

/// The run's trainer on `OUT/checkpoint.safetensors`, with `model` restored from it when a
/// killed run left one (said on stderr); a checkpoint that does not fit is an error saying
/// how to restart.
pub(crate) fn resume_trainer<B, M>(
    config: coeff_tuning::train::TrainerConfig,
    trainable: Vec<String>,
    out: &std::path::Path,
    fingerprint: &str,
    model: M,
    device: &B::Device,
) -> anyhow::Result<(coeff_tuning::train::Trainer<B>, M)>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
{
    let checkpoint = out.join("checkpoint.safetensors");
    let total = config.schedule.total_steps;
    let mut trainer =
        coeff_tuning::train::Trainer::<B>::new(config, trainable, &checkpoint, fingerprint)?;
    let model = trainer
        .resume(model, device)
        .map_err(|e| anyhow::anyhow!("{e}; delete {} to restart the run", checkpoint.display()))?;
    if let Some(s) = trainer.resumed_from() {
        eprintln!("tune: resuming {} at step {s} of {total}", out.display());
    }
    Ok((trainer, model))
}

/// The progress bar of a run of `total` steps, at `done`.
pub(crate) fn step_bar(total: usize, done: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
            .expect("static template"),
    );
    bar.set_position(done as u64);
    bar
}
