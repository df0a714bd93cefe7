//! Resizing the position-embedding grid to the input's patch grid, matching PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)` with and without `antialias`.
//!
//! Bicubic resizing is separable, so it is two small matrices `W_rows: [H_out, H_in]` and
//! `W_cols: [W_out, W_in]` computed on the host; applying them is two matmuls on the device,
//! which keeps the position embeddings differentiable (full fine-tuning trains them).

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// How a reference implementation resizes position embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// `F.interpolate(size=(h, w), mode="bicubic", align_corners=False)`.
    Bicubic,
    /// The same with `antialias=True` (PIL-style filter, `a = -0.5`).
    BicubicAntialias,
    /// `F.interpolate(scale_factor=(s_h, s_w), mode="bicubic", align_corners=False)`; PyTorch
    /// then maps output to input coordinates with `1 / scale_factor`, not `in / out`.
    BicubicScaleFactor {
        /// `(s_h, s_w)`.
        scale: (f64, f64),
    },
}

/// Weights `[n_out, n_in]` (row-major) of 1-D bicubic resizing.
pub fn bicubic_weights(
    n_in: usize,
    n_out: usize,
    antialias: bool,
    scale_override: Option<f64>,
) -> Vec<f64> {
    // PyTorch's source-to-input scale: in/out, or 1/scale_factor when one was given.
    let scale = scale_override
        .map(|s| 1.0 / s)
        .unwrap_or(n_in as f64 / n_out as f64);
    let mut w = vec![0.0; n_out * n_in];
    if antialias {
        // aten/src/ATen/native/UpSample.h `_compute_indices_min_size_weights_aa` with the
        // bicubic filter of `a = -0.5`.
        let support = 2.0 * scale.max(1.0);
        let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        for i in 0..n_out {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
            let xmax = ((center + support + 0.5).trunc() as i64).min(n_in as i64) as usize;
            let mut row: Vec<f64> = (xmin..xmax)
                .map(|j| cubic_aa((j as f64 - center + 0.5) * inv))
                .collect();
            let total: f64 = row.iter().sum();
            if total != 0.0 {
                row.iter_mut().for_each(|x| *x /= total);
            }
            for (k, j) in (xmin..xmax).enumerate() {
                w[i * n_in + j] += row[k];
            }
        }
    } else {
        // aten/src/ATen/native/cpu/UpSampleKernel.cpp, cubic with A = -0.75, clamped access.
        const A: f64 = -0.75;
        let cc1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let cc2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        for i in 0..n_out {
            let real = scale * (i as f64 + 0.5) - 0.5;
            let x0 = real.floor();
            let t = real - x0;
            let coeffs = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
            for (k, c) in coeffs.iter().enumerate() {
                let j = (x0 as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
                w[i * n_in + j] += c;
            }
        }
    }
    w
}

fn cubic_aa(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Resize patch position embeddings `[1, rows * cols, D]` to `[1, out_rows * out_cols, D]`.
pub fn resize_grid<B: Backend>(
    pos: Tensor<B, 3>,
    from: [usize; 2],
    to: [usize; 2],
    method: Resize,
) -> Tensor<B, 3> {
    if from == to && !matches!(method, Resize::BicubicScaleFactor { .. }) {
        return pos;
    }
    let d = pos.dims()[2];
    let device = pos.device();
    let (antialias, scales) = match method {
        Resize::Bicubic => (false, (None, None)),
        Resize::BicubicAntialias => (true, (None, None)),
        Resize::BicubicScaleFactor { scale } => (false, (Some(scale.0), Some(scale.1))),
    };
    let matrix = |n_in: usize, n_out: usize, s: Option<f64>| {
        let w: Vec<f32> = bicubic_weights(n_in, n_out, antialias, s)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        Tensor::<B, 2>::from_data(TensorData::new(w, [n_out, n_in]), &device)
    };
    let wr = matrix(from[0], to[0], scales.0);
    let wc = matrix(from[1], to[1], scales.1);
    // [rows, cols*D] -> rows resized -> [to_rows, cols, D]
    let grid = pos.reshape([from[0], from[1] * d]);
    let grid = wr.matmul(grid).reshape([to[0], from[1], d]);
    // [cols, to_rows*D] -> cols resized -> [to_cols, to_rows, D]
    let grid = grid.swap_dims(0, 1).reshape([from[1], to[0] * d]);
    let grid = wc.matmul(grid).reshape([to[1], to[0], d]);
    grid.swap_dims(0, 1).reshape([1, to[0] * to[1], d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_the_weights_sum_to_one() {
        for aa in [false, true] {
            for (i, o) in [(7, 5), (5, 9), (37, 16), (4, 4)] {
                let w = bicubic_weights(i, o, aa, None);
                for r in 0..o {
                    let s: f64 = w[r * i..(r + 1) * i].iter().sum();
                    assert!(
                        (s - 1.0).abs() < 1e-9,
                        "aa={aa} {i}->{o} row {r} sums to {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_size_without_antialias_is_identity() {
        let w = bicubic_weights(6, 6, false, None);
        for r in 0..6 {
            for c in 0..6 {
                let e = if r == c { 1.0 } else { 0.0 };
                assert!((w[r * 6 + c] - e).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn torch_reference_values_upsample_2_to_4() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4),
        //   mode="bicubic", align_corners=False) -> [-0.1055, 0.2266, 0.7734, 1.1055]
        let w = bicubic_weights(2, 4, false, None);
        let out: Vec<f64> = (0..4).map(|r| w[r * 2 + 1]).collect();
        let expected = [-0.10546875, 0.2265625, 0.7734375, 1.10546875];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}
