//! The SDXL text-to-image pipeline, as diffusers' `StableDiffusionXLPipeline` runs it, on a
//! diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`,
//! `tokenizer/`, `tokenizer_2/`, `scheduler/`).
//!
//! ```text
//! ids_k = tokenizer_k(prompt), padded to 77
//! prompt_embeds = [penultimate(text_encoder(ids_1)) ; penultimate(text_encoder_2(ids_2))]   [B, 77, 2048]
//! pooled = text_encoder_2(ids_2).text_embeds                                               [B, 1280]
//! negative = zeros (force_zeros_for_empty_prompt) or the same for ""
//! time_ids = (H, W, 0, 0, H, W)
//! x = noise * init_noise_sigma
//! for each timestep: eps = unet(scale(x), t, [neg; pos]) -> uncond + g (cond - uncond); x = step(eps, x)
//! image = clamp(vae.decode(x / scaling_factor) / 2 + 0.5, 0, 1)
//! ```
//!
//! The text encoders are the image-text crate's `ClipTextModel` (so LoRA / Coeff attach to them
//! too); the tokenizers read `tokenizer.json` or CLIP's `vocab.json` + `merges.txt`.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use coeff_tuning::LoadError;
use coeff_vl::{load_clip_text, ClipTextModel, TextTokenizer};

use crate::config::UnetConfig;
use crate::error::{Result, UnetError};
use crate::scheduler::{guidance, Ddim, Euler, Sampler, ScheduleConfig};
use crate::unet::{UNet2DConditionModel, UnetInput};
use crate::vae::{load_vae, AutoencoderKL};

/// A loaded SDXL pipeline.
pub struct SdxlPipeline<B: Backend> {
    /// CLIP ViT-L text encoder (penultimate hidden states).
    pub text_encoder: ClipTextModel<B>,
    /// OpenCLIP bigG text encoder with projection (penultimate states and the pooled embedding).
    pub text_encoder_2: ClipTextModel<B>,
    /// Tokenizer of `text_encoder`.
    pub tokenizer: TextTokenizer,
    /// Tokenizer of `text_encoder_2`.
    pub tokenizer_2: TextTokenizer,
    /// The UNet.
    pub unet: UNet2DConditionModel<B>,
    /// Its config.
    pub unet_config: UnetConfig,
    /// The VAE.
    pub vae: AutoencoderKL<B>,
    /// The noise schedule.
    pub schedule: ScheduleConfig,
    /// The sampler `scheduler_config.json` names.
    pub sampler: Sampler,
    /// Negative embeddings are zeros when no negative prompt is given (SDXL base: true).
    pub force_zeros_for_empty_prompt: bool,
}

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleConfig {
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (1 = none).
    pub guidance: f64,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

fn config_err(path: &Path, message: String) -> UnetError {
    LoadError::config(path, message).into()
}

impl<B: Backend> SdxlPipeline<B> {
    /// Load a diffusers SDXL folder.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let (unet_config, unet) = crate::load_unet(dir.join("unet"), device)?;
        Self::load_with_unet(dir, unet_config, unet, device)
    }

    /// [`SdxlPipeline::load`] around a UNet already loaded from `dir/unet` (e.g. the inner
    /// backend's view of a UNet being trained: its weights are then shared, not copied).
    pub fn load_with_unet(
        dir: impl AsRef<Path>,
        unet_config: UnetConfig,
        unet: UNet2DConditionModel<B>,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let index_path = dir.join("model_index.json");
        let text = std::fs::read_to_string(&index_path)
            .map_err(|source| LoadError::io(&index_path, source))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| config_err(&index_path, format!("not valid JSON: {e}")))?;
        let class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if class != "StableDiffusionXLPipeline" {
            return Err(UnetError::Unsupported {
                path: index_path,
                field: "_class_name".into(),
                value: format!("{class:?}"),
                why: "this loader runs StableDiffusionXLPipeline folders".into(),
            });
        }
        let (_, vae) = load_vae(dir.join("vae"), device)?;
        let (schedule, sampler) = ScheduleConfig::from_file(dir.join("scheduler"))?;
        let text_encoder_2 = load_clip_text(dir.join("text_encoder_2"), device)?;
        if text_encoder_2.text_projection.is_none() {
            return Err(config_err(
                &dir.join("text_encoder_2"),
                "SDXL's second text encoder needs its `text_projection` (CLIPTextModelWithProjection)".into(),
            ));
        }
        Ok(Self {
            text_encoder: load_clip_text(dir.join("text_encoder"), device)?,
            text_encoder_2,
            tokenizer: TextTokenizer::from_dir(dir.join("tokenizer"))?,
            tokenizer_2: TextTokenizer::from_dir(dir.join("tokenizer_2"))?,
            unet,
            unet_config,
            vae,
            schedule,
            sampler,
            force_zeros_for_empty_prompt: index
                .get("force_zeros_for_empty_prompt")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
        })
    }

    /// Both tokenizers' ids of `prompts`, `[B, 77]` each (padded and truncated as diffusers
    /// calls them).
    pub fn tokenize(&self, prompts: &[&str], device: &B::Device) -> Result<[Tensor<B, 2, Int>; 2]> {
        let ids = |t: &TextTokenizer| -> Result<Tensor<B, 2, Int>> {
            Ok(t.encode_batch(prompts)?.to_tensors::<B>(device).0)
        };
        Ok([ids(&self.tokenizer)?, ids(&self.tokenizer_2)?])
    }

    /// `prompt_embeds [B, 77, D1 + D2]` and `pooled [B, P]` from both encoders' ids.
    pub fn encode_prompt(
        &self,
        ids_1: Tensor<B, 2, Int>,
        ids_2: Tensor<B, 2, Int>,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 2>)> {
        let one = self.text_encoder.forward(ids_1, None)?;
        let two = self.text_encoder_2.forward(ids_2, None)?;
        let pooled = two.text_embeds.expect("checked at load");
        Ok((
            Tensor::cat(
                vec![one.penultimate_hidden_state, two.penultimate_hidden_state],
                2,
            ),
            pooled,
        ))
    }

    /// Denoise `noise: [B, 4, H/8, W/8]` (standard normal; scaled here by the sampler's initial
    /// sigma) conditioned on the prompt embeddings -> the final latents.
    pub fn denoise(
        &self,
        prompt_embeds: Tensor<B, 3>,
        pooled: Tensor<B, 2>,
        noise: Tensor<B, 4>,
        cfg: &SampleConfig,
    ) -> Result<Tensor<B, 4>> {
        let device = noise.device();
        let batch = noise.dims()[0];
        let cfg_on = cfg.guidance > 1.0;
        let (embeds, pooled) = if cfg_on {
            let (neg, neg_pooled) = if self.force_zeros_for_empty_prompt {
                (prompt_embeds.zeros_like(), pooled.zeros_like())
            } else {
                let empty = vec![""; batch];
                let [a, b] = self.tokenize(&empty, &device)?;
                self.encode_prompt(a, b)?
            };
            (
                Tensor::cat(vec![neg, prompt_embeds], 0),
                Tensor::cat(vec![neg_pooled, pooled], 0),
            )
        } else {
            (prompt_embeds, pooled)
        };
        let rows = embeds.dims()[0];
        let (h, w) = (cfg.height as f32, cfg.width as f32);
        let time_ids =
            Tensor::<B, 1>::from_data(TensorData::new(vec![h, w, 0.0, 0.0, h, w], [6]), &device)
                .reshape([1, 6])
                .expand([rows, 6]);
        let uses_text_time = self.unet_config.text_time.is_some();
        let unet = |x: Tensor<B, 4>, t: usize| -> Result<Tensor<B, 4>> {
            let x = if cfg_on {
                Tensor::cat(vec![x.clone(), x], 0)
            } else {
                x
            };
            let out = self.unet.forward(UnetInput {
                sample: x,
                timestep: Tensor::full([rows], t as f32, &device),
                encoder_hidden_states: embeds.clone(),
                text_embeds: uses_text_time.then(|| pooled.clone()),
                time_ids: uses_text_time.then(|| time_ids.clone()),
            })?;
            Ok(if cfg_on {
                let [uncond, cond]: [Tensor<B, 4>; 2] =
                    out.chunk(2, 0).try_into().expect("two halves");
                guidance(uncond, cond, cfg.guidance)
            } else {
                out
            })
        };
        let mut x = noise;
        match self.sampler {
            Sampler::Euler => {
                let euler = Euler::new(self.schedule, cfg.steps);
                x = x * euler.init_noise_sigma();
                for (i, &t) in euler.timesteps.iter().enumerate() {
                    let eps = unet(euler.scale_model_input(x.clone(), i), t)?;
                    x = euler.step(eps, i, x);
                }
            }
            Sampler::Ddim => {
                let ddim = Ddim::new(self.schedule, cfg.steps);
                for &t in &ddim.timesteps {
                    let eps = unet(x.clone(), t)?;
                    x = ddim.step(eps, t, x);
                }
            }
        }
        Ok(x)
    }

    /// Latents -> image `[B, 3, H, W]` in `[0, 1]`.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let image = self.vae.decode(self.vae.from_unet(latents));
        (image / 2.0 + 0.5).clamp(0.0, 1.0)
    }

    /// Prompts -> images `[B, 3, H, W]` in `[0, 1]`, from the given initial noise
    /// `[B, 4, H / f, W / f]` (`f` = the VAE's downsampling factor).
    pub fn generate(
        &self,
        prompts: &[&str],
        noise: Tensor<B, 4>,
        cfg: &SampleConfig,
    ) -> Result<Tensor<B, 4>> {
        let device = noise.device();
        let [ids_1, ids_2] = self.tokenize(prompts, &device)?;
        let (embeds, pooled) = self.encode_prompt(ids_1, ids_2)?;
        let latents = self.denoise(embeds, pooled, noise, cfg)?;
        Ok(self.decode(latents))
    }

    /// The VAE's downsampling factor: `2^(levels - 1)`.
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae.decoder.up_blocks.len().saturating_sub(1)
    }
}
