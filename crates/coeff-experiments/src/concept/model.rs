//! The pixel-space text-to-image model of `experiment concept`: a small UNet with an
//! SDXL-style diffusers config (cross-attention to the text states, the `text_time`
//! add-embedding fed with the pooled text embedding and the size/crop ids, attention only at
//! the lower levels, transformer depth growing with depth), trained with DDPM's epsilon loss on
//! SDXL's noise schedule, sampled with DDIM and classifier-free guidance from noise that is
//! the same on every backend and for every method.

use std::path::Path;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::scheduler::{guidance, Ddim, Ddpm, ScheduleConfig};
use coeff_sdxl::{UNet2DConditionModel, UnetConfig, UnetInput};

use super::data::TextStates;

/// The diffusers `config.json` of the model: an SDXL-style UNet at `side` pixels, RGB in and
/// out, `widths` channels per level (attention at every level but the first, `heads` heads),
/// conditioned on `text_dim`-wide states.
pub fn unet_config_json(side: usize, widths: &[usize], heads: usize, text_dim: usize) -> String {
    let levels = widths.len();
    let down: Vec<&str> = (0..levels)
        .map(|i| {
            if i == 0 {
                "DownBlock2D"
            } else {
                "CrossAttnDownBlock2D"
            }
        })
        .collect();
    let up: Vec<&str> = down
        .iter()
        .rev()
        .map(|d| {
            if *d == "DownBlock2D" {
                "UpBlock2D"
            } else {
                "CrossAttnUpBlock2D"
            }
        })
        .collect();
    let depth: Vec<usize> = (0..levels).map(|i| i.clamp(1, 2)).collect();
    let time_dim = 8;
    serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "in_channels": 3,
        "out_channels": 3,
        "sample_size": side,
        "block_out_channels": widths,
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": 1,
        "transformer_layers_per_block": depth,
        "attention_head_dim": vec![heads; levels],
        "cross_attention_dim": text_dim,
        "use_linear_projection": true,
        "norm_num_groups": 16,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": text_dim + 6 * time_dim,
        "upcast_attention": false,
    })
    .to_string()
}

/// Parse [`unet_config_json`] through the crate's diffusers config reader.
pub fn unet_config(json: &str) -> Result<UnetConfig> {
    Ok(UnetConfig::from_json(
        json,
        std::path::Path::new("concept/config.json"),
    )?)
}

/// SDXL's size/crop ids for a `side`-pixel image without cropping: `[n, 6]`.
pub(crate) fn time_ids<B: Backend>(n: usize, side: usize, device: &B::Device) -> Tensor<B, 2> {
    let s = side as f32;
    let row = [s, s, 0.0, 0.0, s, s];
    let data: Vec<f32> = (0..n).flat_map(|_| row).collect();
    Tensor::from_data(TensorData::new(data, [n, 6]), device)
}

pub use coeff_harness::rng::normal;

/// The epsilon-prediction loss on `x0: [n, 3, s, s]` in `[-1, 1]` with the given captions,
/// timesteps and noise (both drawn by the caller from the step's seed).
pub fn diffusion_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    ddpm: &Ddpm,
    text: &TextStates,
    x0: Tensor<B, 4>,
    captions: &[&str],
    timesteps: &[usize],
    noise: Tensor<B, 4>,
) -> Result<Tensor<B, 1>> {
    let device = x0.device();
    let [n, _, side, _] = x0.dims();
    let (states, pooled) = text.batch::<B>(captions, &device)?;
    let xt = ddpm.add_noise(x0, noise.clone(), timesteps);
    let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let pred = unet.forward(UnetInput {
        sample: xt,
        timestep: Tensor::from_data(TensorData::new(t, [n]), &device),
        encoder_hidden_states: states,
        text_embeds: Some(pooled),
        time_ids: Some(time_ids::<B>(n, side, &device)),
    })?;
    Ok((pred - noise).powi_scalar(2).mean())
}

/// Fixed sampling settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// DDIM steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// Clip the predicted clean image to `[-1, 1]` at every step.
    pub clip_sample: bool,
}

/// Generate one image per caption from the given initial noises (`[3, s, s]` each), DDIM
/// with classifier-free guidance (the empty caption as the unconditional branch) and the
/// predicted clean image clipped to `[-1, 1]` at each step. Returns
/// `[n, 3, s, s]` in `[-1, 1]` (clamped).
pub fn sample<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    text: &TextStates,
    captions: &[&str],
    noises: &[Vec<f32>],
    side: usize,
    sampling: Sampling,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let n = captions.len();
    let ddim = Ddim::new(ScheduleConfig::sdxl(), sampling.steps);
    let acp = ScheduleConfig::sdxl().alphas_cumprod();
    let mut both: Vec<&str> = vec![""; n];
    both.extend_from_slice(captions);
    let (states, pooled) = text.batch::<B>(&both, device)?;
    let ids = time_ids::<B>(2 * n, side, device);
    let flat: Vec<f32> = noises.iter().flatten().copied().collect();
    let mut x = Tensor::<B, 4>::from_data(TensorData::new(flat, [n, 3, side, side]), device);
    for &t in &ddim.timesteps {
        let input = Tensor::cat(vec![x.clone(), x.clone()], 0);
        let out = unet.forward(UnetInput {
            sample: input,
            timestep: Tensor::from_data(TensorData::new(vec![t as f32; 2 * n], [2 * n]), device),
            encoder_hidden_states: states.clone(),
            text_embeds: Some(pooled.clone()),
            time_ids: Some(ids.clone()),
        })?;
        let uncond = out.clone().narrow(0, 0, n);
        let cond = out.narrow(0, n, n);
        let eps = guidance(uncond, cond, sampling.guidance);
        // Pixel-space sampling clips the predicted clean image to the data range at every
        // step (diffusers' `clip_sample` for pixel models); the noise estimate is made
        // consistent with the clipped image before the DDIM step.
        let (sa, sb) = (acp[t].sqrt(), (1.0 - acp[t]).sqrt());
        let eps = if sampling.clip_sample {
            let x0 = ((x.clone() - eps * sb) / sa).clamp(-1.0, 1.0);
            (x.clone() - x0 * sa) / sb
        } else {
            eps
        };
        x = ddim.step(eps, t, x);
    }
    Ok(x.clamp(-1.0, 1.0))
}

/// Samples for `(prompt, noise seed)` pairs, batched: `[n * 3 * s * s]` in `[-1, 1]`.
pub(crate) fn generate<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    text: &TextStates,
    prompts: &[(String, u64)],
    side: usize,
    sampling: Sampling,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(prompts.len() * 3 * side * side);
    for chunk in prompts.chunks(16) {
        let caps: Vec<&str> = chunk.iter().map(|p| p.0.as_str()).collect();
        let noises: Vec<Vec<f32>> = chunk.iter().map(|p| normal(p.1, 3 * side * side)).collect();
        let x = sample(unet, text, &caps, &noises, side, sampling, device)?;
        out.extend(
            x.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    if out.iter().any(|v| !v.is_finite()) {
        bail!("sampling produced non-finite values");
    }
    Ok(out)
}

/// Samples stored with the fingerprint of what made them (`None`: absent or stale).
pub(crate) fn read_samples(path: &Path, fingerprint: &str) -> Result<Option<Vec<Vec<f32>>>> {
    if !path.exists() {
        return Ok(None);
    }
    let f = coeff_tuning::checkpoint::Checkpoint::open(path)?;
    if f.metadata().get("fingerprint").map(String::as_str) != Some(fingerprint) {
        return Ok(None);
    }
    let mut out = Vec::new();
    for i in 0.. {
        let key = format!("samples.{i}");
        if !f.contains(&key) {
            break;
        }
        out.push(f.read_f32(&key)?.1);
    }
    Ok(Some(out))
}

pub(crate) fn write_samples(
    path: &Path,
    fingerprint: &str,
    sets: &[&Vec<f32>],
    side: usize,
) -> Result<()> {
    let data: Vec<(String, TensorData)> = sets
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("samples.{i}"),
                TensorData::new(v.to_vec(), [v.len() / (3 * side * side), 3, side, side]),
            )
        })
        .collect();
    coeff_tuning::checkpoint::write_safetensors(
        path,
        data.iter().map(|(k, d)| (k.as_str(), d)),
        &[("fingerprint", fingerprint)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_reads_as_an_sdxl_style_unet() {
        let cfg = unet_config(&unet_config_json(32, &[32, 64, 64], 4, 384)).unwrap();
        assert_eq!(cfg.transformer_layers_per_block, vec![1, 1, 2]);
        assert_eq!(cfg.num_attention_heads, vec![4, 4, 4]);
        let tt = cfg.text_time.as_ref().unwrap();
        assert_eq!(tt.input_dim, 384 + 48);
        // Transformer blocks, by hand from the config (layers_per_block 1, up blocks one resnet
        // more, the mid block at the last level's depth):
        //   down: level 0 DownBlock2D 0, level 1 1 x 1, level 2 1 x 2   -> 3
        //   mid:  depth of level 2                                       -> 2
        //   up:   level 2 2 x 2, level 1 2 x 1, level 0 UpBlock2D 0      -> 6
        // 11 blocks, each a self- and a cross-attention: 22 layers (docs/concept.md).
        assert_eq!(cfg.transformer_blocks(), 11);
        assert_eq!(cfg.attention_layers(), 22);
    }

    #[test]
    fn coeff_attaches_to_11_self_and_11_cross_attentions_of_the_model() {
        // Counted independently of `attention_layers()`: on the model built from the config,
        // by the attention sites `inject` finds.
        type B = coeff_harness::backend::Inner;
        let cfg = unet_config(&unet_config_json(32, &[32, 64, 64], 4, 384)).unwrap();
        let unet = cfg.init::<B>(&Default::default());
        let (_, inj) = coeff_tuning::inject(
            unet,
            &coeff_tuning::Method::Coeff.config(4, &["query", "key", "value", "output"]),
        )
        .unwrap();
        assert_eq!(inj.coeff_layers.len(), 22, "{:?}", inj.coeff_layers);
        let ends = |s: &str| inj.coeff_layers.iter().filter(|p| p.ends_with(s)).count();
        assert_eq!(
            (ends(".attn"), ends(".cross_attn")),
            (11, 11),
            "{:?}",
            inj.coeff_layers
        );
        assert!(inj.lora_layers.is_empty());
    }

    #[test]
    fn noise_is_standard_normal_and_reproducible() {
        let a = normal(7, 20_000);
        assert_eq!(a, normal(7, 20_000));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
