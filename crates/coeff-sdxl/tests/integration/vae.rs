//! `AutoencoderKL` against diffusers (`scripts/fixtures/make_unet_fixtures.py`, `vae_tiny`):
//! encode to the latent distribution's mean and log-variance, decode the mean.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::load_vae;
use coeff_tuning::checkpoint::Checkpoint;

type B = NdArray<f32>;

fn tensor(f: &Checkpoint, key: &str) -> Tensor<B, 4> {
    let (shape, v) = f.read_f32(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

#[test]
fn tiny_vae_matches_diffusers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae_tiny");
    let (config, vae) = load_vae::<B>(&dir, &Default::default()).expect("load vae");
    assert_eq!(config.scaling_factor, 0.18215);
    let f = Checkpoint::open(dir.join("reference.safetensors")).expect("reference");
    let (mean, logvar) = vae.encode(tensor(&f, "sample"));
    let decoded = vae.decode(mean.clone());
    for (ours, key) in [
        (mean, "latent_mean"),
        (logvar, "latent_logvar"),
        (decoded, "decoded"),
    ] {
        let theirs = tensor(&f, key);
        assert_eq!(ours.dims(), theirs.dims(), "{key}");
        let d: f32 = (ours - theirs).abs().max().into_scalar();
        eprintln!("{key}: max |ours - diffusers| = {d:e}");
        // About 10x the largest measured (decoded: 3.0e-6; mean 1.3e-6, logvar 1.7e-6).
        assert!(d < 3e-5, "{key}: max |ours - diffusers| = {d}");
    }
}
