//! `infer` for diffusers folders, chosen by `config.json` `_class_name`:
//!
//! | `_class_name` | inputs | outputs |
//! |---|---|---|
//! | `UNet2DConditionModel` | `sample [B, C, h, w]`, `timestep [B]` (or one value), `encoder_hidden_states [B, M, D]`; `text_embeds [B, P]` + `time_ids [B, 6]` when the config has the text_time add-embedding | `sample` (the UNet output) |
//! | `AutoencoderKL` | `sample [B, 3, H, W]` in [-1, 1] | `latent_mean`, `latent_logvar`, `decoded` (decoder of the mean) |
//!
//! `--adapter PATH` on a UNet: ours, a PEFT folder, or a diffusers / kohya LoRA file
//! ([`crate::adapter`]); a VAE takes none (an error).
//!
//! Floats of any float dtype; the shapes are checked by the models (errors name the input);
//! every input must be finite. The output checks are the ViT path's.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::checkpoint::Checkpoint;

use coeff_harness::family::Family;
use coeff_sdxl::lora_format::{import_any_unet_lora, import_peft_unet};
use coeff_sdxl::{UNet2DConditionModel, UnetConfig};
use coeff_tuning::Injected;

use super::args::InferArgs;
use super::output::{put_output, write_outputs, Outputs};
use crate::adapter::AdapterSource;

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

/// `unet` with the adapter at `path` (any format of [`crate::adapter`]) loaded, and what was
/// injected.
pub fn adapted_unet<B: Backend>(
    unet: UNet2DConditionModel<B>,
    config: &UnetConfig,
    path: &Path,
) -> Result<(UNet2DConditionModel<B>, Injected)> {
    let context = || format!("loading adapter {}", path.display());
    Ok(match AdapterSource::detect(path)? {
        AdapterSource::Ours(dir) => coeff_tuning::load_adapter(unet, &dir).with_context(context)?,
        AdapterSource::Peft(dir) => import_peft_unet(unet, config, &dir).with_context(context)?,
        AdapterSource::LoraFile(file) => {
            let (unet, injected, format) =
                import_any_unet_lora(unet, config, &file).with_context(context)?;
            eprintln!(
                "adapter {}: {} LoRA, {} layers, rank {}",
                file.display(),
                format.name(),
                injected.lora_layers.len(),
                injected.config.lora.as_ref().map_or(0, |l| l.rank)
            );
            (unet, injected)
        }
    })
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
            let (config, unet) =
                coeff_sdxl::load_unet::<B>(&args.checkpoint, device).with_context(loading)?;
            let unet = match &args.adapter {
                None => unet,
                Some(path) => adapted_unet(unet, &config, path)?.0,
            };
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
            if let Some(path) = &args.adapter {
                return Err(AdapterSource::detect(path)?.unsupported("VAE"));
            }
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
