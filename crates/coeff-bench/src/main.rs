//! `coeff-bench`: the benchmarks on the backend chosen at build time (see the library's docs).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use coeff_bench::{attention, load, memory, mix};
use coeff_harness::backend;

/// Counts live host bytes for the benchmarks' memory columns.
#[global_allocator]
static ALLOC: memory::Counting = memory::Counting;

#[derive(Parser)]
#[command(
    name = "coeff-bench",
    version,
    about = "Coeff-Tuning benchmarks (backend fixed at build time)"
)]
struct Cli {
    /// Output directory for summary.json and results.md.
    #[arg(long, global = true, default_value = "runs/bench")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time an attention stack or a ViT with and without Coeff-Tuning on this backend.
    #[command(alias = "bench-attention")]
    Attention(attention::BenchArgs),
    /// Time the head-mixing kernel alone (two formulations) on ViT-sized maps.
    #[command(alias = "bench-mix")]
    Mix {
        /// Batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Heads.
        #[arg(long, default_value_t = 12)]
        heads: usize,
        /// Tokens.
        #[arg(long, default_value_t = 197)]
        tokens: usize,
        /// Timed repetitions.
        #[arg(long, default_value_t = 5)]
        iters: usize,
    },
    /// Peak memory of loading a synthetic checkpoint (`--mb`, f32 and f16) through the
    /// streaming checkpoint loader.
    #[command(alias = "bench-load")]
    Load(load::LoadArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let device = backend::device();
    eprintln!("backend: {}", backend::NAME);
    match cli.command {
        Command::Attention(args) => {
            anyhow::ensure!(
                !args.recompute || args.query_chunk.is_some(),
                "--recompute needs --query-chunk"
            );
            if args.recompute {
                coeff_tuning::attention::recompute::enable::<backend::Inner>();
            }
            attention::run::<backend::Train>(&args, &cli.out, backend::NAME, &device)
        }
        Command::Mix {
            batch,
            heads,
            tokens,
            iters,
        } => mix::run_mix::<backend::Train>(batch, heads, tokens, iters, &device),
        Command::Load(args) => {
            load::run_load::<backend::Inner>(&args, &cli.out, backend::NAME, &device)
        }
    }
}
