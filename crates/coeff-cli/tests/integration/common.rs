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
