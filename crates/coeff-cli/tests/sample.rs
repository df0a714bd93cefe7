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
