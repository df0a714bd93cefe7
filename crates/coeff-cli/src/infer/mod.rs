//! `infer`: run a checkpoint directory, optionally with a saved adapter, on an input tensor
//! file. For a ViT (the text and diffusion families are documented in their modules):
//!
//! Input: safetensors with `pixel_values [B, C, H, W]` (a float dtype, already normalised as the
//! checkpoint expects). Output: safetensors with `last_hidden_state [B, 1 + N, D]`,
//! `pooler_output [B, D]` (HF ViT pooler / CLIP post-layernorm CLS / DINOv2 CLS / timm
//! pre-logits) and, when the model has them, `logits [B, C]` and `image_embeds [B, P]`.
//!
//! `--adapter PATH` loads an adapter onto the checkpoint first, in any format of
//! [`crate::adapter`]: a PEFT folder (Hugging Face ViTs, BERT, CLIP text, BART, diffusers
//! UNets), a diffusers or kohya LoRA file (UNets), or ours (every family). Two kinds of our own
//! ViT adapters are recognised by their tensor names:
//! - an adapter of the bare ViT (`layers.N...`, `head` for a checkpoint with a head);
//! - a few-shot run's adapter (`OUT/runs/.../adapter`: `backbone.layers.N...` plus the trained
//!   classification head `head.{weight,bias}` as `modules_to_save`): the ViT is wrapped in the
//!   few-shot `Classifier` (coeff-harness) with a head of the file's size, and `logits` are that head's output
//!   on `pooler_output` (the few-shot model's prediction, before softmax).
//!
//! Checked before anything is computed (see `docs/input-checks.md`): the output is not the same
//! file as any input (the pixels, the config, the weights, the adapter) and its directory exists
//! and is writable; `pixel_values` exists, has a float dtype, four dimensions, at least one
//! image, finite values, and attention maps within `coeff_harness::limits::MAX_ATTENTION_ELEMENTS`.
//! After the forward pass every output must be finite; nothing is written otherwise. The output
//! is written atomically.
//!
//! The model families `infer` runs are one table, [`Family`] (coeff-harness), recognised from
//! the checkpoint's `config.json`: text and image-text models ([`text`]), diffusers UNets and
//! VAEs ([`diffusion`]), vision transformers ([`vit`]). Modules, leaves first: [`args`],
//! [`output`], then one per family; this file only dispatches and checks the output path.

pub mod args;
pub mod diffusion;
pub mod output;
pub mod text;
pub mod vit;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use coeff_harness::family::Family;
use coeff_tuning::checkpoint::find_weights;
use coeff_vit::Checkpoint;

pub use args::InferArgs;

/// Run the model and write its outputs.
pub fn run<B: Backend>(args: &InferArgs, device: &B::Device) -> Result<()> {
    check_output(args)?;
    match Family::of(&args.checkpoint.join("config.json")) {
        Family::Vit => vit::run::<B>(args, device),
        family @ (Family::Unet | Family::Vae) => diffusion::run::<B>(family, args, device),
        family => text::run::<B>(family, args, device),
    }
}

/// Refuse an output that is one of the inputs, or that cannot be written, before any work.
fn check_output(args: &InferArgs) -> Result<()> {
    let out = &args.output;
    if out.is_dir() {
        bail!(
            "--output {} is a directory; give a file name",
            out.display()
        );
    }
    let mut inputs: Vec<(&str, PathBuf)> = vec![
        ("--input", args.input.clone()),
        (
            "the checkpoint's config",
            args.checkpoint.join("config.json"),
        ),
    ];
    if let Ok(weights) = find_weights(
        &args.checkpoint,
        &["pytorch_model.safetensors", "open_clip_model.safetensors"],
    ) {
        // A sharded checkpoint: the index and every shard.
        if let Ok(ckpt) = Checkpoint::open(&weights) {
            inputs.extend(
                ckpt.files()
                    .into_iter()
                    .map(|f| ("the checkpoint's weights", f.to_path_buf())),
            );
        }
        inputs.push(("the checkpoint's weights", weights));
    }
    if let Some(path) = &args.adapter {
        let source = crate::adapter::AdapterSource::detect(path)?;
        inputs.extend(source.files().into_iter().map(|f| ("the adapter", f)));
    }
    for (what, input) in &inputs {
        if same_file(out, input) {
            bail!(
                "--output {} is {what} ({}); refusing to overwrite an input",
                out.display(),
                input.display()
            );
        }
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "--output {}: the directory {} does not exist",
            out.display(),
            dir.display()
        );
    }
    // Writable: create (and remove) a file next to the output, as the atomic writer will.
    let probe = dir.join(format!(".coeff-infer-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "--output {}: the directory {} is not writable",
                out.display(),
                dir.display()
            )
        })?;
    Ok(())
}

/// Whether two paths name the same existing file (same device and inode on Unix, so hard links
/// and symbolic links count; the same canonical path elsewhere).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}
