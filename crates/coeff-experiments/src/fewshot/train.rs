//! One run of the sweep - (dataset, shots, method, seed) - with atomic checkpoints, exact
//! resume, and a stop on a non-finite loss or gradient.
//!
//! Determinism: the batch order of epoch `e` is a permutation drawn from `(seed, e)`, and the
//! backend's generator (Coeff dropout) is re-seeded from `(seed, step)` before every step, so
//! a run resumed from a checkpoint at step `s` replays exactly the steps an uninterrupted run
//! takes from `s` on. The checkpoint holds the trainable parameters, the AdamW moments and the
//! run's bookkeeping in one safetensors file, written through a temporary file and a rename.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use coeff_data::sampler::SplitMix;
use coeff_data::{Image, Preprocess};
use coeff_tuning::peft::params::{collect_params, param_shapes, replace_params};
use coeff_tuning::train::{AdamW, WarmupCosine};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::config::{FewShotConfig, FsMethod};
use super::model::Classifier;

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
}

/// Model inputs of a set of images: pixels (preprocessed on demand) or cached features.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Raw images and how to preprocess them.
    Pixels {
        /// The images.
        images: Vec<Image>,
        /// Resize + normalisation.
        preprocess: Preprocess,
    },
    /// Backbone features `[n, dim]`, row-major.
    Features {
        /// Values.
        data: Vec<f32>,
        /// Feature width.
        dim: usize,
    },
}

/// Inputs with labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Inputs.
    pub inputs: Inputs,
    /// Labels.
    pub labels: Vec<usize>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn labels<B: Backend>(&self, idx: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
        let v: Vec<i64> = idx.iter().map(|&i| self.labels[i] as i64).collect();
        Tensor::from_data(TensorData::new(v, [idx.len()]), device)
    }
}

/// Logits of the examples `idx` of `split`: through the whole model (pixels) or the head only
/// (features). `augment` = `Some(rng)` applies random flips and shifts to pixels.
pub fn logits<B: Backend>(
    model: &Classifier<B>,
    split: &Split,
    idx: &[usize],
    augment: Option<&mut SplitMix>,
    device: &B::Device,
) -> Tensor<B, 2> {
    match &split.inputs {
        Inputs::Pixels { images, preprocess } => {
            let imgs: Vec<&Image> = idx.iter().map(|&i| &images[i]).collect();
            let x = match augment {
                Some(rng) => preprocess.augmented_batch::<B>(&imgs, 2, rng, device),
                None => preprocess.batch::<B>(&imgs, device),
            };
            model.forward(x)
        }
        Inputs::Features { data, dim } => {
            let v: Vec<f32> = idx
                .iter()
                .flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            let f = Tensor::from_data(TensorData::new(v, [idx.len(), *dim]), device);
            model.head.forward(f)
        }
    }
}

/// Accuracy of `model` on `split`, in batches of `batch`.
pub fn accuracy<B: Backend>(
    model: &Classifier<B>,
    split: &Split,
    batch: usize,
    device: &B::Device,
) -> f64 {
    let mut correct = 0usize;
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(batch) {
        let pred = logits(model, split, idx, None, device).argmax(1);
        let truth = split.labels::<B>(idx, device).reshape([idx.len(), 1]);
        let hits: i64 = pred.equal(truth).int().sum().into_scalar().elem();
        correct += hits as usize;
    }
    correct as f64 / split.len().max(1) as f64
}

/// Bookkeeping stored in the checkpoint's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunState {
    fingerprint: String,
    /// Steps completed.
    step: usize,
    /// Loss of every completed step (stored as the tensor `run.losses`: f32 values survive
    /// the round trip exactly, JSON text does not promise that).
    #[serde(skip)]
    losses: Vec<f32>,
    /// Wall time of every completed step, ms (the first step of each process is warm-up).
    step_ms: Vec<f64>,
    warmup_steps: Vec<usize>,
    train_seconds: f64,
}

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
    /// Called with the trained model before evaluation (e.g. to save the adapter).
    pub on_trained: &'a mut dyn FnMut(&Classifier<B>) -> Result<()>,
}

/// The seed of the backend generator for `step` of a run seeded `seed`.
fn step_seed(seed: u64, step: usize) -> u64 {
    SplitMix::new(seed ^ 0x7374_6570_0000_0000 ^ step as u64).next_u64()
}

/// The order of the training examples in `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    SplitMix::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64) ^ 0x0065_706f_6368)
        .shuffle(&mut v);
    v
}

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

/// The result file of a run directory.
pub fn result_path(dir: &Path) -> PathBuf {
    dir.join("result.json")
}

/// A finished result in `dir` made with `fingerprint`, if any; a result made with other
/// settings is an error naming the directory.
pub fn finished(dir: &Path, fingerprint: &str) -> Result<Option<RunResult>> {
    let path = result_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    let r: RunResult = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    if r.fingerprint != fingerprint {
        bail!(
            "{} was made with other settings than this sweep's; use another --out or delete that directory",
            path.display()
        );
    }
    Ok(Some(r))
}

/// Train `model` (trainable parameters = those requiring a gradient, under `trainable`) on
/// `train`, evaluate on `test`, resuming from `dir`'s checkpoint if there is one.
#[allow(clippy::too_many_arguments)]
pub fn train_run<B: AutodiffBackend>(
    spec: &RunSpec,
    cfg: &FewShotConfig,
    fingerprint: &str,
    mut model: Classifier<B>,
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
    let mut opt = AdamW::<B::InnerBackend>::new(recipe.adamw);
    let ckpt = checkpoint_path(dir);
    let mut state = RunState {
        fingerprint: fingerprint.to_string(),
        ..RunState::default()
    };
    let mut resumed_from = None;
    if ckpt.exists() {
        let (s, m) = load_checkpoint(&ckpt, fingerprint, model, trainable, &mut opt, device)?;
        state = s;
        model = m;
        resumed_from = Some(state.step);
    }
    ctl.bar.set_length(total as u64);
    ctl.bar.set_position(state.step as u64);
    ctl.bar.reset_eta();

    let mut last_save = Instant::now();
    let t_start = Instant::now();
    let seconds_before = state.train_seconds;
    let mut first_in_process = true;
    let mut epoch_loss = (0.0, 0usize);
    while state.step < total {
        let step = state.step;
        let epoch = step / per_epoch;
        let b = step % per_epoch;
        let order = epoch_order(n, spec.seed, epoch);
        let idx = &order[b * bs..((b + 1) * bs).min(n)];
        let t0 = Instant::now();
        B::seed(device, step_seed(spec.seed, step));
        let mut aug = recipe
            .augment
            .then(|| SplitMix::new(step_seed(spec.seed, step)));
        let out = logits(&model, train, idx, aug.as_mut(), device);
        let labels = train.labels::<B>(idx, device);
        let hits: i64 = out
            .clone()
            .detach()
            .argmax(1)
            .equal(labels.clone().reshape([idx.len(), 1]))
            .int()
            .sum()
            .into_scalar()
            .elem();
        let loss = burn::tensor::activation::log_softmax(out, 1)
            .gather(1, labels.reshape([idx.len(), 1]))
            .mean()
            .neg();
        let loss_value: f64 = loss.clone().into_scalar().elem();
        let stop = |what: String| -> anyhow::Error {
            anyhow::anyhow!(
                "{}: {what} at step {} of {total}; stopped. The last good checkpoint ({}) is kept{}",
                spec.label(),
                step + 1,
                ckpt.display(),
                if ckpt.exists() { "" } else { " (none was written yet)" }
            )
        };
        if !loss_value.is_finite() {
            return Err(stop(format!("the training loss is {loss_value}")));
        }
        let grads = loss.backward();
        let lr = schedule.lr(step);
        let coeff_lr = recipe.coeff_lr.map(|c| lr * c / base_lr);
        let lr_of = |path: &str| match coeff_lr {
            Some(c) if path.contains(".coeff.") => c,
            _ => lr,
        };
        let (m, _info) = opt
            .step_with(model, &grads, &lr_of)
            .map_err(|e| stop(e.to_string()))?;
        model = m;
        B::sync(device)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if first_in_process {
            state.warmup_steps.push(step);
            first_in_process = false;
        }
        state.step += 1;
        state.losses.push(loss_value as f32);
        state.step_ms.push(ms);
        state.train_seconds = seconds_before + t_start.elapsed().as_secs_f64();
        if b == 0 {
            epoch_loss = (0.0, 0);
        }
        epoch_loss = (epoch_loss.0 + loss_value, epoch_loss.1 + 1);
        ctl.bar.set_position(state.step as u64);
        ctl.bar.set_message(format!(
            "{} | epoch {}/{} loss {:.3} batch acc {:.2}",
            spec.label(),
            epoch + 1,
            recipe.epochs,
            epoch_loss.0 / epoch_loss.1 as f64,
            hits as f64 / idx.len() as f64
        ));
        let stopping = ctl.stop_after.is_some_and(|k| state.step >= k) && state.step < total;
        if state.step == total
            || stopping
            || last_save.elapsed().as_secs_f64() >= cfg.checkpoint_secs
        {
            save_checkpoint(&ckpt, &state, &model, trainable, &opt)?;
            last_save = Instant::now();
        }
        if stopping {
            return Ok(Outcome::Stopped { step: state.step });
        }
    }

    (ctl.on_trained)(&model)?;
    ctl.bar
        .set_message(format!("{} | evaluating", spec.label()));
    let inner = model.valid();
    let acc = accuracy(&inner, test, 64, device);
    let (trainable_params, method_params, total_params) = report;
    let timed: Vec<f64> = state
        .step_ms
        .iter()
        .enumerate()
        .filter(|(i, _)| !state.warmup_steps.contains(i))
        .map(|(_, &v)| v)
        .collect();
    let step_ms = crate::report::median(if timed.is_empty() {
        state.step_ms.clone()
    } else {
        timed
    });
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
    };
    crate::report::write_json(&result_path(dir), &result)?;
    Ok(Outcome::Done(result))
}

fn save_checkpoint<B: AutodiffBackend>(
    path: &Path,
    state: &RunState,
    model: &Classifier<B>,
    trainable: &[String],
    opt: &AdamW<B::InnerBackend>,
) -> Result<()> {
    let params = collect_params(model, trainable);
    let moments = opt.state();
    let meta = serde_json::to_string(state)?;
    let steps = opt.steps().to_string();
    let losses = [(
        "run.losses".to_string(),
        vec![state.losses.len()],
        state.losses.clone(),
    )];
    let tensors = params
        .iter()
        .map(|(k, s, v)| (format!("param.{k}"), s, v))
        .chain(losses.iter().map(|(k, s, v)| (k.clone(), s, v)))
        .chain(moments.iter().map(|(k, s, v)| (format!("adamw.{k}"), s, v)))
        .collect::<Vec<_>>();
    let bytes = coeff_tuning::io::f32_safetensors(
        tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
        &[
            ("run_state", meta.as_str()),
            ("adamw_steps", steps.as_str()),
        ],
    )
    .with_context(|| format!("serialising {}", path.display()))?;
    crate::report::write_atomic(path, &bytes)
}

fn load_checkpoint<B: AutodiffBackend>(
    path: &Path,
    fingerprint: &str,
    model: Classifier<B>,
    trainable: &[String],
    opt: &mut AdamW<B::InnerBackend>,
    device: &B::Device,
) -> Result<(RunState, Classifier<B>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let mut state: RunState = meta
        .get("run_state")
        .ok_or_else(|| anyhow::anyhow!("{}: no `run_state` metadata", path.display()))
        .and_then(|s| {
            serde_json::from_str(s)
                .with_context(|| format!("{}: bad `run_state` metadata", path.display()))
        })?;
    if state.fingerprint != fingerprint {
        bail!(
            "{} was written with other settings than this sweep's; use another --out or delete it",
            path.display()
        );
    }
    let steps: usize = meta
        .get("adamw_steps")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: no `adamw_steps` metadata", path.display()))?;
    let expected = param_shapes(&model, trainable);
    let mut params = BTreeMap::new();
    let mut moments = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = coeff_tuning::io::view_to_f32(&view)
            .ok_or_else(|| anyhow::anyhow!("{}: tensor `{name}` is not float", path.display()))?;
        let shape = view.shape().to_vec();
        if let Some(p) = name.strip_prefix("param.") {
            match expected.get(p) {
                Some(s) if *s == shape => {}
                Some(s) => bail!(
                    "{}: `{name}` has shape {shape:?}, the model expects {s:?}",
                    path.display()
                ),
                None => bail!(
                    "{}: `{name}` is not a trainable parameter of the model",
                    path.display()
                ),
            }
            params.insert(p.to_string(), (shape, data));
        } else if name == "run.losses" {
            state.losses = data;
        } else if let Some(k) = name.strip_prefix("adamw.") {
            moments.insert(k.to_string(), (shape, data));
        } else {
            bail!("{}: unexpected tensor `{name}`", path.display());
        }
    }
    if state.losses.len() != state.step {
        bail!(
            "{}: `run.losses` has {} entries for {} completed steps",
            path.display(),
            state.losses.len(),
            state.step
        );
    }
    if let Some(missing) = expected.keys().find(|k| !params.contains_key(*k)) {
        bail!("{}: no tensor `param.{missing}`", path.display());
    }
    opt.load_state(steps, moments, device)
        .with_context(|| format!("{}", path.display()))?;
    Ok((state, replace_params(model, &params)))
}
