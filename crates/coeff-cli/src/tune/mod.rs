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

/// The folder of an `--init-adapter` and the sha256 of its weights (what the run is tied to).
pub(crate) fn adapter_identity(
    path: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, String)> {
    use anyhow::Context;
    let weights = crate::adapter::AdapterSource::detect(path)?
        .files()
        .into_iter()
        .find(|f| f.extension().and_then(|e| e.to_str()) == Some("safetensors"))
        .context("the adapter has no weights file")?;
    let bytes =
        std::fs::read(&weights).with_context(|| format!("reading {}", weights.display()))?;
    Ok((path.to_path_buf(), coeff_assets::sha256_hex(&bytes)))
}

/// The adapter's parts are the method's: LoRA or DoRA (or none), Coeff-Tuning (or not).
pub(crate) fn same_kind(
    saved: &coeff_tuning::PeftConfig,
    run: &coeff_tuning::PeftConfig,
    method: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let kind =
        |c: &coeff_tuning::PeftConfig| (c.lora.as_ref().map(|l| l.use_dora), c.coeff.is_some());
    let name = |(lora, coeff): (Option<bool>, bool)| {
        let w = match lora {
            None => "",
            Some(false) => "lora",
            Some(true) => "dora",
        };
        match (w, coeff) {
            ("", true) => "coeff".to_string(),
            ("", false) => "linear".to_string(),
            (w, true) => format!("{w}+coeff"),
            (w, false) => w.to_string(),
        }
    };
    anyhow::ensure!(
        kind(saved) == kind(run),
        "--init-adapter {} is a {} adapter; --method {} does not match it",
        path.display(),
        name(kind(saved)),
        method
    );
    Ok(())
}
