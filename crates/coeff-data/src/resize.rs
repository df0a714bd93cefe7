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
