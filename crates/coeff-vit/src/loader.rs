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

use std::path::Path;

use burn::tensor::backend::Backend;
pub use coeff_tuning::checkpoint::Checkpoint;
use coeff_tuning::checkpoint::{find_weights, KeyTable, Kind, Row};

use crate::config::{Family, VitConfig};
use crate::error::Result;
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
        Family::Clip => config.projection_dim = rows("visual_projection.weight")?,
        Family::Timm => {
            config.num_labels = rows("head.weight")?;
            config.layer_scale = has("blocks.0.ls1.gamma");
        }
        Family::Dinov2 => {}
    }
    Ok(config)
}

/// Load `ckpt` into `model` (built from a config fitted to the checkpoint) through the
/// family's table. Every model parameter must be provided exactly once with a compatible
/// shape, and every checkpoint key must be used (or explicitly ignored); errors list all the
/// keys at fault with the parameters they would feed.
pub fn load_weights<B: Backend>(
    model: VisionTransformer<B>,
    ckpt: &Checkpoint,
) -> Result<VisionTransformer<B>> {
    let table = key_table(model.config.family);
    Ok(table.load(model, ckpt)?)
}

/// Load a checkpoint directory: `config.json` + the weights (`model.safetensors`, a sharded
/// `model.safetensors.index.json`, their `fp16` variants, or the older
/// `pytorch_model.safetensors` / `open_clip_model.safetensors`), Hugging Face layout or a timm
/// checkpoint with its `config.json`.
pub fn load_pretrained<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<VisionTransformer<B>> {
    let dir = dir.as_ref();
    let config = VitConfig::from_file(dir.join("config.json"))?;
    let weights = find_weights(
        dir,
        &["pytorch_model.safetensors", "open_clip_model.safetensors"],
    )?;
    let ckpt = Checkpoint::open(&weights)?;
    let config = fit_config_to_checkpoint(config, &ckpt)?;
    load_weights(config.init(device), &ckpt)
}
