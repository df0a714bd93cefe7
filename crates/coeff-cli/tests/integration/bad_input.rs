//! Bad input to `coeff infer`: an error that names the file, field, flag or tensor and its
//! value; no panic, no abort on allocation (exit status 1, not a signal), no exit 0 with NaN
//! output, nothing overwritten. Every case runs the built binary on tiny checkpoints and inputs
//! written here (the coeff-vit test fixtures, edited), through the shared run-and-assert helper
//! (`coeff_harness::testing`).

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use coeff_harness::backbone::Classifier;
use coeff_harness::backend::Inner;
use coeff_harness::testing;
use coeff_tuning::peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use coeff_tuning::{inject, load_adapter, save_adapter, Method};
use coeff_vit::load_pretrained;
use safetensors::Dtype;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_coeff");

fn run(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    testing::run(BIN, cwd, args)
}

fn fails(cwd: &Path, args: &[&str]) -> String {
    testing::fails(BIN, cwd, args)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../coeff-vit/tests/fixtures")
        .join(name)
}

/// A scratch directory with a copy of the tiny DINOv2 checkpoint in `ckpt/` (hidden 36, 2
/// layers, 3 heads, patch 7, 28 px), its config edited by `edit`.
fn scratch(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(fixture("dinov2").join("config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(ckpt.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        fixture("dinov2").join("model.safetensors"),
        ckpt.join("model.safetensors"),
    )
    .unwrap();
    tmp
}

/// Write one tensor `name` of `dtype` and `shape` with raw little-endian `bytes`.
fn write_tensor(path: &Path, name: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) {
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes).unwrap();
    safetensors::serialize_to_file([(name, view)], &None, path).unwrap();
}

/// `pixel_values` as f32.
fn write_pixels(path: &Path, shape: &[usize], values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_tensor(path, "pixel_values", Dtype::F32, shape, &bytes);
}

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = coeff_harness::rng::Lcg::new(seed);
    rng.uniform_vec(n, -1.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

fn read_output(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = coeff_tuning::io::view_to_f32(&v).unwrap();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

/// `infer` on `tmp/ckpt` with `tmp/in.safetensors`, writing `tmp/out.safetensors`.
fn infer(tmp: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "infer",
        "--checkpoint",
        "ckpt",
        "--input",
        "in.safetensors",
        "--output",
        "out.safetensors",
    ];
    args.extend_from_slice(extra);
    run(tmp, &args)
}

fn infer_fails(tmp: &Path, extra: &[&str]) -> String {
    let (code, stderr) = infer(tmp, extra);
    assert_eq!(code, Some(1), "infer should fail with an error:\n{stderr}");
    assert!(
        !tmp.join("out.safetensors").exists(),
        "a failed infer wrote its output"
    );
    stderr
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{what}: {x} vs {y}");
    }
}

#[test]
fn infer_runs_and_matches_the_library() {
    let tmp = scratch(|_| {});
    let x = noise(2 * 3 * 28 * 28, 1);
    write_pixels(&tmp.path().join("in.safetensors"), &[2, 3, 28, 28], &x);
    let (code, stderr) = infer(tmp.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let out = read_output(&tmp.path().join("out.safetensors"));
    let model = load_pretrained::<Inner>(tmp.path().join("ckpt"), &Default::default()).unwrap();
    let expected = model
        .forward(Tensor::from_data(
            TensorData::new(x, [2, 3, 28, 28]),
            &Default::default(),
        ))
        .unwrap();
    let (shape, got) = &out["pooler_output"];
    assert_eq!(shape, &vec![2, 36]);
    assert_close(
        got,
        &expected.pooler_output.into_data().to_vec::<f32>().unwrap(),
        "pooler_output",
    );
}

#[test]
fn config_sizes_that_the_checkpoint_does_not_have_are_refused() {
    for (field, value, expect) in [
        (
            "num_hidden_layers",
            json!(1_000_000_000u64),
            "`num_hidden_layers` is 1000000000",
        ),
        ("num_hidden_layers", json!(3), "`num_hidden_layers` is 3"),
        ("hidden_size", json!(72), "`hidden_size` is 72"),
        (
            "hidden_size",
            json!(1u64 << 40),
            "`hidden_size` is 1099511627776",
        ),
        ("mlp_ratio", json!(1e9), "`mlp_ratio` 1000000000"),
        ("image_size", json!(7000), "`image_size` [7000, 7000]"),
    ] {
        let tmp = scratch(|c| c[field] = value.clone());
        write_pixels(
            &tmp.path().join("in.safetensors"),
            &[1, 3, 28, 28],
            &noise(2352, 2),
        );
        let err = infer_fails(tmp.path(), &[]);
        assert!(
            err.contains(expect) && err.contains("config.json"),
            "{field} = {value}: {err}"
        );
    }
}

#[test]
fn config_values_that_would_give_nan_are_refused() {
    for eps in [json!(0.0), json!(-1.0)] {
        let tmp = scratch(|c| c["layer_norm_eps"] = eps.clone());
        write_pixels(
            &tmp.path().join("in.safetensors"),
            &[1, 3, 28, 28],
            &noise(2352, 3),
        );
        let err = infer_fails(tmp.path(), &[]);
        assert!(
            err.contains("`layer_norm_eps` must be a positive finite number"),
            "{err}"
        );
    }
}

#[test]
fn non_finite_weights_name_the_tensor() {
    let tmp = scratch(|_| {});
    let path = tmp.path().join("ckpt/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let d = coeff_tuning::io::view_to_f32(&v).unwrap();
            (k, v.shape().to_vec(), d)
        })
        .collect();
    for (k, _, v) in &mut tensors {
        if k == "encoder.layer.0.attention.attention.key.weight" {
            v[7] = f32::NAN;
        }
    }
    let out = coeff_tuning::io::f32_safetensors(
        tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
        &[],
    )
    .unwrap();
    std::fs::write(&path, out).unwrap();
    write_pixels(
        &tmp.path().join("in.safetensors"),
        &[1, 3, 28, 28],
        &noise(2352, 4),
    );
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("`encoder.layer.0.attention.attention.key.weight`")
            && err.contains("1 non-finite"),
        "{err}"
    );
}

#[test]
fn a_malformed_checkpoint_header_names_the_tensor() {
    let tmp = scratch(|_| {});
    let path = tmp.path().join("ckpt/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // One more element than its byte span holds: `TensorInvalidInfo`, unnamed by the parser.
    header["layernorm.bias"]["shape"] = json!([37]);
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    write_pixels(
        &tmp.path().join("in.safetensors"),
        &[1, 3, 28, 28],
        &noise(2352, 5),
    );
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("tensor `layernorm.bias`") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn bad_pixel_values_are_input_errors() {
    let tmp = scratch(|_| {});
    let input = tmp.path().join("in.safetensors");
    // No image.
    write_pixels(&input, &[0, 3, 28, 28], &[]);
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("0 images") && err.contains("in.safetensors"),
        "{err}"
    );
    // One NaN and one infinite pixel.
    let mut x = noise(2 * 2352, 6);
    x[100] = f32::NAN;
    x[3000] = f32::INFINITY;
    write_pixels(&input, &[2, 3, 28, 28], &x);
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("`pixel_values` has 2 non-finite value(s)")
            && err.contains("flat index 100")
            && err.contains("in.safetensors"),
        "{err}"
    );
    // Integers: an input error naming the file and tensor, not a checkpoint error.
    let ints: Vec<u8> = (0..2352i64).flat_map(|v| v.to_le_bytes()).collect();
    write_tensor(&input, "pixel_values", Dtype::I64, &[1, 3, 28, 28], &ints);
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("input") && err.contains("in.safetensors") && err.contains("dtype I64"),
        "{err}"
    );
    assert!(!err.contains("checkpoint in.safetensors"), "{err}");
    // Wrong rank, wrong name.
    write_pixels(&input, &[3, 28, 28], &noise(2352, 7));
    let err = infer_fails(tmp.path(), &[]);
    assert!(err.contains("[3, 28, 28]"), "{err}");
    write_tensor(&input, "pixels", Dtype::F32, &[1], &[0; 4]);
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("no tensor `pixel_values`") && err.contains("pixels"),
        "{err}"
    );
}

#[test]
fn an_input_too_large_for_memory_is_refused_before_reading_it() {
    let tmp = scratch(|_| {});
    // 1190 x 1190 px at patch 7: 28901 tokens, 3 heads -> 2.5e9 attention elements per layer.
    let shape = [1usize, 3, 1190, 1190];
    let bytes = vec![0u8; shape.iter().product::<usize>() * 2];
    write_tensor(
        &tmp.path().join("in.safetensors"),
        "pixel_values",
        Dtype::F16,
        &shape,
        &bytes,
    );
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("[1, 3, 1190, 1190]")
            && err.contains(&coeff_harness::limits::MAX_ATTENTION_ELEMENTS.to_string()),
        "{err}"
    );
}

#[test]
fn outputs_that_overflow_are_an_error_not_nan() {
    let tmp = scratch(|_| {});
    write_pixels(
        &tmp.path().join("in.safetensors"),
        &[1, 3, 28, 28],
        &vec![3.0e38; 2352],
    );
    let err = infer_fails(tmp.path(), &[]);
    assert!(
        err.contains("output `")
            && err.contains("non-finite")
            && err.contains("nothing was written"),
        "{err}"
    );
}

#[test]
fn the_output_is_never_an_input_and_is_checked_first() {
    let tmp = scratch(|_| {});
    let input = tmp.path().join("in.safetensors");
    write_pixels(&input, &[1, 3, 28, 28], &noise(2352, 8));
    let before = std::fs::read(&input).unwrap();
    let weights = std::fs::read(tmp.path().join("ckpt/model.safetensors")).unwrap();
    let base = [
        "infer",
        "--checkpoint",
        "ckpt",
        "--input",
        "in.safetensors",
        "--output",
    ];
    let with_output = |out: &str| -> String {
        let mut args = base.to_vec();
        args.push(out);
        fails(tmp.path(), &args)
    };
    let err = with_output("in.safetensors");
    assert!(
        err.contains("refusing to overwrite") && err.contains("--input"),
        "{err}"
    );
    let err = with_output("./ckpt/../ckpt/model.safetensors");
    assert!(err.contains("the checkpoint's weights"), "{err}");
    let err = with_output("ckpt/config.json");
    assert!(err.contains("the checkpoint's config"), "{err}");
    // Another name for the same file: a hard link and a symbolic link.
    std::fs::hard_link(&input, tmp.path().join("link.safetensors")).unwrap();
    let err = with_output("link.safetensors");
    assert!(err.contains("refusing to overwrite"), "{err}");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("ckpt/model.safetensors", tmp.path().join("sym")).unwrap();
        let err = with_output("sym");
        assert!(err.contains("the checkpoint's weights"), "{err}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(
        std::fs::read(tmp.path().join("ckpt/model.safetensors")).unwrap(),
        weights
    );
    // An output directory that does not exist is reported before the input is looked at
    // (this input is refused too, but later).
    write_pixels(&input, &[1, 3, 28, 28], &vec![f32::NAN; 2352]);
    let err = with_output("missing/out.safetensors");
    assert!(
        err.contains("does not exist") && err.contains("missing"),
        "{err}"
    );
    let err = with_output("ckpt");
    assert!(err.contains("is a directory"), "{err}");
}

/// Rewrite an adapter's tensors with random values (LoRA B and alpha start at zero, which
/// would make a loaded adapter indistinguishable from none).
fn randomize_adapter(dir: &Path, seed: u64) {
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut rng = coeff_harness::rng::Lcg::new(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let n = v.shape().iter().product();
            let vals = rng
                .uniform_vec(n, 0.1, 0.4)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            (k, v.shape().to_vec(), vals)
        })
        .collect();
    let out = coeff_tuning::io::f32_safetensors(
        tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
        &[],
    )
    .unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn infer_loads_a_vit_adapter() {
    let tmp = scratch(|_| {});
    let dev = Default::default();
    let base = load_pretrained::<Inner>(tmp.path().join("ckpt"), &dev).unwrap();
    let (adapted, injected) = inject(
        base.clone(),
        &Method::LoraCoeff.config(2, &["query", "value"]),
    )
    .unwrap();
    let adapter = tmp.path().join("adapter");
    save_adapter(&adapted, &injected, &adapter).unwrap();
    randomize_adapter(&adapter, 9);
    let x = noise(2352, 10);
    write_pixels(&tmp.path().join("in.safetensors"), &[1, 3, 28, 28], &x);
    let (code, stderr) = infer(tmp.path(), &["--adapter", "adapter"]);
    assert_eq!(code, Some(0), "{stderr}");
    let got = &read_output(&tmp.path().join("out.safetensors"))["last_hidden_state"].1;
    let (loaded, _) = load_adapter(base.clone(), &adapter).unwrap();
    let xt = || Tensor::<Inner, 4>::from_data(TensorData::new(x.clone(), [1, 3, 28, 28]), &dev);
    let want = loaded.forward(xt()).unwrap().last_hidden_state;
    let plain = base.forward(xt()).unwrap().last_hidden_state;
    let want = want.into_data().to_vec::<f32>().unwrap();
    let plain = plain.into_data().to_vec::<f32>().unwrap();
    assert_close(got, &want, "last_hidden_state with the adapter");
    assert!(
        got.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3),
        "the adapter changed nothing"
    );
}

#[test]
fn infer_loads_a_few_shot_adapter_with_its_head() {
    let tmp = scratch(|_| {});
    let dev = Default::default();
    let base = load_pretrained::<Inner>(tmp.path().join("ckpt"), &dev).unwrap();
    // As the few-shot sweep saves it: backbone adapters + the head as modules_to_save.
    let mut cfg = Method::Lora.config(2, &["query", "value"]);
    cfg.modules_to_save = vec!["head".into()];
    let (model, injected) = inject(Classifier::new(base.clone(), 4, 3), &cfg).unwrap();
    let adapter = tmp.path().join("run-adapter");
    save_adapter(&model, &injected, &adapter).unwrap();
    randomize_adapter(&adapter, 11);
    let x = noise(2 * 2352, 12);
    write_pixels(&tmp.path().join("in.safetensors"), &[2, 3, 28, 28], &x);
    let (code, stderr) = infer(tmp.path(), &["--adapter", "run-adapter"]);
    assert_eq!(code, Some(0), "{stderr}");
    let out = read_output(&tmp.path().join("out.safetensors"));
    let (shape, got) = &out["logits"];
    assert_eq!(shape, &vec![2, 4]);
    let (loaded, _) = load_adapter(Classifier::new(base, 4, 99), &adapter).unwrap();
    let want = loaded
        .forward(Tensor::from_data(TensorData::new(x, [2, 3, 28, 28]), &dev))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_close(got, &want, "few-shot logits");
}

#[test]
fn a_bad_adapter_is_named() {
    let tmp = scratch(|_| {});
    let dev = Default::default();
    let base = load_pretrained::<Inner>(tmp.path().join("ckpt"), &dev).unwrap();
    let (adapted, injected) = inject(base, &Method::Coeff.config(2, &[])).unwrap();
    let adapter = tmp.path().join("adapter");
    save_adapter(&adapted, &injected, &adapter).unwrap();
    write_pixels(
        &tmp.path().join("in.safetensors"),
        &[1, 3, 28, 28],
        &noise(2352, 13),
    );
    let weights = adapter.join(ADAPTER_WEIGHTS_FILE);

    // NaN coefficients.
    let nan = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut header_bytes = Vec::new();
    for (k, vals) in [
        ("layers.0.attn.coeff.alpha", vec![0.0f32; 9]),
        ("layers.1.attn.coeff.alpha", vec![f32::NAN; 9]),
    ] {
        header_bytes.push((k, nan(&vals)));
    }
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = header_bytes
        .iter()
        .map(|(k, b)| {
            (
                *k,
                safetensors::tensor::TensorView::new(Dtype::F32, vec![3, 3], b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &weights).unwrap();
    let err = infer_fails(tmp.path(), &["--adapter", "adapter"]);
    assert!(
        err.contains("`layers.1.attn.coeff.alpha`") && err.contains("9 non-finite"),
        "{err}"
    );

    // A header whose shape does not fit its bytes (`TensorInvalidInfo`).
    let header = r#"{"layers.0.attn.coeff.alpha":{"dtype":"F32","shape":[3,3],"data_offsets":[0,36]},"layers.1.attn.coeff.alpha":{"dtype":"F32","shape":[3,4],"data_offsets":[36,72]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 72]);
    std::fs::write(&weights, bytes).unwrap();
    let err = infer_fails(tmp.path(), &["--adapter", "adapter"]);
    assert!(
        err.contains("tensor `layers.1.attn.coeff.alpha`") && err.contains(ADAPTER_WEIGHTS_FILE),
        "{err}"
    );

    // No config.
    std::fs::remove_file(adapter.join(ADAPTER_CONFIG_FILE)).unwrap();
    save_adapter(&adapted, &injected, tmp.path().join("other")).unwrap();
    std::fs::copy(
        tmp.path().join("other").join(ADAPTER_WEIGHTS_FILE),
        &weights,
    )
    .unwrap();
    let err = infer_fails(tmp.path(), &["--adapter", "adapter"]);
    assert!(err.contains(ADAPTER_CONFIG_FILE), "{err}");
    let err = infer_fails(tmp.path(), &["--adapter", "no-such-dir"]);
    assert!(err.contains("no-such-dir"), "{err}");
}
