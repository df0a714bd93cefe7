//! Scoring generated images as DreamBooth papers do: cosine similarity of image embeddings
//! from the real DINOv2 ViT-S/14 (its CLS token: "DINO") and the real CLIP ViT-B/16 image
//! tower (its projected embedding: "CLIP-I"), both from the ViT crate; and the sample grids.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use coeff_data::{Image, Preprocess};
use coeff_vit::VisionTransformer;
use serde::{Deserialize, Serialize};

use coeff_harness::backbone::Backbone;

/// Unit-norm embeddings of a set of images under both backbones.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Embeddings {
    /// DINOv2 CLS tokens.
    pub dino: Vec<Vec<f32>>,
    /// CLIP projected image embeddings.
    pub clip: Vec<Vec<f32>>,
}

/// The two frozen image encoders.
pub struct Scorer<B: Backend> {
    models: Vec<(VisionTransformer<B>, Preprocess)>,
}

impl<B: Backend> Scorer<B> {
    /// Fetch (if needed) and load both backbones, fed at `resolution` pixels.
    pub fn load(cache: &Path, resolution: usize, device: &B::Device) -> Result<Self> {
        let mut models = Vec::new();
        for backbone in [Backbone::Dinov2S14, Backbone::ClipB16] {
            let asset = backbone.asset();
            let dir = coeff_vit::pretrained::fetch(&asset, cache, &mut |m| {
                eprintln!("{}: {m}", asset.name)
            })?;
            let model = coeff_vit::load_pretrained::<B>(&dir, device)
                .with_context(|| format!("loading {}", dir.display()))?;
            models.push((model, backbone.preprocess(resolution)));
        }
        Ok(Self { models })
    }

    /// Embeddings of `images` (`[3, h, w]` in `[0, 1]`, any size: resized bilinearly).
    pub fn embed(&self, images: &[Image], device: &B::Device) -> Result<Embeddings> {
        let mut out = Embeddings::default();
        for (k, (model, pre)) in self.models.iter().enumerate() {
            let mut rows = Vec::with_capacity(images.len());
            for chunk in images.chunks(16) {
                let refs: Vec<&Image> = chunk.iter().collect();
                let o = model.forward(pre.batch::<B>(&refs, device))?;
                let e = o.image_embeds.unwrap_or(o.pooler_output);
                let [n, d] = e.dims();
                let v = e
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                for i in 0..n {
                    rows.push(unit(&v[i * d..(i + 1) * d]));
                }
            }
            if k == 0 {
                out.dino = rows;
            } else {
                out.clip = rows;
            }
        }
        Ok(out)
    }
}

pub(crate) fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum()
}

/// `[n, 3, s, s]` values in `[-1, 1]` as images in `[0, 1]`.
pub fn to_images(values: &[f32], side: usize) -> Vec<Image> {
    values
        .chunks(3 * side * side)
        .map(|c| Image {
            channels: 3,
            height: side,
            width: side,
            pixels: c
                .iter()
                .map(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0))
                .collect(),
        })
        .collect()
}

/// Scores of one set of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// DINO similarity of each held-out expression's samples to its real artwork.
    pub dino: f64,
    /// CLIP-I similarity of the same pairs.
    pub clip_i: f64,
    /// DINO similarity of the held-out samples to the subject images (mean over them).
    pub dino_subject: f64,
    /// DINO similarity of non-cat samples after tuning to the same prompts' samples before.
    pub prior_dino: f64,
    /// CLIP-I similarity of the same pairs.
    pub prior_clip_i: f64,
    /// DINO similarity of the non-cat samples to their real emoji.
    pub prior_truth_dino: f64,
}
