//! UNet LoRA / DoRA adapters in the file diffusers' `load_lora_weights` reads:
//! `pytorch_lora_weights.safetensors` with keys `unet.<module>.lora_A.weight` /
//! `.lora_B.weight` (`.lora_magnitude_vector` for DoRA) and the PEFT config of the `unet`
//! component in the `lora_adapter_metadata` header entry, as `save_lora_weights` writes it.
//! The module names are diffusers' own (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`),
//! read off the UNet's key table; the file handling is the core crate's
//! (`coeff_tuning::peft::interop`).
//!
//! [`import_any_unet_lora`] reads the other forms UNet LoRAs are shared in as well (older
//! diffusers `lora.down` / `lora.up` files, kohya / A1111 `lora_unet_*` files in diffusers'
//! names or in the original Stability UNet's `input_blocks_4_1_...` names that SDXL kohya
//! files use); see `coeff_tuning::peft::lora_files`.
//!
//! Coeff-Tuning's alpha matrices are not part of diffusers' format: they travel in this
//! project's adapter file (`coeff_tuning::save_adapter`), and an export reports the Coeff
//! layers left out.

use std::path::Path;

use burn::tensor::backend::Backend;
use coeff_tuning::checkpoint::{KeyTable, Row};
use coeff_tuning::peft::interop::{
    export_diffusers_lora, import_diffusers_lora, PeftExport, TableNames,
};
use coeff_tuning::peft::lora_files::{import_lora_file, KohyaNames, LoraFileFormat};
use coeff_tuning::Injected;

use crate::config::UnetConfig;
use crate::error::Result;
use crate::loader::key_rows;
use crate::unet::UNet2DConditionModel;

/// The file name diffusers reads and writes.
pub const LORA_FILE: &str = "pytorch_lora_weights.safetensors";

/// The UNet's module names as diffusers writes them, read off its key table.
fn unet_names<'a>(rows: &'a [Row]) -> TableNames<'a> {
    TableNames {
        table: KeyTable {
            rows,
            prefixes: &[],
            ignored: &[],
        },
        prefix: "",
        saved: vec![],
    }
}

/// Write the UNet part of `injected` to `path` (diffusers' format, component `unet`).
pub fn export_unet_lora<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    config: &UnetConfig,
    injected: &Injected,
    path: &Path,
) -> Result<PeftExport> {
    let rows = key_rows(config);
    let names = unet_names(&rows);
    Ok(export_diffusers_lora(unet, injected, &names, "unet", path)?)
}

/// Inject and load the `unet` LoRA of a diffusers LoRA file.
pub fn import_unet_lora<B: Backend>(
    unet: UNet2DConditionModel<B>,
    config: &UnetConfig,
    path: &Path,
) -> Result<(UNet2DConditionModel<B>, Injected)> {
    let rows = key_rows(config);
    let names = unet_names(&rows);
    Ok(import_diffusers_lora(unet, &names, "unet", path)?)
}

/// Inject and load a UNet LoRA file of any form `coeff_tuning::peft::lora_files` reads
/// (diffusers, older diffusers, kohya / A1111); returns the form found.
pub fn import_any_unet_lora<B: Backend>(
    unet: UNet2DConditionModel<B>,
    config: &UnetConfig,
    path: &Path,
) -> Result<(UNet2DConditionModel<B>, Injected, LoraFileFormat)> {
    let rows = key_rows(config);
    let names = unet_names(&rows);
    let rewrite = |flat: &str| sgm_to_diffusers(config, flat);
    let kohya = KohyaNames {
        prefix: "lora_unet_",
        rewrite: &rewrite,
    };
    Ok(import_lora_file(unet, &names, "unet", &kohya, path)?)
}

/// A flattened module name in the original Stability UNet's layout (`input_blocks_4_1_...`,
/// `middle_block_1_...`, `output_blocks_3_1_...`: block index, then `1` for the attention
/// of that block) as diffusers names it (`down_blocks_1_attentions_0_...`), following the
/// block layout of `config`. Only attentions are mapped (what LoRA files target).
pub fn sgm_to_diffusers(config: &UnetConfig, flat: &str) -> Option<String> {
    let levels = config.layers_per_block.len();
    // `<digits>_1_<rest>` -> (index, rest)
    let split = |s: &str| -> Option<(usize, String)> {
        let (i, rest) = s.split_once('_')?;
        let rest = rest.strip_prefix("1_")?;
        Some((i.parse().ok()?, rest.to_string()))
    };
    if let Some(rest) = flat.strip_prefix("middle_block_1_") {
        return Some(format!("mid_block_attentions_0_{rest}"));
    }
    if let Some((index, rest)) = flat.strip_prefix("input_blocks_").and_then(split) {
        // input_blocks.0 is conv_in; each level has its layers, then a downsampler but the last.
        let mut next = 1;
        for level in 0..levels {
            for layer in 0..config.layers_per_block[level] {
                if next == index {
                    return Some(format!("down_blocks_{level}_attentions_{layer}_{rest}"));
                }
                next += 1;
            }
            next += usize::from(level + 1 < levels);
        }
        return None;
    }
    if let Some((index, rest)) = flat.strip_prefix("output_blocks_").and_then(split) {
        // Up blocks run lowest resolution first, each with one layer more than its down block.
        let mut next = 0;
        for up in 0..levels {
            for layer in 0..config.layers_per_block[levels - 1 - up] + 1 {
                if next == index {
                    return Some(format!("up_blocks_{up}_attentions_{layer}_{rest}"));
                }
                next += 1;
            }
        }
    }
    None
}

/// Inject and load a PEFT folder saved from the UNet itself (`PeftModel.save_pretrained` or
/// `unet.save_lora_adapter`'s folder form: `adapter_config.json` + `adapter_model.safetensors`,
/// keys `base_model.model.<diffusers module>.lora_A.weight`).
pub fn import_peft_unet<B: Backend>(
    unet: UNet2DConditionModel<B>,
    config: &UnetConfig,
    dir: &Path,
) -> Result<(UNet2DConditionModel<B>, Injected)> {
    let rows = key_rows(config);
    let names = unet_names(&rows);
    Ok(coeff_tuning::peft::interop::import_peft(unet, &names, dir)?)
}
