//! `experiment concept` end to end at a tiny size, on the real parts (the npm emoji package,
//! MiniLM, DINOv2 and CLIP, fetched and cached like the other assets): the outputs are
//! written, scores are finite similarities, a second invocation reuses the base stage and the
//! finished run, and a sweep with other settings in the same folder is refused with the
//! folder named.

use coeff_experiments::concept::{self, ConceptArgs, Preset};
use coeff_harness::backend::{self, Train};

fn args(steps: usize) -> ConceptArgs {
    ConceptArgs {
        preset: Preset::Default,
        methods: Some("lora+coeff".into()),
        seeds: Some(1),
        base_steps: Some(3),
        side: Some(16),
        widths: Some(vec![16, 32]),
        base_batch: Some(4),
        steps: Some(steps),
        lr: None,
        coeff_lr: None,
        sample_steps: Some(2),
        guidance: None,
        prior_weight: Some(1.0),
        cache: None,
    }
}

#[test]
fn concept_experiment_runs_resumes_and_refuses_other_settings() {
    let out = tempfile::tempdir().unwrap();
    let dev = backend::device();
    concept::run::<Train>(&args(2), out.path(), backend::NAME, &dev).unwrap();
    for f in [
        "summary.json",
        "results.md",
        "concept_grid.png",
        "base_grid.png",
        "concept_scores.png",
        "base/config.json",
        "base/result.json",
        "runs/lora+coeff-s0/result.json",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap()
    };
    let first = read();
    let runs = first["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    for (k, v) in runs[0]["scores"].as_object().unwrap() {
        let v = v.as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&v), "{k} = {v}");
    }
    // 2 levels x (1 self + 1 cross) per transformer block, alpha [2, 2] each, plus LoRA.
    assert!(runs[0]["trainable_params"].as_u64().unwrap() > 0);
    // The base's config is diffusers' own format and reads back.
    let cfg = coeff_sdxl::UnetConfig::from_file(out.path().join("base/config.json")).unwrap();
    assert_eq!(cfg.block_out_channels, vec![16, 32]);

    // Again: everything is reused, and the same numbers come out.
    concept::run::<Train>(&args(2), out.path(), backend::NAME, &dev).unwrap();
    let second = read();
    assert_eq!(first["runs"], second["runs"]);
    assert_eq!(first["base"], second["base"]);

    // Other tuning settings in the same folder: refused, naming the run folder.
    let err = concept::run::<Train>(&args(3), out.path(), backend::NAME, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lora+coeff-s0"), "{err}");
}
