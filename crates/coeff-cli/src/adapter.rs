//! What an `--adapter` / `--lora` path holds, recognised from its files, so every command that
//! takes an adapter reads every format the same way:
//!
//! | path | format | read by |
//! |---|---|---|
//! | folder with `coeff_adapter_config.json` + `coeff_adapter.safetensors` | ours (any method, Coeff included; a `tune` output folder also holds a PEFT export beside it, and ours is the complete one) | `coeff_tuning::load_adapter` |
//! | folder with `adapter_config.json` + `adapter_model.safetensors` | PEFT (`PeftModel.save_pretrained`; transformers 4 and 5 module names) | the model crate's PEFT names + `coeff_tuning::peft::interop` |
//! | a `.safetensors` file, or a folder with `pytorch_lora_weights.safetensors` | diffusers LoRA (current or older), kohya / A1111 | `coeff_sdxl::lora_format::import_any_unet_lora` |
//!
//! Anything else is an error naming the path and what was looked for.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use coeff_tuning::peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};

/// PEFT's adapter config file name.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's adapter weights file name.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// diffusers' LoRA file name.
pub const DIFFUSERS_LORA_FILE: &str = "pytorch_lora_weights.safetensors";

/// An adapter path, by format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// Our own adapter folder.
    Ours(PathBuf),
    /// A PEFT folder.
    Peft(PathBuf),
    /// A diffusers or kohya LoRA file.
    LoraFile(PathBuf),
}

impl AdapterSource {
    /// Recognise the format of `path` from its files.
    pub fn detect(path: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join(ADAPTER_CONFIG_FILE).is_file() || path.join(ADAPTER_WEIGHTS_FILE).is_file()
            {
                return Ok(Self::Ours(path.to_path_buf()));
            }
            if path.join(PEFT_CONFIG_FILE).is_file() || path.join(PEFT_WEIGHTS_FILE).is_file() {
                return Ok(Self::Peft(path.to_path_buf()));
            }
            let file = path.join(DIFFUSERS_LORA_FILE);
            if file.is_file() {
                return Ok(Self::LoraFile(file));
            }
            bail!(
                "adapter {}: the folder holds none of {ADAPTER_CONFIG_FILE} (ours), \
                 {PEFT_CONFIG_FILE} (PEFT) or {DIFFUSERS_LORA_FILE} (diffusers)",
                path.display()
            );
        }
        if path.is_file() {
            if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
                return Ok(Self::LoraFile(path.to_path_buf()));
            }
            bail!(
                "adapter {}: a file adapter must be a .safetensors LoRA file (diffusers or \
                 kohya); for ours or PEFT give the folder",
                path.display()
            );
        }
        bail!("adapter {}: no such file or folder", path.display())
    }

    /// The files this adapter is read from (for the check that the output is none of them).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Self::Ours(d) => vec![d.join(ADAPTER_CONFIG_FILE), d.join(ADAPTER_WEIGHTS_FILE)],
            Self::Peft(d) => vec![d.join(PEFT_CONFIG_FILE), d.join(PEFT_WEIGHTS_FILE)],
            Self::LoraFile(f) => vec![f.clone()],
        }
    }

    /// The format's name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ours(_) => "coeff adapter",
            Self::Peft(_) => "PEFT adapter",
            Self::LoraFile(_) => "diffusers/kohya LoRA file",
        }
    }

    /// An error for a format a model family does not take.
    pub fn unsupported(&self, family: &str) -> anyhow::Error {
        let path = match self {
            Self::Ours(p) | Self::Peft(p) | Self::LoraFile(p) => p,
        };
        anyhow::anyhow!(
            "adapter {}: a {} cannot be applied to a {family} checkpoint",
            path.display(),
            self.name()
        )
    }
}
