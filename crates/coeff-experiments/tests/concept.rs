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
    // The base's own prior scores compare its samples with themselves (`before` against
    // `before`, sample by sample): 1 up to the f32 rounding of the unit-norm embeddings. Any
    // other value means the prior range or the normalisation is off.
    let base_scores = &first["base_scores"];
    for k in ["prior_dino", "prior_clip_i"] {
        let v = base_scores[k]
            .as_f64()
            .unwrap_or_else(|| panic!("base_scores.{k} missing: {base_scores}"));
        assert!((v - 1.0).abs() < 1e-6, "base_scores.{k} = {v}");
    }
    // The base's config is diffusers' own format and reads back.
    let cfg = coeff_sdxl::UnetConfig::from_file(out.path().join("base/config.json")).unwrap();
    assert_eq!(cfg.block_out_channels, vec![16, 32]);

    // Trainable parameters of lora+coeff, counted from the config. Attention only at level 1
    // (width c = 32, 4 heads); its transformers have depth 1, so the transformer blocks are
    // down 1 (1 resnet), mid 1, up 2 (2 resnets): 4, each a self- and a cross-attention.
    assert_eq!(cfg.num_attention_heads, vec![4, 4]);
    assert_eq!(cfg.transformer_layers_per_block, vec![1, 1]);
    assert_eq!(cfg.transformer_blocks(), 4);
    assert_eq!(first["config"]["lora_rank"].as_u64(), Some(4));
    let (c, heads, ctx, rank, blocks) = (32, 4, cfg.cross_attention_dim, 4, 4);
    assert_eq!(ctx, 384, "MiniLM-L6's hidden width");
    // LoRA of rank r on a linear in -> out: A [in, r] + B [r, out]; Coeff: alpha [heads, heads]
    // per attention.
    let lora = |d_in: usize, d_out: usize| rank * (d_in + d_out);
    // Self-attention: query, key, value, output all c -> c. Cross-attention: query and output
    // c -> c, key and value ctx -> c.
    let self_attn = 4 * lora(c, c) + heads * heads;
    let cross_attn = 2 * lora(c, c) + 2 * lora(ctx, c) + heads * heads;
    let expected = blocks * (self_attn + cross_attn);
    assert_eq!(expected, 19_584);
    assert_eq!(
        runs[0]["trainable_params"].as_u64(),
        Some(expected as u64),
        "{}",
        runs[0]
    );

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
