//! Bad configs, checkpoints and inputs are errors that name the field, file, tensor or value:
//! sizes are checked against the checkpoint before a model is built (a config cannot make the
//! loader allocate more than the file holds), non-finite weights are refused, and an empty
//! batch is an input error, not a panic inside Burn.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use coeff_tuning::ParamReport;
use coeff_vit::config::limits;
use coeff_vit::{load_pretrained, VitConfig, VitError};
use serde_json::{json, Value};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a fixture checkpoint with its config edited by `edit`.
fn with_config(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(fixture(name).join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        fixture(name).join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    dir
}

/// A copy of a fixture checkpoint with the f32 values of tensor `key` edited by `edit`.
fn with_values(name: &str, key: &str, edit: impl FnOnce(&mut [f32])) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(name).join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = coeff_tuning::io::view_to_f32(&v).unwrap();
            (k, v.shape().to_vec(), data)
        })
        .collect();
    let (_, _, data) = tensors.iter_mut().find(|(k, _, _)| k == key).unwrap();
    edit(data);
    let out = coeff_tuning::io::f32_safetensors(
        tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
        &[],
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), out).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match load_pretrained::<B>(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_huge_layer_count_is_refused_before_allocating() {
    // 10^9 layers: above the limit, named with the file.
    let dir = with_config("dinov2", |c| {
        c["num_hidden_layers"] = json!(1_000_000_000u64)
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("`num_hidden_layers` is 1000000000")
            && err.contains(&limits::MAX_LAYERS.to_string())
            && err.contains("config.json"),
        "{err}"
    );
    // Within the limit, but not what the file holds.
    let dir = with_config("dinov2", |c| c["num_hidden_layers"] = json!(200));
    let err = load_err(dir.path());
    assert!(
        err.contains("`num_hidden_layers` is 200")
            && err.contains("2 layer(s)")
            && err.contains("encoder.layer.N")
            && err.contains("model.safetensors"),
        "{err}"
    );
    // Fewer layers than the file holds is refused just the same.
    let dir = with_config("timm_vit", |c| c["model_args"]["depth"] = json!(1));
    let err = load_err(dir.path());
    assert!(
        err.contains("`num_hidden_layers` is 1") && err.contains("blocks.N"),
        "{err}"
    );
}

#[test]
fn widths_must_match_the_checkpoint() {
    let dir = with_config("dinov2", |c| c["hidden_size"] = json!(72));
    let err = load_err(dir.path());
    assert!(
        err.contains("`hidden_size` is 72")
            && err.contains("embeddings.patch_embeddings.projection.weight")
            && err.contains("[36, 3, 7, 7]"),
        "{err}"
    );
    let dir = with_config("dinov2", |c| c["hidden_size"] = json!(3_000_000_000u64));
    let err = load_err(dir.path());
    assert!(
        err.contains("`hidden_size` is 3000000000") && err.contains("limit"),
        "{err}"
    );
    // DINOv2's MLP width comes from mlp_ratio: a huge, a NaN-like and a wrong ratio.
    let dir = with_config("dinov2", |c| c["mlp_ratio"] = json!(1e12));
    let err = load_err(dir.path());
    assert!(err.contains("`mlp_ratio` 1000000000000"), "{err}");
    let dir = with_config("dinov2", |c| c["mlp_ratio"] = json!(-4.0));
    let err = load_err(dir.path());
    assert!(
        err.contains("`mlp_ratio` must be a positive number"),
        "{err}"
    );
    let dir = with_config("dinov2", |c| c["mlp_ratio"] = json!(4));
    let err = load_err(dir.path());
    assert!(
        err.contains("`intermediate_size` is 144")
            && err.contains("encoder.layer.0.mlp.fc1.weight"),
        "{err}"
    );
    let dir = with_config("hf_vit_cls", |c| c["intermediate_size"] = json!(1u64 << 40));
    let err = load_err(dir.path());
    assert!(
        err.contains("`intermediate_size` is 1099511627776"),
        "{err}"
    );
    // The position table fixes the image size.
    let dir = with_config("hf_vit_cls", |c| c["image_size"] = json!(64));
    let err = load_err(dir.path());
    assert!(
        err.contains("`image_size` [64, 64]") && err.contains("embeddings.position_embeddings"),
        "{err}"
    );
    let dir = with_config("hf_vit_cls", |c| c["image_size"] = json!(80_000));
    let err = load_err(dir.path());
    assert!(err.contains("`image_size[0]` is 80000"), "{err}");
    let dir = with_config("clip_vision", |c| c["num_channels"] = json!(4));
    let err = load_err(dir.path());
    assert!(err.contains("`num_channels` is 4"), "{err}");
}

#[test]
fn layer_norm_eps_must_be_positive_and_finite() {
    for eps in [json!(0.0), json!(-1e-6)] {
        let dir = with_config("hf_vit_pooler", |c| c["layer_norm_eps"] = eps.clone());
        let err = load_err(dir.path());
        assert!(
            err.contains("`layer_norm_eps` must be a positive finite number")
                && err.contains("config.json"),
            "{err}"
        );
    }
    let dir = with_config("hf_vit_pooler", |c| c["layer_norm_eps"] = json!("small"));
    let err = load_err(dir.path());
    assert!(err.contains("`layer_norm_eps` must be a number"), "{err}");
    // A config built in code is checked the same way.
    let mut cfg = VitConfig::from_file(fixture("dinov2").join("config.json")).unwrap();
    cfg.layer_norm_eps = f64::NAN;
    let err = cfg.check().unwrap_err().to_string();
    assert!(
        err.contains("`layer_norm_eps`") && err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn non_finite_weights_name_the_tensor() {
    let dir = with_values("dinov2", "encoder.layer.1.mlp.fc2.weight", |v| {
        v[3] = f32::NAN;
        v[5] = f32::NEG_INFINITY;
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("`encoder.layer.1.mlp.fc2.weight`")
            && err.contains("2 non-finite")
            && err.contains("model.safetensors"),
        "{err}"
    );
    // timm's fused qkv feeds three parameters; the file's key is named.
    let dir = with_values("timm_vit", "blocks.0.attn.qkv.weight", |v| {
        v[0] = f32::INFINITY
    });
    let err = load_err(dir.path());
    assert!(err.contains("`blocks.0.attn.qkv.weight`"), "{err}");
}

#[test]
fn an_empty_batch_is_an_input_error() {
    let model = load_pretrained::<B>(fixture("dinov2"), &Default::default()).unwrap();
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(Vec::<f32>::new(), [0, 3, 28, 28]),
        &Default::default(),
    );
    match model.forward(x) {
        Err(VitError::Input(m)) => assert!(m.contains("0 images"), "{m}"),
        other => panic!("expected an input error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn num_params_is_exact_and_bounded() {
    for name in [
        "dinov2",
        "clip_vision",
        "hf_vit_cls",
        "hf_vit_pooler",
        "timm_vit",
    ] {
        let model = load_pretrained::<B>(fixture(name), &Default::default()).unwrap();
        let counted = ParamReport::of(&model, &[]).total as u128;
        assert_eq!(model.config.num_params(), counted, "{name}");
    }
    // Each size within its own limit, together too many parameters.
    let mut cfg = VitConfig::from_file(fixture("dinov2").join("config.json")).unwrap();
    cfg.hidden_size = limits::MAX_HIDDEN_SIZE;
    cfg.num_attention_heads = 16;
    cfg.intermediate_size = limits::MAX_INTERMEDIATE_SIZE;
    cfg.num_hidden_layers = limits::MAX_LAYERS;
    let err = cfg.check().unwrap_err().to_string();
    assert!(err.contains("parameters, above the limit"), "{err}");
}
