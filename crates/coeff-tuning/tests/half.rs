//! Half precision: the attention and the conformance checks on f16 tensors (Burn's Flex
//! backend computes in f16 when the tensors are f16). A fully masked row must give a uniform
//! map, never NaN; adapters must keep their identities (zero-init = base, merged = unmerged,
//! disabled = base) at f16 tolerance.

mod common;

use burn::backend::Flex;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, Bool, DType, FloatDType, Tensor, TensorData};
use coeff_tuning::{
    inject, merge_adapters, set_adapters_enabled, AttentionInput, Method, MultiHeadAttentionConfig,
};
use common::{perturb, randn, TinyModel, D_MODEL};

type H = Flex;

/// Cast every float parameter of a module to f16.
struct ToF16;
impl<B: Backend> ModuleMapper<B> for ToF16 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| t.cast(FloatDType::F16))
    }
}

fn half<M: Module<H>>(m: M) -> M {
    m.map(&mut ToF16)
}

fn x16(shape: [usize; 3], seed: u64) -> Tensor<H, 3> {
    randn::<H, 3>(shape, seed, &Default::default()).cast(FloatDType::F16)
}

fn max_diff(a: Tensor<H, 2>, b: Tensor<H, 2>) -> f32 {
    let d = (a.cast(FloatDType::F32) - b.cast(FloatDType::F32))
        .abs()
        .max();
    d.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0]
}

#[test]
fn a_fully_masked_row_is_uniform_not_nan_in_f16() {
    let dev = Default::default();
    let attn = half(MultiHeadAttentionConfig::new(8, 2).init::<H>(&dev));
    let x = x16([1, 3, 8], 1);
    // Query 0 may attend to nothing; the others see everything.
    let mut blocked = vec![false; 9];
    blocked[..3].fill(true);
    let mask = Tensor::<H, 3, Bool>::from_data(TensorData::new(blocked, [1, 3, 3]), &dev);
    let out = attn.forward(AttentionInput::self_attn(x).mask_attn(mask).with_maps());
    assert_eq!(out.context.dtype(), DType::F16);
    let ctx: Vec<f32> = out.context.into_data().convert::<f32>().to_vec().unwrap();
    assert!(
        ctx.iter().all(|v| v.is_finite()),
        "non-finite output: {ctx:?}"
    );
    let maps: Vec<f32> = out
        .maps
        .unwrap()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    // Head 0, query 0: uniform over the 3 keys.
    for v in &maps[..3] {
        assert!(
            (v - 1.0 / 3.0).abs() < 1e-3,
            "row not uniform: {:?}",
            &maps[..3]
        );
    }
}

#[test]
fn adapters_keep_their_identities_in_f16() {
    let dev = Default::default();
    let x = || x16([2, 5, D_MODEL], 3);
    // Merged vs unmerged in f16: rounding of the merged weights, amplified through two blocks
    // (an f16-rounding model of this network puts it below 1e-2 on outputs of magnitude <= ~6).
    const MERGE_TOL: f32 = 3e-2;
    for method in Method::ALL {
        let base = half(TinyModel::<H>::new(&dev));
        let cfg = method.config(2, &["query", "value", "fc1", "mixer"]);
        let (model, injected) = inject(base.clone(), &cfg).unwrap();
        let model = half(model);
        let base_out = base.forward(x());
        assert!(
            max_diff(base_out.clone(), model.forward(x())) < 1e-3,
            "{}: zero-init differs from base in f16",
            method.name()
        );
        // Every adapter entry moved by up to 0.3, alpha by up to 0.7 more and DoRA's
        // magnitude by up to 1.0 more: with 0.3 alone the Coeff-only and DoRA models move the
        // output by only ~0.2, too close to the merge tolerance to tell an adapter that acts
        // from one that does nothing.
        let model = half(perturb(model, &injected.trainable_prefixes(), 0.3));
        let suffixed = |layers: &[String], suffix: &str| -> Vec<String> {
            layers.iter().map(|p| format!("{p}.{suffix}")).collect()
        };
        let model = half(perturb(
            model,
            &suffixed(&injected.coeff_layers, "coeff.alpha"),
            0.7,
        ));
        let model = half(perturb(
            model,
            &suffixed(&injected.lora_layers, "lora.magnitude"),
            1.0,
        ));
        let out = model.forward(x());
        // Catches a merge that drops (or half-applies) the update: the adapter's effect is at
        // least ten times the merge tolerance, so merged == unmerged cannot hold by accident.
        let effect = max_diff(out.clone(), base_out.clone());
        assert!(
            effect > 10.0 * MERGE_TOL,
            "{}: adapters move the output by only {effect} (need > {})",
            method.name(),
            10.0 * MERGE_TOL
        );
        let merged = merge_adapters(model.clone()).forward(x());
        let merge_err = max_diff(out, merged);
        assert!(
            merge_err < MERGE_TOL,
            "{}: merged differs from unmerged by {merge_err} in f16 (adapter effect {effect})",
            method.name()
        );
        let off = set_adapters_enabled(model, false).forward(x());
        assert!(
            max_diff(off, base_out) < 1e-3,
            "{}: disabled differs from base in f16",
            method.name()
        );
    }
}

#[test]
fn adamw_keeps_f32_moments_for_f16_parameters() {
    use burn::backend::Autodiff;
    use coeff_tuning::train::{AdamW, AdamWConfig};

    #[derive(Module, Debug)]
    struct W<B: Backend> {
        w: Param<Tensor<B, 1>>,
    }
    type A = Autodiff<Flex>;
    let dev = Default::default();
    let w = Tensor::<A, 1>::from_data(TensorData::from([1.0f32, 1.0]), &dev)
        .cast(FloatDType::F16)
        .require_grad();
    let m = W {
        w: Param::from_tensor(w),
    };
    // Gradient 1e-4: its square (1e-8) underflows in f16, so f16 moments would give
    // v = 0 and a step of lr * m / eps = 1e4 * lr instead of lr.
    let c =
        Tensor::<A, 1>::from_data(TensorData::from([1e-4f32, -1e-4]), &dev).cast(FloatDType::F16);
    let grads = (m.w.val() * c).sum().backward();
    let mut opt = AdamW::<Flex>::new(AdamWConfig {
        weight_decay: 0.0,
        grad_clip: None,
        ..AdamWConfig::default()
    });
    let (m, _) = opt.step(m, &grads, 1e-3).unwrap();
    assert_eq!(
        m.w.val().dtype(),
        DType::F16,
        "the parameter keeps its dtype"
    );
    let v: Vec<f32> = m.w.val().into_data().convert::<f32>().to_vec().unwrap();
    // First step, no decay: m_hat = g, v_hat = g^2, so the update is
    // lr * g / (|g| + eps) = 1e-3 * (1 - ~1e-4) = 9.999e-4 (eps = 1e-8 against |g| ~ 1e-4),
    // computed in f32 and rounded to f16. f16 spacing is 2^-11 = 4.88e-4 on [0.5, 1) and
    // 2^-10 = 9.77e-4 on [1, 2): 1 - 9.999e-4 = 0.9990001 rounds to 1 - 2 * 2^-11 = 0.99902344,
    // 1 + 9.999e-4 = 1.0009999 rounds to 1 + 2^-10 = 1.0009766 (each 2.3e-5 away).
    // Catches a missing step (1.0), a doubled one (0.99804688 / 1.0019531), a halved one
    // (0.99951172 below 1) and f16 moments (a step of ~1e4 * lr): each is >= 4.88e-4 away.
    let expected = [1.0 - 2.0 * 2f32.powi(-11), 1.0 + 2f32.powi(-10)];
    for (got, want) in v.iter().zip(expected) {
        assert!((got - want).abs() < 2.5e-4, "{v:?}, expected {expected:?}");
    }
}
