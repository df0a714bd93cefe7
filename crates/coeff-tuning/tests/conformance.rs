//! The conformance matrix: every adapter method runs through the same checks
//! (modelled on PEFT's `tests/testing_common.py`).
//!
//! Methods: Coeff, LoRA, DoRA, LoRA+Coeff, DoRA+Coeff. Checks: zero-init output equals the
//! base model's; one optimizer step changes only adapter parameters; save -> load reproduces
//! outputs; merged equals unmerged; disabled equals base; the gradient of every trainable
//! parameter matches central finite differences (in f64); the gradient of alpha matches a
//! finite-difference estimate and an independent loop-over-heads formulation.

mod common;

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use coeff_tuning::peft::params::{all_param_shapes, all_params, under_any};
use coeff_tuning::{
    inject, load_adapter, merge_adapters, save_adapter, set_adapters_enabled, unmerge_adapters,
    AttentionInput, Method, MultiHeadAttention, MultiHeadAttentionConfig, PeftConfig,
};
use common::{max_abs_diff, perturb, randn, Inner, TinyModel, CLASSES, D_MODEL, TB};

/// Linear sites and the conv site (`mixer`): LoRA / DoRA on convolutions runs every check too.
const TARGETS: [&str; 7] = ["query", "key", "value", "output", "fc1", "fc2", "mixer"];

fn config(method: Method) -> PeftConfig {
    let mut cfg = method.config(2, &TARGETS);
    cfg.modules_to_save = vec!["head".into()];
    cfg
}

fn input<B: burn::tensor::backend::Backend>(dev: &B::Device) -> Tensor<B, 3> {
    randn([3, 5, D_MODEL], 99, dev)
}

fn zero_init_equals_base(method: Method) {
    let dev = Default::default();
    let base = TinyModel::<Inner>::new(&dev);
    let (adapted, injected) = inject(base.clone(), &config(method)).unwrap();
    assert!(injected.params.trainable > 0 && injected.params.trainable < injected.params.total);
    let err = max_abs_diff(base.forward(input(&dev)), adapted.forward(input(&dev)));
    assert!(
        err < 1e-6,
        "{}: zero-init output differs from base by {err}",
        method.name()
    );

    // Also in training mode, where dropout on alpha is active.
    let base = TinyModel::<TB>::new(&dev);
    let (adapted, _) = inject(base.clone(), &config(method)).unwrap();
    let err = max_abs_diff(base.forward(input(&dev)), adapted.forward(input(&dev)));
    assert!(
        err < 1e-6,
        "{}: zero-init (train mode) differs by {err}",
        method.name()
    );
}

fn one_step_changes_only_adapters(method: Method) {
    let dev = Default::default();
    let (model, injected) = inject(TinyModel::<TB>::new(&dev), &config(method)).unwrap();
    let before: BTreeMap<String, Vec<f32>> = all_params(&model)
        .into_iter()
        .map(|(p, _, v)| (p, v))
        .collect();

    let logits = model.forward(input(&dev));
    let loss = (logits - 0.5).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamWConfig::new().init::<TB, TinyModel<TB>>();
    let model = optim.step(1e-2, model, grads);

    let prefixes = injected.trainable_prefixes();
    let mut changed_trainable = Vec::new();
    for (path, _, after) in all_params(&model) {
        let changed = before[&path] != after;
        if under_any(&path, &prefixes) {
            if changed {
                changed_trainable.push(path);
            }
        } else {
            assert!(
                !changed,
                "{}: frozen parameter `{path}` changed",
                method.name()
            );
        }
    }
    // Parameters with a non-zero first gradient must have moved (lora.a has a zero gradient
    // while lora.b is zero, so it is not required to).
    let must_move = |p: &String| {
        p.ends_with(".alpha")
            || p.ends_with(".lora.b")
            || p.ends_with(".magnitude")
            || p.starts_with("head.")
    };
    for path in before
        .keys()
        .filter(|p| under_any(p, &prefixes) && must_move(p))
    {
        assert!(
            changed_trainable.contains(path),
            "{}: trainable parameter `{path}` did not change",
            method.name()
        );
    }
    assert!(changed_trainable.iter().any(|p| p.ends_with(".alpha")) == method.has_coeff());
}

fn save_load_roundtrip(method: Method) {
    let dev = Default::default();
    let base = TinyModel::<Inner>::new(&dev);
    let (model, injected) = inject(base.clone(), &config(method)).unwrap();
    let model = perturb(model, &injected.trainable_prefixes(), 0.3);
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&model, &injected, dir.path()).unwrap();
    let (loaded, loaded_injected) = load_adapter(base.clone(), dir.path()).unwrap();
    assert_eq!(loaded_injected, injected);
    let out = model.forward(input(&dev));
    let err = max_abs_diff(out.clone(), loaded.forward(input(&dev)));
    assert!(
        err < 1e-6,
        "{}: loaded adapter differs by {err}",
        method.name()
    );
    assert!(
        max_abs_diff(out, base.forward(input(&dev))) > 1e-3,
        "perturbation had no effect"
    );

    // The file holds the adapter only: far fewer floats than the model.
    let size = std::fs::metadata(dir.path().join(coeff_tuning::peft::ADAPTER_WEIGHTS_FILE))
        .unwrap()
        .len() as usize;
    assert!(
        size < 4 * injected.params.trainable + 4096,
        "adapter file is {size} bytes"
    );
}

fn merged_equals_unmerged(method: Method) {
    let dev = Default::default();
    let base = TinyModel::<Inner>::new(&dev);
    let (model, injected) = inject(base.clone(), &config(method)).unwrap();
    // A perturbation of 0.3 on every LoRA A and B entry makes the query/key deltas so large
    // that attention logits reach the hundreds and the output tens, where f32 rounding of the
    // merged weight is amplified past 1e-5 of the output; 0.05 keeps the model in a trained
    // model's regime.
    let model = perturb(model, &injected.trainable_prefixes(), 0.05);
    let out = model.forward(input(&dev));
    assert!(
        max_abs_diff(out.clone(), base.forward(input(&dev))) > 1e-3,
        "{}: perturbation had no effect",
        method.name()
    );
    // Merging rounds in f32 at the scale of what is merged: the tolerance is relative to the
    // output's magnitude (LoRA A's initialisation is drawn unseeded).
    let out_scale = out.clone().abs().max().into_scalar().max(1.0);
    let merged = merge_adapters(model.clone());
    let err = max_abs_diff(out.clone(), merged.forward(input(&dev))) / out_scale;
    assert!(
        err < 1e-5,
        "{}: merged differs from unmerged by {err} of the output's magnitude {out_scale}",
        method.name()
    );

    let restored = unmerge_adapters(merged);
    let err = max_abs_diff(out, restored.forward(input(&dev))) / out_scale;
    assert!(
        err < 1e-5,
        "{}: unmerge(merge) changed the output by {err} of its magnitude {out_scale}",
        method.name()
    );
    let merged: BTreeMap<String, Vec<f32>> = all_params(&merge_adapters(model.clone()))
        .into_iter()
        .map(|(p, _, v)| (p, v))
        .collect();
    for ((p, _, a), (_, _, b)) in all_params(&model).iter().zip(all_params(&restored).iter()) {
        // Relative to the largest merged value: unmerging subtracts the delta it added.
        let scale = merged[p].iter().fold(1.0f32, |s, x| s.max(x.abs()));
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
            / scale;
        assert!(
            d < 1e-5,
            "{}: `{p}` not restored by unmerge ({d} of the merged magnitude {scale})",
            method.name()
        );
    }
}

fn disabled_equals_base(method: Method) {
    let dev = Default::default();
    let base = TinyModel::<Inner>::new(&dev);
    let (model, injected) = inject(base.clone(), &config(method)).unwrap();
    let model = perturb(model, &injected.trainable_prefixes(), 0.3);
    let base_out = base.forward(input(&dev));
    // The head is trained in full (modules_to_save); disabling adapters leaves it as trained,
    // as in PEFT. Compare against the base model with the trained head.
    let mut base_with_head = base;
    base_with_head.head = model.head.clone();
    let base_out_head = base_with_head.forward(input(&dev));
    assert!(max_abs_diff(base_out, base_out_head.clone()) > 1e-3);

    let on = model.forward(input(&dev));
    let off_model = set_adapters_enabled(model, false);
    let off = off_model.forward(input(&dev));
    assert!(
        max_abs_diff(on.clone(), off.clone()) > 1e-3,
        "{}: adapters had no effect",
        method.name()
    );
    let err = max_abs_diff(base_out_head, off);
    assert!(
        err < 1e-6,
        "{}: disabled differs from base by {err}",
        method.name()
    );
    let back_on = set_adapters_enabled(off_model, true).forward(input(&dev));
    assert!(max_abs_diff(on, back_on) < 1e-6);
}

/// Loss `sum((out - target)^2)` of a single attention layer; quadratic in alpha, so central
/// differences are exact up to rounding.
fn attn_loss<B: burn::tensor::backend::Backend>(
    attn: &MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    target: Tensor<B, 3>,
) -> Tensor<B, 1> {
    (attn.forward(AttentionInput::self_attn(x)).context - target)
        .powi_scalar(2)
        .sum()
}

/// The same layer written head by head, with explicit loops: an independent formulation.
fn loop_over_heads_loss(
    attn: &MultiHeadAttention<TB>,
    alpha: Tensor<TB, 2>,
    x: Tensor<TB, 3>,
    target: Tensor<TB, 3>,
) -> Tensor<TB, 1> {
    let (h, d) = (attn.n_heads, attn.head_dim);
    let [b, n, _] = x.dims();
    let q = attn.query.forward(x.clone());
    let k = attn.key.forward(x.clone());
    let v = attn.value.forward(x);
    let head = |t: &Tensor<TB, 3>, i: usize| t.clone().slice([0..b, 0..n, i * d..(i + 1) * d]);
    let maps: Vec<Tensor<TB, 3>> = (0..h)
        .map(|i| {
            let s = head(&q, i).matmul(head(&k, i).swap_dims(1, 2)) / (d as f64).sqrt();
            softmax(s, 2)
        })
        .collect();
    let mut outs = Vec::new();
    for target_head in 0..h {
        let mut o = Tensor::<TB, 3>::zeros([b, n, d], &Default::default());
        for (src, map) in maps.iter().enumerate() {
            let c = alpha
                .clone()
                .slice([target_head..target_head + 1, src..src + 1])
                .reshape([1, 1, 1]);
            let c = if src == target_head { c + 1.0 } else { c };
            o = o + map.clone().matmul(head(&v, target_head)) * c;
        }
        outs.push(o);
    }
    (attn.output.forward(Tensor::cat(outs, 2)) - target)
        .powi_scalar(2)
        .sum()
}

fn alpha_gradient_matches_fd_and_loop_formulation(method: Method) {
    // No alpha to check; `adapter_gradients_match_finite_differences` covers these methods'
    // gradients (LoRA / DoRA factors, magnitudes, the saved head).
    if !method.has_coeff() {
        return;
    }
    let dev = Default::default();
    let layer = MultiHeadAttentionConfig::new(D_MODEL, 3).init::<TB>(&dev);
    let mut cfg = config(method);
    cfg.modules_to_save.clear();
    cfg.target_modules
        .retain(|t| ["query", "key", "value", "output"].contains(&t.as_str()));
    cfg.coeff.as_mut().unwrap().dropout = 0.0;
    let (attn, injected) = inject(layer, &cfg).unwrap();
    let attn = perturb(attn, &injected.trainable_prefixes(), 0.3);
    let x = randn::<TB, 3>([2, 4, D_MODEL], 5, &dev);
    let target = randn::<TB, 3>([2, 4, D_MODEL], 6, &dev);

    let alpha = attn.coeff.as_ref().unwrap().alpha.clone();
    let grads = attn_loss(&attn, x.clone(), target.clone()).backward();
    let g_auto: Vec<f32> = alpha.grad(&grads).unwrap().into_data().to_vec().unwrap();

    // Independent formulation, differentiated by autodiff.
    let alpha_t = alpha.val().detach().require_grad();
    let grads = loop_over_heads_loss(&attn, alpha_t.clone(), x.clone(), target.clone()).backward();
    let g_loop: Vec<f32> = alpha_t.grad(&grads).unwrap().into_data().to_vec().unwrap();

    // Central differences on the inner backend.
    let inner = attn.valid();
    let (xi, ti) = (x.inner(), target.inner());
    let base_alpha: Vec<f32> = inner
        .coeff
        .as_ref()
        .unwrap()
        .alpha
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let eps = 1e-2f32;
    let loss_at = |k: usize, delta: f32| -> f64 {
        let mut a = base_alpha.clone();
        a[k] += delta;
        let mut m = inner.clone();
        let c = m.coeff.as_mut().unwrap();
        c.alpha = burn::module::Param::from_tensor(Tensor::from_data(
            burn::tensor::TensorData::new(a, [3, 3]),
            &Default::default(),
        ));
        let l: f32 = attn_loss(&m, xi.clone(), ti.clone()).into_scalar();
        l as f64
    };
    for k in 0..9 {
        let g_fd = (loss_at(k, eps) - loss_at(k, -eps)) / (2.0 * eps as f64);
        let scale = 1.0 + g_fd.abs();
        assert!(
            (g_auto[k] as f64 - g_fd).abs() / scale < 2e-3,
            "{}: d loss / d alpha[{k}]: autodiff {} vs finite difference {g_fd}",
            method.name(),
            g_auto[k]
        );
        assert!(
            ((g_auto[k] - g_loop[k]).abs() / (1.0 + g_loop[k].abs())) < 1e-4,
            "{}: d loss / d alpha[{k}]: autodiff {} vs loop-over-heads {}",
            method.name(),
            g_auto[k],
            g_loop[k]
        );
    }
    assert!(
        g_auto.iter().any(|g| g.abs() > 1e-3),
        "alpha gradient is zero: {g_auto:?}"
    );
}

/// Parameter path -> (shape, values), in f64.
type Values = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// The autodiff gradients of every parameter under `prefixes`, by path, as f32.
struct GradsOf<'a> {
    grads: &'a <TB as AutodiffBackend>::Gradients,
    prefixes: &'a [String],
    stack: Vec<String>,
    out: BTreeMap<String, Vec<f32>>,
}

impl ModuleVisitor<TB> for GradsOf<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<TB, D>>) {
        let path = self.stack.join(".");
        if !under_any(&path, self.prefixes) {
            return;
        }
        let g = param
            .grad(self.grads)
            .unwrap_or_else(|| panic!("trainable parameter `{path}` has no gradient"));
        let g: Vec<f32> = g.into_data().convert::<f32>().to_vec().unwrap();
        self.out.insert(path, g);
    }
}

/// Replaces the parameters named in `values` by f64 tensors (the crate's `replace_params`
/// takes f32 values, too coarse for finite differences).
struct SetF64<'a> {
    values: &'a Values,
    stack: Vec<String>,
    replaced: usize,
}

impl ModuleMapper<Flex> for SetF64<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(
        &mut self,
        param: Param<Tensor<Flex, D>>,
    ) -> Param<Tensor<Flex, D>> {
        let path = self.stack.join(".");
        let Some((shape, v)) = self.values.get(&path) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let data = TensorData::new(v.clone(), shape.clone());
        let tensor = Tensor::<Flex, D>::from_data(data, (&tensor.device(), DType::F64));
        self.replaced += 1;
        Param::from_mapped_value(id, tensor, mapper)
    }
}

fn set_f64(model: TinyModel<Flex>, values: &Values) -> TinyModel<Flex> {
    let mut mapper = SetF64 {
        values,
        stack: Vec::new(),
        replaced: 0,
    };
    let model = model.map(&mut mapper);
    assert_eq!(
        mapper.replaced,
        values.len(),
        "a path of {:?} is not a parameter",
        values.keys()
    );
    model
}

/// `key`'s entry in `over`, else in `values`.
fn entry<'a>(over: &'a Values, values: &'a Values, key: &str) -> &'a (Vec<usize>, Vec<f64>) {
    over.get(key).unwrap_or_else(|| &values[key])
}

/// DoRA's per-output norms `||W + scaling * delta W||` of `layer`, as the adapters compute
/// them: linear `W [in, out]`, `A [in, r]`, `B [r, out]`, `delta W = A B`, norm over `in`;
/// conv `W [out, in, kh, kw]`, `A [r, in, kh, kw]`, `B [out, r, 1, 1]`, `delta W = B A`, norm
/// over `(in, kh, kw)`. Entries of `over` replace those of `values`.
fn dora_norms(over: &Values, values: &Values, layer: &str, scaling: f64) -> Vec<f64> {
    let (w_shape, w) = entry(over, values, &format!("{layer}.base.weight"));
    let (a_shape, a) = entry(over, values, &format!("{layer}.lora.a"));
    let (_, b) = entry(over, values, &format!("{layer}.lora.b"));
    if w_shape.len() == 2 {
        let (d_in, d_out, r) = (w_shape[0], w_shape[1], a_shape[1]);
        (0..d_out)
            .map(|o| {
                (0..d_in)
                    .map(|i| {
                        let delta: f64 = (0..r).map(|k| a[i * r + k] * b[k * d_out + o]).sum();
                        (w[i * d_out + o] + scaling * delta).powi(2)
                    })
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    } else {
        assert_eq!(
            w_shape.len(),
            4,
            "`{layer}`: neither a linear nor a conv weight"
        );
        let (d_out, r) = (w_shape[0], a_shape[0]);
        let fan_in = w.len() / d_out;
        (0..d_out)
            .map(|o| {
                (0..fan_in)
                    .map(|j| {
                        let delta: f64 = (0..r).map(|k| b[o * r + k] * a[k * fan_in + j]).sum();
                        (w[o * fan_in + j] + scaling * delta).powi(2)
                    })
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    }
}

/// Autodiff gradients of `sum((logits - target)^2)` for every trainable parameter (LoRA /
/// DoRA factors on the linears and on the conv `mixer`, DoRA magnitudes, alpha, the saved
/// head) against central differences of the same model evaluated in f64 on Flex, ~4 entries
/// per tensor. Catches a wrong or missing backward of any adapter parameter, for LoRA and
/// DoRA too (the alpha check skips them).
///
/// DoRA's norm `||W + delta W||` is detached (as in PEFT and the DoRA paper), so autodiff's
/// gradient of A and B is the derivative with the norm held constant, not the true one. Their
/// finite differences hold it constant too: each evaluation scales the magnitude by
/// `N(theta) / N(theta_0)`, which keeps `m / ||W + delta W||` at its unperturbed value while
/// the direction `W + delta W` moves. The true derivative is taken as well, to check that it
/// differs (so that the check tells a detached norm from an attached one).
///
/// Error budget: evaluating in f64 makes rounding negligible; with eps = 1e-3 the truncation
/// error, about eps^2 / 6 times the third derivative, was estimated at <= 4e-4 relative on
/// this model, and f32 autodiff is accurate to ~1e-6 relative; the tolerance is 5e-3 of
/// `1e-3 + |fd|`.
fn adapter_gradients_match_finite_differences(method: Method) {
    let dev = Default::default();
    let mut cfg = config(method);
    if let Some(coeff) = cfg.coeff.as_mut() {
        coeff.dropout = 0.0;
    }
    let dora = cfg.lora.as_ref().is_some_and(|l| l.use_dora);
    let scaling = cfg.lora.as_ref().map_or(0.0, |l| l.scaling());
    let (model, injected) = inject(TinyModel::<TB>::new(&dev), &cfg).unwrap();
    let prefixes = injected.trainable_prefixes();
    // 0.1: every LoRA B is non-zero (so A has a gradient) while the attention logits stay
    // moderate, keeping the finite differences' truncation error small.
    let model = perturb(model, &prefixes, 0.1);
    let target = randn::<TB, 2>([3, CLASSES], 7, &dev).mul_scalar(0.5);
    let loss = (model.forward(input(&dev)) - target).powi_scalar(2).sum();
    let grads = loss.backward();
    let mut visitor = GradsOf {
        grads: &grads,
        prefixes: &prefixes,
        stack: Vec::new(),
        out: BTreeMap::new(),
    };
    model.visit(&mut visitor);
    let auto = visitor.out;
    let has = |suffix: &str| auto.keys().any(|p| p.ends_with(suffix));
    assert_eq!(
        has(".alpha"),
        method.has_coeff(),
        "{}: alpha",
        method.name()
    );
    assert_eq!(
        has(".lora.b"),
        cfg.lora.is_some(),
        "{}: LoRA",
        method.name()
    );
    assert_eq!(has(".lora.magnitude"), dora, "{}: DoRA", method.name());
    assert_eq!(
        has("mixer.lora.a"),
        cfg.lora.is_some(),
        "{}: conv",
        method.name()
    );
    assert!(has("head.weight"), "{}: head", method.name());

    // The same model in f64: every parameter copied from the autodiff model.
    let values: Values = all_params(&model)
        .into_iter()
        .map(|(p, shape, v)| (p, (shape, v.into_iter().map(f64::from).collect())))
        .collect();
    let fdev: burn::tensor::Device<Flex> = Default::default();
    let (reference, _) = inject(TinyModel::<Flex>::new(&fdev), &cfg).unwrap();
    let shapes: BTreeMap<String, Vec<usize>> = values
        .iter()
        .map(|(p, (shape, _))| (p.clone(), shape.clone()))
        .collect();
    assert_eq!(all_param_shapes(&reference), shapes);
    let reference = set_f64(reference, &values);
    let x = input::<Flex>(&fdev).cast(FloatDType::F64);
    let target = randn::<Flex, 2>([3, CLASSES], 7, &fdev)
        .mul_scalar(0.5)
        .cast(FloatDType::F64);
    let loss_with = |changed: &Values| -> f64 {
        let m = set_f64(reference.clone(), changed);
        let l = (m.forward(x.clone()) - target.clone()).powi_scalar(2).sum();
        l.into_data().convert::<f64>().to_vec::<f64>().unwrap()[0]
    };

    let eps = 1e-3;
    let mut norm_matters = 0.0f64;
    for (path, g) in &auto {
        let (shape, base) = &values[path];
        assert_eq!(g.len(), base.len(), "`{path}`");
        let n = base.len();
        let mut picks: Vec<usize> = (0..4).map(|j| (j * n / 4 + n / 8).min(n - 1)).collect();
        picks.dedup();
        // DoRA's A or B: the layer whose norm the finite differences hold constant.
        let dora_layer = path
            .strip_suffix(".lora.a")
            .or_else(|| path.strip_suffix(".lora.b"))
            .filter(|_| dora);
        let loss_at = |k: usize, delta: f64, hold_norm: bool| -> f64 {
            let mut v = base.clone();
            v[k] += delta;
            let mut changed = Values::new();
            changed.insert(path.clone(), (shape.clone(), v));
            if let (true, Some(layer)) = (hold_norm, dora_layer) {
                let n0 = dora_norms(&Values::new(), &values, layer, scaling);
                let n1 = dora_norms(&changed, &values, layer, scaling);
                let key = format!("{layer}.lora.magnitude");
                let (m_shape, mut m) = values[&key].clone();
                for ((mi, now), before) in m.iter_mut().zip(&n1).zip(&n0) {
                    *mi *= now / before;
                }
                changed.insert(key, (m_shape, m));
            }
            loss_with(&changed)
        };
        let mut fd_max = 0.0f64;
        for &k in &picks {
            let fd = (loss_at(k, eps, true) - loss_at(k, -eps, true)) / (2.0 * eps);
            fd_max = fd_max.max(fd.abs());
            let ad = f64::from(g[k]);
            let err = (ad - fd).abs() / (1e-3 + fd.abs());
            assert!(
                err < 5e-3,
                "{}: d loss / d {path}[{k}]: autodiff {ad} vs finite difference {fd} \
                 (relative error {err})",
                method.name()
            );
            if dora_layer.is_some() {
                let exact = (loss_at(k, eps, false) - loss_at(k, -eps, false)) / (2.0 * eps);
                norm_matters = norm_matters.max((exact - fd).abs() / (1e-3 + fd.abs()));
            }
        }
        assert!(
            fd_max > 1e-5,
            "{}: `{path}` has no effect on the loss at the checked entries {picks:?}",
            method.name()
        );
    }
    if dora {
        // Estimated at ~10 (relative) on this model: far above the tolerance.
        assert!(
            norm_matters > 5e-2,
            "{}: holding DoRA's norm constant changes the derivative by only {norm_matters}; \
             the check cannot tell a detached norm from an attached one",
            method.name()
        );
    }
}

macro_rules! conformance {
    ($($name:ident => $method:expr),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test] fn zero_init_equals_base() { super::zero_init_equals_base($method) }
            #[test] fn one_step_changes_only_adapters() { super::one_step_changes_only_adapters($method) }
            #[test] fn save_load_roundtrip() { super::save_load_roundtrip($method) }
            #[test] fn merged_equals_unmerged() { super::merged_equals_unmerged($method) }
            #[test] fn disabled_equals_base() { super::disabled_equals_base($method) }
            #[test] fn alpha_gradient_matches_fd_and_loop_formulation() {
                super::alpha_gradient_matches_fd_and_loop_formulation($method)
            }
            #[test] fn adapter_gradients_match_finite_differences() {
                super::adapter_gradients_match_finite_differences($method)
            }
        }
    )*};
}

conformance! {
    coeff => Method::Coeff,
    lora => Method::Lora,
    dora => Method::Dora,
    lora_coeff => Method::LoraCoeff,
    dora_coeff => Method::DoraCoeff,
}
