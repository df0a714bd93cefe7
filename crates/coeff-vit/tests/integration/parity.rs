//! Parity with the reference implementations: small random models built by
//! `scripts/fixtures/make_vit_fixtures.py` with `transformers` and `timm`, their weights in the
//! libraries' own key names, an input and the reference outputs. No Python needed here.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use coeff_vit::{load_pretrained, Checkpoint, VisionTransformer};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tensor<const D: usize>(ckpt: &Checkpoint, key: &str) -> Tensor<B, D> {
    let (shape, data) = ckpt.read_f32(key).unwrap_or_else(|e| panic!("{e}"));
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// Bound on every max |diff|: about 10x the largest measured, 2.6e-6 (docs/vit.md).
const TOLERANCE: f32 = 3e-5;

fn max_abs<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).abs().max().into_scalar()
}

/// Run `model` on the reference input of `file` and compare `last_hidden_state` and each of
/// `outputs`: every one must be in the file and produced by the model, so a missing fixture
/// or output fails instead of passing with nothing compared.
fn check(model: &VisionTransformer<B>, file: &Path, outputs: &[&str]) {
    let reference = Checkpoint::open(file).unwrap_or_else(|e| panic!("{e}"));
    let out = model.forward(tensor(&reference, "pixel_values")).unwrap();
    let compare = |name: &str, ours: Tensor<B, 2>| {
        let err = max_abs(ours, tensor(&reference, name));
        eprintln!("{}: {name} max |diff| {err:.2e}", file.display());
        assert!(
            err < TOLERANCE,
            "{}: `{name}` differs by {err}",
            file.display()
        );
    };
    for &name in outputs {
        let ours = match name {
            "pooler_output" | "pre_logits" => Some(out.pooler_output.clone()),
            "logits" => out.logits.clone(),
            "image_embeds" => out.image_embeds.clone(),
            other => panic!("unknown output `{other}`"),
        };
        let ours = ours.unwrap_or_else(|| panic!("{}: model has no `{name}`", file.display()));
        compare(name, ours);
    }
    let err = max_abs(
        out.last_hidden_state,
        tensor(&reference, "last_hidden_state"),
    );
    eprintln!("{}: last_hidden_state max |diff| {err:.2e}", file.display());
    assert!(
        err < TOLERANCE,
        "{}: last_hidden_state differs by {err}",
        file.display()
    );
}

/// Load fixture `name` and check each `(reference file, outputs besides the hidden state)`.
fn run(name: &str, references: &[(&str, &[&str])]) {
    let dir = fixture(name);
    assert!(dir.is_dir(), "fixture {} is missing", dir.display());
    let model = load_pretrained::<B>(&dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!references.is_empty());
    for (file, outputs) in references {
        check(&model, &dir.join(file), outputs);
    }
}

#[test]
fn hf_vit_classification_square_and_interpolated() {
    run(
        "hf_vit_cls",
        &[
            ("reference.safetensors", &["logits"]),
            ("reference_square.safetensors", &["logits"]),
        ],
    );
}

#[test]
fn hf_vit_with_pooler() {
    run(
        "hf_vit_pooler",
        &[("reference.safetensors", &["pooler_output"])],
    );
}

#[test]
fn clip_vision_with_projection() {
    let outputs: &[&str] = &["pooler_output", "image_embeds"];
    run(
        "clip_vision",
        &[
            ("reference.safetensors", outputs),
            ("reference_nonsquare.safetensors", outputs),
        ],
    );
}

#[test]
fn dinov2_layer_scale_and_interpolation() {
    run("dinov2", &[("reference.safetensors", &["pooler_output"])]);
}

#[test]
fn timm_vit_fused_qkv() {
    run(
        "timm_vit",
        &[("reference.safetensors", &["pre_logits", "logits"])],
    );
}

#[test]
fn timm_vit_dynamic_size() {
    run(
        "timm_vit_dynamic",
        &[("reference.safetensors", &["pre_logits", "logits"])],
    );
}

/// `Dinov2ForImageClassification`: the head takes `[class token, mean patch token]` (`2D`).
#[test]
fn dinov2_classification_head_on_class_and_mean_patch() {
    run("dinov2_cls", &[("reference.safetensors", &["logits"])]);
}

/// `CLIPForImageClassification`: the head takes the mean patch token before `post_layernorm`.
#[test]
fn clip_classification_head_on_mean_patch() {
    run("clip_cls", &[("reference.safetensors", &["logits"])]);
}
