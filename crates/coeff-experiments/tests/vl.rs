//! `experiment vl` end to end at a tiny size, on the real parts (easy-VQA, MiniLM and DINOv2,
//! fetched and cached like the other assets): the outputs are written, scores are percentages,
//! Coeff adds exactly its H x H per attention layer to LoRA's trainable parameters, a second
//! invocation reuses the finished runs (same results, no retraining) and a sweep with other
//! settings in the same folder is refused with the run's folder named.

use coeff_experiments::vl::{self, Preset, VlArgs};
use coeff_harness::backend::{self, Train};

fn args(steps: usize) -> VlArgs {
    VlArgs {
        preset: Preset::Default,
        methods: Some("lora,lora+coeff".into()),
        seeds: Some(1),
        steps: Some(steps),
        train_per_task: Some(4),
        test_per_task: Some(2),
        lr: None,
        coeff_lr: None,
        text_model: None,
        cache: None,
    }
}

fn summary(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn vl_experiment_runs_resumes_and_refuses_other_settings() {
    let out = tempfile::tempdir().unwrap();
    let dev = backend::device();
    vl::run::<Train>(&args(3), out.path(), backend::NAME, &dev).unwrap();
    for f in [
        "summary.json",
        "results.md",
        "vl_scores.png",
        "runs/lora-s0/result.json",
        "runs/lora+coeff-s0/result.json",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    let first = summary(out.path());
    let runs = first["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        for (k, v) in r["scores"].as_object().unwrap() {
            let v = v.as_f64().unwrap();
            // CIDEr-D x100 can exceed 100; everything else is a percentage.
            let top = if k == "caption_cider" || k == "average" {
                1000.0
            } else {
                100.0
            };
            assert!((0.0..=top).contains(&v), "{}: {k} = {v}", r["method"]);
        }
        let loss = r["final_loss"].as_f64().unwrap();
        assert!(
            loss.is_finite() && loss > 0.0,
            "{}: final loss {loss}",
            r["method"]
        );
        assert!(!r["samples"].as_array().unwrap().is_empty());
    }
    // lora+coeff - lora = H^2 per attention layer of the text model (MiniLM-L6: 12 heads).
    // Runs in `--methods` order: lora, then lora+coeff.
    assert_eq!(runs[0]["method"], serde_json::json!({"Peft": "lora"}));
    assert_eq!(runs[1]["method"], serde_json::json!({"Peft": "lora-coeff"}));
    let params = |m: &str| -> u64 {
        let i = usize::from(m == "lora+coeff");
        runs[i]["trainable_params"].as_u64().unwrap()
    };
    // 18 attention layers (6 encoder self, 6 decoder self, 6 decoder cross) x 12 x 12, as
    // docs/vl.md reports: 2,592.
    assert_eq!(params("lora+coeff") - params("lora"), 18 * 12 * 12);

    // Again: both runs are finished, so nothing is retrained and the results are the same.
    vl::run::<Train>(&args(3), out.path(), backend::NAME, &dev).unwrap();
    let second = summary(out.path());
    assert_eq!(first["runs"], second["runs"]);

    // Other settings in the same folder: refused, naming the run's folder.
    let err = vl::run::<Train>(&args(4), out.path(), backend::NAME, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other settings") && err.contains("lora-s0"),
        "{err}"
    );
}
