//! Noise schedules and samplers, as diffusers defines them: DDPM's forward process for
//! training (epsilon and v-prediction targets), and the DDIM (eta = 0) and Euler discrete
//! samplers. Coefficients are computed in f64 on the host; the tensors are the backend's.
//!
//! SDXL's settings are [`ScheduleConfig::sdxl`]: 1000 training steps, `scaled_linear` betas from
//! 0.00085 to 0.012, "leading" timestep spacing with offset 1.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use coeff_tuning::LoadError;
use serde_json::Value;

use crate::error::{Result, UnetError};

/// The sampler a `scheduler_config.json` names (`_class_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// `EulerDiscreteScheduler` (SDXL's default).
    Euler,
    /// `DDIMScheduler` (eta = 0).
    Ddim,
}

/// Fields of a scheduler config that must hold their neutral value (what this crate computes).
const NEUTRAL: &[(&str, &[&str])] = &[
    ("trained_betas", &["null"]),
    ("use_karras_sigmas", &["false"]),
    ("use_exponential_sigmas", &["false"]),
    ("use_beta_sigmas", &["false"]),
    ("interpolation_type", &["\"linear\""]),
    ("rescale_betas_zero_snr", &["false"]),
    ("final_sigmas_type", &["\"zero\""]),
    ("timestep_type", &["\"discrete\""]),
    ("sigma_min", &["null"]),
    ("sigma_max", &["null"]),
    ("clip_sample", &["false"]),
    ("set_alpha_to_one", &["false"]),
    ("thresholding", &["false"]),
];

/// How betas go from `beta_start` to `beta_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// Linear in beta.
    Linear,
    /// Linear in sqrt(beta), squared (Stable Diffusion's).
    ScaledLinear,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise.
    Epsilon,
    /// `v = sqrt(a) * noise - sqrt(1 - a) * x0` (Salimans & Ho, 2022).
    V,
}

/// How inference timesteps are spread over the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// `arange(n) * (T / n) + offset`, descending (SD / SDXL).
    Leading,
    /// `round(arange(T, 0, -T / n)) - 1`.
    Trailing,
}

/// The training schedule and the sampler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleConfig {
    /// Training steps `T`.
    pub num_train_timesteps: usize,
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// Beta curve.
    pub beta_schedule: BetaSchedule,
    /// Model output kind.
    pub prediction: Prediction,
    /// Inference timestep spacing.
    pub spacing: Spacing,
    /// Added to leading timesteps.
    pub steps_offset: usize,
}

/// What diffusers' `DDIMScheduler` and `EulerDiscreteScheduler` take when `scheduler_config.json`
/// leaves a field out (their shared `__init__` defaults).
const DIFFUSERS_DEFAULTS: ScheduleConfig = ScheduleConfig {
    num_train_timesteps: 1000,
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    prediction: Prediction::Epsilon,
    spacing: Spacing::Leading,
    steps_offset: 0,
};

impl ScheduleConfig {
    /// SDXL's (and SD 1.x's) scheduler settings, epsilon-prediction.
    pub fn sdxl() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction: Prediction::Epsilon,
            spacing: Spacing::Leading,
            steps_offset: 1,
        }
    }

    /// Read diffusers' `scheduler_config.json` (a file or its folder): the schedule and which
    /// sampler it names. Absent fields take diffusers' defaults for that class; settings this
    /// crate does not implement (Karras sigmas, zero-SNR rescaling, clipping, ...), given or
    /// defaulted, are errors naming the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<(Self, Sampler)> {
        let path = path.as_ref();
        let path = if path.is_dir() {
            path.join("scheduler_config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::io(&path, source))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LoadError::config(&path, format!("not valid JSON: {e}")))?;
        let unsupported = |field: &str, value: &Value, why: &str| UnetError::Unsupported {
            path: path.clone(),
            field: field.into(),
            value: value.to_string(),
            why: why.into(),
        };
        let get = |k: &str| v.get(k).unwrap_or(&Value::Null);
        for (field, neutral) in NEUTRAL {
            let value = get(field);
            if !value.is_null() && !neutral.contains(&value.to_string().as_str()) {
                return Err(unsupported(
                    field,
                    value,
                    &format!("only {}", neutral.join(" or ")),
                ));
            }
        }
        let sampler = match get("_class_name").as_str() {
            Some("EulerDiscreteScheduler") => Sampler::Euler,
            Some("DDIMScheduler") => Sampler::Ddim,
            _ => {
                return Err(unsupported(
                    "_class_name",
                    get("_class_name"),
                    "EulerDiscreteScheduler or DDIMScheduler",
                ))
            }
        };
        // Absent fields take the class's `__init__` default, as diffusers' `from_config` does;
        // where that default is one this crate does not compute, an absent field is an error
        // (DDIM clips x0 and ends on alpha = 1 by default, Euler spaces timesteps by linspace).
        let absent = |field: &str, default: &str, write: &str| UnetError::Unsupported {
            path: path.clone(),
            field: field.into(),
            value: "absent".into(),
            why: format!(
                "diffusers' default for {} is {default}, which this crate does not compute; \
                 write `\"{field}\": {write}`",
                get("_class_name").as_str().unwrap_or("this class")
            ),
        };
        if sampler == Sampler::Ddim {
            for field in ["clip_sample", "set_alpha_to_one"] {
                if get(field).is_null() {
                    return Err(absent(field, "true", "false"));
                }
            }
        }
        if sampler == Sampler::Euler && get("timestep_spacing").is_null() {
            return Err(absent(
                "timestep_spacing",
                "\"linspace\"",
                "\"leading\" or \"trailing\"",
            ));
        }
        let d = DIFFUSERS_DEFAULTS;
        let number = |k: &str, default: f64| -> Result<f64> {
            match get(k) {
                Value::Null => Ok(default),
                x => x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| {
                        LoadError::config(&path, format!("`{k}` is {x}, not a non-negative number"))
                            .into()
                    }),
            }
        };
        let steps = number("num_train_timesteps", d.num_train_timesteps as f64)?;
        if !(1.0..=100_000.0).contains(&steps) || steps.fract() != 0.0 {
            return Err(unsupported(
                "num_train_timesteps",
                get("num_train_timesteps"),
                "an integer in 1..=100000",
            ));
        }
        // A string field with a default, one of `options` (the error lists them).
        fn choose<T: Copy>(
            v: &Value,
            path: &Path,
            field: &str,
            default: &str,
            options: &[(&str, T)],
        ) -> Result<T> {
            let value = v.get(field).unwrap_or(&Value::Null);
            let name = value.as_str().unwrap_or(default);
            options
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .ok_or_else(|| UnetError::Unsupported {
                    path: path.to_path_buf(),
                    field: field.into(),
                    value: value.to_string(),
                    why: options
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(" or "),
                })
        }
        let config = Self {
            num_train_timesteps: steps as usize,
            beta_start: number("beta_start", d.beta_start)?,
            beta_end: number("beta_end", d.beta_end)?,
            beta_schedule: choose(
                &v,
                &path,
                "beta_schedule",
                "linear",
                &[
                    ("linear", BetaSchedule::Linear),
                    ("scaled_linear", BetaSchedule::ScaledLinear),
                ],
            )?,
            prediction: choose(
                &v,
                &path,
                "prediction_type",
                "epsilon",
                &[
                    ("epsilon", Prediction::Epsilon),
                    ("v_prediction", Prediction::V),
                ],
            )?,
            spacing: choose(
                &v,
                &path,
                "timestep_spacing",
                "leading",
                &[
                    ("leading", Spacing::Leading),
                    ("trailing", Spacing::Trailing),
                ],
            )?,
            steps_offset: number("steps_offset", d.steps_offset as f64)? as usize,
        };
        Ok((config, sampler))
    }

    /// `alphas_cumprod[t] = prod_{s <= t} (1 - beta_s)`.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        let lerp = |a: f64, b: f64, i: usize| {
            if n == 1 {
                a
            } else {
                a + (b - a) * i as f64 / (n - 1) as f64
            }
        };
        let mut acc = 1.0;
        (0..n)
            .map(|i| {
                let beta = match self.beta_schedule {
                    BetaSchedule::Linear => lerp(self.beta_start, self.beta_end, i),
                    BetaSchedule::ScaledLinear => {
                        lerp(self.beta_start.sqrt(), self.beta_end.sqrt(), i).powi(2)
                    }
                };
                acc *= 1.0 - beta;
                acc
            })
            .collect()
    }

    /// The `n` inference timesteps, descending.
    pub fn timesteps(&self, n: usize) -> Vec<usize> {
        let t = self.num_train_timesteps;
        match self.spacing {
            Spacing::Leading => {
                let ratio = t / n.max(1);
                (0..n)
                    .rev()
                    .map(|i| i * ratio + self.steps_offset)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / n.max(1) as f64;
                (0..n)
                    .map(|i| ((t as f64 - i as f64 * ratio).round() as usize).saturating_sub(1))
                    .collect()
            }
        }
    }
}

/// DDPM's forward process, for training.
#[derive(Debug, Clone)]
pub struct Ddpm {
    /// The schedule.
    pub config: ScheduleConfig,
    alphas_cumprod: Vec<f64>,
}

impl Ddpm {
    /// The forward process of `config`.
    pub fn new(config: ScheduleConfig) -> Self {
        Self {
            alphas_cumprod: config.alphas_cumprod(),
            config,
        }
    }

    /// `alphas_cumprod`, `[T]`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// Per-sample `(sqrt(a_t), sqrt(1 - a_t))` as `[B, 1, 1, 1]` tensors.
    fn coefficients<B: Backend>(
        &self,
        t: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let col = |f: &dyn Fn(f64) -> f64| {
            let v: Vec<f32> = t
                .iter()
                .map(|&s| f(self.alphas_cumprod[s]) as f32)
                .collect();
            Tensor::<B, 1>::from_floats(v.as_slice(), device).reshape([t.len(), 1, 1, 1])
        };
        (col(&|a| a.sqrt()), col(&|a| (1.0 - a).sqrt()))
    }

    /// `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`, one timestep per sample.
    pub fn add_noise<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        t: &[usize],
    ) -> Tensor<B, 4> {
        let (a, s) = self.coefficients::<B>(t, &x0.device());
        x0 * a + noise * s
    }

    /// The v-prediction target `sqrt(a_t) noise - sqrt(1 - a_t) x0`.
    pub fn velocity<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        t: &[usize],
    ) -> Tensor<B, 4> {
        let (a, s) = self.coefficients::<B>(t, &x0.device());
        noise * a - x0 * s
    }

    /// The regression target of the configured prediction kind.
    pub fn target<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        t: &[usize],
    ) -> Tensor<B, 4> {
        match self.config.prediction {
            Prediction::Epsilon => noise,
            Prediction::V => self.velocity(x0, noise, t),
        }
    }
}

/// `(x0, eps)` predicted from a model output at `a = alphas_cumprod[t]`.
fn split<B: Backend>(
    pred: Prediction,
    a: f64,
    x: Tensor<B, 4>,
    out: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    match pred {
        Prediction::Epsilon => ((x - out.clone() * sb) / sa, out),
        Prediction::V => (x.clone() * sa - out.clone() * sb, out * sa + x * sb),
    }
}

/// DDIM with eta = 0 (deterministic), `set_alpha_to_one = false` as SDXL's config has it.
#[derive(Debug, Clone)]
pub struct Ddim {
    config: ScheduleConfig,
    alphas_cumprod: Vec<f64>,
    /// The inference timesteps, descending.
    pub timesteps: Vec<usize>,
}

impl Ddim {
    /// `n` inference steps.
    pub fn new(config: ScheduleConfig, n: usize) -> Self {
        Self {
            alphas_cumprod: config.alphas_cumprod(),
            timesteps: config.timesteps(n),
            config,
        }
    }

    /// One step from timestep `t` (one of [`Self::timesteps`]).
    pub fn step<B: Backend>(&self, out: Tensor<B, 4>, t: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let stride = self.config.num_train_timesteps / self.timesteps.len().max(1);
        let a = self.alphas_cumprod[t];
        let a_prev = match t.checked_sub(stride) {
            Some(p) => self.alphas_cumprod[p],
            None => self.alphas_cumprod[0],
        };
        let (x0, eps) = split(self.config.prediction, a, x, out);
        x0 * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt()
    }
}

/// Euler discrete (Karras et al.'s formulation of the ancestral-free Euler step).
#[derive(Debug, Clone)]
pub struct Euler {
    config: ScheduleConfig,
    /// The inference timesteps, descending.
    pub timesteps: Vec<usize>,
    /// `sqrt((1 - a) / a)` at each timestep, then 0: `[n + 1]`.
    pub sigmas: Vec<f64>,
}

impl Euler {
    /// `n` inference steps.
    pub fn new(config: ScheduleConfig, n: usize) -> Self {
        let acp = config.alphas_cumprod();
        let timesteps = config.timesteps(n);
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| ((1.0 - acp[t]) / acp[t]).sqrt())
            .collect();
        sigmas.push(0.0);
        Self {
            config,
            timesteps,
            sigmas,
        }
    }

    /// The standard deviation of the initial noise.
    pub fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0, f64::max);
        match self.config.spacing {
            Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    /// The model's input at step `i`: `x / sqrt(sigma_i^2 + 1)`.
    pub fn scale_model_input<B: Backend>(&self, x: Tensor<B, 4>, i: usize) -> Tensor<B, 4> {
        let s = self.sigmas[i];
        x / (s * s + 1.0).sqrt()
    }

    /// Step `i` (0-based index into [`Self::timesteps`]).
    pub fn step<B: Backend>(&self, out: Tensor<B, 4>, i: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let s = self.sigmas[i];
        let x0 = match self.config.prediction {
            Prediction::Epsilon => x.clone() - out * s,
            Prediction::V => out * (-s / (s * s + 1.0).sqrt()) + x.clone() / (s * s + 1.0),
        };
        let derivative = (x.clone() - x0) / s;
        x + derivative * (self.sigmas[i + 1] - s)
    }
}

/// Classifier-free guidance: `uncond + scale * (cond - uncond)`.
pub fn guidance<B: Backend>(uncond: Tensor<B, 4>, cond: Tensor<B, 4>, scale: f64) -> Tensor<B, 4> {
    uncond.clone() + (cond - uncond) * scale
}
