//! `tune dreambooth` end to end on the tiny SDXL folder of the coeff-sdxl fixtures and three
//! real subject images (Twitter cat-face emoji, fetched with npm, pinned and sha256-checked):
//! it trains, validates, writes the diffusers LoRA and our adapter, resumes a killed run to the
//! same bytes, and what it wrote loads back through `sample --lora` (both files).

use std::path::{Path, PathBuf};

use coeff_harness::testing;

use super::common::{adapter, max_diff};

const BIN: &str = env!("CARGO_BIN_EXE_coeff");

fn pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../coeff-sdxl/tests/fixtures/sdxl_pipeline_tiny")
}

/// `dir/<n>.png`: the first three cat-face emoji, 64x64 RGB.
fn subject(dir: &Path) {
    let emoji =
        coeff_data::emoji::twitter_emoji(&coeff_vit::cache_dir(), [1.0, 1.0, 1.0], &mut |m| {
            eprintln!("{m}")
        })
        .expect("the emoji package (npm) is needed for this test");
    let cats: Vec<_> = emoji
        .iter()
        .filter(|e| e.subcategory == "cat-face")
        .take(3)
        .collect();
    assert_eq!(cats.len(), 3, "three cat-face emoji");
    std::fs::create_dir_all(dir).unwrap();
    for (i, e) in cats.iter().enumerate() {
        super::common::write_png(&e.image, &dir.join(format!("{i}.png")));
    }
}

fn args<'a>(pipeline: &'a str, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "tune",
        "dreambooth",
        "--pipeline",
        pipeline,
        "--instance-data-dir",
        data,
        "--instance-prompt",
        "a photo of sks cat",
        "--out",
        out,
    ];
    v.extend_from_slice(extra);
    v
}

const RUN: &[&str] = &[
    "--method",
    "lora+coeff",
    "--max-train-steps",
    "4",
    "--train-batch-size",
    "2",
    "--gradient-accumulation-steps",
    "2",
    "--checkpointing-steps",
    "2",
    "--learning-rate",
    "0.01",
    "--random-flip",
    "--validation-prompt",
    "a photo of sks cat",
    "--validation-steps",
    "2",
    "--num-validation-images",
    "2",
    "--validation-inference-steps",
    "2",
];

#[test]
fn tune_dreambooth_trains_resumes_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("subject");
    subject(&data);
    let (p, d) = (pipeline(), data.display().to_string());
    let p = p.display().to_string();

    let straight = tmp.path().join("straight");
    let s = straight.display().to_string();
    testing::succeeds(BIN, Path::new("."), &args(&p, &d, &s, RUN));
    for f in [
        "pytorch_lora_weights.safetensors",
        "adapter/coeff_adapter.safetensors",
        "adapter/coeff_adapter_config.json",
        "validation/step-2.png",
        "validation/step-4.png",
        "checkpoint.safetensors",
        "metrics.json",
    ] {
        assert!(straight.join(f).is_file(), "{f} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["finished"], true);
    assert_eq!(metrics["validations"].as_array().unwrap().len(), 2);
    assert!(metrics["trainable_params"].as_u64().unwrap() > 0);
    assert!(metrics["step_ms"].as_f64().unwrap() > 0.0);
    // diffusers reads the LoRA config from the file's header.
    let lora = std::fs::read(straight.join("pytorch_lora_weights.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&lora).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    assert!(meta.contains_key("lora_adapter_metadata"), "{meta:?}");

    // Killed after two steps (with a checkpoint), then resumed: the same bytes.
    let resumed = tmp.path().join("resumed");
    let r = resumed.display().to_string();
    let stop: Vec<&str> = [RUN, &["--stop-after", "2"]].concat();
    testing::succeeds(BIN, Path::new("."), &args(&p, &d, &r, &stop));
    assert!(!resumed.join("pytorch_lora_weights.safetensors").exists());
    let log = testing::succeeds(BIN, Path::new("."), &args(&p, &d, &r, RUN));
    assert!(log.contains("resuming"), "{log}");
    for f in [
        "pytorch_lora_weights.safetensors",
        "adapter/coeff_adapter.safetensors",
        "validation/step-4.png",
    ] {
        assert_eq!(
            std::fs::read(straight.join(f)).unwrap(),
            std::fs::read(resumed.join(f)).unwrap(),
            "{f}: the resumed run differs"
        );
    }
    // Other settings in the same folder are refused.
    let other: Vec<&str> = [RUN, &["--seed", "1"]].concat();
    testing::fails_saying(
        BIN,
        Path::new("."),
        &args(&p, &d, &r, &other),
        &["other settings"],
    );

    // Both outputs load in `sample --lora` and change the image.
    let png = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let o = out.display().to_string();
        let mut a = vec![
            "sample",
            "--pipeline",
            &p,
            "--steps",
            "2",
            "--prompt",
            "a photo of sks cat",
            "--output",
            &o,
        ];
        a.extend_from_slice(extra);
        testing::succeeds(BIN, Path::new("."), &a);
        std::fs::read(&out).unwrap()
    };
    let lora_file = straight
        .join("pytorch_lora_weights.safetensors")
        .display()
        .to_string();
    let ours = straight.join("adapter").display().to_string();
    let bare = png("bare.png", &[]);
    let with_lora = png("lora.png", &["--lora", &lora_file]);
    let with_ours = png("ours.png", &["--lora", &ours]);
    assert_ne!(bare, with_lora, "the diffusers LoRA changed nothing");
    assert_ne!(with_lora, with_ours, "Coeff's alpha changed nothing");
}

#[test]
fn tune_dreambooth_refuses_flags_that_cannot_take_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (p, d) = (
        pipeline().display().to_string(),
        empty.display().to_string(),
    );
    let o = tmp.path().join("out").display().to_string();
    let fails = |extra: &[&str], needles: &[&str]| {
        testing::fails_saying(BIN, Path::new("."), &args(&p, &d, &o, extra), needles);
    };
    fails(&["--method", "lora", "--coeff-lr", "0.1"], &["--coeff-lr"]);
    fails(&["--method", "coeff", "--targets", "query"], &["--targets"]);
    fails(&["--validation-steps", "2"], &["--validation-prompt"]);
    fails(
        &["--guidance-scale", "3"],
        &["--guidance-scale", "--validation-prompt"],
    );
    fails(&["--resolution", "14"], &["--resolution 14", "multiple"]);
    fails(
        &["--gradient-accumulation-steps", "2"],
        &["--gradient-accumulation-steps 2"],
    );
    fails(&["--lr-warmup-steps", "600"], &["--lr-warmup-steps"]);
    // A folder without images.
    fails(&[], &["no image files", "empty"]);
    // The output inside an input.
    let inside = pipeline().join("unet").display().to_string();
    testing::fails_saying(
        BIN,
        Path::new("."),
        &args(&p, &d, &inside, &[]),
        &["--out", "--pipeline"],
    );
}

/// Prior preservation generates the missing class images once (with the base pipeline) and
/// trains on them; a weight of 0 gives the run without it. Query-chunked attention with the
/// recomputing backward gives the eager run's adapter.
#[test]
fn tune_dreambooth_prior_preservation_and_attention_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("subject");
    subject(&data);
    let class_dir = tmp.path().join("class");
    let (p, d) = (pipeline().display().to_string(), data.display().to_string());
    let c = class_dir.display().to_string();
    let base = [
        "--method",
        "lora+coeff",
        "--max-train-steps",
        "3",
        "--train-batch-size",
        "2",
        "--learning-rate",
        "0.01",
    ];
    let prior = [
        "--with-prior-preservation",
        "--class-data-dir",
        &c,
        "--class-prompt",
        "a photo of a cat",
        "--num-class-images",
        "3",
        "--class-inference-steps",
        "2",
    ];
    let run = |name: &str, extra: &[&str]| -> PathBuf {
        let out = tmp.path().join(name);
        let o = out.display().to_string();
        let flags: Vec<&str> = [&base[..], extra].concat();
        testing::succeeds(BIN, Path::new("."), &args(&p, &d, &o, &flags));
        out
    };

    let a = run("prior-a", &prior);
    let mut made: Vec<String> = std::fs::read_dir(&class_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(made, ["class-0000.png", "class-0001.png", "class-0002.png"]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["settings"]["prior"]["images"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let first = std::fs::read(class_dir.join("class-0000.png")).unwrap();
    // A second run finds the class images and makes the same adapter.
    let b = run("prior-b", &prior);
    assert_eq!(
        std::fs::read(class_dir.join("class-0000.png")).unwrap(),
        first
    );
    assert_eq!(max_diff(&adapter(&a), &adapter(&b)), 0.0);

    let plain = adapter(&run("plain", &[]));
    let weight0: Vec<&str> = [&prior[..], &["--prior-loss-weight", "0"]].concat();
    let zero = adapter(&run("prior-0", &weight0));
    let e = max_diff(&plain, &zero);
    assert!(
        e < 1e-5,
        "--prior-loss-weight 0 differs from no prior by {e}"
    );
    assert!(
        max_diff(&plain, &adapter(&a)) > 1e-4,
        "the class images changed nothing"
    );

    // The tiny UNet's attention runs at its second level and mid block (at most 16 latent
    // tokens at 16 px: the first level has none), so chunks of 4 rows, the maps recomputed in
    // the backward pass. The run's count of recomputed attention forwards shows the option took
    // effect (`--attention-chunk 16` would leave every layer eager here).
    let chunked_dir = run("chunked", &["--attention-chunk", "4"]);
    let chunked = adapter(&chunked_dir);
    let eager_dir = run("eager", &["--attention-chunk", "0"]);
    let eager = adapter(&eager_dir);
    let e = max_diff(&chunked, &eager);
    eprintln!("chunked vs eager attention: adapter max |diff| {e:.2e}");
    assert!(e < 1e-4, "chunked attention differs from eager by {e}");
    let recomputed = |dir: &Path| -> u64 {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap())
                .unwrap();
        m["recomputed_attention_calls"]
            .as_u64()
            .expect("recomputed_attention_calls")
    };
    assert!(
        recomputed(&chunked_dir) > 0,
        "--attention-chunk 4 recomputed nothing"
    );
    assert_eq!(
        recomputed(&eager_dir),
        0,
        "--attention-chunk 0 recomputed attention"
    );
    assert_eq!(
        max_diff(&plain, &eager),
        0.0,
        "the default (1024) is eager at 16 tokens"
    );
}

/// `--init-adapter`: a run starts from an earlier run's diffusers LoRA file or our folder (at
/// lr 1e-12 one step gives it back), trains it further at a real rate, and refuses an adapter
/// of another kind or flags the adapter fixes.
#[test]
fn tune_dreambooth_starts_from_an_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("subject");
    subject(&data);
    let (p, d) = (pipeline().display().to_string(), data.display().to_string());
    let out = |name: &str| tmp.path().join(name).display().to_string();
    let first = out("first");
    let base = ["--method", "lora", "--train-batch-size", "2"];
    let flags = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |o: &str, extra: &[&str]| {
        let f = flags(extra);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        testing::succeeds(BIN, Path::new("."), &args(&p, &d, o, &f));
    };
    run(
        &first,
        &["--max-train-steps", "2", "--learning-rate", "0.01"],
    );
    let trained = adapter(Path::new(&first));
    let file = format!("{first}/pytorch_lora_weights.safetensors");
    let ours = format!("{first}/adapter");
    for (name, init) in [("from-file", &file), ("from-ours", &ours)] {
        let o = out(name);
        run(
            &o,
            &[
                "--max-train-steps",
                "1",
                "--learning-rate",
                "1e-12",
                "--init-adapter",
                init,
            ],
        );
        let e = max_diff(&trained, &adapter(Path::new(&o)));
        assert!(e < 1e-5, "{name}: differs from the starting adapter by {e}");
    }
    let further = out("further");
    run(
        &further,
        &[
            "--max-train-steps",
            "2",
            "--learning-rate",
            "0.01",
            "--init-adapter",
            &file,
        ],
    );
    assert!(
        max_diff(&trained, &adapter(Path::new(&further))) > 1e-4,
        "it did not train"
    );

    let fails = |extra: &[&str], needles: &[&str]| {
        let o = out("refused");
        let mut a = args(&p, &d, &o, extra);
        a.extend_from_slice(&["--init-adapter", &ours]);
        testing::fails_saying(BIN, Path::new("."), &a, needles);
    };
    fails(
        &["--method", "lora+coeff"],
        &["is a lora adapter", "lora+coeff"],
    );
    fails(
        &["--method", "lora", "--rank", "8"],
        &["--rank", "--init-adapter"],
    );
}
