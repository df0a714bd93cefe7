//! One training loop for every experiment, generic over the model and a loss closure.
//!
//! ```text
//! for step in resumed_step..total:
//!     B::seed(step_seed(seed, step))              # dropout (Coeff alpha, LoRA) replays exactly
//!     for micro in 0..grad_accum:                 # gradient accumulation (1: the whole batch)
//!         loss = loss_fn(&model, &step{micro})    # the experiment: batch choice, forward, loss
//!         stop if loss is not finite              # the NaN guard; the last checkpoint is kept
//!         grads += (loss / grad_accum).backward() # one micro-batch's graph at a time
//!     model = AdamW(model, grads, lr per group)   # clip, NaN-guard the gradient norm, update
//!     every `checkpoint_secs`, at the end and at `stop_after`: atomic checkpoint
//! ```
//!
//! A checkpoint holds the trainable parameters (`param.<path>`), the AdamW moments
//! (`adamw.m.<path>`, `adamw.v.<path>`), the loss of every step (`run.losses`), and the run's
//! bookkeeping as metadata; it is written through [`write_atomic`](crate::io::write_atomic).
//! Because the backend generator is re-seeded from `(seed, step)` before every step, a run
//! resumed at step `s` replays exactly the steps an uninterrupted run takes from `s` on, as long
//! as the loss closure chooses its batch from the step index alone.
//!
//! With `grad_accum = K` the closure is called `K` times per step, for micro-batch
//! [`Step::micro_batch`] of [`Step::micro_batches`]; when it returns the mean loss of its share
//! of the step's batch times the share's weight ([`Step::micro_share`]), the summed gradient
//! of the `loss / K` equals that of the whole batch's mean loss, with one micro-batch's
//! activations alive at a time.
//!
//! Parameter groups are chosen by the same patterns as adapter targeting
//! ([`target`](crate::peft::target)): a group applies to a parameter when the pattern matches
//! the parameter's path or one of the module paths above it (`coeff` selects every
//! `<attention>.coeff.alpha`).
//!
//! Data-parallel training over several devices fits between `backward` and the optimizer: each
//! device runs the loss closure on its shard of the batch, the gradients are all-reduced
//! (Burn's collective), and the one optimizer step is taken on the reduced gradients - nothing
//! in the model or the loss closure changes (see docs/architecture.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use super::adamw::{AdamW, AdamWConfig, WarmupCosine};
use crate::error::{PeftError, Result};
use crate::params::{collect_params, param_shapes, replace_params};
use crate::peft::target::Pattern;

/// Parameters trained with their own peak learning rate (same schedule shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    /// Module-path patterns (as in `target_modules`); the first group that matches wins.
    pub patterns: Vec<String>,
    /// Peak learning rate of the group: its rate at step `t` is `schedule(t) * lr / base_lr`.
    pub lr: f64,
}

/// Settings of a [`Trainer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Optimizer.
    pub adamw: AdamWConfig,
    /// Learning rate by step; its `total_steps` is the run's length.
    pub schedule: WarmupCosine,
    /// Parameter groups with their own peak learning rate.
    #[serde(default)]
    pub groups: Vec<ParamGroup>,
    /// Seed of the per-step backend generator.
    pub seed: u64,
    /// Write a checkpoint at least this often (seconds of training).
    pub checkpoint_secs: f64,
    /// Stop (with a checkpoint) once this many steps are complete.
    #[serde(default)]
    pub stop_after: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation); 1 is the whole batch at once.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub grad_accum: usize,
}

fn one() -> usize {
    1
}

fn is_one(k: &usize) -> bool {
    *k == 1
}

/// The step the loss closure is asked to compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// 0-based step index.
    pub index: usize,
    /// Steps of the whole run.
    pub total: usize,
    /// Learning rate of the step (base group).
    pub lr: f64,
    /// The step's seed (the backend generator was just seeded with it): use it for any
    /// randomness of the step (augmentation, noise), so a resumed run replays it.
    pub seed: u64,
    /// The micro-batch asked for, `0..micro_batches` (gradient accumulation).
    pub micro_batch: usize,
    /// Micro-batches of the step ([`TrainerConfig::grad_accum`]); 1 without accumulation.
    pub micro_batches: usize,
}

impl Step {
    /// This micro-batch's share of a step batch of `len` items: its index range (the `K`
    /// parts differ by at most one item) and the weight to multiply the share's mean loss by,
    /// `K * share / len`, so that the accumulated gradient is exactly that of the whole batch's
    /// mean loss (1 when `K` divides `len`).
    ///
    /// Errors: fewer items than micro-batches (a share would be empty).
    pub fn micro_share(&self, len: usize) -> Result<(std::ops::Range<usize>, f64)> {
        let k = self.micro_batches.max(1);
        if len < k {
            return Err(PeftError::Training(format!(
                "step {} has a batch of {len}, fewer than its {k} micro-batches (gradient \
                 accumulation); use a batch of at least {k}",
                self.index + 1
            )));
        }
        let (part, extra) = (len / k, len % k);
        let start = self.micro_batch * part + self.micro_batch.min(extra);
        let size = part + usize::from(self.micro_batch < extra);
        Ok((start..start + size, (k * size) as f64 / len as f64))
    }
}

/// What the loss closure returns.
#[derive(Debug, Clone)]
pub struct StepOutput<B: AutodiffBackend> {
    /// The scalar loss `[1]` to minimise.
    pub loss: Tensor<B, 1>,
    /// Extra text for progress displays (e.g. a batch accuracy); may be empty.
    pub message: String,
}

impl<B: AutodiffBackend> StepOutput<B> {
    /// A loss without a message.
    pub fn new(loss: Tensor<B, 1>) -> Self {
        Self {
            loss,
            message: String::new(),
        }
    }
}

/// What happened in one step, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Steps completed (this one included).
    pub completed: usize,
    /// Steps of the whole run.
    pub total: usize,
    /// Loss of the step.
    pub loss: f64,
    /// Learning rate of the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time of the step, ms.
    pub ms: f64,
    /// The closure's message.
    pub message: String,
}

/// The persistent bookkeeping of a run (stored in the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Settings the run was made with; a checkpoint with another fingerprint is refused.
    pub fingerprint: String,
    /// Steps completed.
    pub step: usize,
    /// Loss of every completed step (stored as the f32 tensor `run.losses`, exact).
    #[serde(skip)]
    pub losses: Vec<f32>,
    /// Wall time of every completed step, ms.
    pub step_ms: Vec<f64>,
    /// Steps that were the first of a process (warm-up: excluded from timing medians).
    pub warmup_steps: Vec<usize>,
    /// Training wall time over every process that worked on the run, s.
    pub train_seconds: f64,
}

impl TrainState {
    /// Step times without the first step of each process.
    pub fn timed_step_ms(&self) -> Vec<f64> {
        let timed: Vec<f64> = self
            .step_ms
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.warmup_steps.contains(i))
            .map(|(_, &v)| v)
            .collect();
        if timed.is_empty() {
            self.step_ms.clone()
        } else {
            timed
        }
    }
}

/// How [`Trainer::run`] ended.
#[derive(Debug)]
pub enum Finish<M> {
    /// Every step is done; the model is trained.
    Done(M),
    /// Stopped after `stop_after` steps; the checkpoint holds the state.
    Stopped(M),
}

/// The seed of the backend generator for `step` of a run seeded `seed`.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    // SplitMix64 of (seed, step): decorrelated seeds for neighbouring steps.
    let mut z = (seed ^ 0x7374_6570_0000_0000 ^ step as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A resumable training loop over the trainable parameters of a model.
pub struct Trainer<B: AutodiffBackend> {
    config: TrainerConfig,
    groups: Vec<(Vec<Pattern>, f64)>,
    trainable: Vec<String>,
    checkpoint: PathBuf,
    opt: AdamW<B::InnerBackend>,
    state: TrainState,
    resumed_from: Option<usize>,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer for the parameters under `trainable` (e.g. [`Injected::trainable_prefixes`](
    /// crate::Injected::trainable_prefixes)), checkpointing to `checkpoint`, for a run whose
    /// settings are summarised by `fingerprint`.
    ///
    /// Errors: a bad group pattern, a schedule without steps, a non-finite learning rate.
    pub fn new(
        config: TrainerConfig,
        trainable: Vec<String>,
        checkpoint: impl Into<PathBuf>,
        fingerprint: impl Into<String>,
    ) -> Result<Self> {
        if config.schedule.total_steps == 0 {
            return Err(PeftError::Training("the schedule has 0 steps".into()));
        }
        if config.grad_accum == 0 {
            return Err(PeftError::Training(
                "grad_accum is 0; it counts micro-batches per step (1: no accumulation)".into(),
            ));
        }
        let lrs = [config.schedule.base_lr, config.schedule.min_lr];
        if let Some(bad) = lrs
            .iter()
            .chain(config.groups.iter().map(|g| &g.lr))
            .find(|v| !v.is_finite() || **v < 0.0)
        {
            return Err(PeftError::Training(format!(
                "learning rate {bad} is not a finite non-negative number"
            )));
        }
        let groups = config
            .groups
            .iter()
            .map(|g| {
                let pats = g
                    .patterns
                    .iter()
                    .map(|p| Pattern::new(p, "groups"))
                    .collect::<Result<Vec<_>>>()?;
                Ok((pats, g.lr))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            opt: AdamW::new(config.adamw),
            config,
            groups,
            trainable,
            checkpoint: checkpoint.into(),
            state: TrainState {
                fingerprint: fingerprint.into(),
                ..TrainState::default()
            },
            resumed_from: None,
        })
    }

    /// The run's bookkeeping.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// Step this trainer resumed from (`None`: it started fresh).
    pub fn resumed_from(&self) -> Option<usize> {
        self.resumed_from
    }

    /// The checkpoint file.
    pub fn checkpoint_path(&self) -> &Path {
        &self.checkpoint
    }

    /// Total steps of the run.
    pub fn total_steps(&self) -> usize {
        self.config.schedule.total_steps
    }

    /// Every trainable parameter path with the learning rate of its group at peak, for a
    /// report; also checks that each group selects at least one trainable parameter.
    pub fn group_report<M: AutodiffModule<B>>(&self, model: &M) -> Result<Vec<(String, f64)>> {
        let shapes = param_shapes(model, &self.trainable);
        for (i, (patterns, _)) in self.groups.iter().enumerate() {
            let hit = shapes.keys().any(|path| {
                let modules = module_prefixes(path);
                patterns
                    .iter()
                    .any(|p| modules.iter().any(|m| p.matches(m)))
            });
            if !hit {
                return Err(PeftError::Training(format!(
                    "parameter group {i} ({}) selects no trainable parameter",
                    self.config.groups[i].patterns.join(", ")
                )));
            }
        }
        let base = self.config.schedule.base_lr;
        Ok(shapes
            .keys()
            .map(|p| (p.clone(), group_lr(&self.groups, base, p, base)))
            .collect())
    }

    /// Stop (with a checkpoint) once `step` steps are complete (`None`: run to the end); a
    /// caller that evaluates between epochs runs one epoch per [`Trainer::run`] this way.
    pub fn set_stop_after(&mut self, step: Option<usize>) {
        self.config.stop_after = step;
    }

    /// Restore the checkpoint if there is one (else return `model` unchanged).
    ///
    /// Errors name the file: another fingerprint, a tensor that is not a trainable parameter
    /// of the model or has another shape, a missing one, optimizer moments that do not fit.
    pub fn resume<M: AutodiffModule<B>>(&mut self, model: M, device: &B::Device) -> Result<M> {
        if !self.checkpoint.exists() {
            return Ok(model);
        }
        let (state, model) = self.load(model, device)?;
        self.resumed_from = Some(state.step);
        self.state = state;
        Ok(model)
    }

    /// Train to the end (or to `stop_after`), checkpointing on the way.
    ///
    /// `loss_fn(&model, &step)` computes the step's loss on the autodiff backend; `on_step`
    /// sees each finished step (progress bars). Errors: a non-finite loss or gradient norm
    /// (the last good checkpoint is kept and named), a trainable parameter without gradient,
    /// I/O, and whatever the closure returns.
    pub fn run<M, E, F>(
        &mut self,
        mut model: M,
        device: &B::Device,
        mut loss_fn: F,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> std::result::Result<Finish<M>, E>
    where
        M: AutodiffModule<B>,
        E: From<PeftError>,
        F: FnMut(&M, &Step) -> std::result::Result<StepOutput<B>, E>,
    {
        let total = self.total_steps();
        let mut last_save = Instant::now();
        let t_start = Instant::now();
        let seconds_before = self.state.train_seconds;
        let mut first_in_process = true;
        while self.state.step < total {
            let index = self.state.step;
            let t0 = Instant::now();
            let seed = step_seed(self.config.seed, index);
            B::seed(device, seed);
            let lr = self.config.schedule.lr(index);
            let k = self.config.grad_accum;
            let mut accumulated = GradientsAccumulator::<M>::new();
            let (mut loss_value, mut message) = (0.0, String::new());
            for micro_batch in 0..k {
                let step = Step {
                    index,
                    total,
                    lr,
                    seed,
                    micro_batch,
                    micro_batches: k,
                };
                let out = loss_fn(&model, &step)?;
                let value: f64 = out.loss.clone().into_scalar().elem();
                if !value.is_finite() {
                    let part = if k > 1 {
                        format!(" (micro-batch {} of {k})", micro_batch + 1)
                    } else {
                        String::new()
                    };
                    return Err(self
                        .stopped(format!("the training loss is {value}{part}"), index)
                        .into());
                }
                loss_value += value / k as f64;
                message = out.message;
                let loss = if k > 1 { out.loss / k as f64 } else { out.loss };
                accumulated
                    .accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
            }
            let grads = accumulated.grads();
            let (groups, base) = (&self.groups, self.config.schedule.base_lr);
            let lr_of = |path: &str| group_lr(groups, base, path, lr);
            let (m, info) = match self.opt.step_params(model, &grads, &lr_of) {
                Ok(r) => r,
                Err(e) => return Err(self.stopped(e.to_string(), index).into()),
            };
            model = m;
            B::sync(device).map_err(|e| PeftError::Training(format!("device sync: {e:?}")))?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if first_in_process {
                self.state.warmup_steps.push(index);
                first_in_process = false;
            }
            self.state.step += 1;
            self.state.losses.push(loss_value as f32);
            self.state.step_ms.push(ms);
            self.state.train_seconds = seconds_before + t_start.elapsed().as_secs_f64();
            on_step(&StepReport {
                completed: self.state.step,
                total,
                loss: loss_value,
                lr,
                grad_norm: info.grad_norm,
                ms,
                message,
            });
            let stopping = self.config.stop_after.is_some_and(|k| self.state.step >= k)
                && self.state.step < total;
            if self.state.step == total
                || stopping
                || last_save.elapsed().as_secs_f64() >= self.config.checkpoint_secs
            {
                self.save(&model)?;
                last_save = Instant::now();
            }
            if stopping {
                return Ok(Finish::Stopped(model));
            }
        }
        Ok(Finish::Done(model))
    }

    fn stopped(&self, what: String, index: usize) -> PeftError {
        let ckpt = &self.checkpoint;
        PeftError::Training(format!(
            "{what} at step {} of {}; stopped. The last good checkpoint ({}) is kept{}",
            index + 1,
            self.total_steps(),
            ckpt.display(),
            if ckpt.exists() {
                ""
            } else {
                " (none was written yet)"
            }
        ))
    }

    /// Write the checkpoint now (atomically).
    pub fn save<M: AutodiffModule<B>>(&self, model: &M) -> Result<()> {
        let path = &self.checkpoint;
        let params = collect_params(model, &self.trainable);
        let moments = self.opt.state();
        let meta = serde_json::to_string(&self.state).expect("state serialises");
        let steps = self.opt.steps().to_string();
        let losses = [(
            "run.losses".to_string(),
            vec![self.state.losses.len()],
            self.state.losses.clone(),
        )];
        let names: Vec<(String, &Vec<usize>, &Vec<f32>)> = params
            .iter()
            .map(|(k, s, v)| (format!("param.{k}"), s, v))
            .chain(losses.iter().map(|(k, s, v)| (k.clone(), s, v)))
            .chain(moments.iter().map(|(k, s, v)| (format!("adamw.{k}"), s, v)))
            .collect();
        let bytes = crate::io::f32_safetensors(
            names
                .iter()
                .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
            &[
                ("run_state", meta.as_str()),
                ("adamw_steps", steps.as_str()),
            ],
        )
        .map_err(|source| PeftError::Safetensors {
            path: path.clone(),
            tensor: None,
            source,
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| PeftError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        crate::io::write_atomic(path, &bytes).map_err(|source| PeftError::Io {
            path: path.clone(),
            source,
        })
    }

    fn load<M: AutodiffModule<B>>(
        &mut self,
        model: M,
        device: &B::Device,
    ) -> Result<(TrainState, M)> {
        let path = self.checkpoint.clone();
        let bad = |message: String| PeftError::RunCheckpoint {
            path: path.clone(),
            message,
        };
        let bytes = std::fs::read(&path).map_err(|source| PeftError::Io {
            path: path.clone(),
            source,
        })?;
        let not_safetensors = |e: safetensors::SafeTensorError| {
            let tensor = crate::io::blame_safetensors_header(&bytes)
                .map(|t| format!(", tensor `{t}`"))
                .unwrap_or_default();
            bad(format!("not a safetensors file ({e}{tensor})"))
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let mut state: TrainState = meta
            .get("run_state")
            .ok_or_else(|| bad("no `run_state` metadata".into()))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| bad(format!("bad `run_state` metadata: {e}")))
            })?;
        if state.fingerprint != self.state.fingerprint {
            return Err(bad(
                "it was written with other settings than this run's; use another output \
                 directory or delete the file"
                    .into(),
            ));
        }
        let steps: usize = meta
            .get("adamw_steps")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no `adamw_steps` metadata".into()))?;
        let expected = param_shapes(&model, &self.trainable);
        let mut params = BTreeMap::new();
        let mut moments = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = crate::io::view_to_f32(&view)
                .ok_or_else(|| bad(format!("tensor `{name}` is not float")))?;
            let shape = view.shape().to_vec();
            if let Some(p) = name.strip_prefix("param.") {
                match expected.get(p) {
                    Some(s) if *s == shape => {}
                    Some(s) => {
                        return Err(bad(format!(
                            "`{name}` has shape {shape:?}, the model expects {s:?}"
                        )))
                    }
                    None => {
                        return Err(bad(format!(
                            "`{name}` is not a trainable parameter of the model"
                        )))
                    }
                }
                params.insert(p.to_string(), (shape, data));
            } else if name == "run.losses" {
                state.losses = data;
            } else if let Some(k) = name.strip_prefix("adamw.") {
                moments.insert(k.to_string(), (shape, data));
            } else {
                return Err(bad(format!("unexpected tensor `{name}`")));
            }
        }
        if state.losses.len() != state.step {
            return Err(bad(format!(
                "`run.losses` has {} entries for {} completed steps",
                state.losses.len(),
                state.step
            )));
        }
        if let Some(missing) = expected.keys().find(|k| !params.contains_key(*k)) {
            return Err(bad(format!("no tensor `param.{missing}`")));
        }
        let numel: BTreeMap<String, usize> = expected
            .iter()
            .map(|(k, s)| (k.clone(), s.iter().product()))
            .collect();
        self.opt
            .load_state_checked(steps, moments, &numel, device)
            .map_err(|e| bad(e.to_string()))?;
        Ok((state, replace_params(model, &params)))
    }
}

/// `a.b.c` -> `["a", "a.b", "a.b.c"]`: the module paths above a parameter, and itself.
fn module_prefixes(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = path.match_indices('.').map(|(i, _)| &path[..i]).collect();
    out.push(path);
    out
}

/// Learning rate of `path` at a step whose base rate is `lr`: the first matching group's
/// peak rate scaled by the schedule, else `lr`.
fn group_lr(groups: &[(Vec<Pattern>, f64)], base_lr: f64, path: &str, lr: f64) -> f64 {
    let modules = module_prefixes(path);
    for (patterns, group_lr) in groups {
        if patterns
            .iter()
            .any(|p| modules.iter().any(|m| p.matches(m)))
        {
            return lr * group_lr / base_lr;
        }
    }
    lr
}
