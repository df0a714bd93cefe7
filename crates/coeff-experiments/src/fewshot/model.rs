//! The few-shot model: the pretrained backbone with a fresh head ([`Classifier`], shared with
//! `infer` through coeff-harness) and the method applied; frozen-backbone features for the
//! linear probe.

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use coeff_data::Image;
use coeff_tuning::peft::params::set_trainable;
use coeff_tuning::{inject, Injected, PeftConfig};
use coeff_vit::VisionTransformer;

pub use coeff_harness::backbone::Classifier;

use super::config::{FewShotConfig, FsMethod};
use super::train::{Inputs, RunSpec};

/// What [`build`] made: the model, its trainable path prefixes, and for PEFT methods what
/// `inject` did (needed to save the adapter).
pub struct Built<B: AutodiffBackend> {
    /// Backbone + head with the method applied.
    pub model: Classifier<B>,
    /// Trainable parameter path prefixes.
    pub trainable: Vec<String>,
    /// The adapter, for PEFT methods.
    pub injected: Option<Injected>,
}

/// Backbone + fresh head with the method applied.
pub fn build<B: AutodiffBackend>(
    cfg: &FewShotConfig,
    spec: &RunSpec,
    backbone: VisionTransformer<B>,
    classes: usize,
    device: &B::Device,
) -> Result<Built<B>> {
    let model = Classifier::new(backbone, classes, spec.seed);
    let frozen_except = |model: Classifier<B>, p: Vec<String>| Built {
        model: set_trainable(model, &p),
        trainable: p,
        injected: None,
    };
    Ok(match spec.method {
        FsMethod::Linear => frozen_except(model, vec!["head".into()]),
        FsMethod::Full => frozen_except(model, vec!["backbone".into(), "head".into()]),
        FsMethod::Peft(m) => {
            let r = &cfg.recipe;
            let targets: Vec<&str> = r.lora_targets.iter().map(String::as_str).collect();
            let mut pc: PeftConfig = m.config(r.lora_rank, &targets);
            if let Some(c) = pc.coeff.as_mut() {
                c.dropout = r.coeff_dropout;
            }
            pc.modules_to_save = vec!["head".into()];
            // LoRA's A matrices are drawn from the backend generator.
            B::seed(device, spec.seed);
            let (model, injected) = inject(model, &pc)
                .with_context(|| format!("applying {} to the backbone", m.name()))?;
            Built {
                model,
                trainable: injected.trainable_prefixes(),
                injected: Some(injected),
            }
        }
    })
}

/// Frozen-backbone pooled features of `images`, in batches of 32 (at most
/// [`config::EVAL_BATCH`], the bound `validate` checks).
pub(crate) fn features<B: burn::tensor::backend::Backend>(
    model: &VisionTransformer<B>,
    images: &[Image],
    preprocess: &coeff_data::Preprocess,
    device: &B::Device,
) -> Inputs {
    coeff_harness::classify::cached_features(images, preprocess, 32, device, |x| {
        model
            .forward(x)
            .expect("preprocessed to the model's input")
            .pooler_output
    })
}
