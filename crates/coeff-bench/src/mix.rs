//! `mix`: the head-mixing kernel alone, forward and forward+backward, in two formulations, on
//! maps of ViT size.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use coeff_harness::report::median;
use coeff_harness::rng::Lcg;

/// `bench-mix`: the head-mixing kernel alone, forward and forward+backward, in two
/// formulations, on maps of ViT size.
pub fn run_mix<B: AutodiffBackend>(
    batch: usize,
    heads: usize,
    tokens: usize,
    iters: usize,
    device: &B::Device,
) -> Result<()> {
    use coeff_tuning::attention::{mix_heads, mix_heads_2d};
    let mut rng = Lcg::new(1);
    let n = batch * heads * tokens * tokens;
    let v: Vec<f32> = rng
        .uniform_vec(n, 0.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let maps = Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(v, [batch, heads, tokens, tokens]),
        device,
    );
    let c: Vec<f32> = rng
        .uniform_vec(heads * heads, -0.5, 0.5)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let coeffs =
        Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(c, [heads, heads]), device);
    type Mix<B> = fn(Tensor<B, 4>, Tensor<B, 2>) -> Tensor<B, 4>;
    let kernels: [(&str, Mix<B>); 2] = [
        ("batched [B,H,H]x[B,H,NM]", mix_heads),
        ("2-D [H,H]x[H,B*NM]", mix_heads_2d),
    ];
    for (name, f) in kernels {
        let mut fwd = Vec::new();
        let mut fb = Vec::new();
        for it in 0..=iters {
            let t0 = Instant::now();
            let _ = f(maps.clone().detach(), coeffs.clone().detach())
                .sum()
                .into_data();
            let a = t0.elapsed().as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let m = maps.clone().detach().require_grad();
            let c = coeffs.clone().detach().require_grad();
            let g = f(m, c).powi_scalar(2).mean().backward();
            drop(g);
            B::sync(device)?;
            let b = t0.elapsed().as_secs_f64() * 1e3;
            if it > 0 {
                fwd.push(a);
                fb.push(b);
            }
        }
        println!(
            "{name:>28}: forward {:7.1} ms, forward+backward {:7.1} ms",
            median(fwd),
            median(fb)
        );
    }
    Ok(())
}
