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

fn max_abs<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).abs().max().into_scalar()
}

/// Run `model` on the reference input of `file` and compare every reference output present.
fn check(model: &VisionTransformer<B>, file: &Path) {
    let reference = Checkpoint::open(file).unwrap();
    let keys = reference.keys();
    let out = model.forward(tensor(&reference, "pixel_values")).unwrap();
    let mut compared = 0;
    let mut cmp = |name: &str, ours: Option<Tensor<B, 2>>| {
        if keys.iter().any(|k| k == name) {
            let ours = ours.unwrap_or_else(|| panic!("{}: model has no `{name}`", file.display()));
            let err = max_abs(ours, tensor(&reference, name));
            assert!(err < 1e-4, "{}: `{name}` differs by {err}", file.display());
            compared += 1;
        }
    };
    cmp("pooler_output", Some(out.pooled.clone()));
    cmp("pre_logits", Some(out.pooled.clone()));
    cmp("logits", out.logits.clone());
    cmp("image_embeds", out.image_embeds.clone());
    let err = max_abs(
        out.last_hidden_state,
        tensor(&reference, "last_hidden_state"),
    );
    assert!(
        err < 1e-4,
        "{}: last_hidden_state differs by {err}",
        file.display()
    );
    assert!(
        compared + 1 >= 2 || keys.len() == 2,
        "{}: nothing but the hidden state compared",
        file.display()
    );
}

fn run(name: &str, references: &[&str]) {
    let dir = fixture(name);
    let model = load_pretrained::<B>(&dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    for r in references {
        let path = dir.join(r);
        if path.exists() || *r == "reference.safetensors" {
            check(&model, &path);
        }
    }
}

#[test]
fn hf_vit_classification_square_and_interpolated() {
    run(
        "hf_vit_cls",
        &["reference.safetensors", "reference_square.safetensors"],
    );
}

#[test]
fn hf_vit_with_pooler() {
    run("hf_vit_pooler", &["reference.safetensors"]);
}

#[test]
fn clip_vision_with_projection() {
    run(
        "clip_vision",
        &["reference.safetensors", "reference_nonsquare.safetensors"],
    );
}

#[test]
fn dinov2_layer_scale_and_interpolation() {
    run("dinov2", &["reference.safetensors"]);
}

#[test]
fn timm_vit_fused_qkv() {
    run("timm_vit", &["reference.safetensors"]);
}

#[test]
fn timm_vit_dynamic_size() {
    if fixture("timm_vit_dynamic").exists() {
        run("timm_vit_dynamic", &["reference.safetensors"]);
    }
}
