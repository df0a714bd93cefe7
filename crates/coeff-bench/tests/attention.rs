//! `coeff-bench attention` end to end (the `bench-attention` alias), and the memory bound of the
//! recomputing attention backward measured by the binary's counting allocator: one residual
//! attention layer of 1024 tokens (width 64, 4 heads, batch 1), eager, then query chunks of 128
//! with the maps recomputed in the backward pass.
//!
//! With `M` the bytes of one layer's maps (`[1, 4, 1024, 1024]` f32, 16 MiB), `C` those of one
//! chunk's (`[1, 4, 128, 1024]`, 2 MiB) and `X` those of one activation (`[1, 1024, 64]`, 256
//! KiB): eager autodiff keeps the maps for the backward, so a step holds at least `4 M` (measured 5.1 M); the
//! recomputing path keeps `q`, `k`, `v` and the mixing matrix and rebuilds a chunk at a time, so
//! a step holds at most `6 C + 16 X` (SDXL's 4096-token layer measured 3.7 C + 10 X, see
//! docs/benchmarks.md). Both bounds are asserted for every variant (none, coeff, lora,
//! lora+coeff), and the ratio recompute / eager below 0.2 (measured 0.10).

// Host memory only: on the GPU backends the maps live in device memory the allocator cannot see.
#![cfg(not(any(feature = "wgpu", feature = "cuda")))]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_coeff-bench");

const TOKENS: usize = 1024;
const WIDTH: usize = 64;
const HEADS: usize = 4;
const CHUNK: usize = 128;

/// `(method, step peak MiB)` of each variant, after checking the run's outputs.
fn run(out: &Path, extra: &[&str]) -> Vec<(String, f64)> {
    let sizes = [
        "--layers".to_string(),
        "1".into(),
        "--width".into(),
        WIDTH.to_string(),
        "--heads".into(),
        HEADS.to_string(),
        "--tokens".into(),
        TOKENS.to_string(),
        "--batch".into(),
        "1".into(),
        "--iters".into(),
        "2".into(),
        "--torch".into(),
        "off".into(),
    ];
    let output = Command::new(BIN)
        .arg("--out")
        .arg(out)
        .arg("bench-attention")
        .args(&sizes)
        .args(extra)
        .output()
        .expect("running coeff-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "coeff-bench {extra:?}:\n{stderr}");
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(
        md.contains("| lora+coeff |") && md.contains("Coeff / none"),
        "{md}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
            .expect("summary.json");
    let rows = summary["rows"].as_array().expect("rows");
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["none", "coeff", "lora", "lora+coeff"]);
    // Coeff's H^2 per layer, LoRA's rank 8 on query and value.
    let trainable: Vec<u64> = rows
        .iter()
        .map(|r| r["trainable_params"].as_u64().unwrap())
        .collect();
    let lora = 2 * 8 * (WIDTH + WIDTH) as u64;
    let coeff = (HEADS * HEADS) as u64;
    assert_eq!(trainable, [0, coeff, lora, lora + coeff]);
    for r in rows {
        for k in ["forward_ms", "forward_backward_ms"] {
            let t = r[k].as_f64().unwrap();
            assert!(t.is_finite() && t > 0.0, "{}: {k} = {t}", r["method"]);
        }
    }
    rows.iter()
        .map(|r| {
            let mb = r["step_peak_host_mb"].as_f64().unwrap_or_else(|| {
                panic!("no step peak for {}: allocator not counting", r["method"])
            });
            (r["method"].as_str().unwrap().to_string(), mb)
        })
        .collect()
}

#[test]
fn bench_attention_runs_and_the_recomputing_backward_bounds_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mib = (1u64 << 20) as f64;
    let maps = (HEADS * TOKENS * TOKENS * 4) as f64 / mib;
    let chunk = (HEADS * CHUNK * TOKENS * 4) as f64 / mib;
    let activation = (TOKENS * WIDTH * 4) as f64 / mib;

    let eager = run(&tmp.path().join("eager"), &[]);
    let chunk_arg = CHUNK.to_string();
    let recompute = run(
        &tmp.path().join("recompute"),
        &["--query-chunk", &chunk_arg, "--recompute"],
    );
    let bound = 6.0 * chunk + 16.0 * activation;
    for ((method, e), (_, r)) in eager.iter().zip(&recompute) {
        eprintln!(
            "{method}: step peak eager {e:.1} MiB, recompute {r:.1} MiB (ratio {:.3}; maps {maps} \
             MiB, bound {bound} MiB)",
            r / e
        );
        assert!(
            *e >= 4.0 * maps,
            "{method}: eager step peak {e:.1} MiB < 4 x the maps ({maps} MiB): not measuring"
        );
        assert!(
            *r <= bound,
            "{method}: recomputing step peak {r:.1} MiB above 6 chunks + 16 activations \
             ({bound} MiB)"
        );
        assert!(r / e < 0.2, "{method}: recompute / eager = {:.3}", r / e);
    }
}
