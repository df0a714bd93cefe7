//! `coeff-experiments`: the paper's experiments on the backend chosen at build time.
//!
//! Usually run through `cargo xtask experiment <name>`, which picks the backend feature and
//! a release build. Each experiment writes `summary.json`, `results.md` and PNG plots into
//! `--out`.

use coeff_experiments::{concept, fewshot, toy, vl};
use coeff_harness::backend;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Coeff-Tuning experiments (backend fixed at build time)"
)]
struct Cli {
    /// Output directory for summary.json, results.md and plots.
    #[arg(long, global = true, default_value = "runs/latest")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The toy graph experiment of the paper's Fig. 3.
    Toy(toy::ToyArgs),
    /// Few-shot image classification: linear probe, full fine-tuning, LoRA, DoRA, Coeff and
    /// their combinations on a real pretrained ViT and real datasets.
    Fewshot(Box<fewshot::FewShotArgs>),
    /// Vision-language multi-task tuning on easy-VQA (LoRA / DoRA, with and without Coeff).
    Vl(vl::VlArgs),
    /// DreamBooth-style concept customisation with an SDXL-style UNet on Twitter emoji
    /// (base stage, then LoRA / DoRA / Coeff / full tuning on held-out cat faces).
    Concept(concept::ConceptArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let device = backend::device();
    eprintln!("backend: {}", backend::NAME);
    match cli.command {
        Command::Toy(args) => {
            let t0 = std::time::Instant::now();
            let summary = toy::run::<backend::Train>(&args, &cli.out, backend::NAME, &device)?;
            let md = std::fs::read_to_string(cli.out.join("results.md"))?;
            println!("{md}");
            println!(
                "wrote {}/{{summary.json, results.md, toy.png, loss.png}} in {:.1} s",
                cli.out.display(),
                t0.elapsed().as_secs_f64()
            );
            anyhow::ensure!(
                summary.prop_4_2.holds,
                "Prop. 4.2 bound violated: see results.md"
            );
        }
        Command::Fewshot(args) => {
            let t0 = std::time::Instant::now();
            let summary = fewshot::run::<backend::Train>(&args, &cli.out, backend::NAME, &device)?;
            println!("{}", summary.markdown());
            println!(
                "wrote {}/{{summary.json, results.md, accuracy_vs_shots.png, accuracy_vs_params.png}} in {:.1} s",
                cli.out.display(),
                t0.elapsed().as_secs_f64()
            );
        }
        Command::Concept(args) => {
            concept::run::<backend::Train>(&args, &cli.out, backend::NAME, &device)?
        }
        Command::Vl(args) => vl::run::<backend::Train>(&args, &cli.out, backend::NAME, &device)?,
    }
    Ok(())
}
