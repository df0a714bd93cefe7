//! Helpers shared by the subjects.

use std::path::Path;

/// Write `img` (`[3, H, W]` in `[0, 1]`) as an 8-bit RGB PNG.
pub fn write_png(img: &coeff_data::Image, path: &Path) {
    let (h, w) = (img.height, img.width);
    let mut rgb = vec![0u8; 3 * h * w];
    for c in 0..3 {
        for p in 0..h * w {
            rgb[p * 3 + c] = (img.pixels[c * h * w + p] * 255.0).round() as u8;
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&rgb).unwrap();
}

/// The tensors of `OUT/adapter/coeff_adapter.safetensors`, sorted by name.
pub fn adapter(out: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(out.join("adapter/coeff_adapter.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| {
            let x = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, x)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|((ka, x), (kb, y))| {
            assert_eq!(ka, kb);
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0f32, f32::max)
}
