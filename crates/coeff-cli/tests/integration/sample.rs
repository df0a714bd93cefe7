//! `sample` on the tiny SDXL folder of the coeff-sdxl fixtures: writes one PNG per prompt of
//! the requested size; bad sizes and outputs are errors naming the flag, nothing is written.

use coeff_harness::testing;
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_coeff");

fn pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../coeff-sdxl/tests/fixtures/sdxl_pipeline_tiny")
}

fn sample(extra: &[&str]) -> (Option<i32>, String) {
    let pipeline = pipeline();
    let mut args = vec![
        "sample",
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--steps",
        "3",
    ];
    args.extend_from_slice(extra);
    testing::run(BIN, Path::new("."), &args)
}

#[test]
fn sample_writes_one_png_per_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cat.png");
    let out_s = out.display().to_string();
    let (code, stderr) = sample(&[
        "--prompt",
        "a red cat",
        "--prompt",
        "a mat",
        "--output",
        &out_s,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for i in 0..2 {
        let path = tmp.path().join(format!("cat-{i}.png"));
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (16, 16), "{}", path.display());
    }
}

#[test]
fn sample_refuses_bad_sizes_and_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png").display().to_string();
    let (code, stderr) = sample(&["--prompt", "a", "--height", "10", "--output", &out]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--height 10"), "{stderr}");
    let jpg = tmp.path().join("x.jpg").display().to_string();
    let (code, stderr) = sample(&["--prompt", "a", "--output", &jpg]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(".png"), "{stderr}");
    assert!(!tmp.path().join("x.png").exists());
}

/// A diffusers-format LoRA of the pipeline's own UNet (rank 2 on `to_q` / `to_v`, random `B`
/// so that it changes the image), written by our exporter into `dir`.
fn pipeline_lora(dir: &Path) -> PathBuf {
    use coeff_harness::backend::Inner;
    use coeff_tuning::{inject, params, Method};
    let device = Default::default();
    let (config, unet) = coeff_sdxl::load_unet::<Inner>(pipeline().join("unet"), &device).unwrap();
    let (unet, injected) = inject(unet, &Method::Lora.config(2, &["query", "value"])).unwrap();
    let mut rng = coeff_harness::rng::Lcg::new(5);
    let values = params::collect_params(&unet, &injected.trainable_prefixes())
        .into_iter()
        .map(|(p, s, v)| {
            let v = rng
                .uniform_vec(v.len(), -0.5, 0.5)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            (p, (s, v))
        })
        .collect();
    let unet = params::replace_params(unet, &values);
    let path = dir.join("pytorch_lora_weights.safetensors");
    coeff_sdxl::lora_format::export_unet_lora(&unet, &config, &injected, &path).unwrap();
    path
}

#[test]
fn sample_applies_a_lora_and_its_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let lora = pipeline_lora(tmp.path()).display().to_string();
    let png = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let out_s = out.display().to_string();
        let mut args = vec!["--prompt", "a red cat", "--output", &out_s];
        args.extend_from_slice(extra);
        let (code, stderr) = sample(&args);
        assert_eq!(code, Some(0), "{stderr}");
        std::fs::read(&out).unwrap()
    };
    let bare = png("bare.png", &[]);
    let with = png("lora.png", &["--lora", &lora]);
    let zero = png("zero.png", &["--lora", &lora, "--lora-scale", "0"]);
    assert_ne!(bare, with, "the LoRA changed nothing");
    assert_eq!(bare, zero, "--lora-scale 0 must give the bare image");
}

#[test]
fn sample_refuses_a_lora_of_another_unet_and_a_scale_without_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png").display().to_string();
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../coeff-sdxl/tests/fixtures/lora_formats/kohya.safetensors");
    let (code, stderr) = sample(&[
        "--prompt",
        "a",
        "--output",
        &out,
        "--lora",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("kohya.safetensors"), "{stderr}");
    let (code, stderr) = sample(&["--prompt", "a", "--output", &out, "--lora-scale", "0.5"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--lora-scale needs --lora"), "{stderr}");
    assert!(!tmp.path().join("x.png").exists());
}
