//! The PyTorch reference of the ViT step benchmark (`scripts/bench/torch_vit.py`, embedded in
//! the binary), run in the same invocation as our measurement when a Python with torch and
//! transformers is present, so that the ratio compares two numbers taken minutes apart on the
//! same machine.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The script, as committed.
const SCRIPT: &str = include_str!("../../../scripts/bench/torch_vit.py");

/// Whether to run the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TorchMode {
    /// When the Python imports torch and transformers; a note otherwise.
    Auto,
    /// Always; a Python without torch is an error.
    On,
    /// Never.
    Off,
}

/// What the script measured (its `--json` line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TorchTiming {
    /// `torch.__version__`.
    pub torch: String,
    /// `cpu` or the CUDA device's name.
    pub device: String,
    /// Intra-op threads.
    pub threads: usize,
    /// Median forward ms (no grad).
    pub forward_ms: f64,
    /// Median forward+backward ms (input grad, frozen weights).
    pub forward_backward_ms: f64,
    /// CUDA only: peak allocator memory of one step above what was allocated before it, MiB.
    pub peak_device_mb: Option<f64>,
}

/// The reference's outcome: a timing, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct TorchReference {
    /// The Python that ran (or would have run) the script.
    pub python: String,
    /// The timing, when the script ran.
    pub timing: Option<TorchTiming>,
    /// Why there is no timing.
    pub skipped: Option<String>,
}

/// Run the reference for `model` (`vit-s` / `vit-b`) on `device` (`cpu` / `cuda`).
pub fn run(
    mode: TorchMode,
    python: &str,
    model: &str,
    batch: usize,
    iters: usize,
    device: &str,
) -> anyhow::Result<TorchReference> {
    let skipped = |why: String| TorchReference {
        python: python.to_string(),
        timing: None,
        skipped: Some(why),
    };
    if mode == TorchMode::Off {
        return Ok(skipped("--torch off".into()));
    }
    let outcome = run_script(python, model, batch, iters, device);
    match (outcome, mode) {
        (Ok(t), _) => Ok(TorchReference {
            python: python.to_string(),
            timing: Some(t),
            skipped: None,
        }),
        (Err(why), TorchMode::On) => anyhow::bail!("the PyTorch reference failed: {why}"),
        (Err(why), _) => Ok(skipped(why)),
    }
}

fn run_script(
    python: &str,
    model: &str,
    batch: usize,
    iters: usize,
    device: &str,
) -> Result<TorchTiming, String> {
    let mut child = Command::new(python)
        .args(["-", "--json", "--model", model, "--device", device])
        .args(["--batch", &batch.to_string(), "--iters", &iters.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{python}`: {e}"))?;
    // The script arrives on stdin (`python -`), so the binary needs no checkout beside it.
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(SCRIPT.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{python}` did not finish: {e}"))?;
    written.map_err(|e| format!("could not send the script to `{python}`: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("`{python}` exited with {}: {last}", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| format!("unreadable reply from the script ({e}): {line}"))
}
