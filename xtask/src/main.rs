//! `cargo xtask`: a thin driver that builds and runs the experiments with the chosen backend.
//!
//! ```text
//! cargo xtask experiment                       # the main job: few-shot ViT sweep on the CPU default
//! cargo xtask experiment fewshot --backend cuda -- --preset full
//! cargo xtask experiment toy --backend flex --out runs/toy-flex
//! cargo xtask experiment vl                    # the VL table on easy-VQA (CPU, ~16 min)
//! cargo xtask experiment concept               # DreamBooth-style concept tuning on emoji (CPU)
//! cargo xtask sample -- --pipeline DIR --prompt "a cat" --output cat.png   # SDXL text-to-image
//! cargo xtask experiment bench-attention --backend cuda -- --width 768 --heads 12
//! cargo xtask bench --backends flex,ndarray    # compare backends on the toy and an attention stack
//! cargo xtask fetch                            # real pretrained ViTs: download, convert, verify
//! cargo xtask infer --checkpoint DIR --input x.safetensors --output y.safetensors
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

/// The CPU default, chosen by measurement (docs/benchmarks.md).
const DEFAULT_BACKEND: Backend = Backend::Flex;

#[derive(Parser)]
#[command(about = "Project tasks: run experiments and benchmarks on a chosen backend")]
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
        /// Output directory (default: runs/<experiment>-<backend>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra arguments passed to the experiment (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Download, convert (ONNX -> safetensors, in Rust) and verify the real pretrained ViTs.
    Fetch {
        /// Backend for the verification forward pass.
        #[arg(long, value_enum, default_value_t = DEFAULT_BACKEND)]
        backend: Backend,
        /// Cache directory (default: $COEFF_TUNING_CACHE or ~/.cache/coeff-tuning).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Where the verification report goes.
        #[arg(long, default_value = "runs/fetch")]
        out: PathBuf,
    },
    /// Run a ViT checkpoint directory on a `pixel_values` safetensors file.
    Infer {
        /// Backend.
        #[arg(long, value_enum, default_value_t = DEFAULT_BACKEND)]
        backend: Backend,
        /// Checkpoint directory (`config.json` + `model.safetensors`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Input safetensors with `pixel_values [B, 3, H, W]`.
        #[arg(long)]
        input: PathBuf,
        /// Output safetensors.
        #[arg(long)]
        output: PathBuf,
    },
    /// Text-to-image with a diffusers SDXL folder (arguments after `--`: `--pipeline DIR
    /// --prompt TEXT --output image.png [--steps 30 --guidance 5 --seed 0 --height --width]`).
    Sample {
        /// Backend.
        #[arg(long, value_enum, default_value_t = DEFAULT_BACKEND)]
        backend: Backend,
        /// Arguments of the sampler (after `--`); relative paths are resolved here.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the toy and the attention-stack benchmark on several backends and compare.
    Bench {
        /// Comma-separated backends.
        #[arg(long, value_delimiter = ',', default_values_t = [Backend::Flex, Backend::Ndarray])]
        backends: Vec<Backend>,
        /// Output root (one sub-directory per backend and benchmark).
        #[arg(long, default_value = "runs/bench")]
        out: PathBuf,
        /// Extra arguments for bench-attention (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Experiment {
    /// Few-shot image classification on real pretrained ViTs and real datasets (the paper's
    /// ViT table at CPU scale; `-- --preset full` for a GPU).
    Fewshot,
    /// The toy graph of the paper's Fig. 3.
    Toy,
    /// Step time of an attention stack with and without Coeff-Tuning.
    BenchAttention,
    /// Vision-language multi-task tuning (VQA, yes/no, image-pair statements, captions) on
    /// easy-VQA with a VL-BART-style model: the paper's VL table at CPU scale.
    Vl,
    /// DreamBooth-style concept customisation (LoRA / DoRA / Coeff / full) with a small
    /// SDXL-style UNet on Twitter emoji: the paper's SDXL experiment at CPU scale.
    Concept,
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
            Experiment::BenchAttention => "bench-attention",
            Experiment::Vl => "vl",
            Experiment::Concept => "concept",
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Experiment {
            name,
            backend,
            out,
            args,
        } => {
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("runs/{}-{backend}", name.command())));
            run_experiment(name, backend, &out, &args)
        }
        Task::Fetch {
            backend,
            cache,
            out,
        } => {
            let args: Vec<String> = cache
                .map(|c| vec!["--cache".to_string(), c.display().to_string()])
                .unwrap_or_default();
            run_program("fetch", backend, &out, &args)
        }
        Task::Infer {
            backend,
            checkpoint,
            input,
            output,
        } => {
            let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
            let args = vec![
                "--checkpoint".into(),
                abs(checkpoint),
                "--input".into(),
                abs(input),
                "--output".into(),
                abs(output),
            ];
            run_program("infer", backend, Path::new("runs/infer"), &args)
        }
        Task::Sample { backend, args } => {
            // The program runs in the workspace root: make path arguments absolute first.
            let mut abs = Vec::with_capacity(args.len());
            let mut path_next = false;
            for a in args {
                let flag = a == "--pipeline" || a == "--output";
                abs.push(if path_next {
                    std::path::absolute(&a)
                        .map(|p| p.display().to_string())
                        .unwrap_or(a)
                } else {
                    a
                });
                path_next = flag;
            }
            run_program("sample", backend, Path::new("runs/sample"), &abs)
        }
        Task::Bench {
            backends,
            out,
            args,
        } => {
            for &backend in &backends {
                run_experiment(
                    Experiment::Toy,
                    backend,
                    &out.join(format!("toy-{backend}")),
                    &[],
                )?;
                run_experiment(
                    Experiment::BenchAttention,
                    backend,
                    &out.join(format!("attention-{backend}")),
                    &args,
                )?;
            }
            compare(&backends, &out)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run_experiment(name: Experiment, backend: Backend, out: &Path, args: &[String]) -> Result<()> {
    run_program(name.command(), backend, out, args)
}

/// `cargo run --release -p coeff-experiments --features <backend> -- --out OUT <command> <args>`.
fn run_program(command: &str, backend: Backend, out: &Path, args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = workspace_root();
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        root.join(out)
    };
    eprintln!("xtask: {command} on {backend} -> {}", out.display());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "run",
            "--release",
            "--package",
            "coeff-experiments",
            "--no-default-features",
        ])
        .args(["--features", backend.feature(), "--"])
        .arg("--out")
        .arg(&out)
        .arg(command)
        .args(args)
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("{command} on {backend} failed ({status})");
    }
    Ok(())
}

/// Print the time ratios between backends from their summaries.
fn compare(backends: &[Backend], out: &Path) -> Result<()> {
    let root = workspace_root();
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        root.join(out)
    };
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
