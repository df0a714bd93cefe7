//! One run of the sweep - (dataset, shots, method, seed) - with atomic checkpoints, exact
//! resume, and a stop on a non-finite loss or gradient.
//!
//! Determinism: the batch order of epoch `e` is a permutation drawn from `(seed, e)`, and the
//! backend's generator (Coeff dropout) is re-seeded from `(seed, step)` before every step, so
//! a run resumed from a checkpoint at step `s` replays exactly the steps an uninterrupted run
//! takes from `s` on. The checkpoint holds the trainable parameters, the AdamW moments and the
//! run's bookkeeping in one safetensors file, written through a temporary file and a rename.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use coeff_data::sampler::SplitMix;
use coeff_harness::classify::{cross_entropy, epoch_order};
use coeff_tuning::train::{
    Finish, ParamGroup, Step, StepOutput, StepReport, Trainer, TrainerConfig, WarmupCosine,
};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::config::{FewShotConfig, FsMethod};
use coeff_harness::backbone::Classifier;

/// Which cell and seed a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Dataset name.
    pub dataset: String,
    /// Training images per class.
    pub shots: usize,
    /// Method.
    pub method: FsMethod,
    /// Seed.
    pub seed: u64,
}

impl RunSpec {
    /// `OUT/runs/<dataset>/<shots>-shot/<method>/seed-<seed>`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        let dataset: String = self
            .dataset
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        out.join("runs")
            .join(dataset)
            .join(format!("{}-shot", self.shots))
            .join(self.method.name().replace('+', "-"))
            .join(format!("seed-{}", self.seed))
    }

    /// Short label for progress lines.
    pub fn label(&self) -> String {
        format!(
            "{} {}-shot {} seed {}",
            self.dataset,
            self.shots,
            self.method.name(),
            self.seed
        )
    }
}

/// What a finished run reports (also written as `result.json` in its directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The run.
    pub spec: RunSpec,
    /// Test accuracy in `[0, 1]`.
    pub accuracy: f64,
    /// Test images.
    pub test_images: usize,
    /// Mean training loss of the last epoch.
    pub final_loss: f64,
    /// Optimizer steps.
    pub steps: usize,
    /// Parameters the optimizer updated (head included).
    pub trainable_params: usize,
    /// Trainable parameters outside the head (what the method adds or tunes).
    pub method_params: usize,
    /// Every parameter of backbone + head (+ adapters).
    pub total_params: usize,
    /// Median wall time of one training step (forward, backward, update), ms.
    pub step_ms: f64,
    /// Training wall time over every process that worked on the run, s.
    pub train_seconds: f64,
    /// Step at which this process resumed the run (`None`: it ran from the start).
    pub resumed_from: Option<usize>,
    /// The settings the run was made with (recipe, backbone, resolution, test set).
    pub fingerprint: String,
    /// Coeff methods: `max |alpha|` of each layer's coefficients after training, in layer
    /// order (0 means the layer still computes plain attention). Empty otherwise.
    #[serde(default)]
    pub alpha_max_abs: Vec<f32>,
}

/// `max |alpha|` of every Coeff layer (`...coeff.alpha`), in the model's layer order.
fn alpha_max_abs<B: Backend, M: Module<B>>(model: &M) -> Vec<f32> {
    coeff_tuning::params::collect_where(model, |p| p.ends_with("coeff.alpha"))
        .into_iter()
        .map(|(_, _, v)| v.iter().fold(0f32, |m, x| m.max(x.abs())))
        .collect()
}

pub use coeff_harness::classify::{accuracy, logits, Inputs, Split};

/// How a call to [`train_run`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Trained and evaluated.
    Done(RunResult),
    /// Stopped after `--stop-after` steps; the checkpoint holds the state.
    Stopped {
        /// Steps completed.
        step: usize,
    },
}

/// Controls of one call.
pub struct Control<'a, B: Backend> {
    /// Stop (with a checkpoint) once this many steps are complete.
    pub stop_after: Option<usize>,
    /// Progress bar of this run.
    pub bar: &'a ProgressBar,
    /// Called with the trained model once it has evaluated to finite logits, before the
    /// result is written (e.g. to save the adapter).
    pub on_trained: &'a mut dyn FnMut(&Classifier<B>) -> Result<()>,
}

pub use coeff_harness::runs::{check_checkpoint, checkpoint_path, finished, result_path};

impl coeff_harness::runs::RunRecord for RunResult {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Train `model` (trainable parameters = those requiring a gradient, under `trainable`) on
/// `train`, evaluate on `test`, resuming from `dir`'s checkpoint if there is one.
#[allow(clippy::too_many_arguments)]
pub fn train_run<B: AutodiffBackend>(
    spec: &RunSpec,
    cfg: &FewShotConfig,
    fingerprint: &str,
    model: Classifier<B>,
    trainable: &[String],
    report: (usize, usize, usize),
    train: &Split,
    test: &Split,
    dir: &Path,
    ctl: Control<'_, B>,
    device: &B::Device,
) -> Result<Outcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let recipe = &cfg.recipe;
    let n = train.len();
    let bs = recipe.batch_size.min(n);
    let per_epoch = n.div_ceil(bs);
    let total = recipe.epochs * per_epoch;
    let base_lr = if spec.method == FsMethod::Full {
        recipe.full_lr
    } else {
        recipe.lr
    };
    let schedule = WarmupCosine {
        base_lr,
        min_lr: 0.0,
        warmup_steps: recipe.warmup_epochs * per_epoch,
        total_steps: total,
    };
    let groups = match recipe.coeff_lr {
        // Coeff's alpha at its own peak rate, same schedule shape.
        Some(c) => vec![ParamGroup {
            patterns: vec!["coeff".into()],
            lr: c,
        }],
        None => Vec::new(),
    };
    let config = TrainerConfig {
        adamw: recipe.adamw,
        schedule,
        groups,
        seed: spec.seed,
        checkpoint_secs: cfg.checkpoint_secs,
        stop_after: ctl.stop_after,
        grad_accum: 1,
    };
    let mut trainer = Trainer::<B>::new(
        config,
        trainable.to_vec(),
        checkpoint_path(dir),
        fingerprint,
    )?;
    let labelled = |e: anyhow::Error| anyhow::anyhow!("{}: {e:#}", spec.label());
    let model = trainer.resume(model, device).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; delete {} to restart that run",
            spec.label(),
            dir.display()
        )
    })?;
    let resumed_from = trainer.resumed_from();
    ctl.bar.set_length(total as u64);
    ctl.bar.set_position(trainer.state().step as u64);
    ctl.bar.reset_eta();

    let mut epoch_loss = (0.0, 0usize);
    let mut on_step = |r: &StepReport| {
        let step = r.completed - 1;
        let (epoch, b) = (step / per_epoch, step % per_epoch);
        if b == 0 {
            epoch_loss = (0.0, 0);
        }
        epoch_loss = (epoch_loss.0 + r.loss, epoch_loss.1 + 1);
        ctl.bar.set_position(r.completed as u64);
        ctl.bar.set_message(format!(
            "{} | epoch {}/{} loss {:.3} {}",
            spec.label(),
            epoch + 1,
            recipe.epochs,
            epoch_loss.0 / epoch_loss.1 as f64,
            r.message
        ));
    };
    let loss_fn = |model: &Classifier<B>, step: &Step| -> Result<StepOutput<B>> {
        let (epoch, b) = (step.index / per_epoch, step.index % per_epoch);
        let order = epoch_order(n, spec.seed, epoch);
        let idx = &order[b * bs..((b + 1) * bs).min(n)];
        let mut aug = recipe.augment.then(|| SplitMix::new(step.seed));
        let out = logits(model, train, idx, aug.as_mut(), device);
        let labels = train.labels::<B>(idx, device);
        let (loss, hits) = cross_entropy(out, labels);
        Ok(StepOutput {
            loss,
            message: format!("batch acc {:.2}", hits as f64 / idx.len() as f64),
        })
    };
    let model = match trainer
        .run(model, device, loss_fn, &mut on_step)
        .map_err(labelled)?
    {
        Finish::Done(m) => m,
        Finish::Stopped(_) => {
            return Ok(Outcome::Stopped {
                step: trainer.state().step,
            })
        }
    };
    let state = trainer.state();
    // The trainer stops on a non-finite loss or gradient; the last update can still overflow.
    let diverged = |what: String| {
        anyhow::anyhow!(
            "{}: {what} after the last step (learning rate {base_lr:?}): training diverged; \
             lower the learning rate and delete {} to restart that run",
            spec.label(),
            dir.display()
        )
    };
    if let Some((param, count, numel)) = coeff_tuning::params::first_non_finite(&model) {
        return Err(diverged(format!(
            "parameter `{param}` has {count} non-finite value(s) out of {numel}"
        )));
    }

    ctl.bar
        .set_message(format!("{} | evaluating", spec.label()));
    let inner = model.valid();
    let acc = accuracy(&inner, test, super::config::EVAL_BATCH, device)
        .map_err(|e| diverged(e.to_string()))?;
    (ctl.on_trained)(&model)?;
    let (trainable_params, method_params, total_params) = report;
    let step_ms = coeff_harness::report::median(state.timed_step_ms());
    let last_epoch: Vec<f64> = state.losses[state.losses.len().saturating_sub(per_epoch)..]
        .iter()
        .map(|&v| v as f64)
        .collect();
    let result = RunResult {
        spec: spec.clone(),
        accuracy: acc,
        test_images: test.len(),
        final_loss: last_epoch.iter().sum::<f64>() / last_epoch.len().max(1) as f64,
        steps: total,
        trainable_params,
        method_params,
        total_params,
        step_ms,
        train_seconds: state.train_seconds,
        resumed_from,
        fingerprint: fingerprint.to_string(),
        alpha_max_abs: alpha_max_abs(&model),
    };
    coeff_harness::report::write_json(&result_path(dir), &result)?;
    Ok(Outcome::Done(result))
}
