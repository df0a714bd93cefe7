//! Turning images into a backbone's input: resize, grey -> RGB, the checkpoint's
//! normalisation, optional light augmentation.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::image::Image;
use crate::resize::bilinear;
use crate::sampler::SplitMix;

/// How to prepare images for a backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Output side in pixels (square).
    pub size: usize,
    /// Per-channel mean (RGB) subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl Preprocess {
    /// Images of `size` pixels normalised with a checkpoint's `mean` and `std` (take them
    /// from the model crate, e.g. `coeff_vit::Normalization::from_dir`, not from constants
    /// here).
    pub fn new(size: usize, mean: [f32; 3], std: [f32; 3]) -> Self {
        Self { size, mean, std }
    }

    /// One image as `[3, size, size]` values, optionally flipped horizontally and shifted by
    /// up to `shift` pixels (light augmentation).
    pub fn image(&self, img: &Image, flip: bool, shift: (i64, i64)) -> Vec<f32> {
        let s = self.size;
        let mut out = vec![0.0f32; 3 * s * s];
        let plane = img.height * img.width;
        for c in 0..3 {
            let src_c = if img.channels == 1 { 0 } else { c };
            let src = &img.pixels[src_c * plane..(src_c + 1) * plane];
            for y in 0..s {
                for x in 0..s {
                    let xs = if flip { s - 1 - x } else { x } as i64 - shift.0;
                    let ys = y as i64 - shift.1;
                    let v = bilinear(
                        |yy, xx| src[yy * img.width + xx],
                        img.height,
                        img.width,
                        ys,
                        xs,
                        s,
                    );
                    out[(c * s + y) * s + x] = (v - self.mean[c]) / self.std[c];
                }
            }
        }
        out
    }

    /// A batch `[n, 3, size, size]`.
    pub fn batch<B: Backend>(&self, images: &[&Image], device: &B::Device) -> Tensor<B, 4> {
        let s = self.size;
        let data: Vec<f32> = images
            .iter()
            .flat_map(|im| self.image(im, false, (0, 0)))
            .collect();
        Tensor::from_data(TensorData::new(data, [images.len(), 3, s, s]), device)
    }

    /// A batch with random flips and shifts of up to `max_shift` pixels, drawn from `rng`.
    pub fn augmented_batch<B: Backend>(
        &self,
        images: &[&Image],
        max_shift: i64,
        rng: &mut SplitMix,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let s = self.size;
        let span = (2 * max_shift + 1) as u64;
        let data: Vec<f32> = images
            .iter()
            .flat_map(|im| {
                let flip = rng.next_u64() % 2 == 1;
                let dx = (rng.next_u64() % span) as i64 - max_shift;
                let dy = (rng.next_u64() % span) as i64 - max_shift;
                self.image(im, flip, (dx, dy))
            })
            .collect();
        Tensor::from_data(TensorData::new(data, [images.len(), 3, s, s]), device)
    }
}
