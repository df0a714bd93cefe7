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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use coeff_data::emoji::Emoji;
    use coeff_sdxl::scheduler::{Ddpm, ScheduleConfig};

    use super::*;
    use crate::concept::data::{TextStates, World};
    use crate::concept::train::Setup;
    use crate::concept::{ConceptArgs, ConceptConfig, Preset};

    /// 3 held-out expressions (2 samples each), 2 subject images, 3 prior prompts.
    const HELD_OUT: usize = 3;
    const SUBJECT: usize = 2;
    const PRIOR: usize = 3;
    const PER: usize = 2;
    /// One dimension per real image: held-out, subject, prior.
    const DIM: usize = HELD_OUT + SUBJECT + PRIOR;

    fn emoji(name: &str) -> Emoji {
        Emoji {
            name: name.into(),
            short_name: String::new(),
            unified: String::new(),
            category: String::new(),
            subcategory: String::new(),
            image: Image {
                channels: 3,
                height: 1,
                width: 1,
                pixels: vec![1.0; 3],
            },
        }
    }

    /// One-hot rows: row `r` is the basis vector `idx[r]`.
    fn rows(idx: &[usize]) -> Vec<Vec<f32>> {
        idx.iter()
            .map(|&k| {
                let mut v = vec![0.0; DIM];
                v[k] = 1.0;
                v
            })
            .collect()
    }

    /// The real images as the basis, in the order `Setup::truth` holds them.
    fn truth() -> Embeddings {
        let all: Vec<usize> = (0..DIM).collect();
        Embeddings {
            dino: rows(&all),
            clip: rows(&all),
        }
    }

    /// `Setup::scores` of generated embeddings `e` (held-out samples, then prior samples)
    /// with the base's samples `before`.
    fn scores(e: &Embeddings, before: Embeddings) -> Scores {
        let mut cfg = ConceptConfig::from_args(&ConceptArgs {
            preset: Preset::Default,
            methods: None,
            seeds: None,
            base_steps: None,
            side: None,
            widths: None,
            base_batch: None,
            steps: None,
            lr: None,
            coeff_lr: None,
            sample_steps: None,
            guidance: None,
            prior_weight: None,
            cache: None,
        })
        .unwrap();
        cfg.samples_per_prompt = PER;
        let world = World {
            base: (0..PRIOR).map(|i| emoji(&format!("BASE {i}"))).collect(),
            subject: (0..SUBJECT)
                .map(|i| emoji(&format!("SUBJECT CAT FACE {i}")))
                .collect(),
            held_out: (0..HELD_OUT)
                .map(|i| emoji(&format!("HELD OUT CAT FACE {i}")))
                .collect(),
            prior: (0..PRIOR).collect(),
        };
        let text = TextStates {
            dim: 0,
            by_caption: BTreeMap::new(),
        };
        let setup = Setup {
            cfg: &cfg,
            world: &world,
            text: &text,
            ddpm: Ddpm::new(ScheduleConfig::sdxl()),
            subject_pixels: Vec::new(),
            subject_prompts: Vec::new(),
            eval_prompts: Vec::new(),
            class_pixels: Vec::new(),
            truth: truth(),
            before,
        };
        assert_eq!(setup.held_out_samples(), HELD_OUT * PER);
        setup.scores(e)
    }

    // Indices of the real images in `truth()`.
    const H: [usize; HELD_OUT] = [0, 1, 2];
    const S: [usize; SUBJECT] = [3, 4];
    const P: [usize; PRIOR] = [5, 6, 7];

    #[test]
    fn samples_equal_to_their_paired_truth_score_exactly_one() {
        // Held-out sample i is expression i / PER; prior sample j is prior prompt j.
        let idx: Vec<usize> = (0..HELD_OUT * PER)
            .map(|i| H[i / PER])
            .chain(P.iter().copied())
            .collect();
        let e = Embeddings {
            dino: rows(&idx),
            clip: rows(&idx),
        };
        let s = scores(&e, e.clone());
        assert_eq!(
            s,
            Scores {
                dino: 1.0,
                clip_i: 1.0,
                // Every held-out truth is orthogonal to every subject image here.
                dino_subject: 0.0,
                prior_dino: 1.0,
                prior_clip_i: 1.0,
                prior_truth_dino: 1.0,
            }
        );
    }

    #[test]
    fn a_known_mismatch_scores_the_hand_count() {
        // Held-out samples' expressions are [0, 0, 1, 1, 2, 2].
        // DINO: [0, 1, 1, 0, 2, subject 0]: samples 0, 2, 4 match (3 of 6); sample 5 is the
        // first subject image (1 of the 6 x 2 sample-subject pairs).
        // CLIP: [0, 0, 1, 1, 2, 0]: 5 of 6 match.
        let dino_h = [H[0], H[1], H[1], H[0], H[2], S[0]];
        let clip_h = [H[0], H[0], H[1], H[1], H[2], H[0]];
        // Prior: after [5, 7, 6]; before [5, 6, 6] (2 of 3 kept); truth [5, 6, 7] (1 of 3).
        // CLIP after = before = [7, 6, 5] (3 of 3 kept).
        let dino_p = [P[0], P[2], P[1]];
        let dino_before_p = [P[0], P[1], P[1]];
        let clip_p = [P[2], P[1], P[0]];
        fn cat(a: &[usize], b: &[usize]) -> Vec<usize> {
            a.iter().chain(b).copied().collect()
        }
        let e = Embeddings {
            dino: rows(&cat(&dino_h, &dino_p)),
            clip: rows(&cat(&clip_h, &clip_p)),
        };
        // The base's held-out samples are never compared: anything.
        let before = Embeddings {
            dino: rows(&cat(&[S[1]; HELD_OUT * PER], &dino_before_p)),
            clip: rows(&cat(&[S[1]; HELD_OUT * PER], &clip_p)),
        };
        let s = scores(&e, before);
        assert_eq!(
            s,
            Scores {
                dino: 3.0 / 6.0,
                clip_i: 5.0 / 6.0,
                dino_subject: 1.0 / 12.0,
                prior_dino: 2.0 / 3.0,
                prior_clip_i: 1.0, // 3 of 3
                prior_truth_dino: 1.0 / 3.0,
            }
        );
    }
}
