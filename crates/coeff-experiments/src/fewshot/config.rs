//! What a few-shot sweep runs: presets, the TOML config file, and command-line overrides.
//!
//! Precedence: preset < `--config FILE` (any subset of the fields) < individual flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use coeff_tuning::train::AdamWConfig;
use coeff_tuning::Method;
use serde::{Deserialize, Serialize};

/// A tuning method of the few-shot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsMethod {
    /// Frozen backbone, train the head only (on cached features).
    Linear,
    /// Every parameter.
    Full,
    /// A PEFT method of the core crate (+ the head).
    Peft(Method),
}

impl FsMethod {
    /// Every method, in table order.
    pub const ALL: [FsMethod; 7] = [
        FsMethod::Linear,
        FsMethod::Full,
        FsMethod::Peft(Method::Coeff),
        FsMethod::Peft(Method::Lora),
        FsMethod::Peft(Method::LoraCoeff),
        FsMethod::Peft(Method::Dora),
        FsMethod::Peft(Method::DoraCoeff),
    ];

    /// Name in tables, file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FsMethod::Linear => "linear",
            FsMethod::Full => "full",
            FsMethod::Peft(p) => p.name(),
        }
    }

    /// The same method without coefficients, for the overhead ratio (`lora+coeff` ->
    /// `lora`); `None` for methods without coefficients and for `coeff` alone.
    pub fn without_coeff(self) -> Option<FsMethod> {
        match self {
            FsMethod::Peft(Method::LoraCoeff) => Some(FsMethod::Peft(Method::Lora)),
            FsMethod::Peft(Method::DoraCoeff) => Some(FsMethod::Peft(Method::Dora)),
            _ => None,
        }
    }
}

impl std::str::FromStr for FsMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        FsMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = FsMethod::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method `{s}`; expected one of {}", names.join(", "))
            })
    }
}

impl TryFrom<String> for FsMethod {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<FsMethod> for String {
    fn from(m: FsMethod) -> String {
        m.name().to_string()
    }
}

pub use coeff_harness::backbone::Backbone;

/// The optimisation recipe of every run (METHOD.md: AdamW, lr 1e-3, weight decay 1e-4,
/// cosine schedule with warm-up, LoRA rank 8 on q, v; the DoRA recipe's gradient clip 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Peak learning rate of the adapters and the head.
    pub lr: f64,
    /// Peak learning rate of full fine-tuning (every weight moves; the usual 1e-3 diverges).
    pub full_lr: f64,
    /// Passes over the k-shot training set.
    pub epochs: usize,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// Images per step (capped at the training-set size).
    pub batch_size: usize,
    /// AdamW (weight decay, gradient clipping, betas).
    pub adamw: AdamWConfig,
    /// LoRA / DoRA rank.
    pub lora_rank: usize,
    /// LoRA / DoRA target linears (suffix patterns or `re:` regexes).
    pub lora_targets: Vec<String>,
    /// Dropout on the Coeff-Tuning coefficients (paper: 0.2).
    pub coeff_dropout: f64,
    /// Peak learning rate of the coefficients (`None`: `lr`, as in the paper's recipe).
    /// With Adam a parameter moves at most about the sum of the learning rates, so a short
    /// schedule leaves alpha near zero (the identity) unless this is raised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coeff_lr: Option<f64>,
    /// Random flips and shifts of the training images.
    pub augment: bool,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            full_lr: 1e-5,
            epochs: 100,
            warmup_epochs: 10,
            batch_size: 64,
            adamw: AdamWConfig::default(),
            lora_rank: 8,
            lora_targets: vec!["query".into(), "value".into()],
            coeff_dropout: 0.2,
            coeff_lr: None,
            augment: false,
        }
    }
}

/// A whole sweep: every (dataset, shots, method, seed) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FewShotConfig {
    /// Pretrained backbone.
    pub backbone: Backbone,
    /// Input side in pixels (a multiple of the patch side).
    pub resolution: usize,
    /// Datasets: `fashion-mnist`, `mnist`, `animals`, or `folder:PATH` (ImageFolder).
    pub datasets: Vec<String>,
    /// Training images per class.
    pub shots: Vec<usize>,
    /// Methods.
    pub methods: Vec<FsMethod>,
    /// Seeds (each picks its own k-shot sample, head init and batch order).
    pub seeds: Vec<u64>,
    /// Test images per class (fixed across methods and seeds).
    pub test_per_class: usize,
    /// The optimisation recipe.
    pub recipe: Recipe,
    /// Write a checkpoint at least this often (seconds; 0 = every step).
    pub checkpoint_secs: f64,
}

impl Default for FewShotConfig {
    fn default() -> Self {
        preset(Preset::Default)
    }
}

/// Named starting points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Fits a 2-core CPU in under 20 minutes (see `docs/fewshot.md` for the choices).
    Default,
    /// Every method, shot count and dataset, 3 seeds, the paper's recipe: for a GPU.
    Full,
}

/// The settings of a preset.
pub fn preset(p: Preset) -> FewShotConfig {
    match p {
        Preset::Default => FewShotConfig {
            backbone: Backbone::Dinov2S14,
            resolution: 56,
            datasets: vec!["fashion-mnist".into(), "animals".into()],
            shots: vec![1, 4],
            methods: vec![
                FsMethod::Linear,
                FsMethod::Peft(Method::Coeff),
                FsMethod::Peft(Method::Lora),
                FsMethod::Peft(Method::LoraCoeff),
            ],
            seeds: vec![0, 1, 2],
            test_per_class: 20,
            recipe: Recipe {
                epochs: 40,
                warmup_epochs: 4,
                batch_size: 20,
                lr: 2e-3,
                // 40-80 steps: at the adapters' rate alpha would end near zero (see `coeff_lr`).
                coeff_lr: Some(1e-2),
                ..Recipe::default()
            },
            checkpoint_secs: 30.0,
        },
        Preset::Full => FewShotConfig {
            backbone: Backbone::ClipB16,
            resolution: 224,
            datasets: vec!["fashion-mnist".into(), "mnist".into(), "animals".into()],
            shots: vec![1, 2, 4, 8, 16],
            methods: FsMethod::ALL.to_vec(),
            seeds: vec![0, 1, 2],
            test_per_class: 100,
            recipe: Recipe::default(),
            checkpoint_secs: 60.0,
        },
    }
}

/// Command-line options of `fewshot`.
#[derive(Debug, Clone, clap::Args)]
pub struct FewShotArgs {
    /// Starting point.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    pub preset: Preset,
    /// TOML file overriding any preset field (same names as in summary.json's `config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Backbone.
    #[arg(long, value_enum)]
    pub backbone: Option<Backbone>,
    /// Input side in pixels.
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Comma-separated datasets (`fashion-mnist`, `mnist`, `animals`, `folder:PATH`).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// Comma-separated shot counts.
    #[arg(long, value_delimiter = ',')]
    pub shots: Option<Vec<usize>>,
    /// Comma-separated methods (linear, full, coeff, lora, lora+coeff, dora, dora+coeff).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<FsMethod>>,
    /// Comma-separated seeds.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Test images per class.
    #[arg(long)]
    pub test_per_class: Option<usize>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Peak learning rate (adapters and head).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate of the Coeff-Tuning coefficients (default: `--lr`).
    #[arg(long)]
    pub coeff_lr: Option<f64>,
    /// Directory with datasets the user already has (see `docs/fewshot.md` for the layout);
    /// default: fetch them into the cache.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Cache for fetched weights and datasets.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Stop every run after this many steps (leaves resumable checkpoints; for testing
    /// interruption).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

impl FewShotArgs {
    /// Preset, then the config file, then the flags.
    pub fn resolve(&self) -> Result<FewShotConfig> {
        let mut cfg = match &self.config {
            Some(path) => load_config_file(path, preset(self.preset))?,
            None => preset(self.preset),
        };
        if let Some(b) = self.backbone {
            cfg.backbone = b;
        }
        if let Some(r) = self.resolution {
            cfg.resolution = r;
        }
        if let Some(d) = &self.datasets {
            cfg.datasets = d.clone();
        }
        if let Some(s) = &self.shots {
            cfg.shots = s.clone();
        }
        if let Some(m) = &self.methods {
            cfg.methods = m.clone();
        }
        if let Some(s) = &self.seeds {
            cfg.seeds = s.clone();
        }
        if let Some(t) = self.test_per_class {
            cfg.test_per_class = t;
        }
        if let Some(e) = self.epochs {
            cfg.recipe.epochs = e;
            cfg.recipe.warmup_epochs = cfg.recipe.warmup_epochs.min(e / 2);
        }
        if let Some(lr) = self.lr {
            cfg.recipe.lr = lr;
        }
        if let Some(b) = self.batch_size {
            cfg.recipe.batch_size = b;
        }
        if self.coeff_lr.is_some() {
            cfg.recipe.coeff_lr = self.coeff_lr;
        }
        validate(&cfg)?;
        Ok(cfg)
    }
}

/// Read a TOML config over `base`: fields absent from the file keep `base`'s values.
pub fn load_config_file(path: &Path, base: FewShotConfig) -> Result<FewShotConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let overrides: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut merged = toml::Table::try_from(&base).context("serialising the preset")?;
    merge(&mut merged, overrides);
    toml::Value::Table(merged)
        .try_into()
        .with_context(|| format!("config file {}", path.display()))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Images per forward pass outside training: test-set evaluation and the linear probe's
/// feature extraction use fixed batches of at most this many.
pub const EVAL_BATCH: usize = 64;

/// Reject settings that cannot run, naming the field (and the flag that sets it) with the
/// value; sizes no file confirms are bounded by [`coeff_harness::limits`].
pub fn validate(cfg: &FewShotConfig) -> Result<()> {
    use coeff_harness::limits::{
        attention_elements, MAX_ATTENTION_ELEMENTS, MAX_BATCH_SIZE, MAX_LORA_RANK, MAX_RESOLUTION,
    };
    let p = cfg.backbone.patch();
    if cfg.resolution < p || cfg.resolution % p != 0 {
        bail!(
            "resolution {} must be a positive multiple of {}'s patch side {p}",
            cfg.resolution,
            cfg.backbone.name()
        );
    }
    if cfg.resolution > MAX_RESOLUTION {
        bail!(
            "`resolution` (--resolution) is {}, above the limit of {MAX_RESOLUTION} pixels \
             (see docs/input-checks.md)",
            cfg.resolution
        );
    }
    for (field, empty) in [
        ("datasets", cfg.datasets.is_empty()),
        ("shots", cfg.shots.is_empty()),
        ("methods", cfg.methods.is_empty()),
        ("seeds", cfg.seeds.is_empty()),
    ] {
        if empty {
            bail!("`{field}` is empty: nothing to run");
        }
    }
    fn no_duplicates<T: PartialEq + std::fmt::Display>(field: &str, items: &[T]) -> Result<()> {
        for (i, a) in items.iter().enumerate() {
            if items[..i].contains(a) {
                bail!(
                    "`{field}` (--{field}) lists `{a}` twice; each value runs once, so a \
                     repeated one would only overwrite its own results"
                );
            }
        }
        Ok(())
    }
    no_duplicates("datasets", &cfg.datasets)?;
    no_duplicates("shots", &cfg.shots)?;
    no_duplicates(
        "methods",
        &cfg.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
    )?;
    no_duplicates("seeds", &cfg.seeds)?;
    if cfg.shots.contains(&0) {
        bail!("`shots` contains 0");
    }
    if cfg.test_per_class == 0 {
        bail!("`test_per_class` must be positive");
    }
    let r = &cfg.recipe;
    if r.epochs == 0 || r.batch_size == 0 {
        bail!("`recipe.epochs` and `recipe.batch_size` must be positive");
    }
    if r.batch_size > MAX_BATCH_SIZE {
        bail!(
            "`recipe.batch_size` (--batch-size) is {}, above the limit of {MAX_BATCH_SIZE} \
             (see docs/input-checks.md)",
            r.batch_size
        );
    }
    let tokens = 1 + (cfg.resolution / p).pow(2);
    let batch = r.batch_size.max(EVAL_BATCH);
    let elements = attention_elements(batch, cfg.backbone.heads(), tokens);
    if elements > MAX_ATTENTION_ELEMENTS {
        bail!(
            "`resolution` {} (--resolution) with batches of {batch} images (`recipe.batch_size` \
             {}, evaluation {EVAL_BATCH}) makes attention maps of {elements} elements per layer \
             ({} heads x {tokens}^2 tokens per image), above the limit of \
             {MAX_ATTENTION_ELEMENTS} (see docs/input-checks.md)",
            cfg.resolution,
            r.batch_size,
            cfg.backbone.heads()
        );
    }
    if r.lora_rank == 0 || r.lora_rank > MAX_LORA_RANK {
        bail!(
            "`recipe.lora_rank` must be between 1 and {MAX_LORA_RANK}, got {}",
            r.lora_rank
        );
    }
    if r.warmup_epochs > r.epochs {
        bail!(
            "`recipe.warmup_epochs` ({}) exceeds `recipe.epochs` ({})",
            r.warmup_epochs,
            r.epochs
        );
    }
    for (field, lr) in [
        ("recipe.lr", r.lr),
        ("recipe.full_lr", r.full_lr),
        ("recipe.coeff_lr", r.coeff_lr.unwrap_or(r.lr)),
    ] {
        if !(lr.is_finite() && lr > 0.0) {
            bail!("`{field}` must be a positive number, got {lr}");
        }
    }
    let a = &r.adamw;
    for (field, value, ok) in [
        (
            "recipe.coeff_dropout",
            r.coeff_dropout,
            (0.0..1.0).contains(&r.coeff_dropout),
        ),
        ("recipe.adamw.beta1", a.beta1, (0.0..1.0).contains(&a.beta1)),
        ("recipe.adamw.beta2", a.beta2, (0.0..1.0).contains(&a.beta2)),
        ("recipe.adamw.eps", a.eps, a.eps.is_finite() && a.eps > 0.0),
        (
            "recipe.adamw.weight_decay",
            a.weight_decay,
            a.weight_decay.is_finite() && a.weight_decay >= 0.0,
        ),
        (
            "recipe.adamw.grad_clip",
            a.grad_clip.unwrap_or(1.0),
            a.grad_clip.is_none_or(|c| c.is_finite() && c > 0.0),
        ),
        (
            "checkpoint_secs",
            cfg.checkpoint_secs,
            cfg.checkpoint_secs.is_finite() && cfg.checkpoint_secs >= 0.0,
        ),
    ] {
        if !ok {
            bail!("`{field}` is out of range: {value}");
        }
    }
    Ok(())
}
