//! `infer` for diffusers folders, chosen by `config.json` `_class_name`:
//!
//! | `_class_name` | inputs | outputs |
//! |---|---|---|
//! | `UNet2DConditionModel` | `sample [B, C, h, w]`, `timestep [B]` (or one value), `encoder_hidden_states [B, M, D]`; `text_embeds [B, P]` + `time_ids [B, 6]` when the config has the text_time add-embedding | `sample` (the UNet output) |
//! | `AutoencoderKL` | `sample [B, 3, H, W]` in [-1, 1] | `latent_mean`, `latent_logvar`, `decoded` (decoder of the mean) |
//!
//! Floats of any float dtype; the shapes are checked by the models (errors name the input);
//! every input must be finite. The output checks are the ViT path's.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::checkpoint::Checkpoint;

use coeff_harness::family::Family;

use super::args::InferArgs;
use super::output::{put_output, write_outputs, Outputs};

fn tensor<B: Backend, const D: usize>(
    file: &Checkpoint,
    path: &Path,
    name: &str,
    device: &B::Device,
) -> Result<Option<Tensor<B, D>>> {
    if !file.contains(name) {
        return Ok(None);
    }
    let (shape, values) = file
        .read_f32(name)
        .with_context(|| format!("input {}: tensor `{name}`", path.display()))?;
    ensure!(
        shape.len() == D,
        "input {}: tensor `{name}` has shape {shape:?}, expected {D} dimensions",
        path.display()
    );
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "input {}: tensor `{name}` has a non-finite value at flat index {i}",
            path.display()
        );
    }
    Ok(Some(Tensor::from_data(
        TensorData::new(values, shape),
        device,
    )))
}

/// Run a diffusers folder on the input file and write its outputs.
pub fn run<B: Backend>(kind: Family, args: &InferArgs, device: &B::Device) -> Result<()> {
    let path = &args.input;
    let file =
        Checkpoint::open(path).with_context(|| format!("reading input {}", path.display()))?;
    let required = |name: &str| {
        anyhow::anyhow!(
            "input {}: no tensor `{name}` (found: {})",
            path.display(),
            file.keys().join(", ")
        )
    };
    let loading = || format!("loading {}", args.checkpoint.display());
    let mut out = Outputs::new();
    let mut put = |name: &str, t: TensorData| put_output(&mut out, name, t, path);
    let sample: Tensor<B, 4> =
        tensor(&file, path, "sample", device)?.ok_or_else(|| required("sample"))?;
    match kind {
        Family::Unet => {
            let (_, unet) =
                coeff_sdxl::load_unet::<B>(&args.checkpoint, device).with_context(loading)?;
            let batch = sample.dims()[0];
            let timestep: Tensor<B, 1> =
                tensor(&file, path, "timestep", device)?.ok_or_else(|| required("timestep"))?;
            let timestep = if timestep.dims()[0] == 1 && batch > 1 {
                timestep.expand([batch])
            } else {
                timestep
            };
            let context: Tensor<B, 3> = tensor(&file, path, "encoder_hidden_states", device)?
                .ok_or_else(|| required("encoder_hidden_states"))?;
            let y = unet.forward(coeff_sdxl::UnetInput {
                sample,
                timestep,
                encoder_hidden_states: context,
                text_embeds: tensor(&file, path, "text_embeds", device)?,
                time_ids: tensor(&file, path, "time_ids", device)?,
            })?;
            put("sample", y.into_data())?;
        }
        Family::Vae => {
            let (_, vae) =
                coeff_sdxl::load_vae::<B>(&args.checkpoint, device).with_context(loading)?;
            ensure!(
                sample.dims()[1] == 3,
                "input {}: `sample` has shape {:?}; the VAE takes [B, 3, H, W] pixels in [-1, 1]",
                path.display(),
                sample.dims()
            );
            let (mean, logvar) = vae.encode(sample);
            put("decoded", vae.decode(mean.clone()).into_data())?;
            put("latent_mean", mean.into_data())?;
            put("latent_logvar", logvar.into_data())?;
        }
        other => anyhow::bail!("{other:?} is not a diffusers model"),
    }
    write_outputs(&args.output, &out)
}
