//! `experiment concept`: DreamBooth-style concept customisation, the paper's SDXL experiment at
//! the scale reachable here, built from real parts (docs/concept.md).
//!
//! 1. **Base ("pretraining")**: a small pixel-space UNet with an SDXL-style diffusers config
//!    (`coeff_sdxl`: cross-attention to text, `text_time` add-embedding) learns Twitter's emoji
//!    from captions made of their Unicode names, conditioned by the frozen real MiniLM-L6
//!    ([`world`]). Every cat face is held out. Cached and resumable (`<out>/base`).
//! 2. **Concept tuning**: the first 5 cat faces with prompts `a sks cat face, <expression>`;
//!    LoRA, Coeff alone, LoRA + Coeff, DoRA, DoRA + Coeff (on every self- and cross-attention)
//!    and full fine-tuning, each for every seed, resumable (`<out>/runs/<method>-s<seed>`);
//!    optional DreamBooth prior preservation.
//! 3. **Scores** ([`score`]): the other cat faces generated from their concept prompts and
//!    compared with their real artwork (DINO, CLIP-I); samples of non-cat prompts before vs
//!    after tuning (prior preservation). Fixed sampler, steps, guidance and initial noise.

pub mod diffusion;
pub mod score;
pub mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use coeff_data::Image;
use coeff_sdxl::scheduler::{Ddpm, ScheduleConfig};
use coeff_sdxl::UNet2DConditionModel;
use coeff_tuning::train::{
    AdamWConfig, Finish, StepOutput, StepReport, Trainer, TrainerConfig, WarmupCosine,
};
use coeff_tuning::{inject, Method, PeftConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::plot::{self, colors, Axis, Figure, LegendEntry, Mark, Marker, Panel, Series};
use crate::report::{markdown_table, mean_sd, say, write_json, Provenance};
use crate::rng::Lcg;
use crate::runs::{check_checkpoint, checkpoint_path, finished, result_path, RunRecord};
use diffusion::Sampling;
use score::{cosine, Embeddings, Scorer};
use world::{TextStates, World};

/// Settings presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 2 CPU cores, <= 30 minutes: 16 px, a short base stage, 3 seeds.
    Default,
    /// A GPU: 64 px, a wider UNet, a long base stage, prior preservation, 5 seeds.
    Full,
}

/// Arguments of `concept` (preset values unless given).
#[derive(Debug, Clone, clap::Args)]
pub struct ConceptArgs {
    /// Settings preset.
    #[arg(long, value_enum, default_value = "default")]
    pub preset: Preset,
    /// Methods, comma-separated: coeff, lora, lora+coeff, dora, dora+coeff, full.
    #[arg(long)]
    pub methods: Option<String>,
    /// Number of seeds (0, 1, ...).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Steps of the base stage.
    #[arg(long)]
    pub base_steps: Option<usize>,
    /// Image side in pixels (a divisor of 64).
    #[arg(long)]
    pub side: Option<usize>,
    /// UNet channels per level, comma-separated (multiples of 16).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<usize>>,
    /// Batch size of the base stage.
    #[arg(long)]
    pub base_batch: Option<usize>,
    /// Steps of each concept-tuning run.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate of LoRA / DoRA.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Peak learning rate of Coeff's alpha.
    #[arg(long)]
    pub coeff_lr: Option<f64>,
    /// DDIM steps of every sample.
    #[arg(long)]
    pub sample_steps: Option<usize>,
    /// Classifier-free guidance scale of every sample.
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Weight of DreamBooth's prior-preservation loss (0: off).
    #[arg(long)]
    pub prior_weight: Option<f64>,
    /// Cache of weights and data (default: ~/.cache/coeff-tuning).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// A method of the sweep.
pub type ConceptMethod = crate::runs::SweepMethod;

/// The base stage's settings (its fingerprint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseConfig {
    /// Image side, pixels (the 64 px artwork averaged down).
    pub side: usize,
    /// UNet channels per level.
    pub widths: Vec<usize>,
    /// Attention heads per layer.
    pub heads: usize,
    /// Training steps.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Probability of the empty caption (for classifier-free guidance).
    pub uncond_prob: f64,
}

/// Every setting of a sweep (recorded in summary.json; each run's fingerprint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptConfig {
    /// Preset the settings started from.
    pub preset: Preset,
    /// The base model.
    pub base: BaseConfig,
    /// Methods.
    pub methods: Vec<ConceptMethod>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Cat faces used as the subject (the rest are held out).
    pub subjects: usize,
    /// Steps per tuning run (each step: every subject image once).
    pub steps: usize,
    /// Peak learning rate of LoRA / DoRA.
    pub lr: f64,
    /// Peak learning rate of Coeff's alpha.
    pub coeff_lr: f64,
    /// Peak learning rate of full fine-tuning.
    pub full_lr: f64,
    /// LoRA / DoRA rank.
    pub lora_rank: usize,
    /// Dropout on alpha.
    pub coeff_dropout: f64,
    /// Prior-preservation loss weight (0: off).
    pub prior_weight: f64,
    /// Class images generated by the base model for prior preservation.
    pub prior_images: usize,
    /// The fixed sampler.
    pub sampling: Sampling,
    /// Samples per held-out expression.
    pub samples_per_prompt: usize,
    /// Input side of the scoring backbones.
    pub score_resolution: usize,
    /// Seconds between checkpoints.
    pub checkpoint_secs: f64,
}

impl ConceptConfig {
    /// Resolve the arguments against the preset.
    pub fn from_args(args: &ConceptArgs) -> Result<Self> {
        let full = args.preset == Preset::Full;
        let methods = match &args.methods {
            Some(list) => ConceptMethod::parse_list(
                list,
                &Method::ALL
                    .iter()
                    .map(|&m| ConceptMethod::Peft(m))
                    .chain([ConceptMethod::Full])
                    .collect::<Vec<_>>(),
            )?,
            None => {
                let mut m: Vec<ConceptMethod> = Method::ALL
                    .iter()
                    .map(|&m| ConceptMethod::Peft(m))
                    .collect();
                m.push(ConceptMethod::Full);
                m
            }
        };
        let cfg = Self {
            preset: args.preset,
            base: BaseConfig {
                side: args.side.unwrap_or(if full { 64 } else { 16 }),
                widths: args.widths.clone().unwrap_or(if full {
                    vec![64, 128, 256]
                } else {
                    vec![32, 64, 64]
                }),
                heads: if full { 8 } else { 4 },
                steps: args.base_steps.unwrap_or(if full { 30_000 } else { 1_500 }),
                batch_size: args.base_batch.unwrap_or(if full { 64 } else { 32 }),
                lr: 1e-3,
                uncond_prob: 0.1,
            },
            methods,
            seeds: (0..args.seeds.unwrap_or(if full { 5 } else { 3 }) as u64).collect(),
            subjects: 5,
            steps: args.steps.unwrap_or(if full { 400 } else { 100 }),
            lr: args.lr.unwrap_or(1e-3),
            coeff_lr: args.coeff_lr.unwrap_or(1e-2),
            full_lr: 1e-4,
            lora_rank: 4,
            coeff_dropout: 0.1,
            prior_weight: args.prior_weight.unwrap_or(if full { 1.0 } else { 0.0 }),
            prior_images: 10,
            sampling: Sampling {
                steps: args.sample_steps.unwrap_or(50),
                guidance: args.guidance.unwrap_or(5.0),
                clip_sample: true,
            },
            samples_per_prompt: if full { 4 } else { 2 },
            score_resolution: if full { 224 } else { 112 },
            checkpoint_secs: 60.0,
        };
        if cfg.sampling.steps == 0
            || !(cfg.sampling.guidance.is_finite() && cfg.sampling.guidance >= 1.0)
        {
            bail!(
                "--sample-steps {} must be >= 1 and --guidance {} finite and >= 1",
                cfg.sampling.steps,
                cfg.sampling.guidance
            );
        }
        if cfg.methods.is_empty() || cfg.seeds.is_empty() || cfg.steps == 0 {
            bail!("--methods, --seeds and --steps must not be empty or zero");
        }
        if cfg.base.steps == 0 || cfg.base.batch_size == 0 {
            bail!("--base-steps and --base-batch must be at least 1");
        }
        let b = &cfg.base;
        let levels = b.widths.len();
        if !(1..=4).contains(&levels) || b.widths.iter().any(|&w| w == 0 || w % 16 != 0) {
            bail!(
                "--widths {:?}: 1 to 4 levels, each a positive multiple of 16",
                b.widths
            );
        }
        if b.side == 0 || 64 % b.side != 0 || b.side % (1 << (levels - 1)) != 0 {
            bail!(
                "--side {}: must divide 64 and be divisible by 2^(levels - 1) = {}",
                b.side,
                1 << (levels - 1)
            );
        }
        if b.widths.iter().any(|&w| w % b.heads != 0) {
            bail!(
                "widths {:?} must be multiples of the {} heads",
                b.widths,
                b.heads
            );
        }
        if !(cfg.prior_weight >= 0.0 && cfg.prior_weight.is_finite()) {
            bail!(
                "--prior-weight {} must be finite and >= 0",
                cfg.prior_weight
            );
        }
        Ok(cfg)
    }

    fn fingerprint(&self, method: ConceptMethod, seed: u64) -> String {
        let mut c = self.clone();
        c.methods = vec![method];
        c.seeds = vec![seed];
        c.checkpoint_secs = 0.0;
        serde_json::to_string(&c).expect("serialisable")
    }
}

/// Scores of one set of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// DINO similarity of each held-out expression's samples to its real artwork.
    pub dino: f64,
    /// CLIP-I similarity of the same pairs.
    pub clip_i: f64,
    /// DINO similarity of the held-out samples to the subject images (mean over them).
    pub dino_subject: f64,
    /// DINO similarity of non-cat samples after tuning to the same prompts' samples before.
    pub prior_dino: f64,
    /// CLIP-I similarity of the same pairs.
    pub prior_clip_i: f64,
    /// DINO similarity of the non-cat samples to their real emoji.
    pub prior_truth_dino: f64,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptRunResult {
    /// Method.
    pub method: ConceptMethod,
    /// Seed.
    pub seed: u64,
    /// Scores.
    pub scores: Scores,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters.
    pub total_params: usize,
    /// Median step time, ms.
    pub step_ms: f64,
    /// Training seconds.
    pub train_seconds: f64,
    /// Mean loss of the last 10% of steps.
    pub final_loss: f64,
    /// Settings fingerprint.
    pub fingerprint: String,
}

impl RunRecord for ConceptRunResult {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The base stage's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// Its settings.
    pub fingerprint: String,
    /// Training seconds.
    pub train_seconds: f64,
    /// Median step time, ms.
    pub step_ms: f64,
    /// Mean loss of the first and the last 10% of steps.
    pub loss_first_last: (f64, f64),
    /// Parameters.
    pub params: usize,
}

impl RunRecord for BaseRecord {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Everything a run needs that does not change between runs.
struct Setup<'a> {
    cfg: &'a ConceptConfig,
    world: &'a World,
    text: &'a TextStates,
    ddpm: Ddpm,
    /// Subject images, `[3, s, s]` in `[-1, 1]`.
    subject_pixels: Vec<Vec<f32>>,
    /// Concept prompts of the subject images.
    subject_prompts: Vec<String>,
    /// (prompt, noise seed) of every scored sample: held-out, then prior.
    eval_prompts: Vec<(String, u64)>,
    /// Class images for prior preservation, `[3, s, s]` in `[-1, 1]`.
    class_pixels: Vec<Vec<f32>>,
    /// Real images' embeddings: held-out, subject, prior.
    truth: Embeddings,
    /// Embeddings of the base model's samples of `eval_prompts`.
    before: Embeddings,
}

impl Setup<'_> {
    fn held_out_samples(&self) -> usize {
        self.world.held_out.len() * self.cfg.samples_per_prompt
    }

    /// Scores of the embeddings of `eval_prompts`' samples.
    fn scores(&self, e: &Embeddings) -> Scores {
        let h = self.world.held_out.len();
        let s = self.world.subject.len();
        let per = self.cfg.samples_per_prompt;
        let n = self.held_out_samples();
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let truth_of = |i: usize| i / per; // held-out index of sample i
        Scores {
            dino: mean(
                (0..n)
                    .map(|i| cosine(&e.dino[i], &self.truth.dino[truth_of(i)]))
                    .collect(),
            ),
            clip_i: mean(
                (0..n)
                    .map(|i| cosine(&e.clip[i], &self.truth.clip[truth_of(i)]))
                    .collect(),
            ),
            dino_subject: mean(
                (0..n)
                    .flat_map(|i| (0..s).map(move |j| (i, h + j)))
                    .map(|(i, j)| cosine(&e.dino[i], &self.truth.dino[j]))
                    .collect(),
            ),
            prior_dino: mean(
                (n..e.dino.len())
                    .map(|i| cosine(&e.dino[i], &self.before.dino[i]))
                    .collect(),
            ),
            prior_clip_i: mean(
                (n..e.clip.len())
                    .map(|i| cosine(&e.clip[i], &self.before.clip[i]))
                    .collect(),
            ),
            prior_truth_dino: mean(
                (n..e.dino.len())
                    .map(|i| cosine(&e.dino[i], &self.truth.dino[h + s + (i - n)]))
                    .collect(),
            ),
        }
    }
}

/// Run the experiment; writes `out/{summary.json, results.md, concept_grid.png,
/// concept_scores.png, base_grid.png}`.
pub fn run<B: AutodiffBackend>(
    args: &ConceptArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<()> {
    let cfg = ConceptConfig::from_args(args)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cache = args.cache.clone().unwrap_or_else(coeff_vit::cache_dir);
    let t0 = std::time::Instant::now();
    let side = cfg.base.side;

    let emoji = coeff_data::emoji::twitter_emoji(&cache, world::BACKGROUND, &mut |m| {
        eprintln!("emoji: {m}")
    })
    .context("loading the Twitter emoji")?;
    let world = World::new(emoji, cfg.subjects)?;
    let subject_prompts: Vec<String> = world
        .subject
        .iter()
        .map(|e| world::concept_prompt(&e.name))
        .collect();
    let mut eval_prompts: Vec<(String, u64)> = Vec::new();
    for (j, e) in world.held_out.iter().enumerate() {
        for k in 0..cfg.samples_per_prompt {
            eval_prompts.push((
                world::concept_prompt(&e.name),
                1_000 + 16 * j as u64 + k as u64,
            ));
        }
    }
    for (i, &p) in world.prior.iter().enumerate() {
        eval_prompts.push((world::caption(&world.base[p].name), 2_000 + i as u64));
    }
    // Known prompts to show the base is meaningful: every 80th base emoji.
    let known: Vec<usize> = (0..world.base.len()).step_by(80).collect();
    eprintln!(
        "emoji: {} base, {} subject ({}), {} held out ({})",
        world.base.len(),
        world.subject.len(),
        subject_prompts.join("; "),
        world.held_out.len(),
        world
            .held_out
            .iter()
            .map(|e| world::concept_prompt(&e.name))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // Frozen text conditioning of every caption.
    let text_dir =
        coeff_vl::pretrained::fetch(&coeff_vl::pretrained::MINILM_L6, &cache, &mut |m| {
            eprintln!("MiniLM: {m}")
        })
        .context("fetching MiniLM")?;
    let mut captions: Vec<String> = world.base.iter().map(|e| world::caption(&e.name)).collect();
    captions.extend(subject_prompts.iter().cloned());
    captions.extend(eval_prompts.iter().map(|p| p.0.clone()));
    captions.push(world::CLASS_PROMPT.to_string());
    let text = TextStates::encode::<B::InnerBackend>(&text_dir, &captions, device)?;

    // Base stage.
    let json = diffusion::unet_config_json(side, &cfg.base.widths, cfg.base.heads, text.dim);
    let unet_cfg = diffusion::unet_config(&json)?;
    let base_dir = out.join("base");
    std::fs::create_dir_all(&base_dir)?;
    crate::report::write_atomic(&base_dir.join("config.json"), json.as_bytes())?;
    let ddpm = Ddpm::new(ScheduleConfig::sdxl());
    let base_pixels: Vec<Vec<f32>> = world
        .base
        .iter()
        .map(|e| world::downsample(&e.image, side))
        .collect();
    let (base, base_record) = base_stage::<B>(
        &cfg,
        &unet_cfg,
        &world,
        &text,
        &ddpm,
        &base_pixels,
        &base_dir,
        device,
    )?;
    let base_valid = base.valid();

    // Scorers and the real images' embeddings.
    let scorer = Scorer::<B::InnerBackend>::load(&cache, cfg.score_resolution, device)?;
    // Real artwork is scored at the model's resolution (averaged down to `side`, then resized
    // for the backbones exactly as the samples are): the best a sample can be.
    let small =
        |img: &Image| -> Image { score::to_images(&world::downsample(img, side), side).remove(0) };
    let mut real: Vec<Image> = world.held_out.iter().map(|e| small(&e.image)).collect();
    real.extend(world.subject.iter().map(|e| small(&e.image)));
    real.extend(world.prior.iter().map(|&p| small(&world.base[p].image)));
    let truth = scorer.embed(&real, device)?;

    // The base model's samples: the evaluation prompts (the "before" of prior preservation,
    // and the untuned row), known prompts, and the class images of prior preservation.
    let gen = |unet: &UNet2DConditionModel<B::InnerBackend>, prompts: &[(String, u64)]| {
        generate::<B::InnerBackend>(unet, &text, prompts, side, cfg.sampling, device)
    };
    let base_eval_path = base_dir.join("samples.safetensors");
    let known_prompts: Vec<(String, u64)> = known
        .iter()
        .enumerate()
        .map(|(i, &k)| (world::caption(&world.base[k].name), 3_000 + i as u64))
        .collect();
    let class_prompts: Vec<(String, u64)> = (0..cfg.prior_images)
        .map(|i| (world::CLASS_PROMPT.to_string(), 4_000 + i as u64))
        .collect();
    // What the base samples depend on besides the base model.
    let samples_key = format!(
        "{}|{}|{}|{}",
        base_record.fingerprint,
        serde_json::to_string(&cfg.sampling).expect("serialisable"),
        cfg.samples_per_prompt,
        cfg.prior_images
    );
    let (before_px, known_px, class_px) = match read_samples(&base_eval_path, &samples_key)? {
        Some(mut v) if v.len() == 3 => {
            let c = v.pop().unwrap_or_default();
            let k = v.pop().unwrap_or_default();
            (v.pop().unwrap_or_default(), k, c)
        }
        _ => {
            eprintln!(
                "base: sampling {} evaluation, {} known and {} class prompts",
                eval_prompts.len(),
                known_prompts.len(),
                class_prompts.len()
            );
            let b = gen(&base_valid, &eval_prompts)?;
            let k = gen(&base_valid, &known_prompts)?;
            let c = gen(&base_valid, &class_prompts)?;
            write_samples(&base_eval_path, &samples_key, &[&b, &k, &c], side)?;
            (b, k, c)
        }
    };
    let before = scorer.embed(&score::to_images(&before_px, side), device)?;
    let known_real: Vec<Image> = known.iter().map(|&k| small(&world.base[k].image)).collect();
    let known_truth = scorer.embed(&known_real, device)?;
    let known_gen = scorer.embed(&score::to_images(&known_px, side), device)?;
    let base_quality = base_quality(&known_gen, &known_truth);
    eprintln!(
        "base: samples of {} known prompts, DINO to their own emoji {:.3} vs to the other prompts' {:.3}; CLIP-I {:.3} vs {:.3}",
        known.len(), base_quality.dino_own, base_quality.dino_other, base_quality.clip_own, base_quality.clip_other
    );
    let class_pixels: Vec<Vec<f32>> = class_px
        .chunks(3 * side * side)
        .map(<[f32]>::to_vec)
        .collect();

    let setup = Setup {
        cfg: &cfg,
        world: &world,
        text: &text,
        ddpm,
        subject_pixels: world
            .subject
            .iter()
            .map(|e| world::downsample(&e.image, side))
            .collect(),
        subject_prompts,
        eval_prompts,
        class_pixels,
        truth,
        before,
    };
    let base_scores = setup.scores(&setup.before);
    let copy_subject = copy_subject_scores(&setup);

    let mut results = Vec::new();
    let mut samples_by_run: BTreeMap<(ConceptMethod, u64), Vec<f32>> = BTreeMap::new();
    let runs: Vec<(ConceptMethod, u64)> = cfg
        .methods
        .iter()
        .flat_map(|&m| cfg.seeds.iter().map(move |&s| (m, s)))
        .collect();
    let overall = ProgressBar::new(runs.len() as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs {elapsed_precise}")
            .expect("template")
            .progress_chars("=> "),
    );
    overall.set_prefix("concept");
    for (method, seed) in runs {
        let dir = out.join("runs").join(format!("{}-s{seed}", method.name()));
        let fingerprint = cfg.fingerprint(method, seed);
        let samples_path = dir.join("samples.safetensors");
        if let Some(r) = finished::<ConceptRunResult>(&dir, &fingerprint)? {
            if let Some(mut s) = read_samples(&samples_path, &fingerprint)? {
                say(
                    &overall,
                    format!(
                        "{}-s{seed}: done before, DINO {:.3}",
                        method.name(),
                        r.scores.dino
                    ),
                );
                samples_by_run.insert((method, seed), s.pop().unwrap_or_default());
                results.push(r);
                overall.inc(1);
                continue;
            }
        }
        check_checkpoint(&dir, &fingerprint)?;
        B::seed(device, seed);
        let (r, samples) = tune_run::<B>(
            &setup,
            method,
            seed,
            &fingerprint,
            base.clone(),
            &scorer,
            &dir,
            device,
        )?;
        write_samples(&samples_path, &fingerprint, &[&samples], side)?;
        write_json(&result_path(&dir), &r)?;
        say(&overall, format!(
            "{}-s{seed}: held-out DINO {:.3} CLIP-I {:.3} | subject DINO {:.3} | prior kept DINO {:.3} | {:.0} ms/step",
            method.name(), r.scores.dino, r.scores.clip_i, r.scores.dino_subject, r.scores.prior_dino, r.step_ms
        ));
        samples_by_run.insert((method, seed), samples);
        results.push(r);
        overall.inc(1);
    }
    overall.finish_and_clear();

    // Grids: rows = real held-out artwork, base, then each method (first seed); columns =
    // held-out expressions (first sample of each), then the prior prompts.
    let per = cfg.samples_per_prompt;
    let pick = |px: &[f32]| -> Vec<Image> {
        let imgs = score::to_images(px, side);
        let h = world.held_out.len();
        let mut row: Vec<Image> = (0..h).map(|j| imgs[j * per].clone()).collect();
        row.extend(imgs[h * per..].iter().cloned());
        row
    };
    let mut truth_row: Vec<Image> = world.held_out.iter().map(|e| small(&e.image)).collect();
    truth_row.extend(world.prior.iter().map(|&p| small(&world.base[p].image)));
    let mut grid = vec![truth_row, pick(&before_px)];
    for &m in &cfg.methods {
        if let Some(px) = samples_by_run.get(&(m, cfg.seeds[0])) {
            grid.push(pick(px));
        }
    }
    score::write_grid(&out.join("concept_grid.png"), &grid, 3)?;
    let subject_row: Vec<Image> = world.subject.iter().map(|e| small(&e.image)).collect();
    let known_imgs = score::to_images(&known_px, side);
    score::write_grid(
        &out.join("base_grid.png"),
        &[subject_row, known_real, known_imgs],
        3,
    )?;

    write_summary(
        &cfg,
        &world,
        &results,
        &base_record,
        &base_quality,
        &base_scores,
        &copy_subject,
        out,
        backend,
        t0.elapsed().as_secs_f64(),
    )
}

/// Train the base model, or load it when its stage finished before.
#[allow(clippy::too_many_arguments)]
fn base_stage<B: AutodiffBackend>(
    cfg: &ConceptConfig,
    unet_cfg: &coeff_sdxl::UnetConfig,
    world: &World,
    text: &TextStates,
    ddpm: &Ddpm,
    pixels: &[Vec<f32>],
    dir: &Path,
    device: &B::Device,
) -> Result<(UNet2DConditionModel<B>, BaseRecord)> {
    let b = &cfg.base;
    let fingerprint = serde_json::to_string(b).expect("serialisable");
    let done = finished::<BaseRecord>(dir, &fingerprint)?;
    check_checkpoint(dir, &fingerprint)?;
    B::seed(device, 0);
    let unet = unet_cfg.init::<B>(device);
    let all = top_level_modules(&unet);
    let unet = coeff_tuning::params::set_trainable(unet, &all);
    let params = coeff_tuning::params::ParamReport::of(&unet, &all).total;
    let config = TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            ..AdamWConfig::default()
        },
        schedule: WarmupCosine {
            base_lr: b.lr,
            min_lr: b.lr * 0.05,
            warmup_steps: (b.steps / 20).max(1),
            total_steps: b.steps,
        },
        groups: Vec::new(),
        seed: 0,
        checkpoint_secs: cfg.checkpoint_secs,
        stop_after: None,
    };
    let mut trainer = Trainer::<B>::new(config, all, checkpoint_path(dir), &fingerprint)?;
    let unet = trainer.resume(unet, device)?;
    if let Some(record) = done {
        eprintln!(
            "base: trained before ({} steps, {:.0} s), loaded from {}",
            b.steps,
            record.train_seconds,
            checkpoint_path(dir).display()
        );
        return Ok((unet, record));
    }
    eprintln!(
        "base: {} parameters ({} attention layers), {} emoji at {} px, {} steps of batch {}",
        params,
        unet_cfg.attention_layers(),
        world.base.len(),
        b.side,
        b.steps,
        b.batch_size
    );
    let bar = ProgressBar::new(b.steps as u64).with_style(
        ProgressStyle::with_template("base [{bar:30}] {pos}/{len} {msg} {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_position(trainer.state().step as u64);
    let captions: Vec<String> = world.base.iter().map(|e| world::caption(&e.name)).collect();
    let side = b.side;
    let loss_fn = |model: &UNet2DConditionModel<B>,
                   step: &coeff_tuning::train::Step|
     -> Result<StepOutput<B>> {
        let mut rng = Lcg::new(step.seed);
        let n = b.batch_size;
        let mut x0 = Vec::with_capacity(n * 3 * side * side);
        let mut caps: Vec<&str> = Vec::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        for _ in 0..n {
            let i = (rng.next_u32() as usize) % pixels.len();
            x0.extend_from_slice(&pixels[i]);
            caps.push(if rng.uniform() < b.uncond_prob {
                ""
            } else {
                captions[i].as_str()
            });
            ts.push((rng.next_u32() as usize) % ddpm.config.num_train_timesteps);
        }
        let noise = diffusion::normal(rng.next_u32() as u64, n * 3 * side * side);
        let shape = [n, 3, side, side];
        let loss = diffusion::diffusion_loss(
            model,
            ddpm,
            text,
            Tensor::from_data(TensorData::new(x0, shape), device),
            &caps,
            &ts,
            Tensor::from_data(TensorData::new(noise, shape), device),
        )?;
        Ok(StepOutput::new(loss))
    };
    let mut last_report = std::time::Instant::now();
    let mut on_step = |r: &StepReport| {
        bar.set_position(r.completed as u64);
        bar.set_message(format!("loss {:.4}", r.loss));
        if bar.is_hidden() && (last_report.elapsed().as_secs() >= 60 || r.completed == r.total) {
            eprintln!(
                "base: step {}/{} loss {:.4} ({:.0} ms/step)",
                r.completed, r.total, r.loss, r.ms
            );
            last_report = std::time::Instant::now();
        }
    };
    let unet = match trainer.run(unet, device, loss_fn, &mut on_step)? {
        Finish::Done(m) => m,
        Finish::Stopped(_) => bail!("base: stopped early"),
    };
    bar.finish_and_clear();
    let state = trainer.state();
    let tenth = (state.losses.len() / 10).max(1);
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    let record = BaseRecord {
        fingerprint,
        train_seconds: state.train_seconds,
        step_ms: crate::report::median(state.timed_step_ms()),
        loss_first_last: (
            mean(&state.losses[..tenth]),
            mean(&state.losses[state.losses.len() - tenth..]),
        ),
        params,
    };
    write_json(&result_path(dir), &record)?;
    Ok((unet, record))
}

/// The top-level module names of a model (every parameter lies under one).
fn top_level_modules<B: Backend, M: burn::module::Module<B>>(model: &M) -> Vec<String> {
    let mut v: Vec<String> = coeff_tuning::params::module_paths(model)
        .into_iter()
        .filter(|p| !p.contains('.'))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Samples for `(prompt, noise seed)` pairs, batched: `[n * 3 * s * s]` in `[-1, 1]`.
fn generate<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    text: &TextStates,
    prompts: &[(String, u64)],
    side: usize,
    sampling: Sampling,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(prompts.len() * 3 * side * side);
    for chunk in prompts.chunks(16) {
        let caps: Vec<&str> = chunk.iter().map(|p| p.0.as_str()).collect();
        let noises: Vec<Vec<f32>> = chunk
            .iter()
            .map(|p| diffusion::normal(p.1, 3 * side * side))
            .collect();
        let x = diffusion::sample(unet, text, &caps, &noises, side, sampling, device)?;
        out.extend(
            x.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    if out.iter().any(|v| !v.is_finite()) {
        bail!("sampling produced non-finite values");
    }
    Ok(out)
}

/// Samples stored with the fingerprint of what made them (`None`: absent or stale).
fn read_samples(path: &Path, fingerprint: &str) -> Result<Option<Vec<Vec<f32>>>> {
    if !path.exists() {
        return Ok(None);
    }
    let f = coeff_tuning::checkpoint::Checkpoint::open(path)?;
    if f.metadata().get("fingerprint").map(String::as_str) != Some(fingerprint) {
        return Ok(None);
    }
    let mut out = Vec::new();
    for i in 0.. {
        let key = format!("samples.{i}");
        if !f.contains(&key) {
            break;
        }
        out.push(f.read_f32(&key)?.1);
    }
    Ok(Some(out))
}

fn write_samples(path: &Path, fingerprint: &str, sets: &[&Vec<f32>], side: usize) -> Result<()> {
    let data: Vec<(String, TensorData)> = sets
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("samples.{i}"),
                TensorData::new(v.to_vec(), [v.len() / (3 * side * side), 3, side, side]),
            )
        })
        .collect();
    coeff_tuning::checkpoint::write_safetensors(
        path,
        data.iter().map(|(k, d)| (k.as_str(), d)),
        &[("fingerprint", fingerprint)],
    )?;
    Ok(())
}

/// How well the base model draws prompts it was trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseQuality {
    /// Prompts scored.
    pub prompts: usize,
    /// Mean DINO similarity of a sample to its own prompt's real emoji.
    pub dino_own: f64,
    /// ... to the other prompts' real emoji.
    pub dino_other: f64,
    /// Mean CLIP-I similarity to its own prompt's real emoji.
    pub clip_own: f64,
    /// ... to the other prompts' real emoji.
    pub clip_other: f64,
    /// Share of samples whose most DINO-similar real emoji (among the prompts') is their own.
    pub dino_top1: f64,
}

fn base_quality(generated: &Embeddings, real: &Embeddings) -> BaseQuality {
    let n = real.dino.len();
    let (mut own, mut other, mut cown, mut cother, mut top1) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for i in 0..n {
        let sims: Vec<f64> = (0..n)
            .map(|j| cosine(&generated.dino[i], &real.dino[j]))
            .collect();
        own += sims[i];
        other += (sims.iter().sum::<f64>() - sims[i]) / (n - 1).max(1) as f64;
        let csims: Vec<f64> = (0..n)
            .map(|j| cosine(&generated.clip[i], &real.clip[j]))
            .collect();
        cown += csims[i];
        cother += (csims.iter().sum::<f64>() - csims[i]) / (n - 1).max(1) as f64;
        let best = (0..n)
            .max_by(|&a, &b| sims[a].total_cmp(&sims[b]))
            .unwrap_or(0);
        top1 += (best == i) as usize;
    }
    let k = n.max(1) as f64;
    BaseQuality {
        prompts: n,
        dino_own: own / k,
        dino_other: other / k,
        clip_own: cown / k,
        clip_other: cother / k,
        dino_top1: top1 as f64 / k,
    }
}

/// The reference of a model that ignores the expression and draws a subject image: each
/// held-out artwork's mean similarity to the subject images.
fn copy_subject_scores(setup: &Setup) -> (f64, f64) {
    let h = setup.world.held_out.len();
    let s = setup.world.subject.len();
    let t = &setup.truth;
    let mut d = 0.0;
    let mut c = 0.0;
    for i in 0..h {
        for j in 0..s {
            d += cosine(&t.dino[i], &t.dino[h + j]);
            c += cosine(&t.clip[i], &t.clip[h + j]);
        }
    }
    let k = (h * s).max(1) as f64;
    (d / k, c / k)
}

#[allow(clippy::too_many_arguments)]
fn tune_run<B: AutodiffBackend>(
    setup: &Setup,
    method: ConceptMethod,
    seed: u64,
    fingerprint: &str,
    base: UNet2DConditionModel<B>,
    scorer: &Scorer<B::InnerBackend>,
    dir: &Path,
    device: &B::Device,
) -> Result<(ConceptRunResult, Vec<f32>)> {
    let cfg = setup.cfg;
    let side = cfg.base.side;
    std::fs::create_dir_all(dir)?;
    let all = top_level_modules(&base);
    let total_params = coeff_tuning::params::ParamReport::of(&base, &[]).total;
    let (model, trainable) = match method {
        ConceptMethod::Full => (coeff_tuning::params::set_trainable(base, &all), all),
        ConceptMethod::Peft(m) => {
            let frozen = coeff_tuning::params::set_trainable(base, &[]);
            let mut pc: PeftConfig = m.config(cfg.lora_rank, &["query", "key", "value", "output"]);
            if let Some(c) = pc.coeff.as_mut() {
                c.dropout = cfg.coeff_dropout;
            }
            let (model, injected) = inject(frozen, &pc)?;
            (model, injected.trainable_prefixes())
        }
    };
    let report = coeff_tuning::params::ParamReport::of(&model, &trainable);
    let lr = if method == ConceptMethod::Full {
        cfg.full_lr
    } else {
        cfg.lr
    };
    let config =
        crate::runs::adapter_trainer_config(lr, cfg.coeff_lr, cfg.steps, seed, cfg.checkpoint_secs);
    let mut trainer = Trainer::<B>::new(config, trainable, checkpoint_path(dir), fingerprint)?;
    let model = trainer.resume(model, device)?;
    let label = format!("{}-s{seed}", method.name());
    let bar = ProgressBar::new(cfg.steps as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.clone());
    bar.set_position(trainer.state().step as u64);
    let n = setup.subject_pixels.len();
    let loss_fn = |model: &UNet2DConditionModel<B>,
                   step: &coeff_tuning::train::Step|
     -> Result<StepOutput<B>> {
        let mut rng = Lcg::new(step.seed);
        let shape = [n, 3, side, side];
        let batch = |pixels: Vec<f32>, rng: &mut Lcg| -> (Tensor<B, 4>, Vec<usize>, Tensor<B, 4>) {
            let ts: Vec<usize> = (0..n)
                .map(|_| (rng.next_u32() as usize) % setup.ddpm.config.num_train_timesteps)
                .collect();
            let noise = diffusion::normal(rng.next_u32() as u64, n * 3 * side * side);
            (
                Tensor::from_data(TensorData::new(pixels, shape), device),
                ts,
                Tensor::from_data(TensorData::new(noise, shape), device),
            )
        };
        let (x0, ts, noise) = batch(setup.subject_pixels.concat(), &mut rng);
        let caps: Vec<&str> = setup.subject_prompts.iter().map(String::as_str).collect();
        let mut loss =
            diffusion::diffusion_loss(model, &setup.ddpm, setup.text, x0, &caps, &ts, noise)?;
        if cfg.prior_weight > 0.0 && !setup.class_pixels.is_empty() {
            let k = setup.class_pixels.len();
            let px: Vec<f32> = (0..n)
                .flat_map(|_| setup.class_pixels[(rng.next_u32() as usize) % k].clone())
                .collect();
            let (x0, ts, noise) = batch(px, &mut rng);
            let caps = vec![world::CLASS_PROMPT; n];
            loss = loss
                + diffusion::diffusion_loss(model, &setup.ddpm, setup.text, x0, &caps, &ts, noise)?
                    * cfg.prior_weight;
        }
        Ok(StepOutput::new(loss))
    };
    let mut on_step = |r: &StepReport| {
        bar.set_position(r.completed as u64);
        bar.set_message(format!("loss {:.4}", r.loss));
    };
    let model = match trainer.run(model, device, loss_fn, &mut on_step)? {
        Finish::Done(m) => m,
        Finish::Stopped(_) => bail!("{label}: stopped early"),
    };
    bar.set_message("sampling");
    let samples = generate::<B::InnerBackend>(
        &model.valid(),
        setup.text,
        &setup.eval_prompts,
        side,
        cfg.sampling,
        device,
    )?;
    let emb = scorer.embed(&score::to_images(&samples, side), device)?;
    bar.finish_and_clear();
    let state = trainer.state();
    let final_loss = crate::runs::tail_mean_loss(&state.losses);
    Ok((
        ConceptRunResult {
            method,
            seed,
            scores: setup.scores(&emb),
            trainable_params: report.trainable,
            total_params,
            step_ms: crate::report::median(state.timed_step_ms()),
            train_seconds: state.train_seconds,
            final_loss,
            fingerprint: fingerprint.to_string(),
        },
        samples,
    ))
}

#[derive(Serialize)]
struct Summary<'a> {
    config: &'a ConceptConfig,
    base: &'a BaseRecord,
    base_quality: &'a BaseQuality,
    base_scores: &'a Scores,
    copy_subject: (f64, f64),
    provenance: Provenance,
    wall_seconds: f64,
    runs: &'a [ConceptRunResult],
    /// method -> metric -> (mean, sd) over seeds.
    table: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

const METRICS: [&str; 6] = [
    "dino",
    "clip_i",
    "dino_subject",
    "prior_dino",
    "prior_clip_i",
    "prior_truth_dino",
];

fn metric(s: &Scores, k: &str) -> f64 {
    match k {
        "dino" => s.dino,
        "clip_i" => s.clip_i,
        "dino_subject" => s.dino_subject,
        "prior_dino" => s.prior_dino,
        "prior_clip_i" => s.prior_clip_i,
        _ => s.prior_truth_dino,
    }
}

#[allow(clippy::too_many_arguments)]
fn write_summary(
    cfg: &ConceptConfig,
    world: &World,
    results: &[ConceptRunResult],
    base: &BaseRecord,
    base_quality: &BaseQuality,
    base_scores: &Scores,
    copy_subject: &(f64, f64),
    out: &Path,
    backend: &'static str,
    wall: f64,
) -> Result<()> {
    let mut table: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    let mut rows = Vec::new();
    let fmt = |(m, s): (f64, f64), seeds: usize| {
        if seeds > 1 {
            format!("{m:.3} ± {s:.3}")
        } else {
            format!("{m:.3}")
        }
    };
    for &method in &cfg.methods {
        let runs: Vec<&ConceptRunResult> = results.iter().filter(|r| r.method == method).collect();
        if runs.is_empty() {
            continue;
        }
        let mut row = BTreeMap::new();
        for k in METRICS {
            let vals: Vec<f64> = runs.iter().map(|r| metric(&r.scores, k)).collect();
            row.insert(k.to_string(), mean_sd(&vals));
        }
        let step_ms = mean_sd(&runs.iter().map(|r| r.step_ms).collect::<Vec<_>>()).0;
        let n = runs.len();
        let mut cells = vec![
            method.name().to_string(),
            format!("{}", runs[0].trainable_params),
        ];
        cells.extend(METRICS.iter().map(|k| fmt(row[*k], n)));
        cells.push(format!("{step_ms:.0}"));
        rows.push(cells);
        table.insert(method.name().to_string(), row);
    }
    let mut base_row = vec!["(base, untuned)".to_string(), "0".to_string()];
    base_row.extend(
        METRICS
            .iter()
            .map(|k| format!("{:.3}", metric(base_scores, k))),
    );
    base_row.push("-".into());
    rows.push(base_row);
    let mut copy_row = vec![
        "(reference: the subject images themselves)".to_string(),
        "-".to_string(),
        format!("{:.3}", copy_subject.0),
        format!("{:.3}", copy_subject.1),
    ];
    copy_row.extend(["-", "-", "-", "-", "-"].map(String::from));
    rows.push(copy_row);
    let held: Vec<String> = world
        .held_out
        .iter()
        .map(|e| format!("`{}`", world::concept_prompt(&e.name)))
        .collect();
    let subj: Vec<String> = world
        .subject
        .iter()
        .map(|e| e.name.to_lowercase())
        .collect();
    let mut md = format!(
        "# Concept customisation on Twitter emoji\n\n\
         Base: {} parameters, {} px, {} steps of batch {} in {:.0} s ({:.0} ms/step), loss {:.4} -> {:.4}. \
         Its samples of {} known prompts: DINO to their own emoji {:.3} vs to the other prompts' {:.3} \
         (CLIP-I {:.3} vs {:.3}; own emoji the most similar for {:.0}%).\n\n\
         Subject: {}. Held out: {}. {} seed(s), {} steps per run, DDIM {} steps, guidance {}, {} sample(s) per held-out prompt, \
         prior preservation weight {}.\n\n",
        base.params, cfg.base.side, cfg.base.steps, cfg.base.batch_size, base.train_seconds, base.step_ms,
        base.loss_first_last.0, base.loss_first_last.1,
        base_quality.prompts, base_quality.dino_own, base_quality.dino_other, base_quality.clip_own, base_quality.clip_other,
        100.0 * base_quality.dino_top1,
        subj.join(", "), held.join(", "), cfg.seeds.len(), cfg.steps, cfg.sampling.steps, cfg.sampling.guidance,
        cfg.samples_per_prompt, cfg.prior_weight
    );
    md.push_str(&markdown_table(
        &[
            "method",
            "trainable params",
            "DINO (held-out)",
            "CLIP-I (held-out)",
            "DINO (subject)",
            "prior kept DINO",
            "prior kept CLIP-I",
            "prior DINO to truth",
            "ms/step",
        ],
        &rows,
    ));
    let timings: Vec<(&str, u64, f64)> = results
        .iter()
        .map(|r| (r.method.name(), r.seed, r.step_ms))
        .collect();
    md.push_str(&crate::report::coeff_step_ratios(&timings));
    md.push_str(
        "\nDINO / CLIP-I (held-out): cosine similarity of the held-out expressions' samples to their real artwork. \
         DINO (subject): to the subject images. Prior kept: non-cat prompts' samples after tuning vs before (same noise). \
         Grid (concept_grid.png): rows = real held-out artwork and prior emoji, the base model, then each method (first seed); \
         columns = the held-out expressions, then the prior prompts. base_grid.png: the subject images; real known emoji; the base model's samples of them.\n",
    );
    std::fs::write(out.join("results.md"), &md)?;
    write_json(
        &out.join("summary.json"),
        &Summary {
            config: cfg,
            base,
            base_quality,
            base_scores,
            copy_subject: *copy_subject,
            provenance: Provenance::new(backend, cfg.seeds[0]),
            wall_seconds: wall,
            runs: results,
            table: table.clone(),
        },
    )?;
    plot_scores(cfg, &table, base_scores, &out.join("concept_scores.png"))?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn plot_scores(
    cfg: &ConceptConfig,
    table: &BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    base: &Scores,
    path: &Path,
) -> Result<()> {
    let keys = ["dino", "clip_i", "dino_subject", "prior_dino"];
    let x = Axis::new("1 DINO held-out, 2 CLIP-I held-out, 3 DINO subject, 4 prior kept (DINO)")
        .range((0.5, 4.5))
        .ticks(vec![1.0, 2.0, 3.0, 4.0]);
    let y = Axis::new("cosine similarity").range(plot::padded_range(
        table
            .values()
            .flat_map(|r| {
                keys.iter()
                    .flat_map(|k| [r[*k].0 - r[*k].1, r[*k].0 + r[*k].1])
            })
            .chain(keys.iter().map(|k| metric(base, k))),
        0.08,
    ));
    let mut panel = Panel::new("concept scores", x, y);
    let mut legend = Vec::new();
    let base_mark = Mark::points(Marker::Disc(3));
    panel = panel.series(Series::new(
        colors::GREY,
        base_mark,
        keys.iter()
            .enumerate()
            .map(|(i, k)| (i as f64 + 1.0, metric(base, k)))
            .collect(),
    ));
    legend.push(LegendEntry::new("base (untuned)", colors::GREY, base_mark));
    let names: Vec<&str> = cfg.methods.iter().map(|m| m.name()).collect();
    let (panel, more) = plot::method_points(panel, &names, table, &keys, 0.07, cfg.seeds.len() > 1);
    legend.extend(more);
    let title = if cfg.seeds.len() > 1 {
        format!(
            "concept customisation, mean ± std over {} seeds",
            cfg.seeds.len()
        )
    } else {
        "concept customisation, one seed".to_string()
    };
    Figure::new(760, 480)
        .title(title)
        .panel(panel)
        .legend(legend)
        .save_png(path)
}
