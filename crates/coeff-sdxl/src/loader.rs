//! diffusers checkpoint keys -> our module paths.
//!
//! Our module tree uses diffusers' names down to the transformer blocks, so most rows map a
//! key to itself; inside a `BasicTransformerBlock` the core crate's names differ:
//!
//! | diffusers | ours |
//! |---|---|
//! | `norm1`, `attn1.to_{q,k,v}`, `attn1.to_out.0` | `norm1`, `attn.{query,key,value}`, `attn.output` |
//! | `norm2`, `attn2.*` (cross-attention) | `cross_norm`, `cross_attn.*` |
//! | `norm3`, `ff.net.0.proj` (GEGLU), `ff.net.2` | `norm2`, `mlp.fc1`, `mlp.fc2` |
//! | `downsamplers.0.conv`, `upsamplers.0.conv` | `downsampler.conv`, `upsampler.conv` |
//! | `proj_in`, `proj_out` | `proj_in.linear` / `proj_in.conv` (by `use_linear_projection`) |
//!
//! Weights are read one tensor at a time from the memory map (`coeff_tuning::checkpoint`),
//! from `diffusion_pytorch_model.safetensors`, its `.fp16` variant or a sharded index, and
//! converted to the model's dtype as they are read: a 2.6 B-parameter SDXL UNet is never held
//! twice in host memory.

use std::path::Path;

use burn::tensor::backend::Backend;
use coeff_tuning::checkpoint::{Checkpoint, KeyTable, Kind, Row};

use crate::config::UnetConfig;
use crate::error::Result;
use crate::unet::UNet2DConditionModel;

use Kind::{Conv, Linear, Norm, PlainLinear};

/// Rows of a block's resnets, for `$p` = `down_blocks.{i}`, `mid_block` or `up_blocks.{i}`
/// (the VAE's too: its resnets simply have no `time_emb_proj`, and a row no key matches
/// feeds nothing).
macro_rules! resnet_rows {
    ($p:literal) => {
        [
            (
                concat!($p, ".resnets.{j}.norm{k}"),
                concat!($p, ".resnets.{j}.norm{k}"),
                ::coeff_tuning::checkpoint::Kind::Norm,
            ),
            (
                concat!($p, ".resnets.{j}.conv{k}"),
                concat!($p, ".resnets.{j}.conv{k}"),
                ::coeff_tuning::checkpoint::Kind::PeftConv,
            ),
            (
                concat!($p, ".resnets.{j}.conv_shortcut"),
                concat!($p, ".resnets.{j}.conv_shortcut"),
                ::coeff_tuning::checkpoint::Kind::PeftConv,
            ),
            (
                concat!($p, ".resnets.{j}.time_emb_proj"),
                concat!($p, ".resnets.{j}.time_emb_proj"),
                ::coeff_tuning::checkpoint::Kind::PlainLinear,
            ),
        ]
    };
}

pub(crate) use resnet_rows;

/// Rows of a block's transformers (everything but `proj_in` / `proj_out`).
macro_rules! transformer_rows {
    ($p:literal) => {
        [
            (
                concat!($p, ".attentions.{j}.norm"),
                concat!($p, ".attentions.{j}.norm"),
                Norm,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.norm1"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.norm1"),
                Norm,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn1.to_q"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn.query"),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn1.to_k"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn.key"),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn1.to_v"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn.value"),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn1.to_out.0"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn.output"),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.norm2"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.cross_norm"),
                Norm,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn2.to_q"),
                concat!(
                    $p,
                    ".attentions.{j}.transformer_blocks.{t}.cross_attn.query"
                ),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn2.to_k"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.cross_attn.key"),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn2.to_v"),
                concat!(
                    $p,
                    ".attentions.{j}.transformer_blocks.{t}.cross_attn.value"
                ),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.attn2.to_out.0"),
                concat!(
                    $p,
                    ".attentions.{j}.transformer_blocks.{t}.cross_attn.output"
                ),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.norm3"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.norm2"),
                Norm,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.ff.net.0.proj"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.mlp.fc1"),
                Linear,
            ),
            (
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.ff.net.2"),
                concat!($p, ".attentions.{j}.transformer_blocks.{t}.mlp.fc2"),
                Linear,
            ),
        ]
    };
}

/// `proj_in` / `proj_out` of a block's transformers: linear or 1x1 conv.
macro_rules! projection_rows {
    ($p:literal, $kind:ident, $field:literal) => {
        [
            (
                concat!($p, ".attentions.{j}.proj_in"),
                concat!($p, ".attentions.{j}.proj_in.", $field),
                $kind,
            ),
            (
                concat!($p, ".attentions.{j}.proj_out"),
                concat!($p, ".attentions.{j}.proj_out.", $field),
                $kind,
            ),
        ]
    };
}

/// Rows outside the blocks.
const TOP: &[Row] = &[
    ("conv_in", "conv_in", Conv),
    (
        "time_embedding.linear_{k}",
        "time_embedding.linear_{k}",
        PlainLinear,
    ),
    (
        "add_embedding.linear_{k}",
        "add_embedding.linear_{k}",
        PlainLinear,
    ),
    (
        "down_blocks.{i}.downsamplers.0.conv",
        "down_blocks.{i}.downsampler.conv",
        Conv,
    ),
    (
        "up_blocks.{i}.upsamplers.0.conv",
        "up_blocks.{i}.upsampler.conv",
        Conv,
    ),
    ("conv_norm_out", "conv_norm_out", Norm),
    ("conv_out", "conv_out", Conv),
];

/// The whole table for a config (the projections' rows depend on `use_linear_projection`).
pub fn key_rows(config: &UnetConfig) -> Vec<Row> {
    let mut rows: Vec<Row> = TOP.to_vec();
    rows.extend(resnet_rows!("down_blocks.{i}"));
    rows.extend(resnet_rows!("mid_block"));
    rows.extend(resnet_rows!("up_blocks.{i}"));
    rows.extend(transformer_rows!("down_blocks.{i}"));
    rows.extend(transformer_rows!("mid_block"));
    rows.extend(transformer_rows!("up_blocks.{i}"));
    if config.use_linear_projection {
        rows.extend(projection_rows!("down_blocks.{i}", PlainLinear, "linear"));
        rows.extend(projection_rows!("mid_block", PlainLinear, "linear"));
        rows.extend(projection_rows!("up_blocks.{i}", PlainLinear, "linear"));
    } else {
        rows.extend(projection_rows!("down_blocks.{i}", Conv, "conv"));
        rows.extend(projection_rows!("mid_block", Conv, "conv"));
        rows.extend(projection_rows!("up_blocks.{i}", Conv, "conv"));
    }
    rows
}

/// Load `ckpt` into `model` (made from `config`); every parameter must be fed exactly once
/// and every key used, or the error lists what is missing and unexpected.
pub fn load_weights<B: Backend>(
    model: UNet2DConditionModel<B>,
    config: &UnetConfig,
    ckpt: &Checkpoint,
) -> Result<UNet2DConditionModel<B>> {
    let rows = key_rows(config);
    let table = KeyTable {
        rows: &rows,
        prefixes: &[],
        ignored: &[],
    };
    Ok(table.load(model, ckpt)?)
}

/// Load a diffusers UNet folder: `config.json` + `diffusion_pytorch_model.safetensors` (or
/// `.fp16.safetensors`, or a sharded `*.safetensors.index.json`).
pub fn load_unet<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(UnetConfig, UNet2DConditionModel<B>)> {
    let dir = dir.as_ref();
    let config = UnetConfig::from_file(dir)?;
    let ckpt = Checkpoint::open_dir(dir)?;
    // Parameters start lazily initialised: loading replaces each one without materialising
    // random weights first.
    let model = load_weights(config.init(device), &config, &ckpt)?;
    Ok((config, model))
}
