//! Loader errors name what is wrong; PEFT attaches to the ViT by module path.

use std::path::{Path, PathBuf};

use burn::tensor::{Distribution, Tensor};
use coeff_tuning::{inject, LoadError, Method};
use coeff_vit::{load_pretrained, VitConfig, VitError};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copy a fixture's config and rewrite its weights through `edit`.
fn edited_copy(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(name).join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, s, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match load_pretrained::<B>(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_weight_is_named() {
    let dir = edited_copy("dinov2", |t| {
        t.retain(|(k, _, _)| k != "encoder.layer.1.norm2.bias")
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("`encoder.layer.1.norm2.bias`") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn unexpected_weight_is_named() {
    let dir = edited_copy("timm_vit", |t| {
        t.push(("blocks.0.attn.q_norm.weight".into(), vec![8], vec![0; 32]))
    });
    let err = load_err(dir.path());
    assert!(err.contains("blocks.0.attn.q_norm.weight"), "{err}");
}

#[test]
fn wrong_shape_is_named() {
    let dir = edited_copy("clip_vision", |t| {
        for (k, shape, data) in t.iter_mut() {
            if k == "vision_model.encoder.layers.0.mlp.fc1.weight" {
                *shape = vec![32, 64];
                let _ = data;
            }
        }
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("vision_model.encoder.layers.0.mlp.fc1.weight") && err.contains("[32, 64]"),
        "{err}"
    );
}

#[test]
fn unsupported_model_type_is_named() {
    let err = VitConfig::from_json_str(
        r#"{"model_type": "bert", "hidden_size": 8}"#,
        Path::new("cfg.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bert") && err.contains("cfg.json"), "{err}");
    let err = VitConfig::from_json_str(
        r#"{"model_type": "vit", "hidden_size": 30, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 8}"#,
        Path::new("cfg.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not divisible"), "{err}");
}

#[test]
fn file_and_config_errors_are_the_shared_kinds() {
    let err = VitConfig::from_json_str("not json", Path::new("cfg.json")).unwrap_err();
    assert!(
        matches!(&err, VitError::Load(LoadError::Config { path, .. }) if path == Path::new("cfg.json")),
        "{err}"
    );
    assert!(err.to_string().starts_with("config cfg.json: "), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config.json");
    let err = VitConfig::from_file(&missing).unwrap_err();
    assert!(
        matches!(&err, VitError::Load(LoadError::Io { path, .. }) if *path == missing),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );
}

#[test]
fn wrong_channel_count_is_an_input_error() {
    let model = load_pretrained::<B>(fixture("hf_vit_pooler"), &Default::default()).unwrap();
    let x = Tensor::<B, 4>::random([1, 1, 32, 32], Distribution::Default, &Default::default());
    match model.forward(x) {
        Err(VitError::Input(m)) => assert!(m.contains("1 channels"), "{m}"),
        other => panic!("expected an input error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn lora_and_coeff_attach_by_path_and_start_at_the_base_model() {
    let dev = Default::default();
    let base = load_pretrained::<B>(fixture("hf_vit_cls"), &dev).unwrap();
    let mut cfg = Method::LoraCoeff.config(4, &["query", "value"]);
    cfg.modules_to_save = vec!["head".into()];
    let (adapted, injected) = inject(base.clone(), &cfg).unwrap();
    assert_eq!(injected.lora_layers.len(), 4, "{:?}", injected.lora_layers);
    assert_eq!(
        injected.coeff_layers,
        vec!["layers.0.attn", "layers.1.attn"]
    );
    // 2 layers x (query + value) x (30*4 + 4*30) + 2 x 3*3 alpha + head 30*5+5
    assert_eq!(injected.params.trainable, 4 * 240 + 2 * 9 + 155);
    let x = Tensor::<B, 4>::random([2, 3, 32, 48], Distribution::Default, &dev);
    let a = base.forward(x.clone()).unwrap().logits.unwrap();
    let b = adapted.forward(x).unwrap().logits.unwrap();
    let err: f32 = (a - b).abs().max().into_scalar();
    assert!(err < 1e-6, "zero-init adapters changed the logits by {err}");
}
