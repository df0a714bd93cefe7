//! Loading checkpoints in each reference library's own key names.
//!
//! The key tables below are the whole mapping; read them top to bottom. `{i}` is a layer
//! index. `Linear` maps `<key>.weight [out, in]` (transposed to Burn's `[in, out]`) and
//! `<key>.bias`; `Norm` maps `<key>.weight -> gamma`, `<key>.bias -> beta`.
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
//! | CLIP vision (`vision_model.` prefix)               | ours                                 |
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
//! Keys that are not weights of the vision model are skipped by name (listed in `ignored`):
//! CLIP text tower and `logit_scale`, `position_ids` buffers, DINOv2/ViT `mask_token`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use coeff_tuning::io::transpose;
use coeff_tuning::peft::params;
use regex::Regex;
use safetensors::tensor::Dtype;

use crate::config::{Family, VitConfig};
use crate::error::{Result, VitError};
use crate::model::VisionTransformer;

/// How one table row maps a checkpoint entry.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `.weight [out, in]` -> `.base.weight [in, out]`, `.bias` -> `.base.bias`.
    Linear,
    /// Like `Linear` but onto a plain Burn `Linear` (`.weight`, `.bias`).
    PlainLinear,
    /// `.weight` -> `.gamma`, `.bias` -> `.beta`.
    Norm,
    /// `.weight`, `.bias` unchanged (convolution).
    Conv,
    /// One tensor, reshaped to the model's shape (same number of elements).
    Tensor,
    /// timm's fused qkv: `.weight [3D, D]`, `.bias [3D]` -> three `Linear`s.
    FusedQkv,
}

/// (checkpoint key without `.weight`/`.bias`, our module path, kind)
type Row = (&'static str, &'static str, Kind);

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
    ("vision_model.embeddings.class_embedding",            "cls_token",              Kind::Tensor),
    ("vision_model.embeddings.patch_embedding",            "patch_embed",            Kind::Conv),
    ("vision_model.embeddings.position_embedding.weight",  "pos_embed",              Kind::Tensor),
    ("vision_model.pre_layrnorm",                          "pre_norm",               Kind::Norm),
    ("vision_model.encoder.layers.{i}.layer_norm1",        "layers.{i}.norm1",       Kind::Norm),
    ("vision_model.encoder.layers.{i}.self_attn.q_proj",   "layers.{i}.attn.query",  Kind::Linear),
    ("vision_model.encoder.layers.{i}.self_attn.k_proj",   "layers.{i}.attn.key",    Kind::Linear),
    ("vision_model.encoder.layers.{i}.self_attn.v_proj",   "layers.{i}.attn.value",  Kind::Linear),
    ("vision_model.encoder.layers.{i}.self_attn.out_proj", "layers.{i}.attn.output", Kind::Linear),
    ("vision_model.encoder.layers.{i}.layer_norm2",        "layers.{i}.norm2",       Kind::Norm),
    ("vision_model.encoder.layers.{i}.mlp.fc1",            "layers.{i}.mlp.fc1",     Kind::Linear),
    ("vision_model.encoder.layers.{i}.mlp.fc2",            "layers.{i}.mlp.fc2",     Kind::Linear),
    ("vision_model.post_layernorm",                        "post_norm",              Kind::Norm),
    ("visual_projection",                                  "projection",             Kind::PlainLinear),
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

/// Per family: the table, optional key prefixes to strip, and keys skipped by pattern.
fn family_spec(
    family: Family,
) -> (
    &'static [Row],
    &'static [&'static str],
    &'static [&'static str],
) {
    match family {
        Family::HfVit => (HF_VIT, &["vit."], &[r"(vit\.)?embeddings\.mask_token"]),
        Family::Clip => (
            CLIP,
            &[],
            &[
                r"text_model\..*",
                r"text_projection\..*",
                r"logit_scale",
                r".*position_ids",
            ],
        ),
        Family::Dinov2 => (
            DINOV2,
            &["dinov2."],
            &[r"(dinov2\.)?embeddings\.mask_token"],
        ),
        Family::Timm => (TIMM, &[], &[]),
    }
}

/// A checkpoint opened for reading.
pub struct Checkpoint {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Checkpoint {
    /// Read a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| VitError::Io {
            path: path.clone(),
            source,
        })?;
        let ckpt = Self { path, bytes };
        ckpt.tensors()?;
        Ok(ckpt)
    }

    /// The parsed file.
    pub fn tensors(&self) -> Result<safetensors::SafeTensors<'_>> {
        safetensors::SafeTensors::deserialize(&self.bytes).map_err(|source| VitError::Safetensors {
            path: self.path.clone(),
            source,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All key names.
    pub fn keys(&self) -> Vec<String> {
        self.tensors()
            .map(|t| t.names().into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// An integer tensor (I64 or I32) as i64 values.
    pub fn read_i64(&self, key: &str) -> Result<Vec<i64>> {
        let st = self.tensors()?;
        let view = st.tensor(key).map_err(|_| VitError::MissingKeys {
            path: self.path.clone(),
            keys: vec![key.to_string()],
        })?;
        let b = view.data();
        match view.dtype() {
            Dtype::I64 => Ok(b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()),
            Dtype::I32 => Ok(b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect()),
            other => Err(VitError::Dtype {
                path: self.path.clone(),
                key: key.to_string(),
                dtype: format!("{other:?}"),
            }),
        }
    }

    /// One tensor as f32 with its shape.
    pub fn read_f32(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let st = self.tensors()?;
        let view = st.tensor(key).map_err(|_| VitError::MissingKeys {
            path: self.path.clone(),
            keys: vec![key.to_string()],
        })?;
        let data = coeff_tuning::io::view_to_f32(&view).ok_or_else(|| VitError::Dtype {
            path: self.path.clone(),
            key: key.to_string(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        Ok((view.shape().to_vec(), data))
    }
}

/// Adjust a config to what a checkpoint actually contains (pooler, head, projection), which
/// `config.json` alone does not always say.
pub fn fit_config_to_checkpoint(mut config: VitConfig, ckpt: &Checkpoint) -> Result<VitConfig> {
    let keys: BTreeSet<String> = ckpt.keys().into_iter().collect();
    let has = |k: &str| keys.contains(k);
    match config.family {
        Family::HfVit => {
            config.hf_pooler = has("pooler.dense.weight") || has("vit.pooler.dense.weight");
            config.num_labels = if has("classifier.weight") {
                Some(ckpt.read_f32("classifier.weight")?.0[0])
            } else {
                None
            };
        }
        Family::Clip => {
            config.projection_dim = if has("visual_projection.weight") {
                Some(ckpt.read_f32("visual_projection.weight")?.0[0])
            } else {
                None
            };
        }
        Family::Timm => {
            config.num_labels = if has("head.weight") {
                Some(ckpt.read_f32("head.weight")?.0[0])
            } else {
                None
            };
            config.layer_scale = has("blocks.0.ls1.gamma");
        }
        Family::Dinov2 => {}
    }
    Ok(config)
}

/// A checkpoint key's target: our parameter path and how to take its value.
#[derive(Debug, Clone)]
enum Target {
    /// Copy (reshape to the model's shape).
    Same(String),
    /// Transpose a `[out, in]` matrix.
    Transpose(String),
    /// Rows `part*D..(part+1)*D` of a fused qkv weight, transposed; or a slice of its bias.
    QkvPart(String, usize, bool),
}

/// Map every checkpoint key to its targets via the family's table.
fn plan(config: &VitConfig, ckpt: &Checkpoint) -> Result<BTreeMap<String, Vec<Target>>> {
    let (table, prefixes, ignored) = family_spec(config.family);
    let ignored: Vec<Regex> = ignored
        .iter()
        .map(|p| Regex::new(&format!("^{p}$")).expect("static pattern"))
        .collect();
    let rows: Vec<(Regex, &Row)> = table
        .iter()
        .map(|row| {
            let re = regex::escape(row.0).replace(r"\{i\}", r"(\d+)");
            (
                Regex::new(&format!(r"^{re}(\.weight|\.bias)?$")).expect("static pattern"),
                row,
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    let mut unexpected = Vec::new();
    for key in ckpt.keys() {
        if ignored.iter().any(|r| r.is_match(&key)) {
            continue;
        }
        let stripped = prefixes
            .iter()
            .find_map(|p| key.strip_prefix(p))
            .unwrap_or(&key);
        let hit = rows
            .iter()
            .find_map(|(re, row)| re.captures(stripped).map(|c| (c, *row)));
        let Some((caps, (_, ours, kind))) = hit else {
            unexpected.push(key.clone());
            continue;
        };
        let ours = match caps
            .get(1)
            .filter(|m| m.as_str().chars().all(|c| c.is_ascii_digit()))
        {
            Some(i) => ours.replace("{i}", i.as_str()),
            None => ours.to_string(),
        };
        let suffix = caps
            .iter()
            .last()
            .flatten()
            .map(|m| m.as_str())
            .unwrap_or("");
        let is_weight = suffix == ".weight";
        let is_bias = suffix == ".bias";
        let targets = match kind {
            Kind::Tensor if suffix.is_empty() || is_weight => vec![Target::Same(ours)],
            Kind::Linear if is_weight => vec![Target::Transpose(format!("{ours}.base.weight"))],
            Kind::Linear if is_bias => vec![Target::Same(format!("{ours}.base.bias"))],
            Kind::PlainLinear if is_weight => vec![Target::Transpose(format!("{ours}.weight"))],
            Kind::PlainLinear if is_bias => vec![Target::Same(format!("{ours}.bias"))],
            Kind::Norm if is_weight => vec![Target::Same(format!("{ours}.gamma"))],
            Kind::Norm if is_bias => vec![Target::Same(format!("{ours}.beta"))],
            Kind::Conv if is_weight || is_bias => vec![Target::Same(format!("{ours}{suffix}"))],
            Kind::FusedQkv if is_weight || is_bias => ["query", "key", "value"]
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let leaf = if is_weight {
                        "base.weight"
                    } else {
                        "base.bias"
                    };
                    Target::QkvPart(format!("{ours}.{name}.{leaf}"), k, is_weight)
                })
                .collect(),
            _ => {
                unexpected.push(key.clone());
                continue;
            }
        };
        out.insert(key, targets);
    }
    if !unexpected.is_empty() {
        return Err(VitError::UnexpectedKeys {
            path: ckpt.path.clone(),
            keys: unexpected,
        });
    }
    Ok(out)
}

/// Load `ckpt` into `model` (built from a config fitted to the checkpoint). Every model
/// parameter must be provided exactly once with a compatible shape, and every checkpoint key
/// must be used (or explicitly ignored); errors name the keys.
pub fn load_weights<B: Backend>(
    model: VisionTransformer<B>,
    ckpt: &Checkpoint,
) -> Result<VisionTransformer<B>> {
    let plan = plan(&model.config, ckpt)?;
    let expected = params::all_param_shapes(&model);
    let mut values: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for (key, targets) in &plan {
        let (shape, data) = ckpt.read_f32(key)?;
        for target in targets {
            let (path, value, shape) = match target {
                Target::Same(p) => (p, data.clone(), shape.clone()),
                Target::Transpose(p) => {
                    if shape.len() != 2 {
                        return Err(shape_err(ckpt, key, &shape, expected.get(p)));
                    }
                    let (rows, cols) = (shape[0], shape[1]);
                    (p, transpose(&data, rows, cols), vec![cols, rows])
                }
                Target::QkvPart(p, part, is_weight) => {
                    let d3 = shape[0];
                    if d3 % 3 != 0 {
                        return Err(shape_err(ckpt, key, &shape, expected.get(p)));
                    }
                    let d = d3 / 3;
                    if *is_weight {
                        let cols = shape[1];
                        let rows = &data[part * d * cols..(part + 1) * d * cols];
                        (p, transpose(rows, d, cols), vec![cols, d])
                    } else {
                        (p, data[part * d..(part + 1) * d].to_vec(), vec![d])
                    }
                }
            };
            let Some(want) = expected.get(path) else {
                return Err(VitError::UnexpectedKeys {
                    path: ckpt.path.clone(),
                    keys: vec![format!(
                        "{key} (-> {path}, which this config does not have)"
                    )],
                });
            };
            // Same element count is enough for reshapes like CLIP's [D] -> [1, 1, D]; anything
            // else must match exactly.
            let same_numel = want.iter().product::<usize>() == shape.iter().product::<usize>();
            let squeezable = squeeze(want) == squeeze(&shape);
            if !(same_numel && squeezable) {
                return Err(shape_err(ckpt, key, &shape, Some(want)));
            }
            values.insert(path.clone(), (want.clone(), value));
        }
    }
    let missing: Vec<String> = expected
        .keys()
        .filter(|p| !values.contains_key(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let (table, _, _) = family_spec(model.config.family);
        return Err(VitError::MissingKeys {
            path: ckpt.path.clone(),
            keys: missing
                .iter()
                .map(|p| match checkpoint_key(table, p) {
                    Some(k) => format!("`{k}` (model parameter `{p}`)"),
                    None => format!("(model parameter `{p}`)"),
                })
                .collect(),
        });
    }
    Ok(params::replace_params(model, &values))
}

/// The checkpoint key (without optional prefix) that feeds our parameter `path`.
fn checkpoint_key(table: &[Row], path: &str) -> Option<String> {
    for (ckpt, ours, kind) in table {
        let re = regex::escape(ours).replace(r"\{i\}", r"(\d+)");
        let Some(c) = Regex::new(&format!("^{re}(.*)$")).ok()?.captures(path) else {
            continue;
        };
        let rest = c.iter().last().flatten().map(|m| m.as_str()).unwrap_or("");
        let suffix = match (kind, rest) {
            (Kind::Tensor, "") => "",
            (Kind::Linear, ".base.weight") | (Kind::PlainLinear | Kind::Conv, ".weight") => {
                ".weight"
            }
            (Kind::Linear, ".base.bias") | (Kind::PlainLinear | Kind::Conv, ".bias") => ".bias",
            (Kind::Norm, ".gamma") => ".weight",
            (Kind::Norm, ".beta") => ".bias",
            (Kind::FusedQkv, r) if r.ends_with(".base.weight") => ".weight",
            (Kind::FusedQkv, r) if r.ends_with(".base.bias") => ".bias",
            _ => continue,
        };
        let key = match c
            .get(1)
            .filter(|m| m.as_str().chars().all(|ch| ch.is_ascii_digit()))
        {
            Some(i) if ckpt.contains("{i}") => ckpt.replace("{i}", i.as_str()),
            _ => ckpt.to_string(),
        };
        return Some(format!("{key}{suffix}"));
    }
    None
}

fn squeeze(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

fn shape_err(
    ckpt: &Checkpoint,
    key: &str,
    found: &[usize],
    expected: Option<&Vec<usize>>,
) -> VitError {
    VitError::Shape {
        path: ckpt.path.clone(),
        key: key.to_string(),
        found: found.to_vec(),
        expected: expected.cloned().unwrap_or_default(),
    }
}

/// Load a checkpoint directory: `config.json` + `model.safetensors` (Hugging Face layout, or
/// a timm checkpoint with its `config.json`).
pub fn load_pretrained<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<VisionTransformer<B>> {
    let dir = dir.as_ref();
    let config = VitConfig::from_file(dir.join("config.json"))?;
    let weights = [
        "model.safetensors",
        "pytorch_model.safetensors",
        "open_clip_model.safetensors",
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.exists())
    .ok_or_else(|| VitError::Io {
        path: dir.join("model.safetensors"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model.safetensors in the checkpoint directory",
        ),
    })?;
    let ckpt = Checkpoint::open(&weights)?;
    let config = fit_config_to_checkpoint(config, &ckpt)?;
    load_weights(config.init(device), &ckpt)
}
