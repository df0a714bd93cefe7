//! `tune classify`: a ViT checkpoint folder (what `infer` loads) tuned on an image folder.
//!
//! ```text
//! --train-dir root/<class>/<image>.{png,jpg}     classes = sorted sub-folder names
//! --val-dir   same classes | --val-split F       (F of each class, seeded; default 0.2)
//!   ViT + fresh head on the family's head input (VisionTransformer::with_head)
//!   + the method (linear: head only, on cached features; coeff / lora / dora / +coeff: inject)
//!   Trainer (AdamW, warm-up + cosine, alpha at --coeff-lr) one epoch at a time,
//!   validation accuracy and confusion matrix after each epoch
//! OUT/
//!   checkpoint.safetensors       the trainer's (atomic; a rerun resumes from it)
//!   metrics.json                 settings, classes, per-epoch loss / accuracy / confusion
//!   adapter/                     the kept epoch (--keep best|last):
//!     coeff_adapter_config.json + coeff_adapter.safetensors    ours, complete (alpha, head)
//!     adapter_config.json + adapter_model.safetensors          PEFT (Hugging Face ViT, LoRA /
//!                                                              DoRA; head as `classifier`)
//!   curves.png  confusion.png
//! ```
//!
//! The adapter folder is replaced whole: written beside it as `adapter.partial`, then swapped
//! in by renames, so a kill leaves either the old or the new one.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use coeff_data::dataset::{image_folder_resized, OnBadFile};
use coeff_data::sampler::SplitMix;
use coeff_data::{ImageSet, Preprocess};
use coeff_harness::backbone::seeded_head;
use coeff_harness::classify::{
    cached_features, confusion, confusion_accuracy, cross_entropy, epoch_order, logits, Inputs,
    Split,
};
use coeff_harness::limits::{attention_elements, MAX_ATTENTION_ELEMENTS, MAX_BATCH_SIZE};
use coeff_harness::plot::{colors, Axis, Figure, Mark, MatrixPlot, Panel, Series};
use coeff_harness::report::say;
use coeff_tuning::peft::params::set_trainable;
use coeff_tuning::train::{
    AdamWConfig, Finish, ParamGroup, Step, StepOutput, StepReport, Trainer, TrainerConfig,
    WarmupCosine,
};
use coeff_tuning::{inject, Injected, Method, PeftConfig, PeftLinear};

use crate::adapter::AdapterSource;
use coeff_vit::{load_pretrained, Family, Normalization, VisionTransformer, VitConfig};
use serde::{Deserialize, Serialize};

/// Images per forward pass when evaluating and caching features.
const EVAL_BATCH: usize = 32;

/// What is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TuneMethod {
    /// The head alone, on the frozen backbone's cached features (a linear probe).
    Linear,
    /// Coeff-Tuning's alpha of every attention layer (+ the head).
    Coeff,
    /// LoRA on `--targets` (+ the head).
    Lora,
    /// LoRA and Coeff-Tuning (+ the head).
    #[value(name = "lora+coeff")]
    #[serde(rename = "lora+coeff")]
    LoraCoeff,
    /// DoRA on `--targets` (+ the head).
    Dora,
    /// DoRA and Coeff-Tuning (+ the head).
    #[value(name = "dora+coeff")]
    #[serde(rename = "dora+coeff")]
    DoraCoeff,
    /// Every parameter (full fine-tuning); `OUT/adapter` then holds the whole model in our
    /// format (`infer --adapter` loads it), and there is no PEFT export.
    Full,
}

impl TuneMethod {
    /// The core crate's method, `None` for the linear probe.
    pub fn peft(self) -> Option<Method> {
        match self {
            Self::Linear | Self::Full => None,
            Self::Coeff => Some(Method::Coeff),
            Self::Lora => Some(Method::Lora),
            Self::LoraCoeff => Some(Method::LoraCoeff),
            Self::Dora => Some(Method::Dora),
            Self::DoraCoeff => Some(Method::DoraCoeff),
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            _ => self.peft().map_or("linear", Method::name),
        }
    }
}

/// Which epoch's adapter is kept in `OUT/adapter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// The epoch with the highest validation accuracy (the first of equals).
    Best,
    /// The last epoch.
    Last,
}

/// Arguments of `tune classify`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifyArgs {
    /// ViT checkpoint folder: `config.json` (Hugging Face ViT / DINOv2 / CLIP vision, timm) and
    /// `model.safetensors`; `preprocessor_config.json` gives the normalisation when present.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Training images: `DIR/<class>/<image>.{png,jpg,jpeg}`, at least two classes.
    #[arg(long)]
    pub train_dir: PathBuf,
    /// Validation images, same class folders as `--train-dir`.
    #[arg(long, conflicts_with = "val_split")]
    pub val_dir: Option<PathBuf>,
    /// Without `--val-dir`: this fraction of each class's training images is held out for
    /// validation, drawn from `--seed` (default 0.2).
    #[arg(long)]
    pub val_split: Option<f64>,
    /// Output folder (created; a rerun with the same settings resumes the run in it).
    #[arg(long)]
    pub out: PathBuf,
    /// What to tune.
    #[arg(long, value_enum, default_value = "lora+coeff")]
    pub method: TuneMethod,
    /// LoRA / DoRA rank [default: 8].
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA / DoRA alpha (the update is scaled by alpha / rank) [default: 8, PEFT's].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Linear layers LoRA / DoRA adapts: suffix patterns of our module paths (`query`,
    /// `value`, `attn.output`, `mlp.fc1`, ...) or `re:` regexes, comma-separated
    /// [default: query,value].
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Peak learning rate (adapters and head).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Peak learning rate of Coeff-Tuning's alpha [default: `--lr`].
    #[arg(long)]
    pub coeff_lr: Option<f64>,
    /// Dropout on alpha during training [default: 0.2, the paper's].
    #[arg(long)]
    pub coeff_dropout: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Passes over the training images.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Optimizer steps in all, instead of `--epochs` (validation after each epoch and at the
    /// end).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Fraction of the steps with a linear warm-up (then cosine to 0).
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Micro-batches per step (gradient accumulation): the step's `--batch` images go through
    /// the model in this many parts, so activations of `batch / K` images are alive at a time;
    /// the update equals the whole batch's.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Input side in pixels (images are resized to it; default: the checkpoint's image size).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Random horizontal flips and shifts of up to 2 pixels of the training images.
    #[arg(long)]
    pub augment: bool,
    /// Seed: validation split, head init, LoRA init, batch order, alpha dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which epoch's adapter `OUT/adapter` holds.
    #[arg(long, value_enum, default_value = "best")]
    pub keep: Keep,
    /// Skip image files that cannot be decoded (counted in metrics.json) instead of stopping.
    #[arg(long)]
    pub skip_bad_images: bool,
    /// Start from this adapter instead of a fresh one: our folder (e.g. an earlier
    /// `tune classify` output's `adapter/`) or a PEFT folder (LoRA / DoRA). It fixes the
    /// method's parts (rank, alpha, targets, alpha dropout), so `--method` must name the same
    /// kind and `--rank`, `--lora-alpha`, `--targets`, `--coeff-dropout` are errors beside it.
    /// Its head is used when it has one (same classes), else a fresh head is trained beside it.
    #[arg(long)]
    pub init_adapter: Option<PathBuf>,
    /// Seconds between mid-epoch checkpoints (one is always written at each epoch's end).
    #[arg(long, default_value_t = 120.0)]
    pub checkpoint_secs: f64,
    /// Stop after this many steps in all, with a checkpoint (rerun to resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
}

/// The settings a run's checkpoint is tied to (a rerun with other settings is an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The checkpoint folder.
    pub checkpoint: PathBuf,
    /// Training images.
    pub train_dir: PathBuf,
    /// Validation images, or the held-out fraction.
    pub validation: String,
    /// The method.
    pub method: TuneMethod,
    /// LoRA rank / alpha / targets (LoRA and DoRA methods).
    pub lora: Option<(usize, f64, Vec<String>)>,
    /// Learning rates: peak, alpha's.
    pub lr: (f64, f64),
    /// Alpha dropout (Coeff methods).
    pub coeff_dropout: Option<f64>,
    /// Weight decay.
    pub weight_decay: f64,
    /// Steps in all, steps per epoch, warm-up steps.
    pub schedule: (usize, usize, usize),
    /// Batch.
    pub batch: usize,
    /// Micro-batches per step.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub grad_accum: usize,
    /// Input side.
    pub resolution: usize,
    /// Augmentation.
    pub augment: bool,
    /// Seed.
    pub seed: u64,
    /// Class names.
    pub classes: Vec<String>,
    /// Training / validation images.
    pub images: (usize, usize),
    /// The starting adapter: its folder and the sha256 of its weights file.
    #[serde(default)]
    pub init_adapter: Option<(PathBuf, String)>,
}

fn one() -> usize {
    1
}

fn is_one(k: &usize) -> bool {
    *k == 1
}

/// One validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps completed.
    pub step: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation accuracy in `[0, 1]`.
    pub val_accuracy: f64,
    /// `confusion[truth][prediction]` on the validation images.
    pub confusion: Vec<Vec<usize>>,
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// The settings (what the checkpoint is tied to).
    pub settings: Settings,
    /// Backend.
    pub backend: String,
    /// Every validation so far.
    pub epochs: Vec<EpochRecord>,
    /// The epoch `adapter/` holds.
    pub kept_epoch: Option<usize>,
    /// How it was chosen.
    pub keep: Keep,
    /// Parameters trained (head included) / in all.
    pub trainable_params: usize,
    /// Every parameter of the model with its adapter.
    pub total_params: usize,
    /// Median step time, ms (steps of this process after its first).
    pub step_ms: f64,
    /// Training seconds over every process that worked on the run.
    pub train_seconds: f64,
    /// Image files skipped (`--skip-bad-images`).
    pub skipped_images: Vec<PathBuf>,
    /// What the PEFT export wrote, or why there is none.
    pub peft_export: String,
    /// The run reached its last step.
    pub finished: bool,
}

/// `OUT/metrics.json`.
pub fn metrics_path(out: &Path) -> PathBuf {
    out.join("metrics.json")
}

fn check_args(args: &ClassifyArgs) -> Result<()> {
    let positive = |name: &str, v: f64| -> Result<()> {
        ensure!(
            v.is_finite() && v > 0.0,
            "--{name} {v}: must be a finite positive number"
        );
        Ok(())
    };
    positive("lr", args.lr)?;
    if let Some(c) = args.coeff_lr {
        positive("coeff-lr", c)?;
    }
    if let Some(a) = args.lora_alpha {
        positive("lora-alpha", a)?;
    }
    ensure!(
        args.weight_decay.is_finite() && args.weight_decay >= 0.0,
        "--weight-decay {}: must be finite and not negative",
        args.weight_decay
    );
    if let Some(d) = args.coeff_dropout {
        ensure!(
            (0.0..1.0).contains(&d),
            "--coeff-dropout {d}: must be in [0, 1)"
        );
    }
    ensure!(
        (0.0..1.0).contains(&args.warmup_ratio),
        "--warmup-ratio {}: must be in [0, 1)",
        args.warmup_ratio
    );
    ensure!(args.epochs > 0, "--epochs 0: train at least one epoch");
    ensure!(args.steps != Some(0), "--steps 0: train at least one step");
    ensure!(
        (1..=MAX_BATCH_SIZE).contains(&args.batch),
        "--batch {}: must be in 1..={MAX_BATCH_SIZE}",
        args.batch
    );
    ensure!(
        (1..=args.batch).contains(&args.grad_accum),
        "--grad-accum {}: must be in 1..=--batch ({})",
        args.grad_accum,
        args.batch
    );
    if let Some(r) = args.rank {
        ensure!(
            (1..=coeff_harness::limits::MAX_LORA_RANK).contains(&r),
            "--rank {r}: must be in 1..={}",
            coeff_harness::limits::MAX_LORA_RANK
        );
    }
    if let Some(f) = args.val_split {
        ensure!(
            f > 0.0 && f < 1.0,
            "--val-split {f}: must be a fraction strictly between 0 and 1"
        );
    }
    ensure!(
        args.checkpoint_secs.is_finite() && args.checkpoint_secs >= 0.0,
        "--checkpoint-secs {}: must be finite and not negative",
        args.checkpoint_secs
    );
    let lora = matches!(
        args.method,
        TuneMethod::Lora | TuneMethod::LoraCoeff | TuneMethod::Dora | TuneMethod::DoraCoeff
    );
    let coeff = matches!(
        args.method,
        TuneMethod::Coeff | TuneMethod::LoraCoeff | TuneMethod::DoraCoeff
    );
    // An option that cannot take effect with this method is an error, not ignored.
    let not_for = |flag: &str, kind: &str| {
        anyhow::anyhow!(
            "{flag} applies to {kind} methods; --method {} has none",
            args.method.name()
        )
    };
    if !lora {
        if args.rank.is_some() {
            return Err(not_for("--rank", "LoRA / DoRA"));
        }
        if args.lora_alpha.is_some() {
            return Err(not_for("--lora-alpha", "LoRA / DoRA"));
        }
        if args.targets.is_some() {
            return Err(not_for("--targets", "LoRA / DoRA"));
        }
    }
    if !coeff {
        if args.coeff_lr.is_some() {
            return Err(not_for("--coeff-lr", "Coeff-Tuning"));
        }
        if args.coeff_dropout.is_some() {
            return Err(not_for("--coeff-dropout", "Coeff-Tuning"));
        }
    }
    if args.init_adapter.is_some() {
        for (flag, given) in [
            ("--rank", args.rank.is_some()),
            ("--lora-alpha", args.lora_alpha.is_some()),
            ("--targets", args.targets.is_some()),
            ("--coeff-dropout", args.coeff_dropout.is_some()),
        ] {
            ensure!(
                !given,
                "{flag}: --init-adapter fixes the adapter's parts; give one or the other"
            );
        }
    }
    ensure!(
        !(args.method == TuneMethod::Full && args.init_adapter.is_some()),
        "--init-adapter with --method full: a full fine-tune starts from the checkpoint itself \
         (give the tuned weights as --checkpoint)"
    );
    if args.method == TuneMethod::Linear && args.augment {
        bail!(
            "--augment: the linear probe trains on features cached once from the unaugmented \
             images; augmentation needs a method that runs the backbone every step"
        );
    }
    Ok(())
}

/// The held-out validation images of each class: `round(fraction * n)`, at least one, at
/// most `n - 1`, chosen by `seed`. Returns (train, validation) indices.
pub fn validation_split(
    set: &ImageSet,
    fraction: f64,
    seed: u64,
    dir: &Path,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (class, mut idx) in set.by_class().into_iter().enumerate() {
        if idx.len() < 2 {
            bail!(
                "{}: class `{}` has {} image(s); holding out validation images needs at least 2 \
                 per class (or give --val-dir)",
                dir.display(),
                set.classes[class],
                idx.len()
            );
        }
        SplitMix::new(seed ^ 0x7661_6c69_6461_7465 ^ class as u64).shuffle(&mut idx);
        let k = ((fraction * idx.len() as f64).round() as usize).clamp(1, idx.len() - 1);
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}

fn load_images(args: &ClassifyArgs, side: usize) -> Result<(ImageSet, ImageSet, Vec<PathBuf>)> {
    let on_bad = if args.skip_bad_images {
        OnBadFile::Skip
    } else {
        OnBadFile::Error
    };
    let (all, mut skipped) = image_folder_resized(&args.train_dir, on_bad, side)
        .with_context(|| format!("reading --train-dir {}", args.train_dir.display()))?;
    match &args.val_dir {
        Some(dir) => {
            let (val, s) = image_folder_resized(dir, on_bad, side)
                .with_context(|| format!("reading --val-dir {}", dir.display()))?;
            skipped.extend(s);
            if val.classes != all.classes {
                bail!(
                    "--val-dir {} has the classes [{}], --train-dir {} has [{}]; they must be \
                     the same sub-folders",
                    dir.display(),
                    val.classes.join(", "),
                    args.train_dir.display(),
                    all.classes.join(", ")
                );
            }
            Ok((all, val, skipped))
        }
        None => {
            let f = args.val_split.unwrap_or(0.2);
            let (t, v) = validation_split(&all, f, args.seed, &args.train_dir)?;
            Ok((all.subset(&t), all.subset(&v), skipped))
        }
    }
}

/// Run `tune classify`.
pub fn run<B: AutodiffBackend>(args: &ClassifyArgs, device: &B::Device) -> Result<()> {
    check_args(args)?;
    for (flag, dir) in [
        ("--train-dir", &args.train_dir),
        ("--checkpoint", &args.checkpoint),
    ]
    .into_iter()
    .chain(args.val_dir.iter().map(|d| ("--val-dir", d)))
    {
        let same = match (args.out.canonicalize(), dir.canonicalize()) {
            (Ok(a), Ok(b)) => a == b || a.starts_with(&b),
            _ => false,
        };
        ensure!(
            !same,
            "--out {} is (inside) {flag} {}: the output must not overwrite an input",
            args.out.display(),
            dir.display()
        );
    }

    // The config alone first, to bound the attention maps before anything big is read.
    let config = VitConfig::from_file(args.checkpoint.join("config.json"))?;
    let side = args.resolution.unwrap_or(config.image_size[0]);
    let p = config.patch_size;
    ensure!(
        (p..=coeff_harness::limits::MAX_RESOLUTION).contains(&side),
        "--resolution {side}: must be between the patch size {p} and {}",
        coeff_harness::limits::MAX_RESOLUTION
    );
    let tokens = 1 + (side / p) * (side / p);
    let elements = attention_elements(
        args.batch.div_ceil(args.grad_accum).max(EVAL_BATCH),
        config.num_attention_heads,
        tokens,
    );
    ensure!(
        elements <= MAX_ATTENTION_ELEMENTS,
        "--batch {} at --resolution {side}: attention maps of {elements} elements per layer \
         ({} heads x {tokens}^2 tokens), above the limit of {MAX_ATTENTION_ELEMENTS}; lower \
         the batch or the resolution (see docs/input-checks.md)",
        args.batch,
        config.num_attention_heads
    );
    let norm = Normalization::from_dir(&args.checkpoint)?;
    let preprocess = Preprocess::new(side, norm.mean, norm.std);

    let (train_set, val_set, skipped) = load_images(args, side)?;
    let classes = train_set.classes.clone();
    ensure!(
        !train_set.is_empty() && !val_set.is_empty(),
        "{}: {} training and {} validation images; both need at least one",
        args.train_dir.display(),
        train_set.len(),
        val_set.len()
    );
    let n = train_set.len();
    let bs = args.batch.min(n);
    let last = n - (n.div_ceil(bs) - 1) * bs;
    ensure!(
        last >= args.grad_accum,
        "--grad-accum {k}: a step's batch must have at least {k} images to split, but {} \
         training images in batches of {bs} leave {last} for the last step of each epoch; \
         choose --batch or --grad-accum so that it does",
        n,
        k = args.grad_accum
    );
    let per_epoch = n.div_ceil(bs);
    let total = args.steps.unwrap_or(args.epochs * per_epoch);
    let epochs = total.div_ceil(per_epoch);
    let warmup = (args.warmup_ratio * total as f64).floor() as usize;
    let coeff_lr = args.coeff_lr.unwrap_or(args.lr);
    let peft = args.method.peft();
    let rank = args.rank.unwrap_or(8);
    let lora_alpha = args.lora_alpha.unwrap_or(8.0);
    let targets = args
        .targets
        .clone()
        .unwrap_or_else(|| vec!["query".into(), "value".into()]);
    let coeff_dropout = args.coeff_dropout.unwrap_or(0.2);
    let settings = Settings {
        checkpoint: args.checkpoint.clone(),
        train_dir: args.train_dir.clone(),
        validation: match &args.val_dir {
            Some(d) => d.display().to_string(),
            None => format!("{} of --train-dir", args.val_split.unwrap_or(0.2)),
        },
        method: args.method,
        lora: peft
            .filter(|m| m.lora(rank).is_some())
            .map(|_| (rank, lora_alpha, targets.clone())),
        lr: (args.lr, coeff_lr),
        coeff_dropout: peft.filter(|m| m.has_coeff()).map(|_| coeff_dropout),
        weight_decay: args.weight_decay,
        schedule: (total, per_epoch, warmup),
        batch: bs,
        grad_accum: args.grad_accum,
        resolution: side,
        augment: args.augment,
        seed: args.seed,
        classes: classes.clone(),
        images: (train_set.len(), val_set.len()),
        init_adapter: match &args.init_adapter {
            Some(p) => Some(super::adapter_identity(p)?),
            None => None,
        },
    };
    let fingerprint = serde_json::to_string(&settings)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let mut metrics = match read_metrics(&args.out)? {
        Some(m) if m.settings == settings => m,
        Some(_) => bail!(
            "{} holds a run with other settings (see its `settings`); give another --out or \
             delete that folder to restart",
            metrics_path(&args.out).display()
        ),
        None => Metrics {
            settings: settings.clone(),
            backend: coeff_harness::backend::NAME.into(),
            epochs: Vec::new(),
            kept_epoch: None,
            keep: args.keep,
            trainable_params: 0,
            total_params: 0,
            step_ms: 0.0,
            train_seconds: 0.0,
            skipped_images: skipped.clone(),
            peft_export: String::new(),
            finished: false,
        },
    };
    ensure!(
        metrics.keep == args.keep || metrics.epochs.is_empty(),
        "{}: this run keeps the {:?} adapter; --keep cannot change once epochs are validated",
        metrics_path(&args.out).display(),
        metrics.keep
    );
    metrics.keep = args.keep;
    recover_adapter(&args.out)?;

    // Model: the checkpoint, a fresh head for these classes, the method.
    let model = load_pretrained::<B>(&args.checkpoint, device)
        .with_context(|| format!("loading checkpoint {}", args.checkpoint.display()))?;
    if let Some(old) = &model.head {
        eprintln!(
            "tune: the checkpoint's head ({} classes) is replaced by a new one for the {} \
             classes of {}",
            old.d_output(),
            classes.len(),
            args.train_dir.display()
        );
    }
    let family = model.config.family;
    let head = seeded_head::<B>(
        model.config.head_input_size(),
        classes.len(),
        args.seed,
        device,
    );
    let model = model.with_head(PeftLinear::from(head))?;
    let mut pc = match peft {
        Some(m) => {
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            let mut pc = m.config(rank, &targets);
            if let Some(l) = pc.lora.as_mut() {
                l.alpha = lora_alpha;
            }
            if let Some(c) = pc.coeff.as_mut() {
                c.dropout = coeff_dropout;
            }
            pc
        }
        None => PeftConfig {
            lora: None,
            target_modules: Vec::new(),
            coeff: None,
            coeff_targets: Vec::new(),
            exclude_modules: Vec::new(),
            modules_to_save: Vec::new(),
        },
    };
    pc.modules_to_save = if args.method == TuneMethod::Full {
        // Every top-level module and tensor (the head, the class token among them), trained
        // and saved whole.
        let mut top: Vec<String> = coeff_tuning::params::all_param_shapes(&model)
            .into_keys()
            .map(|p| p.split('.').next().unwrap_or_default().to_string())
            .collect();
        top.sort();
        top.dedup();
        top
    } else {
        vec!["head".into()]
    };
    let (model, injected) = match &args.init_adapter {
        Some(path) => start_from(model, &pc, args.method, path)?,
        None => {
            // LoRA's A matrices are drawn from the backend generator.
            B::seed(device, args.seed);
            inject(model, &pc)
                .with_context(|| format!("applying {} to the checkpoint", args.method.name()))?
        }
    };
    metrics.trainable_params = injected.params.trainable;
    metrics.total_params = injected.params.total;

    // Data: pixels, or for the linear probe the frozen model's features, computed once.
    let (train, val) = if args.method == TuneMethod::Linear {
        let frozen = model.valid();
        let cache = |set: &ImageSet| Split {
            inputs: cached_features(&set.images, &preprocess, EVAL_BATCH, device, |x| {
                coeff_harness::classify::ImageClassifier::features(&frozen, x)
            }),
            labels: set.labels.clone(),
        };
        (cache(&train_set), cache(&val_set))
    } else {
        let pixels = |set: ImageSet| Split {
            inputs: Inputs::Pixels {
                images: set.images,
                preprocess: preprocess.clone(),
            },
            labels: set.labels,
        };
        (pixels(train_set), pixels(val_set))
    };

    let config = TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        schedule: WarmupCosine {
            base_lr: args.lr,
            min_lr: 0.0,
            warmup_steps: warmup,
            total_steps: total,
        },
        groups: vec![ParamGroup {
            patterns: vec!["coeff".into()],
            lr: coeff_lr,
        }],
        seed: args.seed,
        checkpoint_secs: args.checkpoint_secs,
        stop_after: None,
        grad_accum: args.grad_accum,
    };
    let (mut trainer, mut model) = super::resume_trainer(
        config,
        injected.trainable_prefixes(),
        &args.out,
        &fingerprint,
        model,
        device,
    )?;

    let bar = super::step_bar(total, trainer.state().step);
    let label = format!("{} {}", args.method.name(), args.out.display());
    loop {
        let step = trainer.state().step;
        let epoch_end = ((step / per_epoch + 1) * per_epoch).min(total);
        // An epoch that ended before a kill is validated when the run comes back.
        let epoch = step.div_ceil(per_epoch);
        if step > 0
            && (step % per_epoch == 0 || step == total)
            && !metrics.epochs.iter().any(|e| e.epoch == epoch)
        {
            bar.set_message(format!("{label} | validating epoch {epoch}"));
            validate(
                &model,
                &injected,
                family,
                &val,
                &classes,
                &trainer,
                epoch,
                per_epoch,
                args,
                &mut metrics,
                device,
            )?;
            say(
                &bar,
                format!(
                    "epoch {epoch}/{epochs}: train loss {:.4}, validation accuracy {:.4}",
                    metrics.epochs.last().map_or(0.0, |e| e.train_loss),
                    metrics.epochs.last().map_or(0.0, |e| e.val_accuracy),
                ),
            );
        }
        if step >= total {
            break;
        }
        if args.stop_after.is_some_and(|k| step >= k) {
            bar.abandon();
            say(
                &bar,
                format!("tune: stopped after {step} steps (--stop-after); rerun to resume"),
            );
            write_metrics(&args.out, &metrics)?;
            return Ok(());
        }
        let stop = args.stop_after.map_or(epoch_end, |k| k.min(epoch_end));
        trainer.set_stop_after(Some(stop));
        let mut loss_sum = (0.0, 0usize);
        let mut on_step = |r: &StepReport| {
            loss_sum = (loss_sum.0 + r.loss, loss_sum.1 + 1);
            bar.set_position(r.completed as u64);
            bar.set_message(format!(
                "{label} | epoch {}/{epochs} loss {:.3} {}",
                (r.completed - 1) / per_epoch + 1,
                loss_sum.0 / loss_sum.1 as f64,
                r.message
            ));
        };
        let loss_fn = |model: &VisionTransformer<B>, step: &Step| -> Result<StepOutput<B>> {
            let (epoch, b) = (step.index / per_epoch, step.index % per_epoch);
            let order = epoch_order(n, args.seed, epoch);
            let batch = &order[b * bs..((b + 1) * bs).min(n)];
            let (share, weight) = step.micro_share(batch.len())?;
            let idx = &batch[share];
            // A generator per micro-batch (the step's own for an unsplit batch).
            let mut aug = args
                .augment
                .then(|| SplitMix::new(step.seed ^ ((step.micro_batch as u64) << 32)));
            let out = logits(model, &train, idx, aug.as_mut(), device);
            let (loss, hits) = cross_entropy(out, train.labels::<B>(idx, device));
            Ok(StepOutput {
                loss: if weight == 1.0 { loss } else { loss * weight },
                message: format!("batch acc {:.2}", hits as f64 / idx.len() as f64),
            })
        };
        model = match trainer.run(model, device, loss_fn, &mut on_step)? {
            Finish::Done(m) | Finish::Stopped(m) => m,
        };
        metrics.step_ms = coeff_harness::report::median(trainer.state().timed_step_ms());
        metrics.train_seconds = trainer.state().train_seconds;
    }
    bar.finish_with_message(format!("{label} | done"));
    metrics.finished = true;
    write_metrics(&args.out, &metrics)?;
    plot_curves(&args.out, &metrics, &trainer.state().losses, per_epoch)?;
    let kept = metrics
        .kept_epoch
        .and_then(|k| metrics.epochs.iter().find(|e| e.epoch == k))
        .context("no epoch was kept")?;
    MatrixPlot::new(
        format!(
            "validation, epoch {} ({:.1}% correct)",
            kept.epoch,
            100.0 * kept.val_accuracy
        ),
        classes.clone(),
        kept.confusion.clone(),
    )
    .save_png(&args.out.join("confusion.png"))?;
    eprintln!(
        "tune: {} validation accuracy {:.4} (epoch {} of {epochs}, --keep {}); adapter in {}",
        args.method.name(),
        kept.val_accuracy,
        kept.epoch,
        match args.keep {
            Keep::Best => "best",
            Keep::Last => "last",
        },
        args.out.join("adapter").display()
    );
    Ok(())
}

/// Validate after `epoch`, record it, and replace `OUT/adapter` when this epoch is kept.
#[allow(clippy::too_many_arguments)]
fn validate<B: AutodiffBackend>(
    model: &VisionTransformer<B>,
    injected: &Injected,
    family: Family,
    val: &Split,
    classes: &[String],
    trainer: &Trainer<B>,
    epoch: usize,
    per_epoch: usize,
    args: &ClassifyArgs,
    metrics: &mut Metrics,
    device: &B::Device,
) -> Result<()> {
    if let Some((param, count, numel)) = coeff_tuning::params::first_non_finite(model) {
        bail!(
            "parameter `{param}` has {count} non-finite value(s) out of {numel} after epoch \
             {epoch}: training diverged; lower --lr and delete {} to restart",
            args.out.display()
        );
    }
    let inner = model.valid();
    let counts = confusion(&inner, val, classes.len(), EVAL_BATCH, device)
        .with_context(|| format!("validating after epoch {epoch}"))?;
    let state = trainer.state();
    let first = (epoch - 1) * per_epoch;
    let losses = &state.losses[first.min(state.losses.len())..];
    let record = EpochRecord {
        epoch,
        step: state.step,
        train_loss: losses.iter().map(|&v| v as f64).sum::<f64>() / losses.len().max(1) as f64,
        val_accuracy: confusion_accuracy(&counts),
        confusion: counts,
    };
    let best = metrics
        .epochs
        .iter()
        .map(|e| e.val_accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    let keep = match args.keep {
        Keep::Last => true,
        Keep::Best => record.val_accuracy > best,
    };
    metrics.epochs.push(record);
    if keep {
        metrics.peft_export = write_adapter(model, injected, family, &args.out)?;
        metrics.kept_epoch = Some(epoch);
    }
    write_metrics(&args.out, metrics)
}

/// Write the adapter of `model` into `OUT/adapter.partial`, then swap it in for `OUT/adapter`.
/// Returns what the PEFT export wrote, or why there is none.
fn write_adapter<B: AutodiffBackend>(
    model: &VisionTransformer<B>,
    injected: &Injected,
    family: Family,
    out: &Path,
) -> Result<String> {
    let (dir, partial, old) = adapter_dirs(out);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    coeff_tuning::save_adapter(model, injected, &partial)
        .with_context(|| format!("writing the adapter into {}", partial.display()))?;
    let peft = if injected.lora_layers.is_empty() && injected.saved_modules.len() > 1 {
        "none: a full fine-tune is a whole model, not an adapter; our adapter files hold it \
         (every module as modules_to_save)"
            .to_string()
    } else if injected.lora_layers.is_empty() {
        "none: PEFT has no Coeff-Tuning and no head-only adapter; our adapter files hold \
         everything"
            .to_string()
    } else if family == Family::Timm {
        "none: timm's fused qkv has no per-projection PEFT module; the adapter is in our \
         format only"
            .to_string()
    } else {
        let export = coeff_vit::peft_format::export_peft(model, injected, &partial)
            .with_context(|| format!("writing the PEFT export into {}", partial.display()))?;
        format!("{export:?}")
    };
    if dir.exists() {
        std::fs::rename(&dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
    }
    std::fs::rename(&partial, &dir).with_context(|| format!("renaming to {}", dir.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(peft)
}

fn adapter_dirs(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        out.join("adapter"),
        out.join("adapter.partial"),
        out.join("adapter.old"),
    )
}

/// After a kill inside [`write_adapter`]'s swap: put the old adapter back if the new one was
/// not renamed in yet, and drop a half-written one.
fn recover_adapter(out: &Path) -> Result<()> {
    let (dir, partial, old) = adapter_dirs(out);
    if !dir.exists() && old.exists() {
        std::fs::rename(&old, &dir).with_context(|| format!("restoring {}", dir.display()))?;
    }
    for d in [partial, old] {
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    Ok(())
}

fn read_metrics(out: &Path) -> Result<Option<Metrics>> {
    let path = metrics_path(out);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: not a tune classify metrics file", path.display()))
}

fn write_metrics(out: &Path, metrics: &Metrics) -> Result<()> {
    coeff_harness::report::write_json(&metrics_path(out), metrics)
}

/// `curves.png`: training loss per step and validation accuracy per epoch.
fn plot_curves(out: &Path, metrics: &Metrics, losses: &[f32], per_epoch: usize) -> Result<()> {
    let loss: Vec<(f64, f64)> = losses
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f64, v as f64))
        .collect();
    let acc: Vec<(f64, f64)> = metrics
        .epochs
        .iter()
        .map(|e| (e.step as f64 / per_epoch as f64, 100.0 * e.val_accuracy))
        .collect();
    Figure::new(1000, 420)
        .title(format!(
            "tune classify: {} ({} classes)",
            metrics.settings.method.name(),
            metrics.settings.classes.len()
        ))
        .panel(
            Panel::new(
                "training loss",
                Axis::new("step"),
                Axis::new("cross-entropy"),
            )
            .series(Series::new(colors::BLUE, Mark::line(2), loss)),
        )
        .panel(
            Panel::new(
                "validation accuracy",
                Axis::new("epoch"),
                Axis::new("accuracy (%)"),
            )
            .series(Series::new(
                colors::RED,
                Mark::line_points(2, coeff_harness::plot::Marker::Disc(4)),
                acc,
            )),
        )
        .save_png(&out.join("curves.png"))
}

/// `model` (with its fresh head) with the adapter at `path` loaded instead of a fresh one.
/// The adapter must be of `method`'s kind; its head replaces the fresh one when it has one.
fn start_from<B: AutodiffBackend>(
    model: VisionTransformer<B>,
    run: &PeftConfig,
    method: TuneMethod,
    path: &Path,
) -> Result<(VisionTransformer<B>, Injected)> {
    let context = || format!("--init-adapter {}", path.display());
    let (model, mut injected) = match AdapterSource::detect(path)? {
        AdapterSource::Ours(dir) => {
            let saved = coeff_tuning::peft::file::read_config(
                &dir.join(coeff_tuning::peft::ADAPTER_CONFIG_FILE),
            )
            .with_context(context)?;
            super::same_kind(&saved, run, method.name(), path)?;
            coeff_tuning::load_adapter(model, &dir).with_context(context)?
        }
        AdapterSource::Peft(dir) => {
            ensure!(
                run.coeff.is_none(),
                "--init-adapter {}: a PEFT adapter has no Coeff-Tuning alpha; --method {} needs \
                 one (start from our own adapter, or use --method lora / dora)",
                path.display(),
                method.name()
            );
            let (model, injected) =
                coeff_vit::peft_format::import_peft(model, &dir).with_context(context)?;
            super::same_kind(&injected.config, run, method.name(), path)?;
            (model, injected)
        }
        other => return Err(other.unsupported("vision transformer")),
    };
    if !injected.saved_modules.iter().any(|m| m == "head") {
        // The adapter of a bare ViT: the fresh head trains beside it.
        injected.saved_modules.push("head".into());
        injected.config.modules_to_save.push("head".into());
        let model = set_trainable(model, &injected.trainable_prefixes());
        injected.params = coeff_tuning::ParamReport::of(&model, &injected.trainable_prefixes());
        return Ok((model, injected));
    }
    Ok((model, injected))
}
