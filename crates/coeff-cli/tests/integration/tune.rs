//! `tune classify` end to end on the tiny Hugging Face ViT of the coeff-vit fixtures and a
//! folder of real images (Twitter emoji, fetched with npm, pinned and sha256-checked; three
//! subcategories as classes): it trains, validates, writes its outputs, resumes a killed run to
//! the same adapter bytes, and what it wrote loads back through `infer --adapter` - ours with
//! Coeff's alpha, and the PEFT export giving the same logits as ours for LoRA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coeff_harness::testing;
use safetensors::SafeTensors;

const BIN: &str = env!("CARGO_BIN_EXE_coeff");

fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../coeff-vit/tests/fixtures/hf_vit_cls")
}

/// `root/<subcategory>/<n>.png`: 8 emoji of each of the first three subcategories that have
/// at least 8.
fn emoji_folder(root: &Path) -> Vec<String> {
    let emoji =
        coeff_data::emoji::twitter_emoji(&coeff_vit::cache_dir(), [1.0, 1.0, 1.0], &mut |m| {
            eprintln!("{m}")
        })
        .expect("the emoji package (npm) is needed for this test");
    let mut by_sub: BTreeMap<&str, Vec<&coeff_data::emoji::Emoji>> = BTreeMap::new();
    for e in &emoji {
        by_sub.entry(e.subcategory.as_str()).or_default().push(e);
    }
    let classes: Vec<(&str, Vec<&coeff_data::emoji::Emoji>)> = by_sub
        .into_iter()
        .filter(|(_, v)| v.len() >= 8)
        .take(3)
        .collect();
    assert_eq!(classes.len(), 3);
    for (class, items) in &classes {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, e) in items.iter().take(8).enumerate() {
            super::common::write_png(&e.image, &dir.join(format!("{i}.png")));
        }
    }
    classes.iter().map(|(c, _)| c.to_string()).collect()
}

fn tune(data: &Path, out: &Path, extra: &[&str]) -> String {
    tune_on(&checkpoint(), data, out, extra)
}

fn tune_on(ckpt: &Path, data: &Path, out: &Path, extra: &[&str]) -> String {
    let args = classify_args(ckpt, data, out, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    testing::succeeds(BIN, Path::new("."), &args)
}

/// `tune classify` on `ckpt` and `data` into `out` (batch 8, a quarter held out; 3 epochs and
/// lr 0.01 unless `extra` says otherwise).
fn classify_args(ckpt: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "tune",
        "classify",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--train-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--val-split",
        "0.25",
        "--batch",
        "8",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--epochs") {
        args.extend_from_slice(&["--epochs", "3"]);
    }
    if !extra.contains(&"--lr") {
        args.extend_from_slice(&["--lr", "0.01"]);
    }
    args.into_iter().map(String::from).collect()
}

/// The PEFT files of a `tune classify` adapter folder alone in `dir` (so that `infer` reads
/// them and not ours).
fn peft_only(adapter: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

fn metrics(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

/// `logits` of `infer --adapter adapter` on two fixed 32x32 images.
fn infer_logits(tmp: &Path, adapter: &Path, name: &str) -> Vec<f32> {
    infer_logits_on(&checkpoint(), 32, tmp, adapter, name)
}

/// `logits` of `infer --checkpoint ckpt --adapter adapter` on two fixed `side`² images.
fn infer_logits_on(ckpt: &Path, side: usize, tmp: &Path, adapter: &Path, name: &str) -> Vec<f32> {
    let input = tmp.join(format!("pixels{side}.safetensors"));
    if !input.exists() {
        let v: Vec<f32> = (0..2 * 3 * side * side)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![2, 3, side, side],
            &bytes,
        )
        .unwrap();
        safetensors::serialize_to_file([("pixel_values", view)], &None, &input).unwrap();
    }
    let output = tmp.join(format!("{name}.safetensors"));
    testing::succeeds(
        BIN,
        Path::new("."),
        &[
            "infer",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&output).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.shape(), &[2, 3], "one logit per class of the folder");
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn tune_classify_trains_resumes_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    let classes = emoji_folder(&data);

    // Uninterrupted.
    let whole = tmp.path().join("whole");
    tune(&data, &whole, &["--method", "lora+coeff", "--keep", "last"]);
    let m = metrics(&whole);
    assert_eq!(m["finished"], true);
    assert_eq!(m["settings"]["classes"], serde_json::json!(classes));
    assert_eq!(m["settings"]["images"], serde_json::json!([18, 6]));
    let epochs = m["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for e in epochs {
        let acc = e["val_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{e}");
        let total: u64 = e["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
            .sum();
        assert_eq!(total, 6, "every validation image is counted once: {e}");
    }
    assert_eq!(m["kept_epoch"], 3);
    for f in [
        "curves.png",
        "confusion.png",
        "checkpoint.safetensors",
        "adapter/coeff_adapter.safetensors",
        "adapter/coeff_adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ] {
        assert!(whole.join(f).is_file(), "{f} is written");
    }
    // alpha moved away from zero (the identity): Coeff-Tuning was trained.
    let ours = std::fs::read(whole.join("adapter/coeff_adapter.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&ours).unwrap();
    let alpha = st
        .names()
        .into_iter()
        .filter(|k| k.ends_with("coeff.alpha"))
        .count();
    assert_eq!(alpha, 2, "one alpha per layer of the 2-layer ViT");
    assert!(st.names().iter().any(|k| k.as_str() == "head.base.weight"));

    // Killed mid-epoch 2 (step 4 of 9), then resumed: the same adapter, byte for byte.
    let resumed = tmp.path().join("resumed");
    let said = tune(
        &data,
        &resumed,
        &[
            "--method",
            "lora+coeff",
            "--keep",
            "last",
            "--stop-after",
            "4",
        ],
    );
    assert!(said.contains("--stop-after"), "{said}");
    assert_eq!(metrics(&resumed)["finished"], false);
    assert_eq!(metrics(&resumed)["epochs"].as_array().unwrap().len(), 1);
    let said = tune(
        &data,
        &resumed,
        &["--method", "lora+coeff", "--keep", "last"],
    );
    assert!(said.contains("resuming"), "{said}");
    let again = std::fs::read(resumed.join("adapter/coeff_adapter.safetensors")).unwrap();
    assert!(
        ours == again,
        "the resumed run's adapter differs from the uninterrupted one"
    );
    assert_eq!(metrics(&resumed)["epochs"], m["epochs"]);

    // Other settings in the same folder are refused, nothing is overwritten.
    testing::fails_saying(
        BIN,
        Path::new("."),
        &[
            "tune",
            "classify",
            "--checkpoint",
            checkpoint().to_str().unwrap(),
            "--train-dir",
            data.to_str().unwrap(),
            "--out",
            whole.to_str().unwrap(),
            "--method",
            "coeff",
        ],
        &["metrics.json", "other settings"],
    );

    // Loads back: ours (with alpha) through infer.
    let logits = infer_logits(tmp.path(), &whole.join("adapter"), "ours");
    assert!(logits.iter().all(|v| v.is_finite()));

    // --init-adapter starts from it: at a learning rate of 1e-9 one epoch leaves it as it was.
    let adapter = whole.join("adapter");
    let adapter_s = adapter.to_str().unwrap();
    let cont = tmp.path().join("continued");
    tune(
        &data,
        &cont,
        &[
            "--method",
            "lora+coeff",
            "--init-adapter",
            adapter_s,
            "--epochs",
            "1",
            "--lr",
            "1e-9",
        ],
    );
    let again = infer_logits(tmp.path(), &cont.join("adapter"), "continued");
    let diff = logits
        .iter()
        .zip(&again)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Measured 1.5e-7 (one epoch at lr 1e-9 barely moves the adapter); about 10x.
    eprintln!("--init-adapter at lr 1e-9: logits max |diff| {diff:.2e}");
    assert!(
        diff < 2e-6,
        "the run did not start from --init-adapter: max |diff| {diff}"
    );
    let ckpt = checkpoint();
    let other = tmp.path().join("other");
    let base = [
        "tune",
        "classify",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--train-dir",
        data.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
        "--init-adapter",
        adapter_s,
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    testing::fails_saying(
        BIN,
        Path::new("."),
        &with(&base, &["--method", "lora"]),
        &["lora+coeff adapter", "--method lora"],
    );
    testing::fails_saying(
        BIN,
        Path::new("."),
        &with(&base, &["--method", "lora+coeff", "--rank", "2"]),
        &["--rank", "--init-adapter"],
    );
}

#[test]
fn tune_classify_lora_peft_export_matches_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    emoji_folder(&data);
    let out = tmp.path().join("lora");
    tune(&data, &out, &["--method", "lora", "--epochs", "1"]);
    let peft = peft_only(&out.join("adapter"), &tmp.path().join("peft"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["modules_to_save"], serde_json::json!(["classifier"]));
    let ours = infer_logits(tmp.path(), &out.join("adapter"), "ours");
    let theirs = infer_logits(tmp.path(), &peft, "peft");
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-5, "PEFT export vs ours: max |diff| {diff}");
}

#[test]
fn tune_classify_refuses_flags_that_cannot_take_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
    }
    let ckpt = checkpoint();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "tune",
            "classify",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--train-dir",
            data.to_str().unwrap(),
            "--out",
            tmp.path().join("out").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let fails = |extra: &[&str], needles: &[&str]| {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        testing::fails_saying(BIN, Path::new("."), &args, needles);
    };
    fails(&["--method", "coeff", "--rank", "4"], &["--rank", "coeff"]);
    fails(&["--method", "lora", "--coeff-lr", "0.1"], &["--coeff-lr"]);
    fails(&["--method", "linear", "--augment"], &["--augment"]);
    fails(&["--lr=-1"], &["--lr -1"]);
    fails(&["--val-split", "1.5"], &["--val-split 1.5"]);
    fails(&["--resolution", "2"], &["--resolution 2"]);
    fails(&["--grad-accum", "0"], &["--grad-accum 0"]);
    fails(
        &["--batch", "4", "--grad-accum", "5"],
        &["--grad-accum 5", "--batch"],
    );
    // Class folders without images.
    fails(&[], &["images"]);
    // The output inside an input.
    let inside = data.join("a").join("out");
    let args = [
        "tune",
        "classify",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--train-dir",
        data.to_str().unwrap(),
        "--out",
        inside.to_str().unwrap(),
    ];
    std::fs::create_dir_all(&inside).unwrap();
    testing::fails_saying(BIN, Path::new("."), &args, &["--out", "--train-dir"]);
}

/// The DINOv2 classification fixture (transformers 5 module names, the head on `[cls, mean
/// patch]`): `--grad-accum 2` trains the adapter of the unsplit batch (to float tolerance),
/// and its PEFT export gives our logits.
#[test]
fn tune_classify_dinov2_grad_accum_and_peft_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    emoji_folder(&data);
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coeff-vit/tests/fixtures/dinov2_cls");
    let flags = [
        "--method",
        "lora",
        "--targets",
        "query,value,fc1",
        "--epochs",
        "1",
    ];
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    tune_on(&ckpt, &data, &one, &flags);
    tune_on(
        &ckpt,
        &data,
        &two,
        &[&flags[..], &["--grad-accum", "2"]].concat(),
    );
    assert_eq!(metrics(&two)["settings"]["grad_accum"], 2);
    let (a, b) = (super::common::adapter(&one), super::common::adapter(&two));
    assert!(!a.is_empty());
    let d = super::common::max_diff(&a, &b);
    // Measured 4.1e-8 (the accumulated gradient differs by float rounding); about 10x.
    eprintln!("--grad-accum 2 vs 1: adapter max |diff| {d:.2e}");
    assert!(d < 5e-7, "--grad-accum 2 differs from 1 by {d}");

    let peft = peft_only(&one.join("adapter"), &tmp.path().join("peft"));
    let st = std::fs::read(peft.join("adapter_model.safetensors")).unwrap();
    let keys: Vec<String> = SafeTensors::deserialize(&st)
        .unwrap()
        .names()
        .into_iter()
        .cloned()
        .collect();
    assert!(
        keys.iter()
            .any(|k| k == "base_model.model.dinov2.encoder.layer.0.attention.q_proj.lora_A.weight")
            && keys
                .iter()
                .any(|k| k == "base_model.model.dinov2.encoder.layer.1.mlp.fc1.lora_B.weight")
            && keys
                .iter()
                .any(|k| k == "base_model.model.classifier.weight"),
        "{keys:?}"
    );
    let ours = infer_logits_on(&ckpt, 28, tmp.path(), &one.join("adapter"), "ours");
    let theirs = infer_logits_on(&ckpt, 28, tmp.path(), &peft, "peft");
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-5, "PEFT export vs ours: max |diff| {diff}");
}

/// `--method full`: every parameter trains, `OUT/adapter` holds the whole model in our format
/// and `infer --adapter` runs it; no PEFT export.
#[test]
fn tune_classify_full_fine_tunes_every_parameter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    emoji_folder(&data);
    let out = tmp.path().join("full");
    tune(
        &data,
        &out,
        &["--method", "full", "--epochs", "1", "--lr", "1e-3"],
    );
    let m = metrics(&out);
    assert_eq!(m["settings"]["method"], "full");
    assert_eq!(m["trainable_params"], m["total_params"]);
    assert!(m["peft_export"]
        .as_str()
        .unwrap()
        .contains("full fine-tune"));
    assert!(!out.join("adapter/adapter_model.safetensors").exists());
    let bytes = std::fs::read(out.join("adapter/coeff_adapter.safetensors")).unwrap();
    let names: Vec<String> = SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .cloned()
        .collect();
    assert!(
        names
            .iter()
            .any(|k| k.contains("layers.0.") && k.contains("query")),
        "the backbone is not in the adapter: {names:?}"
    );
    let logits = infer_logits(tmp.path(), &out.join("adapter"), "full");
    assert!(logits.iter().all(|v| v.is_finite()));
    let init = out.join("adapter").display().to_string();
    let args = classify_args(
        &checkpoint(),
        &data,
        &tmp.path().join("init"),
        &["--method", "full", "--init-adapter", &init],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    testing::fails_saying(
        BIN,
        Path::new("."),
        &args,
        &["--init-adapter", "--method full"],
    );
}
