//! The attention operator: eager vs chunked, masks, cross-attention, the Coeff index convention.

mod common;

use burn::module::Param;
use burn::tensor::{Bool, Tensor, TensorData};
use coeff_tuning::attention::mix_heads;
use coeff_tuning::{AttentionInput, MultiHeadAttention, MultiHeadAttentionConfig};
use common::{max_abs_diff, randn, Inner};

type B = Inner;

fn dev() -> burn::tensor::Device<B> {
    Default::default()
}

/// An attention layer with non-trivial coefficients.
fn layer(cfg: MultiHeadAttentionConfig, with_coeff: bool) -> MultiHeadAttention<B> {
    let mut attn = cfg.init::<B>(&dev());
    if with_coeff {
        attn.inject_coeff(0.0, "attn").unwrap();
        let h = attn.n_heads;
        let coeff = attn.coeff.as_mut().unwrap();
        coeff.alpha = Param::from_tensor(randn([h, h], 7, &dev()).mul_scalar(0.8));
    }
    attn
}

#[test]
fn chunked_path_equals_eager_self_attention_with_masks() {
    let _serial = common::serial();
    let (batch, n, d) = (2, 10, 12);
    for with_coeff in [false, true] {
        let cfg = MultiHeadAttentionConfig::new(d, 3);
        let eager = layer(cfg.clone(), with_coeff);
        let mut chunked = eager.clone();
        chunked.query_chunk = Some(3);
        let x = randn::<B, 3>([batch, n, d], 1, &dev());
        let pad_vals: Vec<bool> = (0..batch * n).map(|i| i % n >= n - 2 && i >= n).collect();
        let pad = Tensor::<B, 2, Bool>::from_data(TensorData::new(pad_vals, [batch, n]), &dev());
        let causal: Vec<bool> = (0..batch * n * n).map(|i| (i % n) > (i / n) % n).collect();
        let causal =
            Tensor::<B, 3, Bool>::from_data(TensorData::new(causal, [batch, n, n]), &dev());
        let bias = randn::<B, 4>([1, 3, n, n], 5, &dev());
        let input = AttentionInput::self_attn(x)
            .mask_pad(pad)
            .mask_attn(causal)
            .bias(bias);
        let a = eager.forward(input.clone()).context;
        let b = chunked.forward(input).context;
        let err = max_abs_diff(a, b);
        assert!(
            err < 1e-5,
            "coeff={with_coeff}: chunked differs from eager by {err}"
        );
    }
}

#[test]
fn chunked_path_equals_eager_cross_attention() {
    let _serial = common::serial();
    let (batch, n, m, d, d_kv) = (2, 7, 5, 8, 6);
    let cfg = MultiHeadAttentionConfig::new(d, 2).with_d_kv(Some(d_kv));
    let eager = layer(cfg, true);
    let mut chunked = eager.clone();
    chunked.query_chunk = Some(2);
    let x = randn::<B, 3>([batch, n, d], 2, &dev());
    let ctx = randn::<B, 3>([batch, m, d_kv], 3, &dev());
    let a = eager.forward(AttentionInput::cross_attn(x.clone(), ctx.clone()));
    assert_eq!(a.context.dims(), [batch, n, d]);
    let b = chunked.forward(AttentionInput::cross_attn(x, ctx)).context;
    let err = max_abs_diff(a.context, b);
    assert!(err < 1e-5, "chunked cross-attention differs by {err}");
}

#[test]
fn padded_keys_get_no_weight_and_do_not_change_the_output() {
    let _serial = common::serial();
    let (n, d) = (6, 8);
    let attn = layer(MultiHeadAttentionConfig::new(d, 2), true);
    let x = randn::<B, 3>([1, n, d], 11, &dev());
    let pad = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(vec![false, false, false, false, true, true], [1, n]),
        &dev(),
    );
    let out = attn.forward(
        AttentionInput::self_attn(x.clone())
            .mask_pad(pad.clone())
            .with_maps(),
    );
    let maps = out.maps.unwrap();
    let padded_mass: f32 = maps
        .clone()
        .slice([0..1, 0..2, 0..n, 4..6])
        .abs()
        .sum()
        .into_scalar();
    assert!(
        padded_mass < 1e-6,
        "padded keys received weight {padded_mass}"
    );
    let row_sums = maps.sum_dim(3);
    let err = max_abs_diff(row_sums, Tensor::ones([1, 2, n, 1], &dev()));
    assert!(err < 1e-5, "softmax rows do not sum to one ({err})");

    // Change the padded tokens only as keys/values: queries stay the same.
    let other = randn::<B, 3>([1, n, d], 12, &dev());
    let kv = Tensor::cat(
        vec![x.clone().slice([0..1, 0..4]), other.slice([0..1, 4..6])],
        1,
    );
    let changed = attn
        .forward(AttentionInput::new(x, kv.clone(), kv).mask_pad(pad))
        .context;
    let err = max_abs_diff(out.context, changed);
    assert!(err < 1e-5, "padded keys changed the output by {err}");
}

#[test]
fn mixed_maps_follow_target_head_by_source_map_convention() {
    let _serial = common::serial();
    let (n, d) = (5, 6);
    let attn = layer(MultiHeadAttentionConfig::new(d, 3), true);
    let x = randn::<B, 3>([2, n, d], 21, &dev());
    let out = attn.forward(AttentionInput::self_attn(x).with_maps());
    let maps = out.maps.unwrap();
    let mixed = out.mixed_maps.unwrap();
    let alpha: Vec<f32> = attn
        .coeff
        .as_ref()
        .unwrap()
        .alpha
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    // A_hat[h] = sum_i (I + alpha)[h, i] * A[i], written out by hand.
    for h in 0..3 {
        let mut manual = Tensor::<B, 4>::zeros([2, 1, n, n], &dev());
        for i in 0..3 {
            let c = alpha[h * 3 + i] + if h == i { 1.0 } else { 0.0 };
            manual = manual + maps.clone().slice([0..2, i..i + 1]).mul_scalar(c);
        }
        let err = max_abs_diff(manual, mixed.clone().slice([0..2, h..h + 1]));
        assert!(
            err < 1e-5,
            "head {h}: mixed map differs from sum_i alpha[h,i] A_i by {err}"
        );
    }
    // Mixing may leave the simplex: rows no longer sum to one.
    let dev_from_one = max_abs_diff(mixed.sum_dim(3), Tensor::ones([2, 3, n, 1], &dev()));
    assert!(dev_from_one > 1e-2, "non-zero alpha should change row sums");
}

#[test]
fn zero_alpha_and_disabled_coeff_equal_plain_attention() {
    let _serial = common::serial();
    let cfg = MultiHeadAttentionConfig::new(8, 4);
    let plain = cfg.init::<B>(&dev());
    let mut zero = plain.clone();
    zero.inject_coeff(0.2, "attn").unwrap();
    let x = randn::<B, 3>([2, 5, 8], 31, &dev());
    let base = plain.forward(AttentionInput::self_attn(x.clone())).context;
    let z = zero.forward(AttentionInput::self_attn(x.clone())).context;
    assert!(max_abs_diff(base.clone(), z) < 1e-6);

    let mut active = layer(cfg, true);
    active.query = plain.query.clone();
    active.key = plain.key.clone();
    active.value = plain.value.clone();
    active.output = plain.output.clone();
    let on = active.forward(AttentionInput::self_attn(x.clone())).context;
    assert!(
        max_abs_diff(base.clone(), on) > 1e-3,
        "non-zero alpha must change the output"
    );
    active.coeff.as_mut().unwrap().enabled = false;
    let off = active.forward(AttentionInput::self_attn(x)).context;
    assert!(max_abs_diff(base, off) < 1e-6);
}

#[test]
fn mix_heads_with_identity_is_a_no_op() {
    let _serial = common::serial();
    let maps = randn::<B, 4>([2, 3, 4, 5], 41, &dev());
    let out = mix_heads(maps.clone(), Tensor::eye(3, &dev()));
    assert!(max_abs_diff(maps, out) < 1e-7);
}

#[test]
fn fully_masked_rows_are_finite() {
    let _serial = common::serial();
    let attn = layer(MultiHeadAttentionConfig::new(4, 2), false);
    let x = randn::<B, 3>([1, 3, 4], 51, &dev());
    let pad = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; 3], [1, 3]), &dev());
    let out = attn
        .forward(AttentionInput::self_attn(x).mask_pad(pad))
        .context;
    let v: Vec<f32> = out.into_data().to_vec().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "NaN/Inf in output: {v:?}");
}

/// Incremental decoding through the key-value cache gives the rows of the full causal forward
/// pass, for pre- and post-norm blocks with cross-attention and Coeff, whatever the step sizes.
#[test]
fn cached_decoding_equals_the_full_causal_pass() {
    let _serial = common::serial();
    use coeff_tuning::nn::{
        Activation, BlockCache, BlockInput, NormPlacement, TransformerBlockConfig,
    };
    let (batch, n, m, d, d_ctx) = (2, 7, 5, 12, 8);
    for norm in [NormPlacement::Pre, NormPlacement::Post] {
        let mut block = TransformerBlockConfig::new(d, 3, 20, Activation::Gelu)
            .with_norm(norm)
            .with_cross_attention(Some(d_ctx))
            .init::<B>(&dev());
        for (attn, seed) in [
            (&mut block.attn, 3),
            (block.cross_attn.as_mut().unwrap(), 4),
        ] {
            attn.inject_coeff(0.0, "attn").unwrap();
            attn.coeff.as_mut().unwrap().alpha =
                Param::from_tensor(randn([3, 3], seed, &dev()).mul_scalar(0.5));
        }
        let x = randn::<B, 3>([batch, n, d], 5, &dev());
        let ctx = randn::<B, 3>([batch, m, d_ctx], 6, &dev());
        let ctx_pad = Tensor::<B, 2, Bool>::from_data(
            TensorData::new((0..batch * m).map(|i| i == 2 * m - 1).collect(), [batch, m]),
            &dev(),
        );
        let causal: Vec<bool> = (0..batch * n * n).map(|i| (i % n) > (i / n) % n).collect();
        let causal =
            Tensor::<B, 3, Bool>::from_data(TensorData::new(causal, [batch, n, n]), &dev());
        let full = block.forward(
            BlockInput::new(x.clone())
                .mask_attn(causal)
                .context(ctx.clone())
                .context_mask_pad(ctx_pad.clone()),
        );
        let mut cache: BlockCache<B> = block.start_cache(Some(ctx));
        let mut rows = Vec::new();
        let mut start = 0;
        for step in [3, 1, 2, 1] {
            let part = x.clone().slice([0..batch, start..start + step, 0..d]);
            rows.push(block.forward_step(part, &mut cache, Some(ctx_pad.clone())));
            start += step;
        }
        assert_eq!(cache.self_kv.as_ref().unwrap().len(), n);
        let diff = max_abs_diff(full, Tensor::cat(rows, 1));
        assert!(diff < 1e-5, "{norm:?}: cached decoding differs by {diff}");
    }
}

/// In training (an autodiff backend) alpha's dropout is drawn once per layer forward, whether
/// the queries are processed whole or in chunks: with the generator seeded alike, both paths
/// give the same output. (Every test of this file holds `common::serial()`: none may draw
/// from the generator between the seeding and the forward.)
#[test]
fn chunked_path_draws_alpha_dropout_once_per_layer() {
    let _serial = common::serial();
    use burn::tensor::backend::Backend as _;
    use common::{device, TB};
    let (batch, n, d) = (2, 9, 12);
    let mut eager = MultiHeadAttentionConfig::new(d, 3).init::<TB>(&device());
    eager.inject_coeff(0.5, "attn").unwrap();
    let h = eager.n_heads;
    eager.coeff.as_mut().unwrap().alpha =
        Param::from_tensor(randn([h, h], 3, &device()).mul_scalar(0.8));
    let mut chunked = eager.clone();
    chunked.query_chunk = Some(4);
    let x = randn::<TB, 3>([batch, n, d], 1, &device());
    TB::seed(&device(), 42);
    let a = eager.forward(AttentionInput::self_attn(x.clone())).context;
    TB::seed(&device(), 42);
    let b = chunked
        .forward(AttentionInput::self_attn(x.clone()))
        .context;
    let err = max_abs_diff(a.clone(), b);
    assert!(
        err < 1e-5,
        "chunked differs from eager by {err} under alpha dropout"
    );
    // ... and the dropout is really active: another draw gives another output.
    TB::seed(&device(), 7);
    let c = eager.forward(AttentionInput::self_attn(x)).context;
    assert!(max_abs_diff(a, c) > 1e-4, "alpha dropout had no effect");
}
