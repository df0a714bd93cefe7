//! `coeff`: inference, sampling, tuning and fetching on the backend chosen at build time (see the
//! library's docs).

use anyhow::Result;
use clap::{Parser, Subcommand};
use coeff_cli::{fetch, infer, sample, tune};
use coeff_harness::backend;

#[derive(Parser)]
#[command(
    name = "coeff",
    version,
    about = "Coeff-Tuning: run checkpoints and adapters on your files (backend fixed at build time)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a checkpoint directory (ViT, BERT, CLIP, BART, diffusers UNet / VAE) on inputs from a
    /// safetensors file.
    Infer(infer::InferArgs),
    /// Text-to-image with a diffusers SDXL folder.
    Sample(sample::SampleArgs),
    /// Tune a checkpoint on your own data (`tune classify`: a ViT folder + an image folder;
    /// `tune dreambooth`: a diffusers SDXL folder + subject images + a prompt).
    Tune(tune::TuneArgs),
    /// Download, convert and verify the real pretrained ViTs (CLIP ViT-B/16, DINOv2 ViT-S/14).
    Fetch(fetch::FetchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let device = backend::device();
    eprintln!("backend: {}", backend::NAME);
    match cli.command {
        Command::Infer(args) => infer::run::<backend::Inner>(&args, &device),
        Command::Sample(args) => sample::run::<backend::Inner>(&args, &device),
        Command::Tune(args) => tune::run::<backend::Train>(&args, &device),
        Command::Fetch(args) => fetch::run::<backend::Inner>(&args, &device),
    }
}
