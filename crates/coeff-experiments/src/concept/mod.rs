//! `experiment concept`: DreamBooth-style concept customisation, the paper's SDXL experiment at
//! the scale reachable here, built from real parts (docs/concept.md).
//!
//! 1. **Base ("pretraining")**: a small pixel-space UNet with an SDXL-style diffusers config
//!    (`coeff_sdxl`: cross-attention to text, `text_time` add-embedding) learns Twitter's emoji
//!    from captions made of their Unicode names, conditioned by the frozen real MiniLM-L6
//!    ([`data`]). Every cat face is held out. Cached and resumable (`<out>/base`).
//! 2. **Concept tuning**: the first 5 cat faces with prompts `a sks cat face, <expression>`;
//!    LoRA, Coeff alone, LoRA + Coeff, DoRA, DoRA + Coeff (on every self- and cross-attention)
//!    and full fine-tuning, each for every seed, resumable (`<out>/runs/<method>-s<seed>`);
//!    optional DreamBooth prior preservation.
//! 3. **Scores** ([`score`]): the other cat faces generated from their concept prompts and
//!    compared with their real artwork (DINO, CLIP-I); samples of non-cat prompts before vs
//!    after tuning (prior preservation). Fixed sampler, steps, guidance and initial noise.

mod config;
pub mod data;
pub mod model;
pub mod score;
mod summary;
mod train;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use coeff_data::Image;
use coeff_sdxl::scheduler::{Ddpm, ScheduleConfig};
use coeff_sdxl::UNet2DConditionModel;
use indicatif::{ProgressBar, ProgressStyle};

use coeff_harness::report::say;
use coeff_harness::report::write_json;
use coeff_harness::runs::{check_checkpoint, finished, result_path};
use data::{TextStates, World};
use model::{generate, read_samples, write_samples};
use score::Scorer;
use summary::{base_quality, copy_subject_scores, write_summary};
use train::{base_stage, tune_run, Setup};

pub use config::{BaseConfig, ConceptArgs, ConceptConfig, ConceptMethod, Preset};
pub use score::Scores;
pub use summary::BaseQuality;
pub use train::{BaseRecord, ConceptRunResult};

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

    let emoji = coeff_data::emoji::twitter_emoji(&cache, data::BACKGROUND, &mut |m| {
        eprintln!("emoji: {m}")
    })
    .context("loading the Twitter emoji")?;
    let world = World::new(emoji, cfg.subjects)?;
    let subject_prompts: Vec<String> = world
        .subject
        .iter()
        .map(|e| data::concept_prompt(&e.name))
        .collect();
    let mut eval_prompts: Vec<(String, u64)> = Vec::new();
    for (j, e) in world.held_out.iter().enumerate() {
        for k in 0..cfg.samples_per_prompt {
            eval_prompts.push((
                data::concept_prompt(&e.name),
                1_000 + 16 * j as u64 + k as u64,
            ));
        }
    }
    for (i, &p) in world.prior.iter().enumerate() {
        eval_prompts.push((data::caption(&world.base[p].name), 2_000 + i as u64));
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
            .map(|e| data::concept_prompt(&e.name))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // Frozen text conditioning of every caption.
    let text_dir =
        coeff_vl::pretrained::fetch(&coeff_vl::pretrained::MINILM_L6, &cache, &mut |m| {
            eprintln!("MiniLM: {m}")
        })
        .context("fetching MiniLM")?;
    let mut captions: Vec<String> = world.base.iter().map(|e| data::caption(&e.name)).collect();
    captions.extend(subject_prompts.iter().cloned());
    captions.extend(eval_prompts.iter().map(|p| p.0.clone()));
    captions.push(data::CLASS_PROMPT.to_string());
    let text = TextStates::encode::<B::InnerBackend>(&text_dir, &captions, device)?;

    // Base stage.
    let json = model::unet_config_json(side, &cfg.base.widths, cfg.base.heads, text.dim);
    let unet_cfg = model::unet_config(&json)?;
    let base_dir = out.join("base");
    std::fs::create_dir_all(&base_dir)?;
    coeff_harness::report::write_atomic(&base_dir.join("config.json"), json.as_bytes())?;
    let ddpm = Ddpm::new(ScheduleConfig::sdxl());
    let base_pixels: Vec<Vec<f32>> = world
        .base
        .iter()
        .map(|e| data::downsample(&e.image, side))
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
        |img: &Image| -> Image { score::to_images(&data::downsample(img, side), side).remove(0) };
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
        .map(|(i, &k)| (data::caption(&world.base[k].name), 3_000 + i as u64))
        .collect();
    let class_prompts: Vec<(String, u64)> = (0..cfg.prior_images)
        .map(|i| (data::CLASS_PROMPT.to_string(), 4_000 + i as u64))
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
            .map(|e| data::downsample(&e.image, side))
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
    coeff_harness::plot::write_grid(&out.join("concept_grid.png"), &grid, 3)?;
    let subject_row: Vec<Image> = world.subject.iter().map(|e| small(&e.image)).collect();
    let known_imgs = score::to_images(&known_px, side);
    coeff_harness::plot::write_grid(
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
