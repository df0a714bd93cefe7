//! The one attention layer: its start weights and Prop. 4.2's region for its value paths.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use coeff_tuning::{MultiHeadAttention, MultiHeadAttentionConfig};

use super::data::tensor2;
use super::geometry::{minkowski_sum, P2};
use coeff_harness::rng::Lcg;

pub(crate) const HEAD_DIM: usize = 2;

/// Start weights: random filters `W_q, W_k` sharp enough to be interesting, and value paths
/// `W_v^h W_o^h = I / H`, so that the Prop. 4.2 region `R0 = sum_h conv(X / H)` is exactly the
/// convex hull of the inputs: run (i) cannot leave conv(X).
pub(crate) fn start_layer<B: Backend>(
    heads: usize,
    rng: &mut Lcg,
    device: &B::Device,
) -> MultiHeadAttention<B> {
    let inner = heads * HEAD_DIM;
    let mut layer = MultiHeadAttentionConfig::new(2, heads)
        .with_head_dim(Some(HEAD_DIM))
        .with_qkv_bias(false)
        .with_output_bias(false)
        .init::<B>(device);
    let random = |shape: [usize; 2], scale: f64, rng: &mut Lcg| {
        Param::from_tensor(tensor2(
            &rng.uniform_vec(shape[0] * shape[1], -scale, scale),
            shape,
            device,
        ))
    };
    layer.query.base.weight = random([2, inner], 2.0, rng);
    layer.key.base.weight = random([2, inner], 2.0, rng);
    // W_v = [I I ... I] : [2, 2H];  W_o = [I; I; ...; I] / H : [2H, 2].
    let wv: Vec<f64> = (0..2 * inner)
        .map(|k| ((k / inner) == (k % inner) % 2) as u8 as f64)
        .collect();
    let wo: Vec<f64> = (0..inner * 2)
        .map(|k| ((k / 2) % 2 == k % 2) as u8 as f64 / heads as f64)
        .collect();
    layer.value.base.weight = Param::from_tensor(tensor2(&wv, [2, inner], device));
    layer.output.base.weight = Param::from_tensor(tensor2(&wo, [inner, 2], device));
    layer
}

/// Prop. 4.2's region for a layer without coefficients: `sum_h conv{X[i] W_v^h W_o^h}`.
pub(crate) fn value_bound<B: Backend>(layer: &MultiHeadAttention<B>, x: &[P2]) -> Vec<P2> {
    let values =
        |w: &Param<Tensor<B, 2>>| -> Vec<f32> { w.val().into_data().to_vec().expect("f32") };
    let (wv, wo) = (
        values(&layer.value.base.weight),
        values(&layer.output.base.weight),
    );
    let inner = layer.n_heads * HEAD_DIM;
    let sets: Vec<Vec<P2>> = (0..layer.n_heads)
        .map(|h| {
            // M_h = W_v[:, h-block] @ W_o[h-block, :], a 2x2 map.
            let mut m = [[0.0f64; 2]; 2];
            for (r, row) in m.iter_mut().enumerate() {
                for (c, cell) in row.iter_mut().enumerate() {
                    *cell = (0..HEAD_DIM)
                        .map(|k| {
                            let j = h * HEAD_DIM + k;
                            wv[r * inner + j] as f64 * wo[j * 2 + c] as f64
                        })
                        .sum();
                }
            }
            x.iter()
                .map(|p| {
                    [
                        p[0] * m[0][0] + p[1] * m[1][0],
                        p[0] * m[0][1] + p[1] * m[1][1],
                    ]
                })
                .collect()
        })
        .collect();
    minkowski_sum(&sets)
}
