//! Image grids (samples of a diffusion model, rows of prompts or seeds).

use std::path::Path;

/// Write a grid of images (rows of equal length, each image `[3, s, s]` in `[0, 1]`),
/// magnified `zoom` times, 2 px apart on grey.
pub fn write_grid(path: &Path, rows: &[Vec<coeff_data::Image>], zoom: usize) -> anyhow::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let side = rows.iter().flatten().map(|i| i.height).max().unwrap_or(1) * zoom;
    let gap = 2;
    let (w, h) = (cols * (side + gap) + gap, rows.len() * (side + gap) + gap);
    let mut canvas = vec![0.5f32; 3 * w * h];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let (x0, y0) = (gap + c * (side + gap), gap + r * (side + gap));
            let f = side / img.height.max(1);
            for ch in 0..3 {
                for y in 0..img.height * f {
                    for x in 0..img.width * f {
                        canvas[ch * w * h + (y0 + y) * w + x0 + x] =
                            img.pixels[ch * img.height * img.width + (y / f) * img.width + x / f];
                    }
                }
            }
        }
    }
    crate::report::write_atomic(path, &crate::report::png_rgb(&canvas, w, h)?)
}
