//! Schedulers against diffusers (`scripts/fixtures/make_scheduler_fixtures.py`): SDXL's
//! settings, 10 inference steps, one step of each sampler, epsilon and v-prediction.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::scheduler::{Ddim, Ddpm, Euler, Prediction, Sampler, ScheduleConfig, Spacing};
use coeff_tuning::checkpoint::Checkpoint;

type B = NdArray<f32>;

fn fixtures() -> Checkpoint {
    Checkpoint::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers.safetensors"),
    )
    .expect("tests/fixtures/schedulers.safetensors")
}

fn values(f: &Checkpoint, key: &str) -> Vec<f32> {
    f.read_f32(key).unwrap_or_else(|e| panic!("{key}: {e}")).1
}

fn tensor(f: &Checkpoint, key: &str) -> Tensor<B, 4> {
    let (shape, v) = f.read_f32(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn close(ours: Tensor<B, 4>, f: &Checkpoint, key: &str) {
    let theirs = tensor(f, key);
    let d: f32 = (ours - theirs).abs().max().into_scalar();
    assert!(d < 1e-5, "{key}: max |ours - diffusers| = {d}");
}

fn config(p: Prediction) -> ScheduleConfig {
    ScheduleConfig {
        prediction: p,
        ..ScheduleConfig::sdxl()
    }
}

#[test]
fn schedule_and_timesteps_match_diffusers() {
    let f = fixtures();
    let acp = ScheduleConfig::sdxl().alphas_cumprod();
    for (ours, theirs) in acp.iter().zip(values(&f, "ddpm.alphas_cumprod")) {
        assert!(
            (ours - theirs as f64).abs() < 1e-5 * ours,
            "{ours} vs {theirs}"
        );
    }
    let ddim = Ddim::new(ScheduleConfig::sdxl(), 10);
    let ts: Vec<f32> = ddim.timesteps.iter().map(|&t| t as f32).collect();
    assert_eq!(ts, values(&f, "ddim.timesteps"));
    let euler = Euler::new(ScheduleConfig::sdxl(), 10);
    let ts: Vec<f32> = euler.timesteps.iter().map(|&t| t as f32).collect();
    assert_eq!(ts, values(&f, "euler.timesteps"));
    for (ours, theirs) in euler.sigmas.iter().zip(values(&f, "euler.sigmas")) {
        assert!(
            (ours - theirs as f64).abs() < 1e-5 * ours.max(1.0),
            "{ours} vs {theirs}"
        );
    }
    let init = values(&f, "euler.init_noise_sigma")[0] as f64;
    assert!((euler.init_noise_sigma() - init).abs() < 1e-5 * init);
}

#[test]
fn one_step_of_each_matches_diffusers() {
    let f = fixtures();
    let x = tensor(&f, "sample");
    let out = tensor(&f, "model_output");
    let noise = tensor(&f, "noise");
    let ddpm = Ddpm::new(ScheduleConfig::sdxl());
    close(
        ddpm.add_noise(x.clone(), noise.clone(), &[10, 731]),
        &f,
        "ddpm.add_noise",
    );
    close(
        ddpm.velocity(x.clone(), noise, &[10, 731]),
        &f,
        "ddpm.velocity",
    );
    for (p, name) in [
        (Prediction::Epsilon, "epsilon"),
        (Prediction::V, "v_prediction"),
    ] {
        let ddim = Ddim::new(config(p), 10);
        let first = ddim.timesteps[0];
        let last = *ddim.timesteps.last().expect("steps");
        close(
            ddim.step(out.clone(), first, x.clone()),
            &f,
            &format!("ddim.{name}.step_first"),
        );
        close(
            ddim.step(out.clone(), last, x.clone()),
            &f,
            &format!("ddim.{name}.step_last"),
        );
        let euler = Euler::new(config(p), 10);
        close(
            euler.scale_model_input(x.clone(), 0),
            &f,
            "euler.scaled_input",
        );
        close(
            euler.step(out.clone(), 0, x.clone()),
            &f,
            &format!("euler.{name}.step_first"),
        );
    }
}

/// A DDIM `scheduler_config.json` with SDXL's schedule (1000 steps, `scaled_linear` betas
/// 0.00085..0.012), written out in full: `clip_sample: false` (this crate never clips) and
/// `set_alpha_to_one: false` (the last step lands on `alphas_cumprod[0]`), as SDXL ships them.
fn ddim_config(prediction: &str, spacing: &str, steps_offset: usize) -> ScheduleConfig {
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": null,
        "clip_sample": false,
        "set_alpha_to_one": false,
        "thresholding": false,
        "rescale_betas_zero_snr": false,
        "prediction_type": prediction,
        "timestep_spacing": spacing,
        "steps_offset": steps_offset,
    });
    std::fs::write(dir.path().join("scheduler_config.json"), json.to_string()).unwrap();
    let (config, sampler) = ScheduleConfig::from_file(dir.path()).expect("DDIM config");
    assert_eq!(sampler, Sampler::Ddim);
    config
}

/// Run DDIM over all `n` steps with a model that knows the truth: from
/// `x_T = sqrt(a[t0]) x0 + sqrt(1 - a[t0]) eps`, every step must land exactly on
/// `sqrt(a[t_prev]) x0 + sqrt(1 - a[t_prev]) eps`, and the last on the final alpha
/// (`alphas_cumprod[0]`, `set_alpha_to_one = false`).
fn ddim_chain(config: ScheduleConfig, n: usize, what: &str) {
    let dev: burn::tensor::Device<B> = Default::default();
    let acp = config.alphas_cumprod();
    let ddim = Ddim::new(config, n);
    let ts = ddim.timesteps.clone();
    assert_eq!(ts.len(), n, "{what}");
    // The premise of the chain: each step's `prev = t - T / n` is the next timestep, and
    // the last step has none (it goes to the final alpha).
    let stride = config.num_train_timesteps / n;
    for w in ts.windows(2) {
        assert_eq!(w[0].checked_sub(stride), Some(w[1]), "{what}: {ts:?}");
    }
    assert!(*ts.last().unwrap() < stride, "{what}: {ts:?}");
    let final_alpha = acp[0];

    let shape = [2, 4, 8, 8];
    let numel = 2 * 4 * 8 * 8;
    let x0: Vec<f64> = (0..numel).map(|i| (i as f64 * 0.37 + 0.1).sin()).collect();
    let eps: Vec<f64> = (0..numel)
        .map(|i| 1.5 * (i as f64 * 1.7 + 0.3).cos())
        .collect();
    // The forward process at noise level `a`, in f64.
    let at = |a: f64| -> Vec<f64> {
        x0.iter()
            .zip(&eps)
            .map(|(x, e)| a.sqrt() * x + (1.0 - a).sqrt() * e)
            .collect()
    };
    let to_tensor = |v: &[f64]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::<B, 4>::from_data(TensorData::new(v, shape), &dev)
    };
    let max_diff = |x: &Tensor<B, 4>, want: &[f64]| {
        let got = x.to_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max)
    };

    let mut x = to_tensor(&at(acp[ts[0]]));
    for (i, &t) in ts.iter().enumerate() {
        let a = acp[t];
        let out: Vec<f64> = match config.prediction {
            Prediction::Epsilon => eps.clone(),
            Prediction::V => x0
                .iter()
                .zip(&eps)
                .map(|(x, e)| a.sqrt() * e - (1.0 - a).sqrt() * x)
                .collect(),
        };
        x = ddim.step(to_tensor(&out), t, x);
        let a_prev = ts.get(i + 1).map_or(final_alpha, |&p| acp[p]);
        let d = max_diff(&x, &at(a_prev));
        assert!(
            d < 1e-5,
            "{what}: step {i} (t = {t}): max |x - analytic| = {d}"
        );
    }
    // After the last step: sqrt(a_final) x0 + sqrt(1 - a_final) eps.
    let d = max_diff(&x, &at(final_alpha));
    assert!(d < 1e-5, "{what}: final: max |x - analytic| = {d}");
}

#[test]
fn ddim_over_a_whole_schedule_lands_on_the_analytic_state() {
    for (prediction, p_name) in [
        (Prediction::Epsilon, "epsilon"),
        (Prediction::V, "v_prediction"),
    ] {
        for (spacing, s_name, offset) in [
            (Spacing::Leading, "leading", 1),
            (Spacing::Trailing, "trailing", 0),
        ] {
            let config = ddim_config(p_name, s_name, offset);
            assert_eq!(
                config,
                ScheduleConfig {
                    prediction,
                    spacing,
                    steps_offset: offset,
                    ..ScheduleConfig::sdxl()
                }
            );
            for n in [10, 50] {
                ddim_chain(config, n, &format!("{p_name}, {s_name}, {n} steps"));
            }
        }
    }
}

fn read_config(json: serde_json::Value) -> Result<(ScheduleConfig, Sampler), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scheduler_config.json"), json.to_string()).unwrap();
    ScheduleConfig::from_file(dir.path()).map_err(|e| e.to_string())
}

/// A field left out takes what diffusers' class takes (`DDIMScheduler.from_config` fills its
/// `__init__` defaults: betas linear 0.0001..0.02, epsilon, leading, offset 0); where that
/// default is one this crate does not compute (DDIM: `clip_sample` and `set_alpha_to_one` true;
/// Euler: `linspace` spacing) the absent field is an error naming it.
#[test]
fn absent_fields_take_diffusers_defaults_or_are_named() {
    let (config, sampler) = read_config(serde_json::json!({
        "_class_name": "DDIMScheduler", "clip_sample": false, "set_alpha_to_one": false,
    }))
    .expect("a DDIM config with the two unsupported defaults overridden");
    assert_eq!(sampler, Sampler::Ddim);
    assert_eq!(config.num_train_timesteps, 1000);
    assert_eq!((config.beta_start, config.beta_end), (0.0001, 0.02));
    assert_eq!(
        config.beta_schedule,
        coeff_sdxl::scheduler::BetaSchedule::Linear
    );
    assert_eq!(config.prediction, Prediction::Epsilon);
    assert_eq!((config.spacing, config.steps_offset), (Spacing::Leading, 0));

    for field in ["clip_sample", "set_alpha_to_one"] {
        let mut json = serde_json::json!({
            "_class_name": "DDIMScheduler", "clip_sample": false, "set_alpha_to_one": false,
        });
        json.as_object_mut().unwrap().remove(field);
        let err = read_config(json).expect_err(field);
        assert!(
            err.contains(&format!("`{field}` = absent")) && err.contains("default"),
            "{err}"
        );
    }
    let err = read_config(serde_json::json!({"_class_name": "EulerDiscreteScheduler"}))
        .expect_err("Euler without timestep_spacing");
    assert!(
        err.contains("`timestep_spacing` = absent") && err.contains("linspace"),
        "{err}"
    );
    let (config, sampler) = read_config(serde_json::json!({
        "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
    }))
    .unwrap();
    assert_eq!(
        (sampler, config.spacing),
        (Sampler::Euler, Spacing::Trailing)
    );
    assert_eq!((config.beta_start, config.beta_end), (0.0001, 0.02));
}
