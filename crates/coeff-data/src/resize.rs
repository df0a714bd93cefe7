//! Bilinear resampling shared by the preprocessing and the readers that resize as they decode;
//! a leaf.

/// Bilinear sample (half-pixel centres, edge clamped) of an `h x w` plane resized to
/// `out x out`, at output pixel `(y, x)`; out-of-range output pixels (after a shift) read 0.
/// `p(row, col)` reads the plane.
///
/// Resizing a plane to `out x out` and sampling the result again at the same size gives the
/// first resize's values exactly (the sample positions fall on pixel centres, the weights are
/// 1 and 0), so an image resized once at load time with this function preprocesses to the
/// same bits as the full-size image (`dataset::image_folder_resized` relies on it).
pub fn bilinear(
    p: impl Fn(usize, usize) -> f32,
    h: usize,
    w: usize,
    y: i64,
    x: i64,
    out: usize,
) -> f32 {
    if y < 0 || x < 0 || y >= out as i64 || x >= out as i64 {
        return 0.0;
    }
    let sy = ((y as f32 + 0.5) * h as f32 / out as f32 - 0.5).clamp(0.0, (h - 1) as f32);
    let sx = ((x as f32 + 0.5) * w as f32 / out as f32 - 0.5).clamp(0.0, (w - 1) as f32);
    let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
    (1.0 - fy) * ((1.0 - fx) * p(y0, x0) + fx * p(y0, x1))
        + fy * ((1.0 - fx) * p(y1, x0) + fx * p(y1, x1))
}

/// `img` resized to `out_h x out_w` with PIL's antialiased bilinear filter (what
/// `torchvision.transforms.Resize` does to PIL images): a triangle filter whose support grows
/// with the downscaling factor, so large photos shrink without aliasing; separable, rows then
/// columns, weights normalised per output pixel. Upscaling is plain bilinear (half-pixel
/// centres, edges clamped).
pub fn antialiased(img: &crate::Image, out_h: usize, out_w: usize) -> crate::Image {
    let (c, h, w) = (img.channels, img.height, img.width);
    let horizontal = filter_taps(w, out_w);
    let vertical = filter_taps(h, out_h);
    let mut rows = vec![0f32; c * h * out_w];
    for ch in 0..c {
        for y in 0..h {
            let src = &img.pixels[(ch * h + y) * w..(ch * h + y + 1) * w];
            for (x, (start, weights)) in horizontal.iter().enumerate() {
                rows[(ch * h + y) * out_w + x] = weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * src[start + k])
                    .sum();
            }
        }
    }
    let mut pixels = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        for (y, (start, weights)) in vertical.iter().enumerate() {
            for x in 0..out_w {
                pixels[(ch * out_h + y) * out_w + x] = weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * rows[(ch * h + start + k) * out_w + x])
                    .sum();
            }
        }
    }
    crate::Image {
        channels: c,
        height: out_h,
        width: out_w,
        pixels,
    }
}

/// For each of `out` output positions along an axis of `len` input pixels: the first input
/// pixel it reads and the normalised triangle-filter weights from there.
fn filter_taps(len: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f64 / out as f64;
    let stretch = scale.max(1.0);
    let support = stretch;
    (0..out)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0) as usize).min(len - 1);
            let hi = ((centre + support).ceil() as usize).clamp(lo + 1, len);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 + 0.5 - centre) / stretch).abs()).max(0.0))
                .collect();
            let sum: f64 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|v| *v /= sum);
            } else {
                // Upscaling at the very edge: the nearest pixel.
                weights.iter_mut().for_each(|v| *v = 0.0);
                weights[0] = 1.0;
            }
            (lo, weights.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antialiased_resize_keeps_constants_and_averages_when_halving() {
        let img = crate::Image {
            channels: 1,
            height: 2,
            width: 4,
            pixels: vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
        };
        // Halving the width: PIL's triangle of support 2 around centres 1 and 3 weighs
        // (0.75, 0.75, 0.25) / 1.75 and (0.25, 0.75, 0.75) / 1.75: 3/7 and 4/7 exactly (Pillow
        // 13.0.0, mode "F", `Image.BILINEAR`, gives 0.42857143 and 0.5714286).
        let half = antialiased(&img, 2, 2);
        for row in half.pixels.chunks(2) {
            assert!((row[0] - 3.0 / 7.0).abs() < 1e-6, "{row:?}");
            assert!((row[1] - 4.0 / 7.0).abs() < 1e-6, "{row:?}");
        }
        // A 5x7 ramp `i / 35` down to 2x3 and up to 11x13, against Pillow 13.0.0's mode "F"
        // bilinear resize of the same array (`Image.fromarray(a, "F").resize((w, h))`).
        let ramp = crate::Image {
            channels: 1,
            height: 5,
            width: 7,
            pixels: (0..35).map(|i| i as f32 / 35.0).collect(),
        };
        let down = antialiased(&ramp, 2, 3);
        let pil_down = [
            0.2244898, 0.2857143, 0.3469388, 0.62448984, 0.6857143, 0.7469388,
        ];
        for (ours, pil) in down.pixels.iter().zip(pil_down) {
            assert!((ours - pil).abs() < 1e-6, "2x3: {:?}", down.pixels);
        }
        let up = antialiased(&ramp, 11, 13);
        let pil_up_row3 = [
            0.21818182, 0.22697303, 0.24235764, 0.25774226, 0.2731269, 0.2885115,
        ];
        for (ours, pil) in up.pixels[3 * 13..3 * 13 + 6].iter().zip(pil_up_row3) {
            assert!(
                (ours - pil).abs() < 1e-6,
                "11x13 row 3: {:?}",
                &up.pixels[39..45]
            );
        }
        let flat = crate::Image {
            channels: 3,
            height: 5,
            width: 7,
            pixels: vec![0.25; 3 * 5 * 7],
        };
        for (h, w) in [(2, 3), (5, 7), (11, 13)] {
            let r = antialiased(&flat, h, w);
            assert_eq!(r.pixels.len(), 3 * h * w);
            assert!(r.pixels.iter().all(|v| (v - 0.25).abs() < 1e-6));
        }
    }
}
