//! Loading checkpoints in each reference library's own key names.
//!
//! The key tables below are the whole mapping; read them top to bottom. `{i}` is a layer
//! index. `Linear` maps `<key>.weight [out, in]` (transposed to Burn's `[in, out]`) and
//! `<key>.bias`; `Norm` maps `<key>.weight -> gamma`, `<key>.bias -> beta`. The kinds, the
//! checks and the one-tensor-at-a-time loading are the core crate's
//! ([`coeff_tuning::checkpoint`]); this file only holds the ViT tables.
//!
//! | Hugging Face ViT (`vit.` prefix optional)          | ours                                 |
//! |----------------------------------------------------|--------------------------------------|
//! | `embeddings.cls_token`                             | `cls_token`                          |
//! | `embeddings.position_embeddings`                   | `pos_embed`                          |
//! | `embeddings.patch_embeddings.projection.{w,b}`     | `patch_embed.{weight,bias}`          |
//! | `encoder.layer.{i}.layernorm_before`               | `layers.{i}.norm1`                   |
//! | `encoder.layer.{i}.attention.attention.query`      | `layers.{i}.attn.query` (key, value) |
//! | `encoder.layer.{i}.attention.output.dense`         | `layers.{i}.attn.output`             |
//! | `encoder.layer.{i}.layernorm_after`                | `layers.{i}.norm2`                   |
//! | `encoder.layer.{i}.intermediate.dense`             | `layers.{i}.mlp.fc1`                 |
//! | `encoder.layer.{i}.output.dense`                   | `layers.{i}.mlp.fc2`                 |
//! | `layernorm` / `pooler.dense` / `classifier`        | `norm` / `pooler` / `head`           |
//!
//! | CLIP vision (`vision_model.` prefix optional)      | ours                                 |
//! |----------------------------------------------------|--------------------------------------|
//! | `embeddings.class_embedding` `[D]`                 | `cls_token` `[1, 1, D]`              |
//! | `embeddings.patch_embedding.weight`                | `patch_embed.weight` (no bias)       |
//! | `embeddings.position_embedding.weight` `[T, D]`    | `pos_embed` `[1, T, D]`              |
//! | `pre_layrnorm` (sic)                               | `pre_norm`                           |
//! | `encoder.layers.{i}.layer_norm1` / `layer_norm2`   | `layers.{i}.norm1` / `norm2`         |
//! | `encoder.layers.{i}.self_attn.{q,k,v,out}_proj`    | `layers.{i}.attn.{query,key,value,output}` |
//! | `encoder.layers.{i}.mlp.fc1` / `fc2`               | `layers.{i}.mlp.fc1` / `fc2`         |
//! | `post_layernorm`                                   | `post_norm`                          |
//! | `visual_projection.weight` (no prefix)             | `projection.weight`                  |
//! | `classifier` (`CLIPForImageClassification`)        | `head` (on the mean patch token)     |
//!
//! | DINOv2 (`dinov2.` prefix optional)                 | ours                                 |
//! |----------------------------------------------------|--------------------------------------|
//! | `embeddings.cls_token` / `position_embeddings`     | `cls_token` / `pos_embed`            |
//! | `embeddings.patch_embeddings.projection`           | `patch_embed`                        |
//! | `encoder.layer.{i}.norm1` / `norm2`                | `layers.{i}.norm1` / `norm2`         |
//! | `encoder.layer.{i}.attention.attention.{q,k,v}`    | `layers.{i}.attn.{query,key,value}`  |
//! | `encoder.layer.{i}.attention.output.dense`         | `layers.{i}.attn.output`             |
//! | `encoder.layer.{i}.layer_scale{1,2}.lambda1`       | `layers.{i}.ls{1,2}`                 |
//! | `encoder.layer.{i}.mlp.fc1` / `fc2`                | `layers.{i}.mlp.fc1` / `fc2`         |
//! | `layernorm`                                        | `norm`                               |
//! | `classifier` (`Dinov2ForImageClassification`, `[labels, 2D]`) | `head` (class + mean patch token) |
//!
//! | timm `VisionTransformer`                           | ours                                 |
//! |----------------------------------------------------|--------------------------------------|
//! | `cls_token` / `pos_embed` / `patch_embed.proj`     | `cls_token` / `pos_embed` / `patch_embed` |
//! | `blocks.{i}.norm1` / `norm2`                       | `layers.{i}.norm1` / `norm2`         |
//! | `blocks.{i}.attn.qkv` `[3D, D]` (rows q, k, v)     | `layers.{i}.attn.{query,key,value}`  |
//! | `blocks.{i}.attn.proj`                             | `layers.{i}.attn.output`             |
//! | `blocks.{i}.ls{1,2}.gamma`                         | `layers.{i}.ls{1,2}`                 |
//! | `blocks.{i}.mlp.fc1` / `fc2`                       | `layers.{i}.mlp.fc1` / `fc2`         |
//! | `norm` / `head`                                    | `norm` / `head`                      |
//!
//! transformers 4.x `save_pretrained` writes a CLIP vision tower under `vision_model.`; 5.x
//! writes `CLIPVisionModel` without it; both load. Keys that are not weights of the vision
//! model are skipped by name (listed in `ignored`): a full `CLIPModel` file's text tower,
//! `text_projection` and `logit_scale`, `position_ids` buffers, DINOv2/ViT `mask_token`.

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::backend::Backend;
pub use coeff_tuning::checkpoint::Checkpoint;
use coeff_tuning::checkpoint::{find_weights, KeyTable, Kind, Row, TensorInfo};
use coeff_tuning::LoadError;

use crate::config::{Family, VitConfig};
use crate::error::{Result, VitError};
use crate::model::VisionTransformer;

#[rustfmt::skip]
const HF_VIT: &[Row] = &[
    ("embeddings.cls_token",                        "cls_token",              Kind::Tensor),
    ("embeddings.position_embeddings",              "pos_embed",              Kind::Tensor),
    ("embeddings.patch_embeddings.projection",      "patch_embed",            Kind::Conv),
    ("encoder.layer.{i}.layernorm_before",          "layers.{i}.norm1",       Kind::Norm),
    ("encoder.layer.{i}.attention.attention.query", "layers.{i}.attn.query",  Kind::Linear),
    ("encoder.layer.{i}.attention.attention.key",   "layers.{i}.attn.key",    Kind::Linear),
    ("encoder.layer.{i}.attention.attention.value", "layers.{i}.attn.value",  Kind::Linear),
    ("encoder.layer.{i}.attention.output.dense",    "layers.{i}.attn.output", Kind::Linear),
    ("encoder.layer.{i}.layernorm_after",           "layers.{i}.norm2",       Kind::Norm),
    ("encoder.layer.{i}.intermediate.dense",        "layers.{i}.mlp.fc1",     Kind::Linear),
    ("encoder.layer.{i}.output.dense",              "layers.{i}.mlp.fc2",     Kind::Linear),
    ("layernorm",                                   "norm",                   Kind::Norm),
    ("pooler.dense",                                "pooler",                 Kind::Linear),
    ("classifier",                                  "head",                   Kind::Linear),
];

#[rustfmt::skip]
const CLIP: &[Row] = &[
    ("embeddings.class_embedding",            "cls_token",              Kind::Tensor),
    ("embeddings.patch_embedding",            "patch_embed",            Kind::Conv),
    ("embeddings.position_embedding.weight",  "pos_embed",              Kind::Tensor),
    ("pre_layrnorm",                          "pre_norm",               Kind::Norm),
    ("encoder.layers.{i}.layer_norm1",        "layers.{i}.norm1",       Kind::Norm),
    ("encoder.layers.{i}.self_attn.q_proj",   "layers.{i}.attn.query",  Kind::Linear),
    ("encoder.layers.{i}.self_attn.k_proj",   "layers.{i}.attn.key",    Kind::Linear),
    ("encoder.layers.{i}.self_attn.v_proj",   "layers.{i}.attn.value",  Kind::Linear),
    ("encoder.layers.{i}.self_attn.out_proj", "layers.{i}.attn.output", Kind::Linear),
    ("encoder.layers.{i}.layer_norm2",        "layers.{i}.norm2",       Kind::Norm),
    ("encoder.layers.{i}.mlp.fc1",            "layers.{i}.mlp.fc1",     Kind::Linear),
    ("encoder.layers.{i}.mlp.fc2",            "layers.{i}.mlp.fc2",     Kind::Linear),
    ("post_layernorm",                        "post_norm",              Kind::Norm),
    ("visual_projection",                     "projection",             Kind::PlainLinear),
    ("classifier",                            "head",                   Kind::Linear),
];

#[rustfmt::skip]
const DINOV2: &[Row] = &[
    ("embeddings.cls_token",                        "cls_token",              Kind::Tensor),
    ("embeddings.position_embeddings",              "pos_embed",              Kind::Tensor),
    ("embeddings.patch_embeddings.projection",      "patch_embed",            Kind::Conv),
    ("encoder.layer.{i}.norm1",                     "layers.{i}.norm1",       Kind::Norm),
    ("encoder.layer.{i}.attention.attention.query", "layers.{i}.attn.query",  Kind::Linear),
    ("encoder.layer.{i}.attention.attention.key",   "layers.{i}.attn.key",    Kind::Linear),
    ("encoder.layer.{i}.attention.attention.value", "layers.{i}.attn.value",  Kind::Linear),
    ("encoder.layer.{i}.attention.output.dense",    "layers.{i}.attn.output", Kind::Linear),
    ("encoder.layer.{i}.layer_scale1.lambda1",      "layers.{i}.ls1",         Kind::Tensor),
    ("encoder.layer.{i}.norm2",                     "layers.{i}.norm2",       Kind::Norm),
    ("encoder.layer.{i}.mlp.fc1",                   "layers.{i}.mlp.fc1",     Kind::Linear),
    ("encoder.layer.{i}.mlp.fc2",                   "layers.{i}.mlp.fc2",     Kind::Linear),
    ("encoder.layer.{i}.layer_scale2.lambda1",      "layers.{i}.ls2",         Kind::Tensor),
    ("layernorm",                                   "norm",                   Kind::Norm),
    ("classifier",                                  "head",                   Kind::Linear),
];

#[rustfmt::skip]
const TIMM: &[Row] = &[
    ("cls_token",            "cls_token",              Kind::Tensor),
    ("pos_embed",            "pos_embed",              Kind::Tensor),
    ("patch_embed.proj",     "patch_embed",            Kind::Conv),
    ("blocks.{i}.norm1",     "layers.{i}.norm1",       Kind::Norm),
    ("blocks.{i}.attn.qkv",  "layers.{i}.attn",        Kind::FusedQkv),
    ("blocks.{i}.attn.proj", "layers.{i}.attn.output", Kind::Linear),
    ("blocks.{i}.ls1.gamma", "layers.{i}.ls1",         Kind::Tensor),
    ("blocks.{i}.norm2",     "layers.{i}.norm2",       Kind::Norm),
    ("blocks.{i}.mlp.fc1",   "layers.{i}.mlp.fc1",     Kind::Linear),
    ("blocks.{i}.mlp.fc2",   "layers.{i}.mlp.fc2",     Kind::Linear),
    ("blocks.{i}.ls2.gamma", "layers.{i}.ls2",         Kind::Tensor),
    ("norm",                 "norm",                   Kind::Norm),
    ("head",                 "head",                   Kind::Linear),
];

/// The family's table, optional key prefixes, and keys skipped by pattern.
pub fn key_table(family: Family) -> KeyTable<'static> {
    match family {
        Family::HfVit => KeyTable {
            rows: HF_VIT,
            prefixes: &["vit."],
            ignored: &[r"embeddings\.mask_token"],
        },
        Family::Clip => KeyTable {
            rows: CLIP,
            prefixes: &["vision_model."],
            ignored: &[
                r"text_model\..*",
                r"text_projection\..*",
                r"logit_scale",
                r".*position_ids",
            ],
        },
        Family::Dinov2 => KeyTable {
            rows: DINOV2,
            prefixes: &["dinov2."],
            ignored: &[r"embeddings\.mask_token"],
        },
        Family::Timm => KeyTable {
            rows: TIMM,
            prefixes: &[],
            ignored: &[],
        },
    }
}

/// Adjust a config to what a checkpoint actually contains (pooler, head, projection), which
/// `config.json` alone does not always say. Reads shapes from the header only.
pub fn fit_config_to_checkpoint(mut config: VitConfig, ckpt: &Checkpoint) -> Result<VitConfig> {
    let has = |k: &str| ckpt.contains(k);
    let rows = |k: &str| -> Result<Option<usize>> {
        Ok(match has(k) {
            true => ckpt.info(k)?.shape.first().copied(),
            false => None,
        })
    };
    match config.family {
        Family::HfVit => {
            config.hf_pooler = has("pooler.dense.weight") || has("vit.pooler.dense.weight");
            config.num_labels = rows("classifier.weight")?;
        }
        Family::Clip => {
            config.projection_dim = rows("visual_projection.weight")?;
            config.num_labels = rows("classifier.weight")?;
        }
        Family::Timm => {
            config.num_labels = rows("head.weight")?;
            config.layer_scale = has("blocks.0.ls1.gamma");
        }
        Family::Dinov2 => config.num_labels = rows("classifier.weight")?,
    }
    Ok(config)
}

/// The sizes of `config` against the tensors of `ckpt`, from the headers alone: run before a
/// model is built from the config, so that a `config.json` cannot make the loader allocate
/// more than the checkpoint holds.
///
/// - the layers in the file (`encoder.layer.{i}.*`, `blocks.{i}.*`, ...) must be exactly
///   `0..num_hidden_layers`;
/// - the patch embedding `[D, C, P, P]` gives `hidden_size`, `num_channels` and `patch_size`;
/// - the first MLP (`[I, D]`) gives `intermediate_size`;
/// - the position embeddings hold `1 + (image_size / patch_size)^2` rows, the class token `D`
///   values.
///
/// Errors name the config field, its value, the checkpoint key and its shape.
pub fn check_config_against_checkpoint(
    config: &VitConfig,
    config_path: &Path,
    ckpt: &Checkpoint,
) -> Result<()> {
    let table = key_table(config.family);
    let fail = |message: String| Err(VitError::from(LoadError::config(config_path, message)));
    let file = ckpt.path().display();

    // Layers: the indices of the table's per-layer keys.
    let stem = table
        .rows
        .iter()
        .find_map(|(key, _, _)| key.split_once("{i}").map(|(stem, _)| stem))
        .expect("every ViT table has per-layer rows");
    let mut layers = BTreeSet::new();
    for key in ckpt.keys() {
        let stripped = table
            .prefixes
            .iter()
            .find_map(|p| key.strip_prefix(p))
            .unwrap_or(&key);
        if let Some(rest) = stripped.strip_prefix(stem) {
            if let Some((index, _)) = rest.split_once('.') {
                if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
                    layers.insert(index.parse::<usize>().unwrap_or(usize::MAX));
                }
            }
        }
    }
    let n = config.num_hidden_layers;
    match (layers.len(), layers.last()) {
        (0, _) => {
            return fail(format!(
                "`num_hidden_layers` is {n}, but {file} holds no layer (no `{stem}N.*` key)"
            ))
        }
        (count, Some(&last)) if count != n || last != n - 1 => {
            return fail(format!(
                "`num_hidden_layers` is {n}, but {file} holds {count} layer(s) (`{stem}N.*` with N in {})",
                summarize(&layers)
            ))
        }
        _ => {}
    }

    // Widths, from the tensors that carry them.
    let info = |param: &str| -> Result<(String, TensorInfo)> {
        let key = table
            .checkpoint_key(param)?
            .expect("the table feeds every parameter");
        let candidates =
            std::iter::once(key.clone()).chain(table.prefixes.iter().map(|p| format!("{p}{key}")));
        for k in candidates {
            if ckpt.contains(&k) {
                return Ok((k.clone(), ckpt.info(&k)?));
            }
        }
        Err(LoadError::config(
            config_path,
            format!(
                "{file} has no tensor `{key}` (model parameter `{param}`), which the config's sizes are checked against"
            ),
        )
        .into())
    };
    let numel = |i: &TensorInfo| i.numel().unwrap_or(usize::MAX);
    let (d, c, p) = (config.hidden_size, config.num_channels, config.patch_size);

    let (key, patch) = info("patch_embed.weight")?;
    let s = &patch.shape;
    if s.len() != 4 || s[2] != s[3] {
        return fail(format!(
            "the patch embedding `{key}` in {file} has shape {s:?}, not [hidden_size, num_channels, patch_size, patch_size]"
        ));
    }
    for (field, value, stored) in [
        ("hidden_size", d, s[0]),
        ("num_channels", c, s[1]),
        ("patch_size", p, s[2]),
    ] {
        if value != stored {
            return fail(format!(
                "`{field}` is {value}, but the patch embedding `{key}` in {file} has shape {s:?} ({field} {stored})"
            ));
        }
    }

    let (key, cls) = info("cls_token")?;
    if numel(&cls) != d {
        return fail(format!(
            "`hidden_size` is {d}, but the class token `{key}` in {file} has shape {:?}",
            cls.shape
        ));
    }

    let (key, fc1) = info("layers.0.mlp.fc1.base.weight")?;
    if fc1.shape.len() != 2 || fc1.shape[1] != d || fc1.shape[0] != config.intermediate_size {
        return fail(format!(
            "`intermediate_size` is {} (hidden_size {d}), but the first MLP layer `{key}` in {file} has shape {:?} ([intermediate_size, hidden_size])",
            config.intermediate_size, fc1.shape
        ));
    }

    let (key, pos) = info("pos_embed")?;
    let [rows, cols] = config.grid();
    let tokens = 1 + rows * cols;
    if numel(&pos) != tokens * d {
        return fail(format!(
            "`image_size` {:?} with patch_size {p} needs {tokens} position embeddings of width {d}, but `{key}` in {file} has shape {:?}",
            config.image_size, pos.shape
        ));
    }
    Ok(())
}

/// `0..=5`, or `0..=3, 7, 12` for a set with gaps (at most a few items).
fn summarize(set: &BTreeSet<usize>) -> String {
    let first = *set.first().expect("non-empty");
    let last = *set.last().expect("non-empty");
    if last - first + 1 == set.len() {
        return format!("{first}..={last}");
    }
    let items: Vec<String> = set.iter().take(8).map(usize::to_string).collect();
    let more = if set.len() > 8 { ", ..." } else { "" };
    format!("{{{}{more}}}", items.join(", "))
}

/// Load `ckpt` into `model` (built from a config fitted to the checkpoint) through the
/// family's table. Every model parameter must be provided exactly once with a compatible
/// shape, and every checkpoint key must be used (or explicitly ignored); errors list all the
/// keys at fault with the parameters they would feed. A weight with NaN or infinite values is
/// an error naming its checkpoint key ([`VitError::NonFinite`]).
pub fn load_weights<B: Backend>(
    model: VisionTransformer<B>,
    ckpt: &Checkpoint,
) -> Result<VisionTransformer<B>> {
    let table = key_table(model.config.family);
    let model = table.load(model, ckpt)?;
    if let Some((param, count, numel)) = coeff_tuning::params::first_non_finite(&model) {
        let key = table
            .checkpoint_key(&param)?
            .and_then(|k| {
                std::iter::once(k.clone())
                    .chain(table.prefixes.iter().map(|p| format!("{p}{k}")))
                    .find(|k| ckpt.contains(k))
            })
            .unwrap_or_else(|| param.clone());
        let path = ckpt
            .file_of(&key)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| ckpt.path().to_path_buf());
        return Err(VitError::NonFinite {
            path,
            key,
            param,
            count,
            numel,
        });
    }
    Ok(model)
}

/// Load a checkpoint directory: `config.json` + the weights (`model.safetensors`, a sharded
/// `model.safetensors.index.json`, their `fp16` variants, or the older
/// `pytorch_model.safetensors` / `open_clip_model.safetensors`), Hugging Face layout or a timm
/// checkpoint with its `config.json`.
///
/// The config is checked against the file's tensor shapes before the model is built
/// ([`check_config_against_checkpoint`]) and the loaded weights must be finite
/// ([`load_weights`]).
pub fn load_pretrained<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<VisionTransformer<B>> {
    let dir = dir.as_ref();
    let config_path = dir.join("config.json");
    let config = VitConfig::from_file(&config_path)?;
    let weights = find_weights(
        dir,
        &["pytorch_model.safetensors", "open_clip_model.safetensors"],
    )?;
    let ckpt = Checkpoint::open(&weights)?;
    let config = fit_config_to_checkpoint(config, &ckpt)?;
    // `fit_config_to_checkpoint` took the head and projection sizes from the file: check them
    // against the limits too, then every other size against the file, before allocating.
    config.check().map_err(|e| match e {
        VitError::Load(LoadError::Config { message, .. }) => {
            LoadError::config(&weights, message).into()
        }
        e => e,
    })?;
    check_config_against_checkpoint(&config, &config_path, &ckpt)?;
    load_weights(config.init(device), &ckpt)
}
