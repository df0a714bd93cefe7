//! LoRA / DoRA adapters of a Hugging Face ViT, DINOv2 or CLIP vision tower in PEFT's own file
//! layout, so Python users can load what was trained here (`PeftModel.from_pretrained(model,
//! dir)`) and the other way round.
//!
//! Layout (peft 0.21, transformers 5): `adapter_config.json` and `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_A.weight [r, in]`, `.lora_B.weight [out, r]`,
//! DoRA `.lora_magnitude_vector [out]`, and `modules_to_save` as
//! `base_model.model.classifier.{weight,bias}`. `<module>` follows transformers 5's in-memory
//! module names; adapters saved with transformers 4 names are accepted on import. The tables
//! below ([`HF_VIT`], [`DINOV2`], [`CLIP`]) are the whole mapping:
//!
//! | ours (`layers.{i}.`) | HF ViT, transformers 5 (written) / 4 (also read) | DINOv2, 5 / 4 | CLIP vision (both) |
//! |---|---|---|---|
//! | `attn.query` | `layers.{i}.attention.q_proj` / `encoder.layer.{i}.attention.attention.query` | `encoder.layer.{i}.attention.q_proj` / `...attention.attention.query` | `encoder.layers.{i}.self_attn.q_proj` |
//! | `attn.key`, `attn.value` | `k_proj`, `v_proj` / `key`, `value` | the same | `k_proj`, `v_proj` |
//! | `attn.output` | `...attention.o_proj` / `...attention.output.dense` | the same | `self_attn.out_proj` |
//! | `mlp.fc1` | `layers.{i}.mlp.fc1` / `encoder.layer.{i}.intermediate.dense` | `...mlp.fc1` | `...mlp.fc1` |
//! | `mlp.fc2` | `layers.{i}.mlp.fc2` / `encoder.layer.{i}.output.dense` | `...mlp.fc2` | `...mlp.fc2` |
//! | `head` (modules_to_save) | `classifier` | `classifier` | `classifier` |
//!
//! Before the layers: `vit.` / `dinov2.` when the model has a classifier (the
//! `*ForImageClassification` classes), nothing when not; CLIP always `vision_model.`. timm
//! ViTs have a fused `qkv` and no PEFT names here.
//!
//! The file handling is the core crate's (`coeff_tuning::peft::interop`); this file holds the
//! names. PEFT has no Coeff-Tuning: the alpha matrices travel in this project's own adapter
//! file (`coeff_tuning::save_adapter`), and an export reports the Coeff layers left out.

use std::path::Path;

use burn::tensor::backend::Backend;
use coeff_tuning::peft::interop::{self, PeftNames};
use coeff_tuning::{Injected, LoadError};

pub use coeff_tuning::peft::interop::PeftExport;

use crate::config::Family;
use crate::error::Result;
use crate::model::VisionTransformer;

/// One family's PEFT module names (what PEFT sees inside the model it wraps).
struct Scheme {
    /// Before the layers when the model has a classifier (`ViTForImageClassification`:
    /// `vit.`, `Dinov2ForImageClassification`: `dinov2.`) and when it has none; written on
    /// export, optional on import.
    prefix: [&'static str; 2],
    /// Layer stems, `{i}` the index: transformers 5 (written) and 4 (also read).
    stems: [&'static str; 2],
    /// `(ours, transformers 5, transformers 4)` leaf names inside a layer.
    leaves: &'static [(&'static str, &'static str, &'static str)],
}

#[rustfmt::skip]
const HF_VIT: Scheme = Scheme {
    prefix: ["vit.", ""],
    stems: ["layers.{i}.", "encoder.layer.{i}."],
    leaves: &[
        ("attn.query",  "attention.q_proj", "attention.attention.query"),
        ("attn.key",    "attention.k_proj", "attention.attention.key"),
        ("attn.value",  "attention.v_proj", "attention.attention.value"),
        ("attn.output", "attention.o_proj", "attention.output.dense"),
        ("mlp.fc1",     "mlp.fc1",          "intermediate.dense"),
        ("mlp.fc2",     "mlp.fc2",          "output.dense"),
    ],
};

#[rustfmt::skip]
const DINOV2: Scheme = Scheme {
    prefix: ["dinov2.", ""],
    stems: ["encoder.layer.{i}.", "encoder.layer.{i}."],
    leaves: &[
        ("attn.query",  "attention.q_proj", "attention.attention.query"),
        ("attn.key",    "attention.k_proj", "attention.attention.key"),
        ("attn.value",  "attention.v_proj", "attention.attention.value"),
        ("attn.output", "attention.o_proj", "attention.output.dense"),
        ("mlp.fc1",     "mlp.fc1",          "mlp.fc1"),
        ("mlp.fc2",     "mlp.fc2",          "mlp.fc2"),
    ],
};

#[rustfmt::skip]
const CLIP: Scheme = Scheme {
    // CLIPVisionModel and CLIPForImageClassification both hold the tower as `vision_model`.
    prefix: ["vision_model.", "vision_model."],
    stems: ["encoder.layers.{i}.", "encoder.layers.{i}."],
    leaves: &[
        ("attn.query",  "self_attn.q_proj",   "self_attn.q_proj"),
        ("attn.key",    "self_attn.k_proj",   "self_attn.k_proj"),
        ("attn.value",  "self_attn.v_proj",   "self_attn.v_proj"),
        ("attn.output", "self_attn.out_proj", "self_attn.out_proj"),
        ("mlp.fc1",     "mlp.fc1",            "mlp.fc1"),
        ("mlp.fc2",     "mlp.fc2",            "mlp.fc2"),
    ],
};

/// The layer index and the rest of `name` after `stem` (`{i}` the index).
fn split_stem<'a>(name: &'a str, stem: &str) -> Option<(&'a str, &'a str)> {
    let (before, after) = stem.split_once("{i}")?;
    let rest = name.strip_prefix(before)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (index, rest) = rest.split_at(digits);
    Some((index, rest.strip_prefix(after)?))
}

/// The names of one ViT: its family's scheme, with or without a classifier.
struct VitNames {
    scheme: &'static Scheme,
    prefix: &'static str,
}

impl PeftNames for VitNames {
    fn peft_module(&self, ours: &str) -> Option<String> {
        let (i, leaf) = split_stem(ours, "layers.{i}.")?;
        let (_, new, _) = self.scheme.leaves.iter().find(|(o, _, _)| *o == leaf)?;
        let stem = self.scheme.stems[0].replace("{i}", i);
        Some(format!("{}{stem}{new}", self.prefix))
    }

    fn our_layer(&self, module: &str) -> Option<String> {
        let module = self
            .scheme
            .prefix
            .iter()
            .filter(|p| !p.is_empty())
            .find_map(|p| module.strip_prefix(p))
            .unwrap_or(module);
        self.scheme
            .stems
            .iter()
            .enumerate()
            .find_map(|(era, stem)| {
                let (i, leaf) = split_stem(module, stem)?;
                let (ours, _, _) = self
                    .scheme
                    .leaves
                    .iter()
                    .find(|(_, new, old)| [new, old][era] == &leaf)?;
                Some(format!("layers.{i}.{ours}"))
            })
    }

    fn saved_modules(&self) -> Vec<(String, String)> {
        vec![("head".into(), "classifier".into())]
    }
}

fn names<B: Backend>(model: &VisionTransformer<B>, path: &Path) -> Result<VitNames> {
    let scheme =
        match model.config.family {
            Family::HfVit => &HF_VIT,
            Family::Dinov2 => &DINOV2,
            Family::Clip => &CLIP,
            Family::Timm => return Err(LoadError::config(
                path,
                "PEFT export/import is implemented for Hugging Face ViT, DINOv2 and CLIP vision \
                 checkpoints (timm's fused qkv has no per-projection PEFT module)",
            )
            .into()),
        };
    Ok(VitNames {
        scheme,
        prefix: scheme.prefix[usize::from(model.head.is_none())],
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
