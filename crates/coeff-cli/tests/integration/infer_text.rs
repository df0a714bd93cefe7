//! `infer` on the text checkpoints of `coeff-vl` (its tiny transformers fixtures): the binary
//! writes the outputs transformers computed, and refuses bad ids with an error naming them.

use burn::tensor::TensorData;
use coeff_harness::testing;
use coeff_tuning::checkpoint::{write_safetensors, Checkpoint};
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_coeff");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../coeff-vl/tests/fixtures")
        .join(name)
}

fn infer(model: &str, input: &Path, output: &Path) -> (Option<i32>, String) {
    let checkpoint = fixture(model);
    let args = [
        "infer",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    testing::run(BIN, Path::new("."), &args)
}

/// The bounds of the coeff-vl parity tests (about 10x the differences measured there), per model.
fn tolerance(model: &str) -> f32 {
    match model {
        "bert_tiny" => 1e-5,
        "clip_text_tiny" | "clip_tiny" => 2e-5,
        "bart_tiny" => 4e-5,
        // The coeff-sdxl parity bounds.
        "sdxl_tiny" | "vae_tiny" => 3e-5,
        _ => panic!("no tolerance for {model}"),
    }
}

#[test]
fn infer_runs_every_text_model_as_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, keys) in [
        ("bert_tiny", &["last_hidden_state", "pooler_output"][..]),
        (
            "clip_text_tiny",
            &[
                "last_hidden_state",
                "penultimate_hidden_state",
                "pooler_output",
                "text_embeds",
            ],
        ),
        (
            "clip_tiny",
            &["text_embeds", "image_embeds", "logits_per_image"],
        ),
        ("bart_tiny", &["encoder_last_hidden_state", "logits"]),
    ] {
        let reference = fixture(model).join("reference.safetensors");
        let output = tmp.path().join(format!("{model}.safetensors"));
        let (code, stderr) = infer(model, &reference, &output);
        assert_eq!(code, Some(0), "{model}:\n{stderr}");
        let (ours, want) = (
            Checkpoint::open(&output).unwrap(),
            Checkpoint::open(&reference).unwrap(),
        );
        for k in keys {
            let (s1, a) = ours.read_f32(k).unwrap();
            let (s2, b) = want.read_f32(k).unwrap();
            assert_eq!(s1, s2, "{model} {k}");
            let d = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{model} {k}: max |diff| {d:.2e}");
            assert!(d < tolerance(model), "{model} {k}: max |diff| {d}");
        }
    }
}

#[test]
fn infer_refuses_ids_outside_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.safetensors");
    let ids = TensorData::new(vec![5i64, 1000, 7], [1, 3]);
    write_safetensors(&input, [("input_ids", &ids)], &[]).unwrap();
    let output = tmp.path().join("out.safetensors");
    let (code, stderr) = infer("bert_tiny", &input, &output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("input_ids") && stderr.contains("1000"),
        "{stderr}"
    );
    assert!(!output.exists());
}

/// The same for diffusers folders: the tiny UNet and VAE of the coeff-sdxl fixtures.
#[test]
fn infer_runs_diffusers_unet_and_vae_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let sdxl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coeff-sdxl/tests/fixtures");
    for (model, pairs) in [
        ("sdxl_tiny", &[("sample", "out_sample")][..]),
        (
            "vae_tiny",
            &[("latent_mean", "latent_mean"), ("decoded", "decoded")],
        ),
    ] {
        let reference = sdxl.join(model).join("reference.safetensors");
        let output = tmp.path().join(format!("{model}.safetensors"));
        let checkpoint = sdxl.join(model);
        let args = [
            "infer",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--input",
            reference.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        testing::succeeds(BIN, Path::new("."), &args);
        let (ours, want) = (
            Checkpoint::open(&output).unwrap(),
            Checkpoint::open(&reference).unwrap(),
        );
        for (k, r) in pairs {
            let (_, a) = ours.read_f32(k).unwrap();
            let (_, b) = want.read_f32(r).unwrap();
            let d = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{model} {k}: max |diff| {d:.2e}");
            assert!(
                a.len() == b.len() && d < tolerance(model),
                "{model} {k}: max |diff| {d}"
            );
        }
    }
}
