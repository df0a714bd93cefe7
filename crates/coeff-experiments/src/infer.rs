//! `infer`: run a ViT checkpoint directory on an input tensor file.
//!
//! Input: safetensors with `pixel_values [B, 3, H, W]` (already normalised as the checkpoint
//! expects). Output: safetensors with `last_hidden_state [B, 1 + N, D]`, `pooler_output [B, D]`
//! (HF ViT pooler / CLIP post-layernorm CLS / DINOv2 CLS / timm pre-logits) and, when the model
//! has them, `logits [B, C]` and `image_embeds [B, P]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_vit::{load_pretrained, Checkpoint};

/// Arguments of `infer`.
#[derive(Debug, Clone, clap::Args)]
pub struct InferArgs {
    /// Checkpoint directory: `config.json` (Hugging Face or timm) + `model.safetensors`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// safetensors file holding `pixel_values [B, 3, H, W]`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(long)]
    pub output: PathBuf,
}

/// Run the model and write its outputs.
pub fn run<B: Backend>(args: &InferArgs, device: &B::Device) -> Result<()> {
    let model = load_pretrained::<B>(&args.checkpoint, device)
        .with_context(|| format!("loading checkpoint {}", args.checkpoint.display()))?;
    let input = Checkpoint::open(&args.input)?;
    if !input.keys().iter().any(|k| k == "pixel_values") {
        bail!(
            "{}: no tensor `pixel_values` (found: {})",
            args.input.display(),
            input.keys().join(", ")
        );
    }
    let (shape, data) = input.read_f32("pixel_values")?;
    if shape.len() != 4 {
        bail!(
            "{}: `pixel_values` has shape {shape:?}, expected [B, C, H, W]",
            args.input.display()
        );
    }
    let x = Tensor::<B, 4>::from_data(TensorData::new(data, shape), device);
    let out = model
        .forward(x)
        .with_context(|| format!("running {}", args.checkpoint.display()))?;
    let mut tensors = BTreeMap::new();
    let mut put = |name: &str, dims: Vec<usize>, data: TensorData| {
        tensors.insert(
            name.to_string(),
            (dims, data.convert::<f32>().to_vec::<f32>().expect("f32")),
        );
    };
    put(
        "last_hidden_state",
        out.last_hidden_state.dims().to_vec(),
        out.last_hidden_state.into_data(),
    );
    put(
        "pooler_output",
        out.pooler_output.dims().to_vec(),
        out.pooler_output.into_data(),
    );
    if let Some(l) = out.logits {
        put("logits", l.dims().to_vec(), l.into_data());
    }
    if let Some(e) = out.image_embeds {
        put("image_embeds", e.dims().to_vec(), e.into_data());
    }
    coeff_tuning::checkpoint::write_f32_safetensors(&args.output, &tensors)?;
    for (k, (s, _)) in &tensors {
        eprintln!("{k}: {s:?}");
    }
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
