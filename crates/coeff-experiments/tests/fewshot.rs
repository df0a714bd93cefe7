//! The few-shot trainer on a tiny ViT and tiny synthetic images: exact resume after an
//! interruption, a stop on a non-finite loss that keeps the last good checkpoint, parameter
//! counts per method, and the config file / flag precedence.
//!
//! The real sweep (pretrained DINOv2 / CLIP, real datasets) is `cargo xtask experiment
//! fewshot`; these tests check the machinery it relies on.

use std::path::Path;

use burn::tensor::backend::Backend;
use coeff_data::{Image, Preprocess};
use coeff_experiments::fewshot::config::{FewShotConfig, FsMethod, Recipe};
use coeff_experiments::fewshot::train::{
    checkpoint_path, train_run, Control, Inputs, Outcome, RunSpec, Split,
};
use coeff_experiments::fewshot::{build, config, summary, FewShotArgs, Preset};
use coeff_harness::backend::{self, Train};
use coeff_tuning::{Method, ParamReport};
use coeff_vit::{Activation, Family, VisionTransformer, VitConfig};

const IMAGENET: coeff_vit::Normalization = coeff_vit::Normalization::IMAGENET;
use indicatif::ProgressBar;

fn tiny_vit(device: &burn::tensor::Device<Train>) -> VisionTransformer<Train> {
    Train::seed(device, 11);
    VitConfig {
        family: Family::Dinov2,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        patch_size: 4,
        num_channels: 3,
        image_size: [8, 8],
        layer_norm_eps: 1e-6,
        activation: Activation::Gelu,
        qkv_bias: true,
        layer_scale: true,
        num_labels: None,
        projection_dim: None,
        hf_pooler: false,
    }
    .init(device)
}

/// Three classes of 8x8 grey images: a bright quadrant whose position is the class, plus a
/// per-image offset so the images differ.
fn tiny_split(n_per_class: usize) -> Split {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for class in 0..3 {
        for k in 0..n_per_class {
            let mut pixels = vec![0.1 + 0.05 * k as f32; 64];
            for y in 0..4 {
                for x in 0..4 {
                    let (oy, ox) = [(0, 0), (0, 4), (4, 0)][class];
                    pixels[(oy + y) * 8 + ox + x] = 0.9;
                }
            }
            images.push(Image {
                channels: 1,
                height: 8,
                width: 8,
                pixels,
            });
            labels.push(class);
        }
    }
    Split {
        inputs: Inputs::Pixels {
            images,
            preprocess: Preprocess::new(8, IMAGENET.mean, IMAGENET.std),
        },
        labels,
    }
}

fn tiny_config() -> FewShotConfig {
    FewShotConfig {
        resolution: 8,
        datasets: vec!["tiny".into()],
        shots: vec![3],
        methods: vec![FsMethod::Peft(Method::LoraCoeff)],
        seeds: vec![7],
        test_per_class: 2,
        recipe: Recipe {
            epochs: 4,
            warmup_epochs: 1,
            batch_size: 4,
            lr: 1e-2,
            lora_rank: 2,
            ..Recipe::default()
        },
        checkpoint_secs: 1e9,
        ..config::preset(Preset::Default)
    }
}

fn spec(method: FsMethod) -> RunSpec {
    RunSpec {
        dataset: "tiny".into(),
        shots: 3,
        method,
        seed: 7,
    }
}

/// Training re-seeds the backend's global generator every step; tests that train must not
/// interleave (the experiment binary trains one run at a time).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Train the tiny model; `stop_after` interrupts, then a fresh model resumes.
fn run(
    cfg: &FewShotConfig,
    method: FsMethod,
    dir: &Path,
    stop_after: Option<usize>,
) -> anyhow::Result<Outcome> {
    let device = backend::device();
    let s = spec(method);
    let built = build(cfg, &s, tiny_vit(&device), 3, &device)?;
    let (model, prefixes) = (built.model, built.trainable);
    let bar = ProgressBar::hidden();
    train_run(
        &s,
        cfg,
        "test-fingerprint",
        model,
        &prefixes,
        (0, 0, 0),
        &tiny_split(3),
        &tiny_split(2),
        dir,
        Control {
            stop_after,
            bar: &bar,
            on_trained: &mut |_| Ok(()),
        },
        &device,
    )
}

fn trained_params(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(checkpoint_path(dir)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, view)| (k, coeff_tuning::io::view_to_f32(&view).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn an_interrupted_run_resumes_to_the_same_result() {
    let _serial = serial();
    let cfg = tiny_config();
    let method = FsMethod::Peft(Method::LoraCoeff);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("straight"), tmp.path().join("interrupted"));

    let Outcome::Done(straight) = run(&cfg, method, &a, None).unwrap() else {
        panic!("no stop requested")
    };
    assert_eq!(
        straight.steps, 12,
        "3 classes x 3 shots, batch 4 -> 3 steps x 4 epochs"
    );
    // Interrupt twice at odd places (mid-epoch, then at an epoch boundary) and resume.
    assert!(matches!(
        run(&cfg, method, &b, Some(5)).unwrap(),
        Outcome::Stopped { step: 5 }
    ));
    assert!(matches!(
        run(&cfg, method, &b, Some(9)).unwrap(),
        Outcome::Stopped { step: 9 }
    ));
    let Outcome::Done(resumed) = run(&cfg, method, &b, None).unwrap() else {
        panic!("no stop requested")
    };
    assert_eq!(resumed.resumed_from, Some(9));
    assert_eq!(straight.accuracy, resumed.accuracy);
    assert_eq!(straight.final_loss, resumed.final_loss);
    // Parameters and optimizer moments are bit-identical.
    let (pa, pb) = (trained_params(&a), trained_params(&b));
    assert_eq!(pa.len(), pb.len());
    assert!(pa.iter().any(|(k, _)| k.ends_with("coeff.alpha")));
    for ((ka, va), (kb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka} differs after resume");
    }
    // The coefficients moved away from zero (the test would pass vacuously otherwise).
    let alpha = &pa
        .iter()
        .find(|(k, _)| k.ends_with("coeff.alpha"))
        .unwrap()
        .1;
    assert!(alpha.iter().any(|v| v.abs() > 1e-4), "{alpha:?}");
}

#[test]
fn a_checkpoint_from_other_settings_is_refused() {
    let _serial = serial();
    let cfg = tiny_config();
    let method = FsMethod::Peft(Method::LoraCoeff);
    let tmp = tempfile::tempdir().unwrap();
    run(&cfg, method, tmp.path(), Some(2)).unwrap();
    let device = backend::device();
    let s = spec(method);
    let built = build(&cfg, &s, tiny_vit(&device), 3, &device).unwrap();
    let (model, prefixes) = (built.model, built.trainable);
    let bar = ProgressBar::hidden();
    let err = train_run(
        &s,
        &cfg,
        "another-fingerprint",
        model,
        &prefixes,
        (0, 0, 0),
        &tiny_split(3),
        &tiny_split(2),
        tmp.path(),
        Control {
            stop_after: None,
            bar: &bar,
            on_trained: &mut |_| Ok(()),
        },
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("other settings"), "{err}");
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    assert!(
        err.contains(&format!(
            "delete {} to restart that run",
            tmp.path().display()
        )),
        "{err}"
    );
}

#[test]
fn a_diverging_run_stops_and_keeps_a_finite_checkpoint() {
    let _serial = serial();
    let mut cfg = tiny_config();
    cfg.recipe.lr = 1e30;
    cfg.recipe.full_lr = 1e30;
    cfg.recipe.adamw.grad_clip = None;
    cfg.checkpoint_secs = 0.0; // checkpoint after every good step
    let tmp = tempfile::tempdir().unwrap();
    let err = run(&cfg, FsMethod::Full, tmp.path(), None)
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains("stopped"), "{err}");
    assert!(err.contains("last good checkpoint"), "{err}");
    assert!(
        err.contains("inf") || err.contains("NaN"),
        "the message names the bad value: {err}"
    );
    let params = trained_params(tmp.path());
    assert!(
        !params.is_empty(),
        "a checkpoint of an earlier step is kept"
    );
    for (k, v) in params {
        assert!(v.iter().all(|x| x.is_finite()), "{k} is not finite");
    }
}

#[test]
fn a_run_that_overflows_on_its_last_step_is_an_error_not_an_accuracy() {
    let _serial = serial();
    let mut cfg = tiny_config();
    // One step (batch = the 9 training images, one epoch) at a learning rate that moves every
    // weight to about 1e30: the loss of that step is finite, the trained model is not.
    cfg.recipe.batch_size = 9;
    cfg.recipe.epochs = 1;
    cfg.recipe.warmup_epochs = 0;
    cfg.recipe.full_lr = 1e30;
    cfg.recipe.adamw.grad_clip = None;
    let tmp = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        run(&cfg, FsMethod::Full, tmp.path(), None).unwrap_err()
    );
    assert!(
        err.contains("diverged") && err.contains("not finite") && err.contains("1e30"),
        "{err}"
    );
    assert!(
        err.contains(&format!("delete {}", tmp.path().display())),
        "{err}"
    );
    assert!(!tmp.path().join("result.json").exists());
}

#[test]
fn trainable_parameters_per_method() {
    let _serial = serial();
    let cfg = tiny_config();
    let device = backend::device();
    let head = 16 * 3 + 3;
    let total_backbone = ParamReport::of(&tiny_vit(&device), &[]).total;
    let count = |m: FsMethod| {
        let built = build(&cfg, &spec(m), tiny_vit(&device), 3, &device).unwrap();
        ParamReport::of(&built.model, &built.trainable)
    };
    assert_eq!(count(FsMethod::Linear).trainable, head);
    assert_eq!(count(FsMethod::Full).trainable, total_backbone + head);
    // 2 layers x 4 x 4 coefficients.
    assert_eq!(count(FsMethod::Peft(Method::Coeff)).trainable, head + 32);
    // rank 2 on query and value: 2 layers x 2 x (16*2 + 2*16).
    let lora = count(FsMethod::Peft(Method::Lora)).trainable;
    assert_eq!(lora, head + 2 * 2 * 64);
    assert_eq!(
        count(FsMethod::Peft(Method::LoraCoeff)).trainable,
        lora + 32
    );
    // DoRA adds a magnitude per output feature.
    assert_eq!(
        count(FsMethod::Peft(Method::Dora)).trainable,
        lora + 2 * 2 * 16
    );
}

#[test]
fn config_file_and_flags_override_the_preset() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("sweep.toml");
    std::fs::write(
        &file,
        "shots = [2, 8]\nmethods = [\"lora\", \"dora+coeff\"]\n[recipe]\nepochs = 7\n",
    )
    .unwrap();
    let args = |extra: &[&str]| {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: FewShotArgs,
        }
        let mut v = vec!["x", "--config", file.to_str().unwrap()];
        v.extend_from_slice(extra);
        Cli::parse_from(v).a
    };
    let cfg = args(&["--seeds", "4,5"]).resolve().unwrap();
    assert_eq!(cfg.shots, vec![2, 8]);
    assert_eq!(
        cfg.methods,
        vec![
            FsMethod::Peft(Method::Lora),
            FsMethod::Peft(Method::DoraCoeff)
        ]
    );
    assert_eq!(cfg.recipe.epochs, 7);
    assert_eq!(cfg.seeds, vec![4, 5]);
    // Untouched fields keep the preset's values.
    let preset = config::preset(Preset::Default);
    assert_eq!(cfg.recipe.lr, preset.recipe.lr);
    assert_eq!(cfg.datasets, preset.datasets);
    // A flag beats the file.
    assert_eq!(args(&["--epochs", "3"]).resolve().unwrap().recipe.epochs, 3);

    std::fs::write(&file, "[recipe]\nlearning_rate = 1.0\n").unwrap();
    let err = format!("{:#}", args(&[]).resolve().unwrap_err());
    assert!(err.contains("learning_rate"), "{err}");
    assert!(err.contains("sweep.toml"), "{err}");

    std::fs::write(&file, "resolution = 50\n").unwrap();
    let err = format!("{:#}", args(&[]).resolve().unwrap_err());
    assert!(err.contains("resolution 50") && err.contains("14"), "{err}");

    std::fs::write(&file, "methods = [\"prompt\"]\n").unwrap();
    let err = format!("{:#}", args(&[]).resolve().unwrap_err());
    assert!(err.contains("unknown method `prompt`"), "{err}");
}

#[test]
fn mean_and_sample_std() {
    let (m, s) = summary::mean_std(&[0.5, 0.7]);
    assert!((m - 0.6).abs() < 1e-12);
    assert!((s - 0.141_421_356).abs() < 1e-8);
    assert_eq!(summary::mean_std(&[0.4]), (0.4, 0.0));
}

#[test]
fn dataset_errors_name_what_is_missing() {
    use coeff_experiments::fewshot::data;
    let tmp = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        data::load("mnist", Some(tmp.path()), tmp.path(), 5, 56, &mut |_| {}).unwrap_err()
    );
    assert!(err.contains("mnist.pkl.gz"), "{err}");
    let err = format!(
        "{:#}",
        data::load("cifar", Some(tmp.path()), tmp.path(), 5, 56, &mut |_| {}).unwrap_err()
    );
    assert!(err.contains("unknown dataset `cifar`"), "{err}");
    // An ImageFolder with too few images for the requested test set.
    let class = tmp.path().join("imgs").join("cat");
    std::fs::create_dir_all(&class).unwrap();
    image_png(&class.join("a.png"));
    let spec = format!("folder:{}", tmp.path().join("imgs").display());
    let err = format!(
        "{:#}",
        data::load(&spec, None, tmp.path(), 5, 56, &mut |_| {}).unwrap_err()
    );
    assert!(err.contains("cat"), "{err}");
}

/// A 4x4 grey PNG.
fn image_png(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, 4, 4);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(&[128u8; 16])
        .unwrap();
}

#[test]
fn a_finished_run_saves_an_adapter_that_loads_back() {
    use burn::module::AutodiffModule;
    use coeff_experiments::fewshot::model::Classifier;
    use coeff_experiments::fewshot::train::logits;
    let _serial = serial();
    let cfg = tiny_config();
    let device = backend::device();
    let s = spec(FsMethod::Peft(Method::DoraCoeff));
    let built = build(&cfg, &s, tiny_vit(&device), 3, &device).unwrap();
    let injected = built.injected.clone().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let adapter = tmp.path().join("adapter");
    let split = tiny_split(2);
    let idx: Vec<usize> = (0..split.len()).collect();
    let mut expected = Vec::new();
    let bar = ProgressBar::hidden();
    train_run(
        &s,
        &cfg,
        "fp",
        built.model,
        &built.trainable,
        (0, 0, 0),
        &tiny_split(3),
        &split,
        tmp.path(),
        Control {
            stop_after: None,
            bar: &bar,
            on_trained: &mut |m| {
                coeff_tuning::save_adapter(m, &injected, &adapter)?;
                let l = logits(&m.valid(), &split, &idx, None, &device);
                expected = l.into_data().to_vec::<f32>().unwrap();
                Ok(())
            },
        },
        &device,
    )
    .unwrap();
    // A fresh backbone + head from the same seed, then the adapter (which carries the head).
    let fresh = Classifier::new(tiny_vit(&device).valid(), 3, 99);
    let (loaded, _) = coeff_tuning::load_adapter(fresh, &adapter).unwrap();
    let got = logits(&loaded, &split, &idx, None, &device)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(got.len(), expected.len());
    for (a, b) in got.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}
