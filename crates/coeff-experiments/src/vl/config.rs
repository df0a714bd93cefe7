//! The VL experiment's settings: presets, flags, and the fingerprint of each run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use coeff_tuning::Method;
use serde::{Deserialize, Serialize};

/// Settings presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 2 CPU cores, <= 20 minutes.
    Default,
    /// A GPU: CLIP ViT-B/16 at 224 px, all data, 5 seeds, full fine-tuning too.
    Full,
}

/// Arguments of `vl` (preset values unless given).
#[derive(Debug, Clone, clap::Args)]
pub struct VlArgs {
    /// Settings preset.
    #[arg(long, value_enum, default_value = "default")]
    pub preset: Preset,
    /// Methods, comma-separated: lora, lora+coeff, dora, dora+coeff, full.
    #[arg(long)]
    pub methods: Option<String>,
    /// Number of seeds (0, 1, ...).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Training steps per run.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Training examples per task.
    #[arg(long)]
    pub train_per_task: Option<usize>,
    /// Test examples per task.
    #[arg(long)]
    pub test_per_task: Option<usize>,
    /// Peak learning rate of LoRA / DoRA and the new parts.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Peak learning rate of Coeff's alpha.
    #[arg(long)]
    pub coeff_lr: Option<f64>,
    /// A Hugging Face BART or BERT folder (config.json, model.safetensors, tokenizer.json)
    /// instead of MiniLM.
    #[arg(long)]
    pub text_model: Option<PathBuf>,
    /// Cache of weights and data (default: ~/.cache/coeff-tuning).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// A method of the sweep.
pub type VlMethod = coeff_harness::runs::SweepMethod;

/// Every setting of a sweep (recorded in summary.json; the fingerprint of each run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlConfig {
    /// Preset the settings started from.
    pub preset: Preset,
    /// Methods.
    pub methods: Vec<VlMethod>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Steps per run (round-robin over the tasks, one task per batch).
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Training examples per task.
    pub train_per_task: usize,
    /// Test examples per task.
    pub test_per_task: usize,
    /// Image backbone (`dinov2-s14` or `clip-b16`) and its input side.
    pub backbone: String,
    /// Input side of the backbone.
    pub resolution: usize,
    /// Text model folder (`None`: the real MiniLM).
    pub text_model: Option<PathBuf>,
    /// Peak learning rate.
    pub lr: f64,
    /// Peak learning rate of Coeff's alpha.
    pub coeff_lr: f64,
    /// Peak learning rate of full fine-tuning.
    pub full_lr: f64,
    /// LoRA / DoRA rank.
    pub lora_rank: usize,
    /// Dropout on alpha.
    pub coeff_dropout: f64,
    /// Tokens generated at most.
    pub max_new_tokens: usize,
    /// Seconds between checkpoints.
    pub checkpoint_secs: f64,
}

impl VlConfig {
    /// Resolve the arguments against the preset.
    pub fn from_args(args: &VlArgs) -> Result<Self> {
        let full = args.preset == Preset::Full;
        let methods = match &args.methods {
            Some(list) => VlMethod::parse_list(
                list,
                &[
                    Method::Lora,
                    Method::LoraCoeff,
                    Method::Dora,
                    Method::DoraCoeff,
                ]
                .map(VlMethod::Peft)
                .into_iter()
                .chain([VlMethod::Full])
                .collect::<Vec<_>>(),
            )?,
            None => {
                let mut m: Vec<VlMethod> = [
                    Method::Lora,
                    Method::LoraCoeff,
                    Method::Dora,
                    Method::DoraCoeff,
                ]
                .map(VlMethod::Peft)
                .to_vec();
                if full {
                    m.push(VlMethod::Full);
                }
                m
            }
        };
        let cfg = Self {
            preset: args.preset,
            methods,
            seeds: (0..args.seeds.unwrap_or(if full { 5 } else { 3 }) as u64).collect(),
            steps: args.steps.unwrap_or(if full { 4000 } else { 240 }),
            batch_size: if full { 64 } else { 20 },
            train_per_task: args
                .train_per_task
                .unwrap_or(if full { 7000 } else { 1000 }),
            test_per_task: args.test_per_task.unwrap_or(if full { 1000 } else { 100 }),
            backbone: if full { "clip-b16" } else { "dinov2-s14" }.into(),
            resolution: if full { 224 } else { 56 },
            text_model: args.text_model.clone(),
            lr: args.lr.unwrap_or(1e-3),
            coeff_lr: args.coeff_lr.unwrap_or(1e-3),
            full_lr: 1e-4,
            lora_rank: 8,
            coeff_dropout: 0.1,
            max_new_tokens: 16,
            checkpoint_secs: 60.0,
        };
        if cfg.methods.is_empty() || cfg.seeds.is_empty() || cfg.steps == 0 {
            bail!("--methods, --seeds and --steps must not be empty or zero");
        }
        if cfg.test_per_task == 0 || cfg.train_per_task == 0 {
            bail!("--train-per-task and --test-per-task must be at least 1");
        }
        Ok(cfg)
    }

    pub(crate) fn fingerprint(&self, method: VlMethod, seed: u64) -> String {
        let mut c = self.clone();
        c.methods = vec![method];
        c.seeds = vec![seed];
        c.checkpoint_secs = 0.0;
        serde_json::to_string(&c).expect("serialisable")
    }
}
