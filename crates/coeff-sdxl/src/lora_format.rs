//! UNet LoRA / DoRA adapters in the file diffusers' `load_lora_weights` reads:
//! `pytorch_lora_weights.safetensors` with keys `unet.<module>.lora_A.weight` /
//! `.lora_B.weight` (`.lora_magnitude_vector` for DoRA) and the PEFT config of the `unet`
//! component in the `lora_adapter_metadata` header entry, as `save_lora_weights` writes it.
//! The module names are diffusers' own (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`),
//! read off the UNet's key table; the file handling is the core crate's
//! (`coeff_tuning::peft::interop`).
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
