//! Checkpoint-format fidelity: the files `save_pretrained` writes in transformers 4.x and 5.x
//! (CLIP with and without the `vision_model.` prefix, a whole `CLIPModel`), sizes given as
//! `[h, w]` pairs, sharded weights, and the normalisation read from the folder. The fixtures
//! are made here, in Rust, from the committed ones or from tiny random models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use coeff_tuning::checkpoint::{write_safetensors, Checkpoint};
use coeff_tuning::peft::params;
use coeff_vit::loader::key_table;
use coeff_vit::{load_pretrained, Family, Normalization, VisionTransformer, VitConfig};
use serde_json::{json, Value};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn params_of(m: &VisionTransformer<B>) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    params::all_params(m)
        .into_iter()
        .map(|(p, s, v)| (p, (s, v)))
        .collect()
}

/// Every tensor of a checkpoint, keys renamed by `rename` (`None` drops the key).
fn tensors(
    ckpt: &Checkpoint,
    rename: impl Fn(&str) -> Option<String>,
) -> Vec<(String, TensorData)> {
    ckpt.keys()
        .iter()
        .filter_map(|k| Some((rename(k)?, ckpt.read(k).unwrap())))
        .collect()
}

/// A checkpoint folder: `config.json` and `model.safetensors`.
fn folder(config: &Value, tensors: &[(String, TensorData)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    write_safetensors(
        &dir.path().join("model.safetensors"),
        tensors.iter().map(|(k, v)| (k.as_str(), v)),
        &[("format", "pt")],
    )
    .unwrap();
    dir
}

fn read_config(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap())
        .unwrap()
}

fn load(dir: &Path) -> VisionTransformer<B> {
    load_pretrained::<B>(dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn clip_loads_with_and_without_the_vision_model_prefix_and_from_a_whole_clip_model() {
    let reference = params_of(&load(&fixture("clip_vision")));
    let ckpt = Checkpoint::open(fixture("clip_vision").join("model.safetensors")).unwrap();
    assert!(ckpt.keys().iter().any(|k| k.starts_with("vision_model.")));
    let config = read_config("clip_vision");

    // transformers 5.x `CLIPVisionModel.save_pretrained`: no `vision_model.` prefix.
    let bare = tensors(&ckpt, |k| {
        Some(k.strip_prefix("vision_model.").unwrap_or(k).to_string())
    });
    assert!(bare.iter().all(|(k, _)| !k.starts_with("vision_model.")));
    let dir = folder(&config, &bare);
    assert_eq!(params_of(&load(dir.path())), reference);

    // A whole `CLIPModel` file: the text tower, `text_projection`, `logit_scale` and the
    // `position_ids` buffers are skipped knowingly; the config nests the vision config.
    let mut whole = tensors(&ckpt, |k| Some(k.to_string()));
    let f = |n: usize, s: Vec<usize>| TensorData::new(vec![0.25f32; n], s);
    whole.push((
        "text_model.embeddings.token_embedding.weight".into(),
        f(40, vec![10, 4]),
    ));
    whole.push(("text_model.final_layer_norm.weight".into(), f(4, vec![4])));
    whole.push(("text_projection.weight".into(), f(64, vec![16, 4])));
    whole.push(("logit_scale".into(), f(1, vec![])));
    whole.push((
        "vision_model.embeddings.position_ids".into(),
        TensorData::new((0..17i64).collect::<Vec<_>>(), [1, 17]),
    ));
    let mut vision = config.clone();
    vision.as_object_mut().unwrap().remove("projection_dim");
    let clip = json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": 16,
        "text_config": {"hidden_size": 4},
        "vision_config": vision,
    });
    let dir = folder(&clip, &whole);
    assert_eq!(params_of(&load(dir.path())), reference);

    // The same file with a key nothing maps is refused, naming it.
    whole.push((
        "vision_model.encoder.layers.0.extra.weight".into(),
        f(4, vec![4]),
    ));
    let dir = folder(&clip, &whole);
    let err = load_pretrained::<B>(dir.path(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`vision_model.encoder.layers.0.extra.weight`"),
        "{err}"
    );
}

#[test]
fn sizes_given_as_pairs_load_like_ints() {
    let path = Path::new("config.json");
    for name in ["hf_vit_cls", "clip_vision"] {
        let ints = read_config(name);
        let mut pairs = ints.clone();
        pairs["image_size"] = json!([32, 32]);
        pairs["patch_size"] = json!([8, 8]);
        let a = VitConfig::from_json_str(&ints.to_string(), path).unwrap();
        let b = VitConfig::from_json_str(&pairs.to_string(), path).unwrap();
        assert_eq!(a, b, "{name}");
        // A non-square image is kept as such.
        pairs["image_size"] = json!([32, 48]);
        let c = VitConfig::from_json_str(&pairs.to_string(), path).unwrap();
        assert_eq!((c.image_size, c.grid()), ([32, 48], [4, 6]), "{name}");
        // Non-square patches are refused by name.
        pairs["patch_size"] = json!([8, 4]);
        let err = VitConfig::from_json_str(&pairs.to_string(), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("patch_size [8, 4]"), "{err}");
        pairs["patch_size"] = json!("8");
        let err = VitConfig::from_json_str(&pairs.to_string(), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`patch_size`"), "{err}");
    }
    // timm spells sizes the same two ways.
    let timm = |img: Value, patch: Value| {
        let v = json!({"architecture": "vit_custom", "model_args": {
            "img_size": img, "patch_size": patch, "embed_dim": 24, "depth": 2, "num_heads": 3}});
        VitConfig::from_json_str(&v.to_string(), path).unwrap()
    };
    let a = timm(json!(32), json!(8));
    let b = timm(json!([32, 48]), json!([8, 8]));
    assert_eq!((a.image_size, a.patch_size), ([32, 32], 8));
    assert_eq!((b.image_size, b.patch_size), ([32, 48], 8));
}

/// A tiny random Hugging Face ViT written in `transformers`' key names and layout (the
/// inverse of the key table), with and without the `vit.` prefix and with `[h, w]` sizes,
/// loads back bit-identically.
#[test]
fn a_random_tiny_vit_round_trips_through_its_key_names() {
    let config = json!({
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": 12, "num_hidden_layers": 2, "num_attention_heads": 3,
        "intermediate_size": 20, "image_size": [16, 24], "patch_size": [4, 4],
        "id2label": {"0": "a", "1": "b", "2": "c"},
    });
    let cfg = VitConfig::from_json_str(&config.to_string(), Path::new("config.json")).unwrap();
    assert_eq!(
        (cfg.image_size, cfg.patch_size, cfg.num_labels),
        ([16, 24], 4, Some(3))
    );
    let model = cfg.init::<B>(&Default::default());
    let ours = params_of(&model);
    let table = key_table(Family::HfVit);
    let export = |prefix: &str| -> Vec<(String, TensorData)> {
        ours.iter()
            .map(|(param, (shape, values))| {
                let key = table.checkpoint_key(param).unwrap().unwrap();
                // Linear weights are `[in, out]` here, `[out, in]` in PyTorch.
                let data = match shape.as_slice() {
                    [i, o] if param.ends_with(".weight") => {
                        TensorData::new(coeff_tuning::io::transpose(values, *i, *o), [*o, *i])
                    }
                    _ => TensorData::new(values.clone(), shape.clone()),
                };
                let prefix = if key.starts_with("classifier") {
                    ""
                } else {
                    prefix
                };
                (format!("{prefix}{key}"), data)
            })
            .collect()
    };
    for prefix in ["", "vit."] {
        let dir = folder(&config, &export(prefix));
        assert_eq!(params_of(&load(dir.path())), ours, "prefix `{prefix}`");
    }
    // The same weights sharded in two files behind an index load identically.
    let all = export("vit.");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut map = serde_json::Map::new();
    for (n, part) in all.chunks(all.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", n + 1);
        write_safetensors(
            &dir.path().join(&file),
            part.iter().map(|(k, v)| (k.as_str(), v)),
            &[],
        )
        .unwrap();
        for (k, _) in part {
            map.insert(k.clone(), file.clone().into());
        }
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    assert_eq!(params_of(&load(dir.path())), ours);
}

#[test]
fn the_normalisation_comes_from_the_checkpoint_folder() {
    assert_eq!(
        Normalization::from_dir(fixture("clip_vision")).unwrap(),
        Normalization::OPENAI_CLIP
    );
    assert_eq!(
        Normalization::from_dir(fixture("hf_vit_cls")).unwrap(),
        Normalization::HALF
    );
    assert_eq!(
        Normalization::from_dir(fixture("dinov2")).unwrap(),
        Normalization::IMAGENET
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("hf_vit_cls").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"image_processor_type": "ViTImageProcessor", "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#,
    )
    .unwrap();
    assert_eq!(
        Normalization::from_dir(dir.path()).unwrap(),
        Normalization::IMAGENET
    );
}
