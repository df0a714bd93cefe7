//! Parity with diffusers: tiny random UNets saved by diffusers' `save_pretrained`, their inputs
//! (a batch with different timesteps) and diffusers' output (`scripts/fixtures/
//! make_unet_fixtures.py`). A missing fixture is a failure.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::{load_unet, UnetConfig, UnetError, UnetInput};
use coeff_tuning::checkpoint::Checkpoint;

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tensor<const D: usize>(ckpt: &Checkpoint, key: &str) -> Tensor<B, D> {
    let (shape, values) = ckpt.read_f32(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// About 10x the largest difference measured (3.3e-6 SDXL-style, 1.9e-6 SD1.5-style, outputs of
/// scale ~2.4; 2-core Intel Xeon, ndarray).
const TOLERANCE: f32 = 3e-5;

fn run(name: &str) -> (f32, f32) {
    let dir = fixture(name);
    let (config, unet) = load_unet::<B>(&dir, &Default::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let reference = Checkpoint::open(dir.join("reference.safetensors")).expect("reference");
    let text_time = config.text_time.is_some();
    let input = UnetInput {
        sample: tensor(&reference, "sample"),
        timestep: tensor(&reference, "timestep"),
        encoder_hidden_states: tensor(&reference, "encoder_hidden_states"),
        text_embeds: text_time.then(|| tensor(&reference, "text_embeds")),
        time_ids: text_time.then(|| tensor(&reference, "time_ids")),
    };
    let out = unet.forward(input).expect("forward");
    let expected: Tensor<B, 4> = tensor(&reference, "out_sample");
    assert_eq!(out.dims(), expected.dims());
    let diff: f32 = (out - expected.clone()).abs().max().into_scalar();
    let scale: f32 = expected.abs().max().into_scalar();
    eprintln!("{name}: max |ours - diffusers| = {diff:e}, max |diffusers| = {scale}");
    (diff, scale)
}

#[test]
fn sdxl_style_unet_matches_diffusers() {
    let (diff, scale) = run("sdxl_tiny");
    assert!(
        diff < TOLERANCE,
        "max |ours - diffusers| = {diff} (output scale {scale})"
    );
}

#[test]
fn sd15_style_unet_matches_diffusers() {
    let (diff, scale) = run("sd15_tiny");
    assert!(
        diff < TOLERANCE,
        "max |ours - diffusers| = {diff} (output scale {scale})"
    );
}

#[test]
fn legacy_attention_head_dim_means_heads() {
    let config = UnetConfig::from_file(fixture("sdxl_tiny")).expect("config");
    // diffusers' tiny SDXL config: attention_head_dim (2, 4) and no num_attention_heads.
    assert_eq!(config.num_attention_heads, vec![2, 4]);
    assert_eq!(config.transformer_layers_per_block, vec![1, 2]);
    assert!(config.use_linear_projection);
    let sd15 = UnetConfig::from_file(fixture("sd15_tiny")).expect("config");
    assert_eq!(sd15.num_attention_heads, vec![4, 4]);
    assert!(!sd15.use_linear_projection && sd15.text_time.is_none());
}

#[test]
fn unimplemented_or_unknown_config_fields_are_errors_naming_them() {
    let text = std::fs::read_to_string(fixture("sd15_tiny").join("config.json")).expect("config");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["time_cond_proj_dim"] = 16.into();
    let err = UnetConfig::from_json(&json.to_string(), Path::new("c.json")).unwrap_err();
    assert!(
        matches!(&err, UnetError::Unsupported { field, .. } if field == "time_cond_proj_dim"),
        "{err}"
    );

    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["my_new_option"] = true.into();
    let err = UnetConfig::from_json(&json.to_string(), Path::new("c.json")).unwrap_err();
    assert!(err.to_string().contains("my_new_option"), "{err}");

    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["down_block_types"] = serde_json::json!(["CrossAttnDownBlock2D", "AttnDownBlock2D"]);
    let err = UnetConfig::from_json(&json.to_string(), Path::new("c.json")).unwrap_err();
    assert!(err.to_string().contains("AttnDownBlock2D"), "{err}");
}

#[test]
fn wrong_input_shapes_are_errors_naming_the_input() {
    let (config, unet) = load_unet::<B>(fixture("sdxl_tiny"), &Default::default()).expect("load");
    let dev = Default::default();
    let input = |ctx: usize, with_ids: bool| UnetInput::<B> {
        sample: Tensor::zeros([1, 4, 8, 8], &dev),
        timestep: Tensor::zeros([1], &dev),
        encoder_hidden_states: Tensor::zeros([1, 3, ctx], &dev),
        text_embeds: with_ids.then(|| Tensor::zeros([1, 16], &dev)),
        time_ids: with_ids.then(|| Tensor::zeros([1, 6], &dev)),
    };
    let err = unet
        .forward(input(config.cross_attention_dim + 1, true))
        .unwrap_err();
    assert!(err.to_string().contains("encoder_hidden_states"), "{err}");
    let err = unet
        .forward(input(config.cross_attention_dim, false))
        .unwrap_err();
    assert!(err.to_string().contains("text_embeds"), "{err}");
    assert!(unet
        .forward(input(config.cross_attention_dim, true))
        .is_ok());
}
