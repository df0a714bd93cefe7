//! Bad input to `coeff-experiments` (`toy`, `fewshot`): an error that names the flag or field
//! and its value; no panic (exit status 1), nothing overwritten. Every case runs the built
//! binary through the shared run-and-assert helper (`coeff_harness::testing`).

use std::path::Path;

use coeff_harness::testing;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_coeff-experiments");

fn fails(cwd: &Path, args: &[&str]) -> String {
    testing::fails(BIN, cwd, args)
}

#[test]
fn toy_flags_are_checked_and_divergence_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = |extra: &[&str]| -> String {
        let mut args = vec!["--out", "toy-out", "toy"];
        args.extend_from_slice(&with_defaults(
            extra,
            &[("--steps", "40"), ("--nodes", "6")],
        ));
        fails(tmp.path(), &args)
    };
    let err = toy(&["--nodes", "100000"]);
    assert!(
        err.contains("--nodes must be between 3 and 1024, got 100000"),
        "{err}"
    );
    let err = toy(&["--heads", "1000"]);
    assert!(err.contains("--heads") && err.contains("1000"), "{err}");
    for lr in ["NaN", "inf", "-0.1", "0"] {
        let err = toy(&[&format!("--lr={lr}")]);
        assert!(
            err.contains("--lr must be a positive finite number"),
            "{lr}: {err}"
        );
    }
    let err = toy(&["--scale", "inf"]);
    assert!(
        err.contains("--scale must be a finite number, got inf"),
        "{err}"
    );
    let err = toy(&["--scale", "1e300"]);
    assert!(err.contains("--scale 1e300"), "{err}");
    let err = toy(&["--lr", "1e30"]);
    assert!(
        err.contains("diverged") && err.contains("--lr 1e30") && err.contains("at step"),
        "{err}"
    );
    assert!(
        !tmp.path().join("toy-out/summary.json").exists(),
        "a diverged run wrote a summary"
    );
}

/// `extra` (flag, value pairs) followed by the `defaults` whose flags `extra` does not give
/// (list flags add up when repeated, so a default must not be repeated).
fn with_defaults<'a>(extra: &[&'a str], defaults: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    for (flag, value) in defaults {
        if !extra.contains(flag) {
            args.extend([*flag, *value]);
        }
    }
    args
}

/// `fewshot` with everything local (no download is reached in these cases).
fn fewshot(tmp: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--out", "sweep", "fewshot"];
    args.extend(with_defaults(
        extra,
        &[
            ("--cache", "cache"),
            ("--data", "data"),
            ("--datasets", "animals"),
            ("--shots", "1"),
            ("--methods", "linear"),
            ("--seeds", "0"),
        ],
    ));
    fails(tmp, &args)
}

#[test]
fn fewshot_flags_are_bounded_and_lists_have_no_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fewshot(tmp.path(), &["--resolution", "14000"]);
    assert!(
        err.contains("`resolution` (--resolution) is 14000, above the limit of 1024"),
        "{err}"
    );
    let err = fewshot(tmp.path(), &["--resolution", "1008", "--batch-size", "64"]);
    assert!(
        err.contains("attention maps") && err.contains("1008"),
        "{err}"
    );
    let err = fewshot(tmp.path(), &["--batch-size", "100000"]);
    assert!(
        err.contains("--batch-size") && err.contains("100000"),
        "{err}"
    );
    for (flag, list, value) in [
        ("--shots", "1,1", "`1`"),
        ("--seeds", "0,3,0", "`0`"),
        ("--methods", "lora,linear,lora", "`lora`"),
        ("--datasets", "animals,mnist,animals", "`animals`"),
    ] {
        let err = fewshot(tmp.path(), &[flag, list]);
        assert!(
            err.contains(&format!("(--{}) lists {value} twice", &flag[2..])),
            "{flag} {list}: {err}"
        );
    }
    assert!(
        !tmp.path().join("sweep").exists(),
        "a refused sweep created its output"
    );
}

#[test]
fn fewshot_refuses_a_one_class_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("imgs/cat");
    std::fs::create_dir_all(&class).unwrap();
    let mut enc = png::Encoder::new(std::fs::File::create(class.join("a.png")).unwrap(), 4, 4);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(&[128u8; 16])
        .unwrap();
    let err = fewshot(tmp.path(), &["--datasets", "folder:imgs"]);
    assert!(
        err.contains("only one class") && err.contains("`cat`") && err.contains("imgs"),
        "{err}"
    );
    assert!(!tmp.path().join("sweep/config.json").exists());
}

#[test]
fn fewshot_checks_existing_runs_before_writing_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let run = out.join("runs/animals/1-shot/linear/seed-0");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(out.join("config.json"), "{\"the\": \"previous sweep\"}").unwrap();
    let config_before = std::fs::read(out.join("config.json")).unwrap();

    // A result made with other settings.
    let result: Value = json!({
        "spec": {"dataset": "animals", "shots": 1, "method": "linear", "seed": 0},
        "accuracy": 0.5, "test_images": 10, "final_loss": 1.0, "steps": 1,
        "trainable_params": 1, "method_params": 0, "total_params": 1, "step_ms": 1.0,
        "train_seconds": 1.0, "resumed_from": null, "fingerprint": "another sweep"
    });
    std::fs::write(run.join("result.json"), result.to_string()).unwrap();
    let err = fewshot(tmp.path(), &[]);
    assert!(
        err.contains("other settings") && err.contains("delete") && err.contains("seed-0"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        config_before
    );

    // A corrupt result.
    std::fs::write(run.join("result.json"), "{\"accuracy\": ").unwrap();
    let err = fewshot(tmp.path(), &[]);
    assert!(
        err.contains("result.json")
            && err.contains("delete")
            && err.contains("to restart that run"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        config_before
    );

    // A corrupt checkpoint (no result yet).
    std::fs::remove_file(run.join("result.json")).unwrap();
    std::fs::write(
        run.join("checkpoint.safetensors"),
        b"\x10\0\0\0\0\0\0\0{truncated",
    )
    .unwrap();
    let err = fewshot(tmp.path(), &[]);
    assert!(
        err.contains("checkpoint.safetensors")
            && err.contains(&format!(
                "delete {}",
                Path::new("sweep/runs/animals/1-shot/linear/seed-0").display()
            ))
            && err.contains("to restart that run"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        config_before
    );
}
