//! transformers checkpoint keys -> our module paths. The tables are the whole mapping; read
//! them top to bottom (`{i}` is a layer index; kinds as in `coeff_tuning::checkpoint`).
//!
//! | BERT (`bert.` prefix optional) | ours |
//! |---|---|
//! | `embeddings.{word,position,token_type}_embeddings` | `{word,position,token_type}_embeddings` |
//! | `embeddings.LayerNorm` (`weight`/`bias`, or TF-era `gamma`/`beta`) | `embeddings_norm` |
//! | `encoder.layer.{i}.attention.self.{query,key,value}` | `layers.{i}.attn.{query,key,value}` |
//! | `encoder.layer.{i}.attention.output.dense` / `.LayerNorm` | `layers.{i}.attn.output` / `layers.{i}.norm1` |
//! | `encoder.layer.{i}.intermediate.dense` | `layers.{i}.mlp.fc1` |
//! | `encoder.layer.{i}.output.dense` / `.LayerNorm` | `layers.{i}.mlp.fc2` / `layers.{i}.norm2` |
//! | `pooler.dense` | `pooler` |
//!
//! | CLIP text (`text_model.` prefix optional) | ours |
//! |---|---|
//! | `embeddings.{token,position}_embedding` | `{token,position}_embedding` |
//! | `encoder.layers.{i}.layer_norm1` / `layer_norm2` | `layers.{i}.norm1` / `norm2` |
//! | `encoder.layers.{i}.self_attn.{q,k,v,out}_proj` | `layers.{i}.attn.{query,key,value,output}` |
//! | `encoder.layers.{i}.mlp.fc1` / `fc2` | `layers.{i}.mlp.fc1` / `fc2` |
//! | `final_layer_norm` / `text_projection` | `final_layer_norm` / `text_projection` |
//!
//! | BART (`model.` prefix optional) | ours |
//! |---|---|
//! | `shared` | `shared` |
//! | `{encoder,decoder}.embed_positions` / `.layernorm_embedding` | same |
//! | `{encoder,decoder}.layers.{i}.self_attn.{q,k,v,out}_proj` | `….layers.{i}.attn.{query,key,value,output}` |
//! | `{encoder,decoder}.layers.{i}.self_attn_layer_norm` | `….layers.{i}.norm1` |
//! | `decoder.layers.{i}.encoder_attn.{q,k,v,out}_proj` / `encoder_attn_layer_norm` | `decoder.layers.{i}.cross_attn.*` / `cross_norm` |
//! | `{encoder,decoder}.layers.{i}.fc1` / `fc2` / `final_layer_norm` | `….layers.{i}.mlp.fc1` / `mlp.fc2` / `norm2` |
//! | `final_logits_bias` `[1, V]` / `lm_head` (untied only) | `final_logits_bias` `[V]` / `lm_head` |
//!
//! Skipped by name: `position_ids` buffers, BERT pre-training heads (`cls.*`), the other tower
//! of a full CLIP file, BART's copies of the tied embeddings (`{encoder,decoder}.embed_tokens`,
//! tied `lm_head`).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use coeff_tuning::checkpoint::{find_weights, Checkpoint, KeyTable, Kind, Row};
use coeff_tuning::LoadError;

use crate::bart::Bart;
use crate::bert::Bert;
use crate::clip::{Clip, ClipTextModel};
use crate::config::{BartConfig, BertConfig, ClipTextConfig};
use crate::error::{Result, VlError};

use Kind::{Embedding, Linear, Norm, PlainLinear, Tensor};

#[rustfmt::skip]
const BERT: &[Row] = &[
    ("embeddings.word_embeddings",                   "word_embeddings",        Embedding),
    ("embeddings.position_embeddings",               "position_embeddings",    Embedding),
    ("embeddings.token_type_embeddings",             "token_type_embeddings",  Embedding),
    ("embeddings.LayerNorm.gamma",                   "embeddings_norm.gamma",  Tensor),
    ("embeddings.LayerNorm.beta",                    "embeddings_norm.beta",   Tensor),
    ("embeddings.LayerNorm",                         "embeddings_norm",        Norm),
    ("encoder.layer.{i}.attention.self.query",       "layers.{i}.attn.query",  Linear),
    ("encoder.layer.{i}.attention.self.key",         "layers.{i}.attn.key",    Linear),
    ("encoder.layer.{i}.attention.self.value",       "layers.{i}.attn.value",  Linear),
    ("encoder.layer.{i}.attention.output.dense",     "layers.{i}.attn.output", Linear),
    ("encoder.layer.{i}.attention.output.LayerNorm.gamma", "layers.{i}.norm1.gamma", Tensor),
    ("encoder.layer.{i}.attention.output.LayerNorm.beta",  "layers.{i}.norm1.beta",  Tensor),
    ("encoder.layer.{i}.attention.output.LayerNorm", "layers.{i}.norm1",       Norm),
    ("encoder.layer.{i}.intermediate.dense",         "layers.{i}.mlp.fc1",     Linear),
    ("encoder.layer.{i}.output.dense",               "layers.{i}.mlp.fc2",     Linear),
    ("encoder.layer.{i}.output.LayerNorm.gamma",     "layers.{i}.norm2.gamma", Tensor),
    ("encoder.layer.{i}.output.LayerNorm.beta",      "layers.{i}.norm2.beta",  Tensor),
    ("encoder.layer.{i}.output.LayerNorm",           "layers.{i}.norm2",       Norm),
    ("pooler.dense",                                 "pooler",                 PlainLinear),
];

#[rustfmt::skip]
const CLIP_TEXT: &[Row] = &[
    ("embeddings.token_embedding",            "token_embedding",        Embedding),
    ("embeddings.position_embedding",         "position_embedding",     Embedding),
    ("encoder.layers.{i}.layer_norm1",        "layers.{i}.norm1",       Norm),
    ("encoder.layers.{i}.self_attn.q_proj",   "layers.{i}.attn.query",  Linear),
    ("encoder.layers.{i}.self_attn.k_proj",   "layers.{i}.attn.key",    Linear),
    ("encoder.layers.{i}.self_attn.v_proj",   "layers.{i}.attn.value",  Linear),
    ("encoder.layers.{i}.self_attn.out_proj", "layers.{i}.attn.output", Linear),
    ("encoder.layers.{i}.layer_norm2",        "layers.{i}.norm2",       Norm),
    ("encoder.layers.{i}.mlp.fc1",            "layers.{i}.mlp.fc1",     Linear),
    ("encoder.layers.{i}.mlp.fc2",            "layers.{i}.mlp.fc2",     Linear),
    ("final_layer_norm",                      "final_layer_norm",       Norm),
    ("text_projection",                       "text_projection",        PlainLinear),
];

/// Rows of one BART stack, `$s` = `encoder` or `decoder`.
macro_rules! bart_stack_rows {
    ($s:literal) => {
        [
            (
                concat!($s, ".embed_positions"),
                concat!($s, ".embed_positions"),
                Embedding,
            ),
            (
                concat!($s, ".layernorm_embedding"),
                concat!($s, ".layernorm_embedding"),
                Norm,
            ),
            (
                concat!($s, ".layers.{i}.self_attn.q_proj"),
                concat!($s, ".layers.{i}.attn.query"),
                Linear,
            ),
            (
                concat!($s, ".layers.{i}.self_attn.k_proj"),
                concat!($s, ".layers.{i}.attn.key"),
                Linear,
            ),
            (
                concat!($s, ".layers.{i}.self_attn.v_proj"),
                concat!($s, ".layers.{i}.attn.value"),
                Linear,
            ),
            (
                concat!($s, ".layers.{i}.self_attn.out_proj"),
                concat!($s, ".layers.{i}.attn.output"),
                Linear,
            ),
            (
                concat!($s, ".layers.{i}.self_attn_layer_norm"),
                concat!($s, ".layers.{i}.norm1"),
                Norm,
            ),
            (
                concat!($s, ".layers.{i}.fc1"),
                concat!($s, ".layers.{i}.mlp.fc1"),
                Linear,
            ),
            (
                concat!($s, ".layers.{i}.fc2"),
                concat!($s, ".layers.{i}.mlp.fc2"),
                Linear,
            ),
            (
                concat!($s, ".layers.{i}.final_layer_norm"),
                concat!($s, ".layers.{i}.norm2"),
                Norm,
            ),
        ]
    };
}

const fn bart_rows() -> [Row; 28] {
    let enc = bart_stack_rows!("encoder");
    let dec = bart_stack_rows!("decoder");
    #[rustfmt::skip]
    let rest: [Row; 8] = [
        ("shared",                                  "shared",                           Embedding),
        ("decoder.layers.{i}.encoder_attn.q_proj",  "decoder.layers.{i}.cross_attn.query",  Linear),
        ("decoder.layers.{i}.encoder_attn.k_proj",  "decoder.layers.{i}.cross_attn.key",    Linear),
        ("decoder.layers.{i}.encoder_attn.v_proj",  "decoder.layers.{i}.cross_attn.value",  Linear),
        ("decoder.layers.{i}.encoder_attn.out_proj", "decoder.layers.{i}.cross_attn.output", Linear),
        ("decoder.layers.{i}.encoder_attn_layer_norm", "decoder.layers.{i}.cross_norm",  Norm),
        ("final_logits_bias",                       "final_logits_bias",                Tensor),
        ("lm_head",                                 "lm_head",                          PlainLinear),
    ];
    let mut out = [rest[0]; 28];
    let mut i = 0;
    while i < 10 {
        out[i] = enc[i];
        out[10 + i] = dec[i];
        i += 1;
    }
    let mut j = 0;
    while j < 8 {
        out[20 + j] = rest[j];
        j += 1;
    }
    out
}

const BART: &[Row] = &bart_rows();

/// BERT's table (pre-training heads and buffers skipped).
pub fn bert_table() -> KeyTable<'static> {
    KeyTable {
        rows: BERT,
        prefixes: &["bert."],
        ignored: &[r".*position_ids", r"cls\..*"],
    }
}

/// The CLIP text tower's table (a full CLIP file's vision tower skipped).
pub fn clip_text_table() -> KeyTable<'static> {
    KeyTable {
        rows: CLIP_TEXT,
        prefixes: &["text_model."],
        ignored: &[
            r"vision_model\..*",
            r"visual_projection\..*",
            r"logit_scale",
            r".*position_ids",
        ],
    }
}

/// BART's table; with tied embeddings the file's copies of `shared` are skipped.
pub fn bart_table(tied: bool) -> KeyTable<'static> {
    KeyTable {
        rows: BART,
        prefixes: &["model."],
        ignored: if tied {
            &[
                r"(model\.)?(encoder|decoder)\.embed_tokens\.weight",
                r"lm_head\.weight",
            ]
        } else {
            &[r"(model\.)?(encoder|decoder)\.embed_tokens\.weight"]
        },
    }
}

/// A checkpoint directory's `config.json` path and opened weights.
fn open(dir: &Path) -> Result<(PathBuf, Checkpoint)> {
    let weights = find_weights(dir, &["pytorch_model.safetensors"])?;
    Ok((dir.join("config.json"), Checkpoint::open(&weights)?))
}

/// Error unless the tensor `key` (with or without `prefix`) has `expected` shape: sizes of
/// the config checked against the file before the model is allocated.
fn expect_shape(
    ckpt: &Checkpoint,
    config: &Path,
    prefixes: &[&str],
    key: &str,
    expected: &[usize],
    fields: &str,
) -> Result<()> {
    let found = std::iter::once(key.to_string())
        .chain(prefixes.iter().map(|p| format!("{p}{key}")))
        .find(|k| ckpt.contains(k));
    let Some(k) = found else {
        return Err(LoadError::config(
            config,
            format!(
                "{} has no tensor `{key}` to check {fields} against",
                ckpt.path().display()
            ),
        )
        .into());
    };
    let shape = ckpt.info(&k)?.shape;
    if shape != expected {
        return Err(LoadError::config(
            config,
            format!(
                "{fields} give {expected:?} for `{k}`, but {} holds {shape:?}",
                ckpt.path().display()
            ),
        )
        .into());
    }
    Ok(())
}

/// Load through `table` and require finite weights.
fn load_checked<B: Backend, M: Module<B>>(
    model: M,
    table: &KeyTable,
    ckpt: &Checkpoint,
) -> Result<M> {
    let model = table.load(model, ckpt)?;
    if let Some((param, count, numel)) = coeff_tuning::params::first_non_finite(&model) {
        return Err(VlError::Input(format!(
            "{}: model parameter `{param}` has {count} non-finite value(s) out of {numel}",
            ckpt.path().display()
        )));
    }
    Ok(model)
}

/// Load a BERT checkpoint folder (`config.json` + `model.safetensors`, sharded or fp16
/// variants too). The pooler is built when the file has one.
pub fn load_bert<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<Bert<B>> {
    let (config_path, ckpt) = open(dir.as_ref())?;
    let config = BertConfig::from_file(&config_path)?;
    let table = bert_table();
    let (v, d, i) = (
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
    );
    expect_shape(
        &ckpt,
        &config_path,
        table.prefixes,
        "embeddings.word_embeddings.weight",
        &[v, d],
        "`vocab_size` and `hidden_size`",
    )?;
    expect_shape(
        &ckpt,
        &config_path,
        table.prefixes,
        "encoder.layer.0.intermediate.dense.weight",
        &[i, d],
        "`intermediate_size` and `hidden_size`",
    )?;
    let pooler = ckpt.contains("pooler.dense.weight") || ckpt.contains("bert.pooler.dense.weight");
    load_checked(config.init(pooler, device), &table, &ckpt)
}

/// Load a CLIP text tower: a `clip_text_model` folder (with or without projection) or the
/// text half of a full `clip` folder.
pub fn load_clip_text<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<ClipTextModel<B>> {
    let (config_path, ckpt) = open(dir.as_ref())?;
    let mut config = ClipTextConfig::from_file(&config_path)?;
    let table = clip_text_table();
    let (v, d) = (config.vocab_size, config.hidden_size);
    expect_shape(
        &ckpt,
        &config_path,
        table.prefixes,
        "embeddings.token_embedding.weight",
        &[v, d],
        "`vocab_size` and `hidden_size`",
    )?;
    config.projection_dim = match ckpt.contains("text_projection.weight") {
        true => Some(ckpt.info("text_projection.weight")?.shape[0]),
        false => None,
    };
    load_checked(config.init(device), &table, &ckpt)
}

/// Load a full `CLIPModel` folder: the text tower here, the vision tower through the ViT crate
/// (which reads the same files), `logit_scale`.
pub fn load_clip<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<Clip<B>> {
    let dir = dir.as_ref();
    let text = load_clip_text(dir, device)?;
    let vision = coeff_vit::load_pretrained(dir, device)?;
    let (_, ckpt) = open(dir)?;
    let (_, scale) = ckpt.read_f32("logit_scale")?;
    let scale = *scale.first().ok_or_else(|| {
        VlError::Input(format!("{}: `logit_scale` is empty", ckpt.path().display()))
    })?;
    Ok(Clip::new(text, vision, scale))
}

/// Load a `BartForConditionalGeneration` folder.
pub fn load_bart<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<Bart<B>> {
    let (config_path, ckpt) = open(dir.as_ref())?;
    let config = BartConfig::from_file(&config_path)?;
    let table = bart_table(config.tie_word_embeddings);
    let (v, d, p) = (
        config.vocab_size,
        config.d_model,
        config.max_position_embeddings + 2,
    );
    expect_shape(
        &ckpt,
        &config_path,
        table.prefixes,
        "shared.weight",
        &[v, d],
        "`vocab_size` and `d_model`",
    )?;
    expect_shape(
        &ckpt,
        &config_path,
        table.prefixes,
        "encoder.embed_positions.weight",
        &[p, d],
        "`max_position_embeddings` (+2) and `d_model`",
    )?;
    load_checked(config.init(device), &table, &ckpt)
}
