//! `tune dreambooth`: DreamBooth of a diffusers SDXL folder on a few subject images and an
//! instance prompt, with LoRA / DoRA and Coeff-Tuning on the UNet's attentions - diffusers'
//! `train_dreambooth_lora_sdxl.py` where the two share a flag.
//!
//! ```text
//! images: resize the short side to R (PIL's antialiased bilinear), flip (--random-flip),
//!         crop R x R (centre or seeded), to [-1, 1]; time_ids = (original h, w, crop top,
//!         left, R, R) per image, as diffusers computes them
//! cache once: VAE (mean, logvar) of every image; both text encoders' states of the prompt
//! step:   z = (mean + exp(logvar / 2) eps - shift) * scaling;  t ~ U{0..T-1};  n ~ N(0, 1)
//!         loss = | unet(add_noise(z, n, t), t, prompt) - target |^2   (target: n or v)
//! every --validation-steps and at the end: --num-validation-images of --validation-prompt
//! end:    pytorch_lora_weights.safetensors (diffusers' format) + adapter/ (ours, with alpha)
//! ```
//!
//! The noise, the latent samples and the timesteps come from a generator seeded by the step,
//! so a killed run resumes to the same weights; a rerun with other settings is an error.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use coeff_data::dataset::{image_files, read_image};
use coeff_data::Image;
use coeff_harness::classify::epoch_order;
use coeff_harness::limits::MAX_LORA_RANK;
use coeff_harness::rng::{normal, Lcg};
use coeff_sdxl::lora_format::export_unet_lora;
use coeff_sdxl::scheduler::Ddpm;
use coeff_sdxl::{
    SampleConfig, SdxlPipeline, UNet2DConditionModel, UnetConfig, UnetInput, VaeConfig,
};
use coeff_tuning::peft::params::set_trainable;
use coeff_tuning::train::{
    AdamWConfig, Finish, ParamGroup, Step, StepOutput, StepReport, TrainerConfig, WarmupCosine,
};
use coeff_tuning::{inject, Injected, Method};
use serde::{Deserialize, Serialize};

/// Most subject images read (DreamBooth uses 3-10).
pub const MAX_INSTANCE_IMAGES: usize = 1000;
/// The diffusers-format LoRA file written into `--out`.
pub const LORA_FILE: &str = "pytorch_lora_weights.safetensors";

/// What is tuned in the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DreamMethod {
    /// Coeff-Tuning's alpha alone.
    Coeff,
    /// LoRA on `--targets`.
    Lora,
    /// LoRA and Coeff-Tuning.
    #[value(name = "lora+coeff")]
    #[serde(rename = "lora+coeff")]
    LoraCoeff,
    /// DoRA on `--targets`.
    Dora,
    /// DoRA and Coeff-Tuning.
    #[value(name = "dora+coeff")]
    #[serde(rename = "dora+coeff")]
    DoraCoeff,
}

impl DreamMethod {
    fn peft(self) -> Method {
        match self {
            Self::Coeff => Method::Coeff,
            Self::Lora => Method::Lora,
            Self::LoraCoeff => Method::LoraCoeff,
            Self::Dora => Method::Dora,
            Self::DoraCoeff => Method::DoraCoeff,
        }
    }
}

/// Which attentions get Coeff-Tuning's alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CoeffOn {
    /// The self-attentions (`attn1`).
    #[value(name = "self")]
    SelfAttention,
    /// The cross-attentions to the text (`attn2`).
    Cross,
    /// Both.
    Both,
}

/// The learning-rate schedule after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LrScheduler {
    /// Constant (diffusers' default).
    Constant,
    /// Cosine decay to 0.
    Cosine,
}

/// Arguments of `tune dreambooth`.
#[derive(Debug, Clone, clap::Args)]
pub struct DreamboothArgs {
    /// A diffusers SDXL folder (`model_index.json`, `unet/`, `vae/`, `text_encoder[_2]/`,
    /// `tokenizer[_2]/`, `scheduler/`).
    #[arg(long, alias = "pretrained_model_name_or_path")]
    pub pipeline: PathBuf,
    /// Folder of subject images (`.png`, `.jpg`, `.jpeg`).
    #[arg(long, alias = "instance_data_dir")]
    pub instance_data_dir: PathBuf,
    /// The prompt with the identifier, e.g. `a photo of sks dog`.
    #[arg(long, alias = "instance_prompt")]
    pub instance_prompt: String,
    /// Output folder (created; a rerun with the same settings resumes the run in it).
    #[arg(long, alias = "output_dir")]
    pub out: PathBuf,
    /// What to tune.
    #[arg(long, value_enum, default_value = "lora+coeff")]
    pub method: DreamMethod,
    /// LoRA / DoRA rank.
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    /// LoRA / DoRA alpha (the update is scaled by alpha / rank) [default: the rank, as
    /// diffusers' script sets it].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Linear layers LoRA / DoRA adapts: suffix patterns of our module paths (`query`, `key`,
    /// `value`, `output` are diffusers' `to_q`, `to_k`, `to_v`, `to_out.0` of every self- and
    /// cross-attention) or `re:` regexes, comma-separated [default: query,key,value,output].
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Attentions with Coeff-Tuning's alpha.
    #[arg(long, value_enum, default_value = "both")]
    pub coeff_on: CoeffOn,
    /// Peak learning rate of Coeff-Tuning's alpha [default: --learning-rate].
    #[arg(long)]
    pub coeff_lr: Option<f64>,
    /// Dropout on alpha during training [default: 0.2, the paper's].
    #[arg(long)]
    pub coeff_dropout: Option<f64>,
    /// Side of the training images in pixels [default: the UNet's sample_size x the VAE's
    /// factor].
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Crop the centre after the resize (else a seeded random crop per image).
    #[arg(long, alias = "center_crop")]
    pub center_crop: bool,
    /// Flip each image horizontally with probability 1/2 (seeded, once per image).
    #[arg(long, alias = "random_flip")]
    pub random_flip: bool,
    /// Images per step.
    #[arg(long, alias = "train_batch_size", default_value_t = 1)]
    pub train_batch_size: usize,
    /// Micro-batches per step (the step's images go through the UNet in this many parts).
    #[arg(long, alias = "gradient_accumulation_steps", default_value_t = 1)]
    pub gradient_accumulation_steps: usize,
    /// Optimizer steps.
    #[arg(long, alias = "max_train_steps", default_value_t = 500)]
    pub max_train_steps: usize,
    /// Peak learning rate.
    #[arg(long, alias = "learning_rate", default_value_t = 1e-4)]
    pub learning_rate: f64,
    /// Schedule after the warm-up.
    #[arg(long, alias = "lr_scheduler", value_enum, default_value = "constant")]
    pub lr_scheduler: LrScheduler,
    /// Steps of linear warm-up (diffusers' default is 500; ours 0).
    #[arg(long, alias = "lr_warmup_steps", default_value_t = 0)]
    pub lr_warmup_steps: usize,
    /// AdamW's decoupled weight decay.
    #[arg(long, alias = "adam_weight_decay", default_value_t = 1e-4)]
    pub adam_weight_decay: f64,
    /// Gradient clipping to this global norm.
    #[arg(long, alias = "max_grad_norm", default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Prompt of the validation images (none: no validation).
    #[arg(long, alias = "validation_prompt")]
    pub validation_prompt: Option<String>,
    /// Validation images per validation [default: 4].
    #[arg(long, alias = "num_validation_images")]
    pub num_validation_images: Option<usize>,
    /// Validate every this many steps (and at the end) [default: at the end only].
    #[arg(long)]
    pub validation_steps: Option<usize>,
    /// Denoising steps of a validation image [default: 25].
    #[arg(long)]
    pub validation_inference_steps: Option<usize>,
    /// Classifier-free guidance of the validation images [default: 5].
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Write a resumable checkpoint every this many steps (and at the end).
    #[arg(long, alias = "checkpointing_steps", default_value_t = 500)]
    pub checkpointing_steps: usize,
    /// Seed: crops and flips, LoRA init, batch order, noise, timesteps, alpha dropout,
    /// validation noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many steps in all, with a checkpoint (rerun to resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
}

/// The settings a run's checkpoint is tied to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The pipeline folder.
    pub pipeline: PathBuf,
    /// Subject image files with the sha256 of each.
    pub images: Vec<(PathBuf, String)>,
    /// The instance prompt.
    pub prompt: String,
    /// The method.
    pub method: DreamMethod,
    /// LoRA rank / alpha / targets (LoRA and DoRA methods).
    pub lora: Option<(usize, f64, Vec<String>)>,
    /// Coeff: where, alpha dropout (Coeff methods).
    pub coeff: Option<(CoeffOn, f64)>,
    /// Learning rates: peak, alpha's.
    pub lr: (f64, f64),
    /// Schedule, warm-up steps, steps.
    pub schedule: (LrScheduler, usize, usize),
    /// Weight decay, gradient clipping norm.
    pub optimizer: (f64, f64),
    /// Batch, micro-batches.
    pub batch: (usize, usize),
    /// Side, centre crop, random flip.
    pub images_at: (usize, bool, bool),
    /// Seed.
    pub seed: u64,
}

/// One validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Steps completed.
    pub step: usize,
    /// The grid, relative to `--out`.
    pub grid: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// The settings.
    pub settings: Settings,
    /// Parameters trained / in the UNet.
    pub trainable_params: usize,
    /// All parameters of the UNet.
    pub total_params: usize,
    /// Validations so far.
    pub validations: Vec<Validation>,
    /// Median step time, ms (without each process's first step).
    pub step_ms: f64,
    /// Training seconds over every process.
    pub train_seconds: f64,
    /// Seconds spent encoding the images and the prompt (this process).
    pub cache_seconds: f64,
    /// Peak resident memory of the process, MiB (Linux `VmHWM`; `None` elsewhere).
    pub peak_rss_mib: Option<f64>,
    /// Mean loss of the first and the last 10% of the steps.
    pub loss_first_last: Option<(f64, f64)>,
    /// What the diffusers export wrote, or why there is none.
    pub lora_export: String,
    /// Every step is done and the outputs are written.
    pub finished: bool,
}

fn check_args(args: &DreamboothArgs) -> Result<()> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    ensure!(
        positive(args.learning_rate),
        "--learning-rate {}: must be a positive number",
        args.learning_rate
    );
    if let Some(v) = args.coeff_lr {
        ensure!(positive(v), "--coeff-lr {v}: must be a positive number");
    }
    ensure!(
        args.adam_weight_decay.is_finite() && args.adam_weight_decay >= 0.0,
        "--adam-weight-decay {}: must be a non-negative number",
        args.adam_weight_decay
    );
    ensure!(
        positive(args.max_grad_norm),
        "--max-grad-norm {}: must be a positive number",
        args.max_grad_norm
    );
    ensure!(
        args.max_train_steps > 0,
        "--max-train-steps 0: train at least one step"
    );
    ensure!(
        args.lr_warmup_steps < args.max_train_steps,
        "--lr-warmup-steps {} must be below --max-train-steps {}",
        args.lr_warmup_steps,
        args.max_train_steps
    );
    ensure!(
        (1..=64).contains(&args.train_batch_size),
        "--train-batch-size {}: must be in 1..=64",
        args.train_batch_size
    );
    ensure!(
        (1..=args.train_batch_size).contains(&args.gradient_accumulation_steps),
        "--gradient-accumulation-steps {}: must be in 1..=--train-batch-size ({})",
        args.gradient_accumulation_steps,
        args.train_batch_size
    );
    ensure!(
        args.checkpointing_steps > 0,
        "--checkpointing-steps 0: must be positive"
    );
    if let Some(k) = args.validation_inference_steps {
        ensure!(
            (1..=1000).contains(&k),
            "--validation-inference-steps {k}: must be in 1..=1000"
        );
    }
    if let Some(g) = args.guidance_scale {
        ensure!(
            g.is_finite() && g >= 1.0,
            "--guidance-scale {g}: must be at least 1"
        );
    }
    if let Some(k) = args.num_validation_images {
        ensure!(
            (1..=64).contains(&k),
            "--num-validation-images {k}: must be in 1..=64"
        );
    }
    ensure!(
        args.stop_after != Some(0),
        "--stop-after 0: stop after at least one step"
    );
    let method = args.method.peft();
    if method.lora(1).is_none() {
        for (flag, given) in [
            ("--lora-alpha", args.lora_alpha.is_some()),
            ("--targets", args.targets.is_some()),
        ] {
            ensure!(
                !given,
                "{flag} is a LoRA / DoRA setting; --method coeff has none"
            );
        }
    } else {
        ensure!(
            (1..=MAX_LORA_RANK).contains(&args.rank),
            "--rank {}: must be in 1..={MAX_LORA_RANK}",
            args.rank
        );
        if let Some(a) = args.lora_alpha {
            ensure!(positive(a), "--lora-alpha {a}: must be a positive number");
        }
    }
    if !method.has_coeff() {
        for (flag, given) in [
            ("--coeff-lr", args.coeff_lr.is_some()),
            ("--coeff-dropout", args.coeff_dropout.is_some()),
            ("--coeff-on", args.coeff_on != CoeffOn::Both),
        ] {
            ensure!(
                !given,
                "{flag} is a Coeff-Tuning setting; --method {} has no alpha",
                method.name()
            );
        }
    }
    if let Some(d) = args.coeff_dropout {
        ensure!(
            (0.0..1.0).contains(&d),
            "--coeff-dropout {d}: must be in [0, 1)"
        );
    }
    if args.validation_prompt.is_none() {
        for (flag, given) in [
            ("--validation-steps", args.validation_steps.is_some()),
            (
                "--num-validation-images",
                args.num_validation_images.is_some(),
            ),
            (
                "--validation-inference-steps",
                args.validation_inference_steps.is_some(),
            ),
            ("--guidance-scale", args.guidance_scale.is_some()),
        ] {
            ensure!(!given, "{flag} needs --validation-prompt");
        }
    }
    ensure!(
        args.validation_steps != Some(0),
        "--validation-steps 0: must be positive"
    );
    for (flag, dir) in [
        ("--pipeline", &args.pipeline),
        ("--instance-data-dir", &args.instance_data_dir),
    ] {
        let inside = match (args.out.canonicalize(), dir.canonicalize()) {
            (Ok(a), Ok(b)) => a == b || a.starts_with(&b),
            _ => false,
        };
        ensure!(
            !inside,
            "--out {} is (inside) {flag} {}: the output must not overwrite an input",
            args.out.display(),
            dir.display()
        );
    }
    Ok(())
}

/// One subject image ready for the VAE.
struct Prepared {
    /// `[3, R, R]` in `[-1, 1]`.
    pixels: Vec<f32>,
    /// SDXL's `(original h, w, crop top, left, R, R)`.
    time_ids: [f32; 6],
}

/// Resize the short side to `side`, flip, crop `side x side` (diffusers' dataset transforms).
fn prepare(img: &Image, side: usize, center_crop: bool, rng: &mut Lcg, flip: bool) -> Prepared {
    let rgb = if img.channels == 1 {
        Image {
            channels: 3,
            height: img.height,
            width: img.width,
            pixels: img.pixels.repeat(3),
        }
    } else {
        img.clone()
    };
    let (h, w) = (rgb.height, rgb.width);
    // torchvision's Resize(int): the short side to `side`, the long one truncated.
    let (nh, nw) = if h <= w {
        (side, (side * w / h).max(side))
    } else {
        ((side * h / w).max(side), side)
    };
    let mut r = coeff_data::resize::antialiased(&rgb, nh, nw);
    if flip {
        for c in 0..3 {
            for y in 0..nh {
                r.pixels[(c * nh + y) * nw..(c * nh + y + 1) * nw].reverse();
            }
        }
    }
    let (top, left) = if center_crop {
        (
            ((nh - side) as f64 / 2.0).round() as usize,
            ((nw - side) as f64 / 2.0).round() as usize,
        )
    } else {
        (
            (rng.next_u32() as usize) % (nh - side + 1),
            (rng.next_u32() as usize) % (nw - side + 1),
        )
    };
    let mut pixels = Vec::with_capacity(3 * side * side);
    for c in 0..3 {
        for y in 0..side {
            let row = (c * nh + top + y) * nw + left;
            pixels.extend(r.pixels[row..row + side].iter().map(|v| v * 2.0 - 1.0));
        }
    }
    let s = side as f32;
    Prepared {
        pixels,
        time_ids: [h as f32, w as f32, top as f32, left as f32, s, s],
    }
}

/// The VAE's downsampling factor and the side every image must be a multiple of.
fn sizes(pipeline: &Path, unet: &UnetConfig) -> Result<(usize, usize)> {
    let vae = VaeConfig::from_file(pipeline.join("vae"))?;
    let factor = 1usize << vae.block_out_channels.len().saturating_sub(1);
    let unit = factor << unet.block_out_channels.len().saturating_sub(1);
    Ok((factor, unit))
}

fn metrics_path(out: &Path) -> PathBuf {
    out.join("metrics.json")
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(coeff_assets::sha256_hex(&bytes))
}

/// Peak resident memory of this process in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Run `tune dreambooth`.
pub fn run<B: AutodiffBackend>(args: &DreamboothArgs, device: &B::Device) -> Result<()> {
    check_args(args)?;
    let unet_config = UnetConfig::from_file(args.pipeline.join("unet"))?;
    let (factor, unit) = sizes(&args.pipeline, &unet_config)?;
    let side = match (args.resolution, unet_config.sample_size) {
        (Some(r), _) => r,
        (None, Some(s)) => s * factor,
        (None, None) => bail!(
            "{}: no sample_size; give --resolution",
            args.pipeline.join("unet/config.json").display()
        ),
    };
    ensure!(
        side > 0 && side % unit == 0 && side <= 4096,
        "--resolution {side}: must be a positive multiple of {unit} (the VAE's factor {factor} \
         x the UNet's downsampling) up to 4096"
    );
    let files = image_files(&args.instance_data_dir)
        .with_context(|| format!("--instance-data-dir {}", args.instance_data_dir.display()))?;
    ensure!(
        files.len() <= MAX_INSTANCE_IMAGES,
        "--instance-data-dir {}: {} images, more than the {MAX_INSTANCE_IMAGES} read",
        args.instance_data_dir.display(),
        files.len()
    );
    let method = args.method.peft();
    let targets = args.targets.clone().unwrap_or_else(|| {
        ["query", "key", "value", "output"]
            .map(String::from)
            .to_vec()
    });
    let lora_alpha = args.lora_alpha.unwrap_or(args.rank as f64);
    let coeff_dropout = args.coeff_dropout.unwrap_or(0.2);
    let coeff_lr = args.coeff_lr.unwrap_or(args.learning_rate);
    let total = args.max_train_steps;
    let settings = Settings {
        pipeline: args.pipeline.clone(),
        images: files
            .iter()
            .map(|f| Ok((f.clone(), sha256_file(f)?)))
            .collect::<Result<_>>()?,
        prompt: args.instance_prompt.clone(),
        method: args.method,
        lora: method
            .lora(args.rank)
            .map(|_| (args.rank, lora_alpha, targets.clone())),
        coeff: method.has_coeff().then_some((args.coeff_on, coeff_dropout)),
        lr: (args.learning_rate, coeff_lr),
        schedule: (args.lr_scheduler, args.lr_warmup_steps, total),
        optimizer: (args.adam_weight_decay, args.max_grad_norm),
        batch: (args.train_batch_size, args.gradient_accumulation_steps),
        images_at: (side, args.center_crop, args.random_flip),
        seed: args.seed,
    };
    let fingerprint = serde_json::to_string(&settings)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let previous: Option<Metrics> = match std::fs::read_to_string(metrics_path(&args.out)) {
        Ok(text) => Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a tune dreambooth metrics file",
                metrics_path(&args.out).display()
            )
        })?),
        Err(_) => None,
    };
    if let Some(m) = &previous {
        ensure!(
            m.settings == settings,
            "{} holds a run with other settings (see its `settings` in metrics.json); give \
             another --out or delete that folder to restart",
            args.out.display()
        );
    }

    // Encode once: the images through the VAE, the prompt through both text encoders.
    let t0 = std::time::Instant::now();
    let mut pipeline = SdxlPipeline::<B::InnerBackend>::load(&args.pipeline, device)
        .with_context(|| format!("loading --pipeline {}", args.pipeline.display()))?;
    let mut rng = Lcg::new(args.seed ^ 0x6372_6f70);
    let mut latents = Vec::with_capacity(files.len());
    let mut time_ids = Vec::with_capacity(files.len());
    for file in &files {
        let img = read_image(file)?;
        let flip = args.random_flip && rng.uniform() < 0.5;
        let p = prepare(&img, side, args.center_crop, &mut rng, flip);
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(p.pixels, [1, 3, side, side]),
            device,
        );
        let (mean, logvar) = pipeline.vae.encode(x);
        latents.push((
            mean.into_data()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            logvar
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ));
        time_ids.push(p.time_ids);
    }
    let channels = unet_config.in_channels;
    let lat = side / factor;
    let numel = channels * lat * lat;
    ensure!(
        latents.iter().all(|(m, _)| m.len() == numel),
        "{}: the VAE's latents do not have the UNet's {channels} input channels",
        args.pipeline.display()
    );
    let [ids_1, ids_2] = pipeline.tokenize(&[args.instance_prompt.as_str()], device)?;
    let (embeds, pooled) = pipeline.encode_prompt(ids_1, ids_2)?;
    let embeds = Tensor::<B, 3>::from_inner(embeds);
    let pooled = Tensor::<B, 2>::from_inner(pooled);
    let (scaling, shift) = (
        pipeline.vae.scaling_factor as f32,
        pipeline.vae.shift_factor as f32,
    );
    let cache_seconds = t0.elapsed().as_secs_f64();

    // The UNet to train, on the autodiff backend.
    let (_, unet) = coeff_sdxl::load_unet::<B>(args.pipeline.join("unet"), device)?;
    let unet = set_trainable(unet, &[]);
    let mut pc = method.config(
        args.rank,
        &targets.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    if let Some(l) = pc.lora.as_mut() {
        l.alpha = lora_alpha;
    }
    if let Some(c) = pc.coeff.as_mut() {
        c.dropout = coeff_dropout;
        pc.coeff_targets = match args.coeff_on {
            CoeffOn::SelfAttention => vec!["attn".into()],
            CoeffOn::Cross => vec!["cross_attn".into()],
            CoeffOn::Both => Vec::new(),
        };
    }
    B::seed(device, args.seed);
    let (unet, injected) =
        inject(unet, &pc).with_context(|| format!("applying {} to the UNet", method.name()))?;
    let mut metrics = previous.unwrap_or(Metrics {
        settings,
        trainable_params: injected.params.trainable,
        total_params: injected.params.total,
        validations: Vec::new(),
        step_ms: 0.0,
        train_seconds: 0.0,
        cache_seconds,
        peak_rss_mib: None,
        loss_first_last: None,
        lora_export: String::new(),
        finished: false,
    });
    metrics.cache_seconds = cache_seconds;

    let config = TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: args.adam_weight_decay,
            grad_clip: Some(args.max_grad_norm),
            ..AdamWConfig::default()
        },
        schedule: WarmupCosine {
            base_lr: args.learning_rate,
            min_lr: match args.lr_scheduler {
                LrScheduler::Constant => args.learning_rate,
                LrScheduler::Cosine => 0.0,
            },
            warmup_steps: args.lr_warmup_steps,
            total_steps: total,
        },
        groups: vec![ParamGroup {
            patterns: vec!["coeff".into()],
            lr: coeff_lr,
        }]
        .into_iter()
        .filter(|_| method.has_coeff())
        .collect(),
        seed: args.seed,
        checkpoint_secs: f64::INFINITY,
        stop_after: None,
        grad_accum: args.gradient_accumulation_steps,
    };
    let (mut trainer, mut unet) = super::resume_trainer(
        config,
        injected.trainable_prefixes(),
        &args.out,
        &fingerprint,
        unet,
        device,
    )?;

    let ddpm = Ddpm::new(pipeline.schedule);
    let timesteps = ddpm.config.num_train_timesteps;
    let n = files.len();
    let bs = args.train_batch_size;
    let uses_text_time = unet_config.text_time.is_some();
    let loss_fn = |unet: &UNet2DConditionModel<B>, step: &Step| -> Result<StepOutput<B>> {
        // The step's images: positions step * bs.. in the concatenated epoch orders.
        let picks: Vec<usize> = (0..bs)
            .map(|j| {
                let p = step.index * bs + j;
                epoch_order(n, args.seed, p / n)[p % n]
            })
            .collect();
        let (share, weight) = step.micro_share(picks.len())?;
        let idx = &picks[share];
        let m = idx.len();
        let mut g = Lcg::new(step.seed ^ ((step.micro_batch as u64) << 32));
        let eps = normal(g.next_u32() as u64, m * numel);
        let noise = normal(g.next_u32() as u64, m * numel);
        let ts: Vec<usize> = (0..m).map(|_| g.next_u32() as usize % timesteps).collect();
        let mut z = Vec::with_capacity(m * numel);
        let mut ids = Vec::with_capacity(m * 6);
        for (k, &i) in idx.iter().enumerate() {
            let (mean, logvar) = &latents[i];
            z.extend((0..numel).map(|j| {
                let sample = mean[j] + (0.5 * logvar[j]).exp() * eps[k * numel + j];
                (sample - shift) * scaling
            }));
            ids.extend_from_slice(&time_ids[i]);
        }
        let shape = [m, channels, lat, lat];
        let z = Tensor::<B, 4>::from_data(TensorData::new(z, shape), device);
        let noise = Tensor::<B, 4>::from_data(TensorData::new(noise, shape), device);
        let t: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let pred = unet.forward(UnetInput {
            sample: ddpm.add_noise(z.clone(), noise.clone(), &ts),
            timestep: Tensor::from_data(TensorData::new(t, [m]), device),
            encoder_hidden_states: embeds.clone().repeat_dim(0, m),
            text_embeds: uses_text_time.then(|| pooled.clone().repeat_dim(0, m)),
            time_ids: uses_text_time
                .then(|| Tensor::from_data(TensorData::new(ids, [m, 6]), device)),
        })?;
        let loss = (pred - ddpm.target(z, noise, &ts)).powi_scalar(2).mean();
        Ok(StepOutput::new(if weight == 1.0 {
            loss
        } else {
            loss * weight
        }))
    };

    let bar = super::step_bar(total, trainer.state().step);
    let every = |k: Option<usize>, s: usize| k.is_some_and(|k| s % k == 0);
    loop {
        let step = trainer.state().step;
        let due = args.validation_prompt.is_some()
            && step > 0
            && (every(args.validation_steps, step) || step == total)
            && !metrics.validations.iter().any(|v| v.step == step);
        if due {
            bar.set_message(format!("validating at step {step}"));
            pipeline.unet = unet.valid();
            let v = validate(&pipeline, args, side, step, device)?;
            metrics.validations.push(v);
            coeff_harness::report::write_json(&metrics_path(&args.out), &metrics)?;
        }
        if step >= total {
            break;
        }
        if args.stop_after.is_some_and(|k| step >= k) {
            bar.abandon();
            eprintln!("tune: stopped after {step} steps (--stop-after); rerun to resume");
            metrics.peak_rss_mib = peak_rss_mib();
            return coeff_harness::report::write_json(&metrics_path(&args.out), &metrics);
        }
        let next = [
            Some(total),
            Some((step / args.checkpointing_steps + 1) * args.checkpointing_steps),
            args.validation_steps
                .filter(|_| args.validation_prompt.is_some())
                .map(|k| (step / k + 1) * k),
            args.stop_after,
        ]
        .into_iter()
        .flatten()
        .filter(|&s| s > step)
        .min()
        .unwrap_or(total);
        trainer.set_stop_after(Some(next));
        let mut on_step = |r: &StepReport| {
            bar.set_position(r.completed as u64);
            bar.set_message(format!("{} loss {:.4}", method.name(), r.loss));
        };
        unet = match trainer.run(unet, device, &loss_fn, &mut on_step)? {
            Finish::Done(m) | Finish::Stopped(m) => m,
        };
        metrics.step_ms = coeff_harness::report::median(trainer.state().timed_step_ms());
        metrics.train_seconds = trainer.state().train_seconds;
        coeff_harness::report::write_json(&metrics_path(&args.out), &metrics)?;
    }
    bar.finish_and_clear();

    metrics.lora_export = write_outputs(&unet, &unet_config, &injected, &args.out)?;
    let losses = &trainer.state().losses;
    let tenth = (losses.len() / 10).max(1);
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    metrics.loss_first_last = (!losses.is_empty()).then(|| {
        (
            mean(&losses[..tenth]),
            mean(&losses[losses.len() - tenth..]),
        )
    });
    metrics.peak_rss_mib = peak_rss_mib();
    metrics.finished = true;
    coeff_harness::report::write_json(&metrics_path(&args.out), &metrics)?;
    eprintln!(
        "tune: {} steps of {} in {:.0} s ({:.0} ms/step); {} in {}",
        total,
        method.name(),
        metrics.train_seconds,
        metrics.step_ms,
        if injected.lora_layers.is_empty() {
            "adapter/ (ours)".to_string()
        } else {
            format!("{LORA_FILE} (diffusers) and adapter/ (ours)")
        },
        args.out.display()
    );
    Ok(())
}

/// `validation/step-N.png`: the validation prompt from fixed noises, one image per seed.
fn validate<B: Backend>(
    pipeline: &SdxlPipeline<B>,
    args: &DreamboothArgs,
    side: usize,
    step: usize,
    device: &B::Device,
) -> Result<Validation> {
    let t0 = std::time::Instant::now();
    let prompt = args.validation_prompt.as_deref().unwrap_or_default();
    let factor = pipeline.vae_scale_factor();
    let shape = [
        1,
        pipeline.unet_config.in_channels,
        side / factor,
        side / factor,
    ];
    let cfg = SampleConfig {
        steps: args.validation_inference_steps.unwrap_or(25),
        guidance: args.guidance_scale.unwrap_or(5.0),
        height: side,
        width: side,
    };
    let count = args.num_validation_images.unwrap_or(4);
    let mut images = Vec::with_capacity(count);
    for i in 0..count {
        let noise = normal(args.seed ^ 0x7661_6c00 ^ i as u64, shape.iter().product());
        let noise = Tensor::<B, 4>::from_data(TensorData::new(noise, shape), device);
        let img = pipeline.generate(&[prompt], noise, &cfg)?;
        images.push(Image {
            channels: 3,
            height: side,
            width: side,
            pixels: img
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        });
    }
    let dir = args.out.join("validation");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let grid = format!("validation/step-{step}.png");
    // Small pipelines: magnified to at least 256 px a side.
    coeff_harness::plot::write_grid(&args.out.join(&grid), &[images], (256 / side).max(1))?;
    Ok(Validation {
        step,
        grid,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `OUT/pytorch_lora_weights.safetensors` (LoRA / DoRA methods) and `OUT/adapter/`, each
/// written beside its place and renamed in. Returns what the diffusers export wrote.
fn write_outputs<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    config: &UnetConfig,
    injected: &Injected,
    out: &Path,
) -> Result<String> {
    let (dir, partial) = (out.join("adapter"), out.join("adapter.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    coeff_tuning::save_adapter(unet, injected, &partial)
        .with_context(|| format!("writing the adapter into {}", partial.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&partial, &dir).with_context(|| format!("renaming to {}", dir.display()))?;
    if injected.lora_layers.is_empty() {
        return Ok(
            "none: diffusers has no Coeff-Tuning; adapter/ (ours) holds the alpha matrices".into(),
        );
    }
    let file = out.join(LORA_FILE);
    let tmp = out.join(format!("{LORA_FILE}.partial"));
    let export = export_unet_lora(unet, config, injected, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("renaming to {}", file.display()))?;
    Ok(format!("{export:?}"))
}
