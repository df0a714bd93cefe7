//! The concept experiment's two training stages on the core crate's `Trainer`: the base model
//! on the emoji world, then one concept-tuning run per method and seed, each resumable.

use std::path::Path;

use anyhow::{bail, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::scheduler::Ddpm;
use coeff_sdxl::UNet2DConditionModel;
use coeff_tuning::train::{
    AdamWConfig, Finish, StepOutput, StepReport, Trainer, TrainerConfig, WarmupCosine,
};
use coeff_tuning::{inject, PeftConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::config::*;
use super::data::{self, TextStates, World};
use super::model::generate;
use super::model::{self};
use super::score::{self, cosine, Embeddings, Scorer, Scores};
use coeff_harness::report::write_json;
use coeff_harness::rng::Lcg;
use coeff_harness::runs::{check_checkpoint, checkpoint_path, finished, result_path, RunRecord};

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
pub(crate) struct Setup<'a> {
    pub(crate) cfg: &'a ConceptConfig,
    pub(crate) world: &'a World,
    pub(crate) text: &'a TextStates,
    pub(crate) ddpm: Ddpm,
    /// Subject images, `[3, s, s]` in `[-1, 1]`.
    pub(crate) subject_pixels: Vec<Vec<f32>>,
    /// Concept prompts of the subject images.
    pub(crate) subject_prompts: Vec<String>,
    /// (prompt, noise seed) of every scored sample: held-out, then prior.
    pub(crate) eval_prompts: Vec<(String, u64)>,
    /// Class images for prior preservation, `[3, s, s]` in `[-1, 1]`.
    pub(crate) class_pixels: Vec<Vec<f32>>,
    /// Real images' embeddings: held-out, subject, prior.
    pub(crate) truth: Embeddings,
    /// Embeddings of the base model's samples of `eval_prompts`.
    pub(crate) before: Embeddings,
}

impl Setup<'_> {
    pub(crate) fn held_out_samples(&self) -> usize {
        self.world.held_out.len() * self.cfg.samples_per_prompt
    }

    /// Scores of the embeddings of `eval_prompts`' samples.
    pub(crate) fn scores(&self, e: &Embeddings) -> Scores {
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

/// Train the base model, or load it when its stage finished before.
#[allow(clippy::too_many_arguments)]
pub(crate) fn base_stage<B: AutodiffBackend>(
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
        grad_accum: 1,
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
    let captions: Vec<String> = world.base.iter().map(|e| data::caption(&e.name)).collect();
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
        let noise = model::normal(rng.next_u32() as u64, n * 3 * side * side);
        let shape = [n, 3, side, side];
        let loss = model::diffusion_loss(
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
        step_ms: coeff_harness::report::median(state.timed_step_ms()),
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
pub(crate) fn top_level_modules<B: Backend, M: burn::module::Module<B>>(model: &M) -> Vec<String> {
    let mut v: Vec<String> = coeff_tuning::params::module_paths(model)
        .into_iter()
        .filter(|p| !p.contains('.'))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn tune_run<B: AutodiffBackend>(
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
    let config = coeff_harness::runs::adapter_trainer_config(
        lr,
        cfg.coeff_lr,
        cfg.steps,
        seed,
        cfg.checkpoint_secs,
    );
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
            let noise = model::normal(rng.next_u32() as u64, n * 3 * side * side);
            (
                Tensor::from_data(TensorData::new(pixels, shape), device),
                ts,
                Tensor::from_data(TensorData::new(noise, shape), device),
            )
        };
        let (x0, ts, noise) = batch(setup.subject_pixels.concat(), &mut rng);
        let caps: Vec<&str> = setup.subject_prompts.iter().map(String::as_str).collect();
        let mut loss =
            model::diffusion_loss(model, &setup.ddpm, setup.text, x0, &caps, &ts, noise)?;
        if cfg.prior_weight > 0.0 && !setup.class_pixels.is_empty() {
            let k = setup.class_pixels.len();
            let px: Vec<f32> = (0..n)
                .flat_map(|_| setup.class_pixels[(rng.next_u32() as usize) % k].clone())
                .collect();
            let (x0, ts, noise) = batch(px, &mut rng);
            let caps = vec![data::CLASS_PROMPT; n];
            loss = loss
                + model::diffusion_loss(model, &setup.ddpm, setup.text, x0, &caps, &ts, noise)?
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
    let final_loss = coeff_harness::runs::tail_mean_loss(&state.losses);
    Ok((
        ConceptRunResult {
            method,
            seed,
            scores: setup.scores(&emb),
            trainable_params: report.trainable,
            total_params,
            step_ms: coeff_harness::report::median(state.timed_step_ms()),
            train_seconds: state.train_seconds,
            final_loss,
            fingerprint: fingerprint.to_string(),
        },
        samples,
    ))
}
