//! `fewshot`: the paper's ViT table at the scale the hardware allows - which PEFT method
//! transfers a real pretrained ViT best from a handful of labelled images, at what cost.
//!
//! For every (dataset, shots, method, seed) run: draw a k-shot sample, attach a fresh head to
//! the pretrained backbone, apply the method, train with AdamW + warm-up + cosine, and score
//! on a fixed test set. Runs resume from atomic checkpoints; finished runs are reused.
//! Writes `summary.json`, `results.md`, `accuracy_vs_shots.png`, `accuracy_vs_params.png`.
//!
//! - [`config`]: presets, TOML config file, flags.
//! - [`data`]: the datasets and their fixed test sets.
//! - [`model`]: backbone + head ([`Classifier`], coeff-harness) with the method applied, and
//!   frozen-backbone features for the linear probe.
//! - [`train`]: one run, with checkpoints and resume.
//! - [`summary`]: aggregation over seeds, tables, plots.

pub mod config;
pub mod data;
pub mod model;
pub mod summary;
pub mod train;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use coeff_data::Image;
use coeff_tuning::{save_adapter, ParamReport};
use coeff_vit::VisionTransformer;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

pub use config::{Backbone, FewShotArgs, FewShotConfig, FsMethod, Preset};
pub use model::{build, Built};
use model::{features, Classifier};
use train::{Control, Inputs, Outcome, RunResult, RunSpec, Split};

/// The settings one run depends on; a checkpoint or result made with other settings is refused.
#[derive(Serialize)]
struct Fingerprint<'a> {
    format: &'static str,
    backbone: Backbone,
    resolution: usize,
    test_per_class: usize,
    recipe: &'a config::Recipe,
    spec: &'a RunSpec,
}

/// Run the sweep `args` describes into `out`; returns the summary.
pub fn run<B: AutodiffBackend>(
    args: &FewShotArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<summary::Summary> {
    let cfg = args.resolve()?;
    run_config::<B>(&cfg, args, out, backend, device)
}

/// Run a resolved config (`args` supplies the data, cache and stop options).
pub fn run_config<B: AutodiffBackend>(
    cfg: &FewShotConfig,
    args: &FewShotArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<summary::Summary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Check first, write after: every run this sweep would reuse or resume must have been
    // made with this sweep's settings, and the data and backbone must load, before
    // `config.json` is replaced, so a refused sweep leaves the directory as it was.
    let runs = plan(cfg)?;
    for (_, spec, fingerprint) in &runs {
        let dir = spec.dir(out);
        train::finished::<train::RunResult>(&dir, fingerprint)?;
        train::check_checkpoint(&dir, fingerprint)?;
    }
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(coeff_vit::pretrained::default_cache_dir);
    let t_sweep = Instant::now();

    // The datasets first: a bad local dataset fails before the backbone is downloaded.
    let datasets = cfg
        .datasets
        .iter()
        .map(|d| {
            data::load(
                d,
                args.data.as_deref(),
                &cache,
                cfg.test_per_class,
                cfg.resolution,
                &mut |m| eprintln!("{d}: {m}"),
            )
            .with_context(|| format!("loading dataset `{d}`"))
        })
        .collect::<Result<Vec<_>>>()?;
    let asset = cfg.backbone.asset();
    let ckpt_dir =
        coeff_vit::pretrained::fetch(&asset, &cache, &mut |m| eprintln!("{}: {m}", asset.name))
            .with_context(|| format!("fetching {}", asset.name))?;
    let backbone: VisionTransformer<B> = coeff_vit::load_pretrained(&ckpt_dir, device)
        .with_context(|| format!("loading {}", ckpt_dir.display()))?;
    eprintln!(
        "backbone {} ({} layers, width {}, {} heads) at {} px",
        cfg.backbone.name(),
        backbone.config.num_hidden_layers,
        backbone.config.hidden_size,
        backbone.config.num_attention_heads,
        cfg.resolution
    );
    coeff_harness::report::write_json(&out.join("config.json"), cfg)?;
    let mut results = Vec::new();
    sweep(
        cfg,
        args,
        out,
        runs,
        &backbone,
        &datasets,
        device,
        &mut results,
    )?;
    let summary = summary::Summary::new(
        cfg,
        backend,
        &datasets,
        results,
        t_sweep.elapsed().as_secs_f64(),
    );
    summary.write(out)?;
    Ok(summary)
}

/// Every (dataset index, run, fingerprint) of the sweep, in the order they run.
fn plan(cfg: &FewShotConfig) -> Result<Vec<(usize, RunSpec, String)>> {
    let mut runs = Vec::new();
    for (di, dataset) in cfg.datasets.iter().enumerate() {
        for &shots in &cfg.shots {
            for &seed in &cfg.seeds {
                for &method in &cfg.methods {
                    let spec = RunSpec {
                        dataset: dataset.clone(),
                        shots,
                        method,
                        seed,
                    };
                    let fingerprint = serde_json::to_string(&Fingerprint {
                        format: "coeff-tuning-burn/fewshot-run/v1",
                        backbone: cfg.backbone,
                        resolution: cfg.resolution,
                        test_per_class: cfg.test_per_class,
                        recipe: &cfg.recipe,
                        spec: &spec,
                    })?;
                    runs.push((di, spec, fingerprint));
                }
            }
        }
    }
    Ok(runs)
}

#[allow(clippy::too_many_arguments)]
fn sweep<B: AutodiffBackend>(
    cfg: &FewShotConfig,
    args: &FewShotArgs,
    out: &Path,
    runs: Vec<(usize, RunSpec, String)>,
    backbone: &VisionTransformer<B>,
    datasets: &[data::Dataset],
    device: &B::Device,
    results: &mut Vec<RunResult>,
) -> Result<()> {
    let preprocess = cfg.backbone.preprocess(cfg.resolution);
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(runs.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("runs {pos}/{len} [{elapsed_precise}] {wide_bar} ETA {eta}")
            .expect("valid template"),
    );
    let bar = multi.add(ProgressBar::new(1));
    bar.set_style(
        ProgressStyle::with_template("{pos:>4}/{len:4} steps {bar:30} ETA {eta:>4} {msg}")
            .expect("valid template"),
    );
    // Frozen-backbone features for the linear probe, computed once per image set.
    let frozen = backbone.valid();
    let mut test_features: BTreeMap<usize, Split> = BTreeMap::new();
    for (di, spec, fingerprint) in runs {
        let ds = &datasets[di];
        let dir = spec.dir(out);
        if let Some(r) = train::finished::<train::RunResult>(&dir, &fingerprint)? {
            say(
                &multi,
                format!("{}: done before, accuracy {:.3}", spec.label(), r.accuracy),
            )?;
            results.push(r);
            overall.inc(1);
            continue;
        }
        let sample = coeff_data::k_shot(&ds.train, spec.shots, spec.seed)
            .with_context(|| format!("drawing {}", spec.label()))?;
        let train_set = ds.train.subset(&sample);
        let classes = ds.train.classes.len();
        let pixels = |images: Vec<Image>, labels: Vec<usize>| Split {
            inputs: Inputs::Pixels {
                images,
                preprocess: preprocess.clone(),
            },
            labels,
        };
        let (train_split, test_split) = if spec.method == FsMethod::Linear {
            bar.set_message(format!("{} | extracting features", spec.label()));
            let tr = features(&frozen, &train_set.images, &preprocess, device);
            let train_split = Split {
                inputs: tr,
                labels: train_set.labels.clone(),
            };
            let test_split = test_features
                .entry(di)
                .or_insert_with(|| Split {
                    inputs: features(&frozen, &ds.test.images, &preprocess, device),
                    labels: ds.test.labels.clone(),
                })
                .clone();
            (train_split, test_split)
        } else {
            (
                pixels(train_set.images.clone(), train_set.labels.clone()),
                pixels(ds.test.images.clone(), ds.test.labels.clone()),
            )
        };
        let Built {
            model,
            trainable: prefixes,
            injected,
        } = build(cfg, &spec, backbone.clone(), classes, device)?;
        let params = ParamReport::of(&model, &prefixes);
        let adapter_dir = dir.join("adapter");
        let mut save = |trained: &Classifier<B>| -> Result<()> {
            if let Some(inj) = &injected {
                save_adapter(trained, inj, &adapter_dir)
                    .with_context(|| format!("saving the adapter to {}", adapter_dir.display()))?;
            }
            Ok(())
        };
        let head = model.head.weight.shape().num_elements() + classes;
        let t0 = Instant::now();
        let outcome = train::train_run(
            &spec,
            cfg,
            &fingerprint,
            model,
            &prefixes,
            (params.trainable, params.trainable - head, params.total),
            &train_split,
            &test_split,
            &dir,
            Control {
                stop_after: args.stop_after,
                bar: &bar,
                on_trained: &mut save,
            },
            device,
        )?;
        match outcome {
            Outcome::Done(r) => {
                say(
                    &multi,
                    format!(
                        "{}: accuracy {:.3}, {} steps at {:.0} ms/step, {:.0} s{}",
                        spec.label(),
                        r.accuracy,
                        r.steps,
                        r.step_ms,
                        t0.elapsed().as_secs_f64(),
                        r.resumed_from
                            .map(|s| format!(" (resumed at step {s})"))
                            .unwrap_or_default()
                    ),
                )?;
                results.push(r);
            }
            Outcome::Stopped { step } => {
                say(
                    &multi,
                    format!(
                        "{}: stopped after {step} steps (--stop-after); checkpoint in {}",
                        spec.label(),
                        dir.display()
                    ),
                )?;
            }
        }
        overall.inc(1);
    }
    bar.finish_and_clear();
    overall.finish();
    Ok(())
}

/// A line above the progress bars, or on stderr when they are hidden (not a terminal).
fn say(multi: &MultiProgress, line: String) -> std::io::Result<()> {
    if multi.is_hidden() {
        eprintln!("{line}");
        Ok(())
    } else {
        multi.println(line)
    }
}
