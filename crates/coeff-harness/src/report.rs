//! What every experiment writes: `summary.json` (machine-readable, with backend, seed and git
//! revision), a Markdown table, and plots - all into the run's output directory.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Provenance recorded in every summary.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// Backend name (`flex`, `ndarray`, `wgpu`, `cuda`).
    pub backend: &'static str,
    /// `git describe --always --dirty` of the source tree, or `unknown`.
    pub git_revision: String,
    /// Seed of the run.
    pub seed: u64,
    /// Seconds since the Unix epoch at start.
    pub started_unix: u64,
    /// Program version.
    pub version: &'static str,
}

impl Provenance {
    /// Collect provenance for a run.
    pub fn new(backend: &'static str, seed: u64) -> Self {
        let git_revision = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty", "--abbrev=12"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            backend,
            git_revision,
            seed,
            started_unix,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Write `bytes` to `path` with the workspace's one atomic writer,
/// [`coeff_tuning::io::write_atomic`] (unique temporary file, fsync, rename, directory fsync);
/// this only adds the path to the error for `anyhow`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    coeff_tuning::io::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Write a serialisable value as pretty JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// A Markdown table from a header and rows.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        vec!["---"; header.len()].join("|")
    );
    for row in rows {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    s
}

/// Median (the upper one for an even count); NaN for no values.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// An 8-bit RGB PNG of `w x h` pixels from channel-first `[3, h, w]` values in `[0, 1]`.
pub fn png_rgb(values: &[f32], w: usize, h: usize) -> Result<Vec<u8>> {
    let plane = h * w;
    anyhow::ensure!(
        values.len() == 3 * plane,
        "png_rgb: {} values for {w}x{h}",
        values.len()
    );
    let mut rgb = Vec::with_capacity(3 * plane);
    for p in 0..plane {
        for ch in 0..3 {
            rgb.push((values[ch * plane + p] * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(bytes)
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// A line above a progress bar, or on stderr when bars are hidden (not a terminal).
pub fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// The Markdown lines giving each Coeff method's step time over its base method's, paired by
/// seed: `runs` are `(method name, seed, step ms)`; pairs lora / lora+coeff and dora /
/// dora+coeff (whichever are present).
pub fn coeff_step_ratios(runs: &[(&str, u64, f64)]) -> String {
    let mut md = String::new();
    for (base, with) in [("lora", "lora+coeff"), ("dora", "dora+coeff")] {
        let ratios: Vec<f64> = runs
            .iter()
            .filter(|r| r.0 == with)
            .filter_map(|r| {
                runs.iter()
                    .find(|b| b.0 == base && b.1 == r.1)
                    .map(|b| r.2 / b.2)
            })
            .collect();
        if !ratios.is_empty() {
            md.push_str(&format!(
                "\nStep time {with} / {base}: {:.3} (median over {} seed pair(s)).\n",
                median(ratios.clone()),
                ratios.len()
            ));
        }
    }
    md
}
