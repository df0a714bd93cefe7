//! AdamW with path-keyed state: one step against the closed form, global-norm clipping, a
//! state round trip that continues exactly, and the warm-up + cosine schedule.

mod common;

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::train::{AdamW, AdamWConfig, WarmupCosine};

/// The switchable test backend (ndarray by default; `--features test-wgpu` / `test-flex` /
/// `test-cuda`).
type B = common::TB;
type NdArray = common::Inner;

#[derive(Module, Debug)]
struct Two<B: burn::tensor::backend::Backend> {
    w: Param<Tensor<B, 1>>,
    frozen: Param<Tensor<B, 2>>,
}

fn model(w: [f32; 3]) -> Two<B> {
    let device = Default::default();
    Two {
        w: Param::from_tensor(Tensor::from_data(TensorData::from(w), &device).require_grad()),
        frozen: Param::from_tensor(Tensor::ones([2, 2], &device)).set_require_grad(false),
    }
}

/// loss = sum(c * w) + sum(frozen): gradient of w is c.
fn step(
    m: Two<B>,
    opt: &mut AdamW<NdArray>,
    c: [f32; 3],
    lr: f64,
) -> (Two<B>, coeff_tuning::train::StepInfo) {
    let device = Default::default();
    let c = Tensor::<B, 1>::from_data(TensorData::from(c), &device);
    let loss = (m.w.val() * c).sum() + m.frozen.val().sum();
    let grads = loss.backward();
    opt.step(m, &grads, lr).unwrap()
}

fn values(m: &Two<B>) -> Vec<f32> {
    m.w.val().into_data().to_vec().unwrap()
}

#[test]
fn first_step_matches_the_closed_form() {
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        grad_clip: None,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(cfg);
    let (m, info) = step(model([1.0, -2.0, 0.5]), &mut opt, [0.3, -4.0, 0.0], 0.01);
    assert_eq!(info.tensors, 1, "the frozen parameter is not updated");
    assert!((info.grad_norm - (0.09f64 + 16.0).sqrt()).abs() < 1e-6);
    // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g),
    // after the decoupled decay p * (1 - lr * wd).
    let expect = [
        1.0 * (1.0 - 0.001) - 0.01,
        -2.0 * (1.0 - 0.001) + 0.01,
        0.5 * (1.0 - 0.001),
    ];
    for (v, e) in values(&m).iter().zip(expect) {
        assert!((*v as f64 - e).abs() < 1e-6, "{v} vs {e}");
    }
    assert_eq!(
        m.frozen.val().into_data().to_vec::<f32>().unwrap(),
        vec![1.0; 4]
    );
}

#[test]
fn clipping_scales_the_global_norm() {
    // With clipping to 1, the gradient [3, 4] (norm 5) becomes [0.6, 0.8]; after two steps
    // the second moment differs from the unclipped run, so the parameters do too.
    let run = |clip: Option<f64>| {
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.0,
            grad_clip: clip,
            ..AdamWConfig::default()
        });
        let (m, info) = step(model([0.0, 0.0, 0.0]), &mut opt, [3.0, 4.0, 0.0], 0.1);
        assert!((info.grad_norm - 5.0).abs() < 1e-6, "norm before clipping");
        let state = opt.state();
        let v = &state.iter().find(|(k, _, _)| k == "v.w").unwrap().2;
        (values(&m), v.clone())
    };
    let (_, v_clipped) = run(Some(1.0));
    let (_, v_free) = run(None);
    assert!(
        (v_clipped[0] as f64 - 0.001 * 0.36).abs() < 1e-9,
        "{v_clipped:?}"
    );
    assert!((v_free[0] as f64 - 0.001 * 9.0).abs() < 1e-7, "{v_free:?}");
}

#[test]
fn a_restored_state_continues_exactly() {
    let cfg = AdamWConfig::default();
    let grads = [[0.3, -1.0, 2.0], [0.1, 0.5, -0.2], [-1.0, 0.2, 0.3]];
    let mut straight = AdamW::new(cfg);
    let mut m = model([1.0, 2.0, 3.0]);
    for g in grads {
        m = step(m, &mut straight, g, 0.05).0;
    }

    let mut first = AdamW::new(cfg);
    let m1 = step(model([1.0, 2.0, 3.0]), &mut first, grads[0], 0.05).0;
    let saved: std::collections::BTreeMap<_, _> = first
        .state()
        .into_iter()
        .map(|(k, s, v)| (k, (s, v)))
        .collect();
    let mut resumed = AdamW::new(cfg);
    resumed
        .load_state(first.steps(), saved, &Default::default())
        .unwrap();
    // A fresh model with the same values (new parameter ids), as after a restart.
    let w = values(&m1);
    let mut m2 = model([w[0], w[1], w[2]]);
    for g in &grads[1..] {
        m2 = step(m2, &mut resumed, *g, 0.05).0;
    }
    assert_eq!(values(&m), values(&m2));
}

#[test]
fn a_bad_state_is_refused() {
    let mut opt = AdamW::<NdArray>::new(AdamWConfig::default());
    let one = |k: &str| (k.to_string(), (vec![3], vec![0.0f32; 3]));
    let err = opt
        .load_state(1, [one("m.w")].into_iter().collect(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `v.w`"), "{err}");
    let err = opt
        .load_state(1, [one("w")].into_iter().collect(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`w`"), "{err}");
}

#[test]
fn warmup_then_cosine() {
    let s = WarmupCosine {
        base_lr: 1.0,
        min_lr: 0.0,
        warmup_steps: 4,
        total_steps: 14,
    };
    assert_eq!(s.lr(0), 0.25);
    assert_eq!(s.lr(3), 1.0);
    assert_eq!(s.lr(4), 1.0);
    assert!((s.lr(9) - 0.5).abs() < 1e-12);
    assert!(s.lr(13) < 0.03 && s.lr(13) > 0.0);
    assert_eq!(s.lr(14), 0.0);
}

#[test]
fn learning_rate_per_path() {
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        grad_clip: None,
        ..AdamWConfig::default()
    });
    let device = Default::default();
    let m = model([1.0, 1.0, 1.0]);
    let c = Tensor::<B, 1>::from_data(TensorData::from([1.0f32, 1.0, 1.0]), &device);
    let grads = (m.w.val() * c).sum().backward();
    let (m, _) = opt
        .step_with(m, &grads, &|path| if path == "w" { 0.5 } else { 0.0 })
        .unwrap();
    assert_eq!(values(&m), vec![0.5, 0.5, 0.5]);
}
