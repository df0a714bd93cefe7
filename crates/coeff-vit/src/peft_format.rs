//! LoRA / DoRA adapters of a Hugging Face ViT in PEFT's own file layout, so Python users can
//! load what was trained here (`PeftModel.from_pretrained(vit, dir)`) and the other way round.
//!
//! Layout (peft 0.21, transformers 5): `adapter_config.json` and `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_A.weight [r, in]`, `.lora_B.weight [out, r]`,
//! DoRA `.lora_magnitude_vector [out]`, and `modules_to_save` as
//! `base_model.model.classifier.{weight,bias}`. `<module>` follows transformers 5's module
//! names (`vit.layers.0.attention.q_proj`); adapters saved with transformers 4 names
//! (`vit.encoder.layer.0.attention.attention.query`) are accepted on import.
//!
//! | ours | transformers 5 (written) | transformers 4 (also read) |
//! |---|---|---|
//! | `layers.{i}.attn.query` | `layers.{i}.attention.q_proj` | `encoder.layer.{i}.attention.attention.query` |
//! | `layers.{i}.attn.key` | `layers.{i}.attention.k_proj` | `encoder.layer.{i}.attention.attention.key` |
//! | `layers.{i}.attn.value` | `layers.{i}.attention.v_proj` | `encoder.layer.{i}.attention.attention.value` |
//! | `layers.{i}.attn.output` | `layers.{i}.attention.o_proj` | `encoder.layer.{i}.attention.output.dense` |
//! | `layers.{i}.mlp.fc1` | `layers.{i}.mlp.fc1` | `encoder.layer.{i}.intermediate.dense` |
//! | `layers.{i}.mlp.fc2` | `layers.{i}.mlp.fc2` | `encoder.layer.{i}.output.dense` |
//! | `head` (modules_to_save) | `classifier` | `classifier` |
//!
//! The file handling is the core crate's (`coeff_tuning::peft::interop`); this file holds the
//! names. PEFT has no Coeff-Tuning: the alpha matrices travel in this project's own adapter
//! file (`coeff_tuning::save_adapter`), and an export reports the Coeff layers left out.

use std::path::Path;

use burn::tensor::backend::Backend;
use coeff_tuning::peft::interop::{self, PeftNames};
use coeff_tuning::{Injected, LoadError};
use regex::Regex;

pub use coeff_tuning::peft::interop::PeftExport;

use crate::config::Family;
use crate::error::Result;
use crate::model::VisionTransformer;

/// transformers 5 module name (inside the ViT) of one of our linear layers.
fn to_peft_module(ours: &str) -> Option<String> {
    let re = Regex::new(r"^layers\.(\d+)\.(attn\.(query|key|value|output)|mlp\.(fc1|fc2))$")
        .expect("static");
    let c = re.captures(ours)?;
    let leaf = match (c.get(3).map(|m| m.as_str()), c.get(4).map(|m| m.as_str())) {
        (Some("query"), _) => "attention.q_proj",
        (Some("key"), _) => "attention.k_proj",
        (Some("value"), _) => "attention.v_proj",
        (Some("output"), _) => "attention.o_proj",
        (_, Some("fc1")) => "mlp.fc1",
        (_, Some("fc2")) => "mlp.fc2",
        _ => return None,
    };
    Some(format!("layers.{}.{leaf}", &c[1]))
}

/// Our linear layer for a PEFT module name of either transformers generation.
fn from_peft_module(module: &str) -> Option<String> {
    let new =
        Regex::new(r"^layers\.(\d+)\.(attention\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(fc1|fc2))$")
            .expect("static");
    let old = Regex::new(
        r"^encoder\.layer\.(\d+)\.(attention\.attention\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$",
    )
    .expect("static");
    if let Some(c) = new.captures(module) {
        let ours = match &c[2] {
            "attention.q_proj" => "attn.query",
            "attention.k_proj" => "attn.key",
            "attention.v_proj" => "attn.value",
            "attention.o_proj" => "attn.output",
            "mlp.fc1" => "mlp.fc1",
            _ => "mlp.fc2",
        };
        return Some(format!("layers.{}.{ours}", &c[1]));
    }
    let c = old.captures(module)?;
    let ours = match &c[2] {
        "attention.attention.query" => "attn.query",
        "attention.attention.key" => "attn.key",
        "attention.attention.value" => "attn.value",
        "attention.output.dense" => "attn.output",
        "intermediate.dense" => "mlp.fc1",
        _ => "mlp.fc2",
    };
    Some(format!("layers.{}.{ours}", &c[1]))
}

/// The prefix of the ViT inside the PEFT-wrapped model: `vit.` for
/// `ViTForImageClassification`, none for `ViTModel`.
/// The names of a Hugging Face ViT: `vit.` before the layers of a model with a classifier
/// (`ViTForImageClassification`), whose head is saved whole as `classifier`.
struct VitNames {
    prefix: &'static str,
}

impl PeftNames for VitNames {
    fn peft_module(&self, ours: &str) -> Option<String> {
        to_peft_module(ours).map(|m| format!("{}{m}", self.prefix))
    }

    fn our_layer(&self, module: &str) -> Option<String> {
        from_peft_module(module.strip_prefix(self.prefix).unwrap_or(module))
    }

    fn saved_modules(&self) -> Vec<(String, String)> {
        vec![("head".into(), "classifier".into())]
    }
}

fn names<B: Backend>(model: &VisionTransformer<B>, path: &Path) -> Result<VitNames> {
    if model.config.family != Family::HfVit {
        return Err(LoadError::config(
            path,
            "PEFT export/import is implemented for Hugging Face ViT checkpoints",
        )
        .into());
    }
    Ok(VitNames {
        prefix: if model.head.is_some() { "vit." } else { "" },
    })
}

/// Write the LoRA / DoRA part of `injected` (and a trained `head`, as `classifier`) in PEFT's
/// layout into `dir`.
pub fn export_peft<B: Backend>(
    model: &VisionTransformer<B>,
    injected: &Injected,
    dir: &Path,
) -> Result<PeftExport> {
    let names = names(model, &dir.join("adapter_config.json"))?;
    Ok(interop::export_peft(model, injected, &names, dir)?)
}

/// Inject and load the adapter of a PEFT folder (`PeftModel.save_pretrained`) into a Hugging
/// Face ViT; transformers 4 and 5 module names are both read.
pub fn import_peft<B: Backend>(
    model: VisionTransformer<B>,
    dir: &Path,
) -> Result<(VisionTransformer<B>, Injected)> {
    let names = names(&model, &dir.join("adapter_config.json"))?;
    Ok(interop::import_peft(model, &names, dir)?)
}
