//! The model families the binaries recognise in a checkpoint folder, from its `config.json`
//! alone: the one table `infer` dispatches through, and what the VL experiment reads to pick a
//! text model's loader.
//!
//! | family | recognised by | crate |
//! |---|---|---|
//! | [`Family::Bert`] | `model_type` `bert` | coeff-vl |
//! | [`Family::ClipText`] | `model_type` `clip_text_model` | coeff-vl |
//! | [`Family::Clip`] | `model_type` `clip` | coeff-vl |
//! | [`Family::Bart`] | `model_type` `bart` | coeff-vl |
//! | [`Family::Unet`] | `_class_name` `UNet2DConditionModel` | coeff-sdxl |
//! | [`Family::Vae`] | `_class_name` `AutoencoderKL` | coeff-sdxl |
//! | [`Family::Vit`] | anything else (Hugging Face ViT / CLIP vision / DINOv2, timm) | coeff-vit |
//!
//! A file that cannot be read or parsed is left to the ViT reader, whose error names it.

use std::path::Path;

/// A model family (see the module docs for how each is recognised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT / MiniLM.
    Bert,
    /// CLIP's text tower.
    ClipText,
    /// The CLIP dual encoder.
    Clip,
    /// BART.
    Bart,
    /// diffusers' `UNet2DConditionModel`.
    Unet,
    /// diffusers' `AutoencoderKL`.
    Vae,
    /// A vision transformer (the fallback).
    Vit,
}

impl Family {
    /// The family of the `config.json` at `config`.
    pub fn of(config: &Path) -> Family {
        let value: Option<serde_json::Value> = std::fs::read_to_string(config)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let field = |name: &str| {
            value
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        match field("model_type").as_deref() {
            Some("bert") => return Family::Bert,
            Some("clip_text_model") => return Family::ClipText,
            Some("clip") => return Family::Clip,
            Some("bart") => return Family::Bart,
            _ => {}
        }
        match field("_class_name").as_deref() {
            Some("UNet2DConditionModel") => Family::Unet,
            Some("AutoencoderKL") => Family::Vae,
            _ => Family::Vit,
        }
    }

    /// Whether this is one of coeff-vl's text or image-text models.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Family::Bert | Family::ClipText | Family::Clip | Family::Bart
        )
    }
}
