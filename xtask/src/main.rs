//! `cargo xtask`: a thin driver that builds the project's three binaries with the chosen
//! backend (a release build) and runs them, forwarding every flag.
//!
//! | task | binary (crate) | what |
//! |---|---|---|
//! | `experiment NAME` | `coeff-experiments` | the paper's experiments: `fewshot` (default), `toy`, `vl`, `concept` |
//! | `bench NAME` | `coeff-bench` | `attention`, `mix`, `load`; `compare` runs toy + attention per backend |
//! | `infer`, `sample`, `tune`, `fetch` | `coeff` (coeff-cli) | the commands for one's own files |
//!
//! ```text
//! cargo xtask experiment                       # the main job: few-shot ViT sweep on the CPU default
//! cargo xtask experiment fewshot --backend cuda -- --preset full
//! cargo xtask experiment toy --backend flex --out runs/toy-flex
//! cargo xtask experiment vl                    # the VL table on easy-VQA (CPU)
//! cargo xtask experiment concept               # DreamBooth-style concept tuning on emoji (CPU)
//! cargo xtask bench attention --backend cuda -- --width 768 --heads 12
//! cargo xtask bench compare --backends flex,ndarray   # toy + attention stack per backend
//! cargo xtask fetch                            # real pretrained ViTs: download, convert, verify
//! cargo xtask infer --checkpoint DIR --input x.safetensors --output y.safetensors [--adapter A]
//! cargo xtask sample --pipeline DIR --prompt "a cat" --output cat.png
//! cargo xtask tune classify --checkpoint DIR --train-dir IMAGES --out runs/mine --method lora+coeff
//! ```
//!
//! `infer`, `sample`, `tune` and `fetch` take `--backend B` anywhere among their arguments and pass
//! every other argument to `coeff` unchanged (`cargo xtask infer --help` shows them). Every
//! program runs in the directory `cargo xtask` was called from, so relative paths mean what
//! they say; an experiment's default output folder is `runs/<name>-<backend>` in the workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

/// The CPU default, chosen by measurement (docs/benchmarks.md).
const DEFAULT_BACKEND: Backend = Backend::Flex;

#[derive(Parser)]
#[command(about = "Project tasks: run experiments, benchmarks and commands on a chosen backend")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run one of the paper's experiments (release build, chosen backend).
    Experiment {
        /// Which experiment.
        #[arg(value_enum, default_value_t = Experiment::Fewshot)]
        name: Experiment,
        /// Backend to build the experiment program with.
        #[arg(long, value_enum, default_value_t = DEFAULT_BACKEND)]
        backend: Backend,
        /// Output directory (default: runs/<experiment>-<backend> in the workspace).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Arguments passed to the experiment (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a benchmark (release build, chosen backend), or compare backends.
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        name: Bench,
        /// Backend (`attention`, `mix`, `load`).
        #[arg(long, value_enum, default_value_t = DEFAULT_BACKEND)]
        backend: Backend,
        /// Backends to compare (`compare`), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [Backend::Flex, Backend::Ndarray])]
        backends: Vec<Backend>,
        /// Output directory (default: runs/bench-<name>-<backend>, or runs/bench for `compare`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Arguments passed to the benchmark (after `--`; for `compare`, to `attention`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a checkpoint folder (ViT, BERT / CLIP / BART, diffusers UNet / VAE) on an input
    /// file: every argument goes to `coeff infer` (`--backend B` picks the backend).
    Infer(Forwarded),
    /// SDXL text-to-image from a diffusers folder: every argument goes to `coeff sample`.
    Sample(Forwarded),
    /// Tune a checkpoint on your own data (`tune classify`: a ViT folder and an image folder;
    /// `tune dreambooth`: a diffusers SDXL folder, subject images and a prompt):
    /// every argument goes to `coeff tune`.
    Tune(Forwarded),
    /// Download, convert (ONNX -> safetensors, in Rust) and verify the real pretrained ViTs:
    /// every argument goes to `coeff fetch`.
    Fetch(Forwarded),
}

/// Arguments forwarded to a `coeff` command, with `--backend B` taken out.
#[derive(clap::Args)]
struct Forwarded {
    /// The command's arguments (`--backend B` anywhere among them picks the backend).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Experiment {
    /// Few-shot image classification on real pretrained ViTs and real datasets (the paper's
    /// ViT table at CPU scale; `-- --preset full` for a GPU).
    Fewshot,
    /// The toy graph of the paper's Fig. 3.
    Toy,
    /// Vision-language multi-task tuning (VQA, yes/no, image-pair statements, captions) on
    /// easy-VQA with a VL-BART-style model: the paper's VL table at CPU scale.
    Vl,
    /// DreamBooth-style concept customisation (LoRA / DoRA / Coeff / full) with a small
    /// SDXL-style UNet on Twitter emoji: the paper's SDXL experiment at CPU scale.
    Concept,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// Step time and memory of an attention stack or a ViT with and without Coeff-Tuning
    /// (with PyTorch in the same run for ViTs).
    Attention,
    /// The head-mixing kernel alone.
    Mix,
    /// Peak memory of a streaming checkpoint load.
    Load,
    /// The toy experiment and the attention stack on each of `--backends`, with a table.
    Compare,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// Burn's ndarray CPU backend (pure Rust matmul).
    Ndarray,
    /// ndarray with the system OpenBLAS (needs libopenblas-dev).
    NdarrayBlas,
    /// WebGPU / Vulkan.
    Wgpu,
    /// NVIDIA CUDA.
    Cuda,
}

impl Backend {
    fn feature(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::NdarrayBlas => "ndarray-blas",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.feature())
    }
}

impl Experiment {
    fn command(self) -> &'static str {
        match self {
            Experiment::Fewshot => "fewshot",
            Experiment::Toy => "toy",
            Experiment::Vl => "vl",
            Experiment::Concept => "concept",
        }
    }
}

impl Bench {
    fn command(self) -> &'static str {
        match self {
            Bench::Attention => "attention",
            Bench::Mix => "mix",
            Bench::Load => "load",
            Bench::Compare => "compare",
        }
    }
}

/// A binary of the workspace: its package and executable name.
#[derive(Clone, Copy)]
struct Program {
    package: &'static str,
    bin: &'static str,
}

const EXPERIMENTS: Program = Program {
    package: "coeff-experiments",
    bin: "coeff-experiments",
};
const BENCH: Program = Program {
    package: "coeff-bench",
    bin: "coeff-bench",
};
const CLI: Program = Program {
    package: "coeff-cli",
    bin: "coeff",
};

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Experiment {
            name,
            backend,
            out,
            args,
        } => {
            let out = out_dir(out, &format!("{}-{backend}", name.command()));
            run_experiment(name, backend, &out, &args)
        }
        Task::Bench {
            name: Bench::Compare,
            backends,
            out,
            args,
            ..
        } => {
            let out = out_dir(out, "bench");
            for &backend in &backends {
                run_experiment(
                    Experiment::Toy,
                    backend,
                    &out.join(format!("toy-{backend}")),
                    &[],
                )?;
                let mut a = out_args(&out.join(format!("attention-{backend}")));
                a.push("attention".into());
                a.extend(args.iter().cloned());
                run_program(BENCH, backend, &a)?;
            }
            compare(&backends, &out)
        }
        Task::Bench {
            name,
            backend,
            out,
            args,
            ..
        } => {
            let out = out_dir(out, &format!("bench-{}-{backend}", name.command()));
            let mut a = out_args(&out);
            a.push(name.command().into());
            a.extend(args);
            run_program(BENCH, backend, &a)
        }
        Task::Infer(f) => forward("infer", f),
        Task::Sample(f) => forward("sample", f),
        Task::Tune(f) => forward("tune", f),
        Task::Fetch(f) => forward("fetch", f),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `out` as given (relative to the current directory), or `runs/<default>` in the workspace.
fn out_dir(out: Option<PathBuf>, default: &str) -> PathBuf {
    out.unwrap_or_else(|| workspace_root().join("runs").join(default))
}

fn out_args(out: &Path) -> Vec<String> {
    vec!["--out".into(), out.display().to_string()]
}

fn run_experiment(name: Experiment, backend: Backend, out: &Path, args: &[String]) -> Result<()> {
    let mut a = out_args(out);
    a.push(name.command().into());
    a.extend(args.iter().cloned());
    run_program(EXPERIMENTS, backend, &a)
}

/// `coeff <command> <args>` with `--backend B` / `--backend=B` taken out of `args`.
fn forward(command: &str, f: Forwarded) -> Result<()> {
    let mut backend = DEFAULT_BACKEND;
    let mut rest = vec![command.to_string()];
    let mut it = f.args.into_iter();
    while let Some(a) = it.next() {
        let value = if a == "--backend" {
            Some(it.next().context("--backend needs a value")?)
        } else {
            a.strip_prefix("--backend=").map(str::to_string)
        };
        match value {
            Some(v) => {
                backend = Backend::from_str(&v, true).map_err(|e| {
                    anyhow::anyhow!(
                        "--backend {v}: {e} (one of flex, ndarray, ndarray-blas, wgpu, cuda)"
                    )
                })?
            }
            None => rest.push(a),
        }
    }
    run_program(CLI, backend, &rest)
}

/// `cargo run --release --manifest-path <workspace>/Cargo.toml -p <package> --bin <bin>
/// --no-default-features --features <backend> -- <args>`, in the current directory.
fn run_program(program: Program, backend: Backend, args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    eprintln!("xtask: {} {} on {backend}", program.bin, args.join(" "));
    let status = Command::new(cargo)
        .arg("run")
        .arg("--release")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--package", program.package, "--bin", program.bin])
        .args([
            "--no-default-features",
            "--features",
            backend.feature(),
            "--",
        ])
        .args(args)
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!(
            "{} {} on {backend} failed ({status})",
            program.bin,
            args.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(())
}

/// Print the time ratios between backends from their summaries.
fn compare(backends: &[Backend], out: &Path) -> Result<()> {
    let read = |dir: PathBuf| -> Result<serde_json::Value> {
        let p = dir.join("summary.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    println!("| backend | toy wall s (3 runs) | stack fwd ms (none) | stack fwd+bwd ms (none) | fwd+bwd Coeff/none | fwd+bwd LoRA+Coeff/LoRA |");
    println!("|---|---|---|---|---|---|");
    for b in backends {
        let toy = read(out.join(format!("toy-{b}")))?;
        let toy_s: f64 = toy["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["wall_s"].as_f64())
            .sum();
        let st = read(out.join(format!("attention-{b}")))?;
        let none = &st["rows"][0];
        println!(
            "| {b} | {toy_s:.2} | {:.1} | {:.1} | {:.3} | {:.3} |",
            none["forward_ms"].as_f64().unwrap_or(f64::NAN),
            none["forward_backward_ms"].as_f64().unwrap_or(f64::NAN),
            st["coeff_over_none_forward_backward"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            st["lora_coeff_over_lora_forward_backward"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
