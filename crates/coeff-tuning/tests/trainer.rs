//! The generic trainer: a resumed run is bit-identical to an uninterrupted one, the NaN guard
//! stops with the checkpoint named, parameter groups follow the targeting patterns, and a
//! checkpoint or optimizer state that does not fit the model is an error naming the parameter.

mod common;

use std::collections::BTreeMap;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use coeff_tuning::params::all_params;
use coeff_tuning::train::{
    AdamW, AdamWConfig, Finish, ParamGroup, Step, StepOutput, Trainer, TrainerConfig, WarmupCosine,
};
use coeff_tuning::{inject, Method, PeftError};
use common::{randn, serial, TinyModel, TB};

const TOTAL: usize = 6;

fn config(stop_after: Option<usize>, groups: Vec<ParamGroup>) -> TrainerConfig {
    TrainerConfig {
        adamw: AdamWConfig::default(),
        schedule: WarmupCosine {
            base_lr: 1e-2,
            min_lr: 0.0,
            warmup_steps: 2,
            total_steps: TOTAL,
        },
        groups,
        seed: 7,
        checkpoint_secs: 1e9,
        stop_after,
        grad_accum: 1,
    }
}

fn model() -> (TinyModel<TB>, Vec<String>) {
    let dev = Default::default();
    let mut cfg = Method::LoraCoeff.config(2, &["query", "value", "mixer"]);
    cfg.modules_to_save = vec!["head".into()];
    let (m, injected) = inject(TinyModel::<TB>::new(&dev), &cfg).unwrap();
    (m, injected.trainable_prefixes())
}

/// Cross-entropy on a batch chosen from the step index (as every experiment must).
fn loss(m: &TinyModel<TB>, step: &Step) -> Result<StepOutput<TB>, PeftError> {
    let dev = Default::default();
    let x = randn::<TB, 3>([4, 5, common::D_MODEL], 100 + step.index as u64, &dev);
    let labels: Vec<i64> = (0..4)
        .map(|i| ((i + step.index) % common::CLASSES) as i64)
        .collect();
    let labels = Tensor::<TB, 1, Int>::from_data(TensorData::new(labels, [4]), &dev);
    let l = log_softmax(m.forward(x), 1)
        .gather(1, labels.reshape([4, 1]))
        .mean()
        .neg();
    Ok(StepOutput::new(l))
}

fn values(m: &TinyModel<TB>) -> Vec<(String, Vec<f32>)> {
    all_params(m).into_iter().map(|(p, _, v)| (p, v)).collect()
}

#[test]
fn a_resumed_run_is_bit_identical() {
    let _rng = serial();
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let (m, trainable) = model();

    let path = dir.path().join("straight.safetensors");
    let mut t = Trainer::<TB>::new(config(None, vec![]), trainable.clone(), &path, "fp").unwrap();
    let Finish::Done(straight) = t.run(m.clone(), &dev, loss, &mut |_| {}).unwrap() else {
        panic!("not done")
    };
    let straight_losses = t.state().losses.clone();
    assert_eq!(straight_losses.len(), TOTAL);

    let path = dir.path().join("resumed.safetensors");
    let mut t =
        Trainer::<TB>::new(config(Some(3), vec![]), trainable.clone(), &path, "fp").unwrap();
    let Finish::Stopped(_) = t.run(m.clone(), &dev, loss, &mut |_| {}).unwrap() else {
        panic!("did not stop")
    };
    // A new process: a fresh model (new parameter ids), a fresh trainer, the checkpoint.
    let mut t = Trainer::<TB>::new(config(None, vec![]), trainable.clone(), &path, "fp").unwrap();
    let fresh = t.resume(m.clone(), &dev).unwrap();
    assert_eq!(t.resumed_from(), Some(3));
    let Finish::Done(resumed) = t.run(fresh, &dev, loss, &mut |_| {}).unwrap() else {
        panic!("not done")
    };
    assert_eq!(
        t.state().losses,
        straight_losses,
        "losses differ after resume"
    );
    assert_eq!(
        values(&resumed),
        values(&straight),
        "parameters differ after resume"
    );
    assert_ne!(values(&straight), values(&m), "training changed nothing");
}

#[test]
fn a_non_finite_loss_stops_and_names_the_checkpoint() {
    let _rng = serial();
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let (m, trainable) = model();
    let path = dir.path().join("ckpt.safetensors");
    let mut t = Trainer::<TB>::new(config(None, vec![]), trainable, &path, "fp").unwrap();
    let nan = |m: &TinyModel<TB>, s: &Step| -> Result<StepOutput<TB>, PeftError> {
        let out = loss(m, s)?;
        Ok(StepOutput::new(if s.index == 2 {
            out.loss * f32::NAN
        } else {
            out.loss
        }))
    };
    let err = t.run(m, &dev, nan, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("step 3 of 6"), "{err}");
    assert!(err.contains("ckpt.safetensors"), "{err}");
}

#[test]
fn parameter_groups_use_targeting_patterns() {
    let _rng = serial();
    let (m, trainable) = model();
    let groups = vec![ParamGroup {
        patterns: vec!["coeff".into()],
        lr: 0.5,
    }];
    let t = Trainer::<TB>::new(config(None, groups), trainable.clone(), "unused", "fp").unwrap();
    let report = t.group_report(&m).unwrap();
    for (path, lr) in &report {
        let want = if path.ends_with(".coeff.alpha") {
            0.5
        } else {
            1e-2
        };
        assert_eq!(*lr, want, "{path}");
    }
    assert!(report.iter().any(|(p, _)| p.ends_with(".coeff.alpha")));

    let groups = vec![ParamGroup {
        patterns: vec!["cofe".into()],
        lr: 0.5,
    }];
    let t = Trainer::<TB>::new(config(None, groups), trainable, "unused", "fp").unwrap();
    let err = t.group_report(&m).unwrap_err().to_string();
    assert!(
        err.contains("cofe") && err.contains("no trainable parameter"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_model_is_refused_by_name() {
    let _rng = serial();
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let (m, trainable) = model();
    let path = dir.path().join("ckpt.safetensors");
    let mut t = Trainer::<TB>::new(config(Some(1), vec![]), trainable, &path, "fp").unwrap();
    t.run(m, &dev, loss, &mut |_| {}).unwrap();

    // Another adapter layout (LoRA on other layers): the stored parameters do not fit.
    let mut cfg = Method::LoraCoeff.config(2, &["key"]);
    cfg.modules_to_save = vec!["head".into()];
    let (other, injected) = inject(TinyModel::<TB>::new(&dev), &cfg).unwrap();
    let mut t = Trainer::<TB>::new(
        config(None, vec![]),
        injected.trainable_prefixes(),
        &path,
        "fp",
    )
    .unwrap();
    let err = t.resume(other, &dev).unwrap_err().to_string();
    assert!(
        err.contains("ckpt.safetensors") && err.contains("lora"),
        "{err}"
    );

    // Another fingerprint.
    let (m, trainable) = model();
    let mut t = Trainer::<TB>::new(config(None, vec![]), trainable, &path, "other").unwrap();
    let err = t.resume(m, &dev).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn optimizer_moments_that_do_not_fit_are_errors_naming_the_parameter() {
    let _rng = serial();
    let (m, _) = model();
    let numel: BTreeMap<String, usize> = coeff_tuning::params::param_shapes(&m, &["head".into()])
        .into_iter()
        .map(|(k, s)| (k, s.iter().product()))
        .collect();
    let mut opt = AdamW::<common::Inner>::new(AdamWConfig::default());
    let pair = |k: &str, n: usize| {
        [
            (format!("m.{k}"), (vec![n], vec![0.0f32; n])),
            (format!("v.{k}"), (vec![n], vec![0.0f32; n])),
        ]
    };
    let wrong: BTreeMap<_, _> = pair("head.weight", 3)
        .into_iter()
        .chain(pair("head.bias", 4))
        .collect();
    let err = opt
        .load_state_checked(1, wrong, &numel, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`head.weight`") && err.contains("has 3 values"),
        "{err}"
    );
    let stray: BTreeMap<_, _> = pair("blocks.9.fc1.base.weight", 2).into_iter().collect();
    let err = opt
        .load_state_checked(1, stray, &numel, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`blocks.9.fc1.base.weight`"), "{err}");
    let partial: BTreeMap<_, _> = pair("head.bias", 4).into_iter().collect();
    let err = opt
        .load_state_checked(1, partial, &numel, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no moments") && err.contains("`head.weight`"),
        "{err}"
    );
}

/// Gradient accumulation: `K` micro-batches of one step give the update of the whole batch
/// (to float tolerance: the sums are taken in another order), also when `K` does not divide
/// the batch (shares of 2, 2, 1, 1 weighted by their size).
#[test]
fn gradient_accumulation_equals_the_whole_batch() {
    let _rng = serial();
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    // No dropout anywhere: the micro-batches draw nothing from the generator.
    let mut cfg = Method::Lora.config(2, &["query", "value", "mixer"]);
    cfg.modules_to_save = vec!["head".into()];
    let (m, injected) = inject(TinyModel::<TB>::new(&dev), &cfg).unwrap();
    const BATCH: usize = 6;
    let loss = |m: &TinyModel<TB>, step: &Step| -> Result<StepOutput<TB>, PeftError> {
        let x = randn::<TB, 3>([BATCH, 5, common::D_MODEL], 300 + step.index as u64, &dev);
        let (share, weight) = step.micro_share(BATCH)?;
        let n = share.len();
        let labels: Vec<i64> = share
            .clone()
            .map(|i| ((3 * i + step.index) % common::CLASSES) as i64)
            .collect();
        let labels = Tensor::<TB, 1, Int>::from_data(TensorData::new(labels, [n]), &dev);
        let l = log_softmax(m.forward(x.slice(share.clone())), 1)
            .gather(1, labels.reshape([n, 1]))
            .mean()
            .neg();
        Ok(StepOutput::new(l * weight))
    };
    let mut runs = Vec::new();
    for k in [1, 2, 4] {
        let mut c = config(None, vec![]);
        c.grad_accum = k;
        let path = dir.path().join(format!("k{k}.safetensors"));
        let mut t = Trainer::<TB>::new(c, injected.trainable_prefixes(), &path, "fp").unwrap();
        let Finish::Done(trained) = t.run(m.clone(), &dev, loss, &mut |_| {}).unwrap() else {
            panic!("not done")
        };
        runs.push((k, values(&trained), t.state().losses.clone()));
    }
    let (_, whole, whole_losses) = &runs[0];
    assert_ne!(whole, &values(&m), "training changed nothing");
    for (k, params, losses) in &runs[1..] {
        for ((path, a), (_, b)) in whole.iter().zip(params) {
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-5, "K = {k}: `{path}` differs by {err}");
        }
        for (a, b) in whole_losses.iter().zip(losses) {
            assert!((a - b).abs() < 1e-5, "K = {k}: losses {a} vs {b}");
        }
    }
    // More micro-batches than items is an error naming the step.
    let mut c = config(None, vec![]);
    c.grad_accum = BATCH + 1;
    let path = dir.path().join("too-many.safetensors");
    let mut t = Trainer::<TB>::new(c, injected.trainable_prefixes(), &path, "fp").unwrap();
    let err = t
        .run(m.clone(), &dev, loss, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch of 6") && err.contains("7 micro-batches"),
        "{err}"
    );
}
