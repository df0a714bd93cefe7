//! The memory-bounded training path: with `recompute::enable`, a query-chunked attention layer
//! records one operator whose backward recomputes each chunk's maps. Its output and every
//! gradient (input, projections, Coeff's alpha, cross-attention context) equal eager
//! autodiff's; map dropout and an additive bias keep the plain chunked path (which applies the
//! bias); the plain-backend backward equals autodiff of the eager formula.

mod common;

use burn::module::Param;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData};
use coeff_tuning::attention::mix_heads;
use coeff_tuning::attention::recompute::{self, RecomputeInput};
use coeff_tuning::{AttentionInput, MultiHeadAttention, MultiHeadAttentionConfig};
use common::{device, max_abs_diff, randn, Inner, TB};

fn layer(cfg: MultiHeadAttentionConfig, alpha_seed: Option<u64>) -> MultiHeadAttention<TB> {
    let mut attn = cfg.init::<TB>(&device());
    if let Some(seed) = alpha_seed {
        attn.inject_coeff(0.0, "attn").unwrap();
        let h = attn.n_heads;
        let coeff = attn.coeff.as_mut().unwrap();
        coeff.alpha = Param::from_tensor(randn([h, h], seed, &device()).mul_scalar(0.8));
    }
    attn
}

/// Output, and the gradients of the inputs, the query/key/value/output weights and alpha, of
/// `sum(out * w)` for a fixed random `w`.
fn run(
    attn: &MultiHeadAttention<TB>,
    x: Tensor<TB, 3>,
    ctx: Option<Tensor<TB, 3>>,
    pad: Option<Tensor<TB, 2, Bool>>,
) -> Vec<Tensor<Inner, 3>> {
    run_with_bias(attn, x, ctx, pad, None)
}

/// [`run`] with an additive score bias; its gradient follows the context's (or the input's),
/// flattened to `[b * h, n, m]`.
fn run_with_bias(
    attn: &MultiHeadAttention<TB>,
    x: Tensor<TB, 3>,
    ctx: Option<Tensor<TB, 3>>,
    pad: Option<Tensor<TB, 2, Bool>>,
    bias: Option<Tensor<TB, 4>>,
) -> Vec<Tensor<Inner, 3>> {
    let x = x.require_grad();
    let ctx = ctx.map(|c| c.require_grad());
    let bias = bias.map(|b| b.require_grad());
    let mut input = match &ctx {
        Some(c) => AttentionInput::cross_attn(x.clone(), c.clone()),
        None => AttentionInput::self_attn(x.clone()),
    };
    if let Some(p) = pad {
        input = input.mask_pad(p);
    }
    if let Some(b) = &bias {
        input = input.bias(b.clone());
    }
    let out = attn.forward(input).context;
    let w = randn::<TB, 3>(out.dims(), 99, &device());
    let grads = (out.clone() * w).sum().backward();
    let as3 = |t: Tensor<Inner, 2>| t.unsqueeze::<3>();
    let mut v = vec![out.inner(), x.grad(&grads).unwrap()];
    if let Some(c) = &ctx {
        v.push(c.grad(&grads).unwrap());
    }
    if let Some(b) = &bias {
        let [bb, h, n, m] = b.dims();
        v.push(b.grad(&grads).unwrap().reshape([bb * h, n, m]));
    }
    for lin in [&attn.query, &attn.key, &attn.value, &attn.output] {
        v.push(as3(lin.base.weight.val().grad(&grads).unwrap()));
    }
    if let Some(c) = &attn.coeff {
        v.push(as3(c.alpha.val().grad(&grads).unwrap()));
    }
    v
}

#[test]
fn recomputing_backward_equals_eager_autodiff() {
    recompute::enable::<Inner>();
    assert!(recompute::is_enabled::<TB>());
    assert!(!recompute::is_enabled::<Inner>());
    let (batch, n, d) = (2, 11, 12);
    let names = [
        "output",
        "d input",
        "d context",
        "d query",
        "d key",
        "d value",
        "d out proj",
        "d alpha",
    ];
    for (alpha, cross) in [(None, false), (Some(3), false), (Some(4), true)] {
        let cfg = MultiHeadAttentionConfig::new(d, 3).with_d_kv(Some(if cross { 5 } else { d }));
        let eager = layer(cfg, alpha);
        let mut chunked = eager.clone();
        chunked.query_chunk = Some(4); // 11 rows: chunks of 4, 4, 3
        let x = randn::<TB, 3>([batch, n, d], 1, &device());
        let m = if cross { 6 } else { n };
        let ctx = cross.then(|| randn::<TB, 3>([batch, m, 5], 2, &device()));
        let pad_vals: Vec<bool> = (0..batch * m).map(|i| i >= m && i % m >= m - 2).collect();
        let pad =
            Tensor::<TB, 2, Bool>::from_data(TensorData::new(pad_vals, [batch, m]), &device());
        let before = recompute::calls();
        let a = run(&eager, x.clone(), ctx.clone(), Some(pad.clone()));
        assert_eq!(
            recompute::calls(),
            before,
            "the eager layer must not take the path"
        );
        let b = run(&chunked, x, ctx, Some(pad));
        assert_eq!(
            recompute::calls(),
            before + 1,
            "the chunked layer must take the path"
        );
        assert_eq!(a.len(), b.len());
        let skip_ctx = if cross { 0 } else { 1 };
        for (i, (ea, eb)) in a.into_iter().zip(b).enumerate() {
            let name = names[if i >= 2 { i + skip_ctx } else { i }];
            close(&format!("alpha={alpha:?} cross={cross}: {name}"), eb, ea);
        }
    }
    // Map dropout keeps the plain chunked path.
    let mut dropped = layer(
        MultiHeadAttentionConfig::new(d, 3).with_dropout(0.1),
        Some(5),
    );
    dropped.query_chunk = Some(4);
    let before = recompute::calls();
    let _ = run(
        &dropped,
        randn::<TB, 3>([batch, n, d], 1, &device()),
        None,
        None,
    );
    assert_eq!(recompute::calls(), before);
    // In this test, not a test of its own: the registry and the call counter are
    // process-global, and a parallel test would race with `enable` / `disable` and `calls()`.
    additive_bias_keeps_the_plain_chunked_path(batch, n, d);
    recompute::disable_with::<Inner, burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>(
    );
    assert!(!recompute::is_enabled::<TB>());
}

/// An additive bias keeps the plain chunked path (with recompute enabled), and that path
/// applies it: the chunked layer's output and gradients equal the eager layer's with the bias.
/// Catches a chunked path that drops, mis-slices or detaches the bias, and a recomputing path
/// taken (and the bias ignored) where it must not be.
fn additive_bias_keeps_the_plain_chunked_path(batch: usize, n: usize, d: usize) {
    assert!(recompute::is_enabled::<TB>());
    let heads = 3;
    let eager = layer(MultiHeadAttentionConfig::new(d, heads), Some(6));
    let mut chunked = eager.clone();
    chunked.query_chunk = Some(4); // 11 rows: chunks of 4, 4, 3
    let x = randn::<TB, 3>([batch, n, d], 7, &device());
    // Broadcast over the batch, distinct per head and row; entries in [-3, 3], against scores
    // of order 1, so the maps change substantially.
    let bias = randn::<TB, 4>([1, heads, n, n], 8, &device()).mul_scalar(3.0);

    let before = recompute::calls();
    let reference = run_with_bias(&eager, x.clone(), None, None, Some(bias.clone()));
    let ours = run_with_bias(&chunked, x.clone(), None, None, Some(bias));
    assert_eq!(
        recompute::calls(),
        before,
        "a layer with an additive bias must keep the plain chunked path"
    );
    // The bias matters: without it the output moves by far more than the tolerance.
    let unbiased = run(&eager, x, None, None);
    let effect = max_abs_diff(reference[0].clone(), unbiased[0].clone());
    assert!(
        effect > 1e-2,
        "the bias changed the output by only {effect}"
    );

    let names = [
        "output",
        "d input",
        "d bias",
        "d query",
        "d key",
        "d value",
        "d out proj",
        "d alpha",
    ];
    assert_eq!(reference.len(), names.len());
    assert_eq!(ours.len(), names.len());
    for ((name, e), o) in names.iter().zip(reference).zip(ours) {
        close(&format!("bias: {name}"), o, e);
    }
}

#[test]
fn plain_backward_equals_autodiff_of_the_eager_formula() {
    let dev = device();
    let (b, h, n, m, d) = (2, 3, 7, 5, 4);
    let q = randn::<TB, 4>([b, h, n, d], 11, &dev).require_grad();
    let k_t = randn::<TB, 4>([b, h, d, m], 12, &dev).require_grad();
    let v = randn::<TB, 4>([b, h, m, d], 13, &dev).require_grad();
    let eye = Tensor::<TB, 2>::eye(h, &dev);
    let mix = (eye + randn::<TB, 2>([h, h], 14, &dev).mul_scalar(0.5)).require_grad();
    let scale = 0.5;
    let p = softmax(q.clone().matmul(k_t.clone()).mul_scalar(scale), 3);
    let out = mix_heads(p, mix.clone()).matmul(v.clone());
    let g = randn::<TB, 4>([b, h, n, d], 15, &dev);
    let grads = (out.clone() * g.clone()).sum().backward();
    let input = RecomputeInput::<Inner> {
        q: q.clone().inner(),
        k_t: k_t.clone().inner(),
        v: v.clone().inner(),
        mix: Some(mix.clone().inner()),
        mask: None,
        scale,
        mask_value: -1e9,
        chunk: 3,
    };
    close("output", recompute::chunked_forward(&input), out.inner());
    let ours = recompute::chunked_backward(&input, g.inner());
    for (name, a, e) in [
        ("q", ours.q, q.grad(&grads).unwrap()),
        ("k", ours.k_t, k_t.grad(&grads).unwrap()),
        ("v", ours.v, v.grad(&grads).unwrap()),
    ] {
        close(&format!("d{name}"), a, e);
    }
    close("d mix", ours.mix.unwrap(), mix.grad(&grads).unwrap());
}

/// Equal up to f32 rounding: 1e-4 of the larger magnitude (at least 1). Measured: 5e-8 with
/// this crate's own features, 1.6e-5 on gradients of magnitude 0.36 in the workspace build,
/// whose unified backend features (SIMD kernels) change the reference's rounding; a wrong
/// term in the backward is off by the gradient's own size.
fn close<const D: usize>(name: &str, ours: Tensor<Inner, D>, reference: Tensor<Inner, D>) {
    let scale = reference.clone().abs().max().into_scalar();
    let err = max_abs_diff(ours, reference);
    eprintln!("{name}: max abs difference {err} (max magnitude {scale})");
    assert!(
        err <= 1e-4 * scale.max(1.0),
        "{name} differs by {err} (max magnitude {scale})"
    );
}
