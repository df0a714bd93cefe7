//! The input graph and conversions between point lists and tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::geometry::P2;
use coeff_harness::rng::Lcg;

/// The input graph: `N` nodes on a noisy ring around the origin (every node is a vertex of
/// the convex hull, so a node can single itself out by dot-product attention).
pub(crate) fn ring_graph(n: usize, rng: &mut Lcg) -> Vec<f64> {
    let mut v = Vec::with_capacity(2 * n);
    for j in 0..n {
        let theta = std::f64::consts::TAU * (j as f64 + 0.3 * (rng.uniform() - 0.5)) / n as f64;
        let r = 1.0 + 0.15 * (rng.uniform() - 0.5);
        v.extend([r * theta.cos(), r * theta.sin()]);
    }
    let (mx, my) = (
        v.iter().step_by(2).sum::<f64>() / n as f64,
        v.iter().skip(1).step_by(2).sum::<f64>() / n as f64,
    );
    v.chunks_exact(2)
        .flat_map(|c| [c[0] - mx, c[1] - my])
        .collect()
}

pub(crate) fn tensor2<B: Backend>(
    vals: &[f64],
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    let v: Vec<f32> = vals.iter().map(|v| *v as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub(crate) fn points<B: Backend>(t: Tensor<B, 3>) -> Vec<P2> {
    let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32");
    v.chunks_exact(2)
        .map(|c| [c[0] as f64, c[1] as f64])
        .collect()
}
