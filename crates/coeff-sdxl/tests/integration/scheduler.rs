//! Schedulers against diffusers (`scripts/fixtures/make_scheduler_fixtures.py`): SDXL's
//! settings, 10 inference steps, one step of each sampler, epsilon and v-prediction.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::scheduler::{Ddim, Ddpm, Euler, Prediction, ScheduleConfig};
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
