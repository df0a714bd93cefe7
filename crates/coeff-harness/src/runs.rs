//! The run directories every sweep shares: a trainer checkpoint to resume from and a result
//! file once done, both tied to the settings by a fingerprint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A run's result file, which records the fingerprint of the settings it was made with.
pub trait RunRecord: serde::de::DeserializeOwned {
    /// The settings' fingerprint.
    fn fingerprint(&self) -> &str;
}

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

/// The result file of a run directory.
pub fn result_path(dir: &Path) -> PathBuf {
    dir.join("result.json")
}

/// A finished result in `dir` made with `fingerprint`, if any. A result made with other
/// settings, or one that cannot be read, is an error naming the directory to delete to restart
/// that run.
pub fn finished<T: RunRecord>(dir: &Path, fingerprint: &str) -> Result<Option<T>> {
    let path = result_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    let r: T = std::fs::read(&path)
        .map_err(anyhow::Error::from)
        .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?))
        .map_err(|e| {
            anyhow::anyhow!(
                "{} cannot be read ({e}); delete {} to restart that run",
                path.display(),
                dir.display()
            )
        })?;
    if r.fingerprint() != fingerprint {
        bail!(
            "{} was made with other settings than this sweep's; use another --out or delete {} \
             to restart that run",
            path.display(),
            dir.display()
        );
    }
    Ok(Some(r))
}

/// Check the checkpoint a run would resume from, if there is one, from its header alone: it
/// must be a safetensors file whose `run_state` was written with `fingerprint`. Errors name the
/// directory to delete to restart that run. (The tensors are checked when the run resumes.)
pub fn check_checkpoint(dir: &Path, fingerprint: &str) -> Result<()> {
    let path = checkpoint_path(dir);
    if !path.exists() {
        return Ok(());
    }
    let found = checkpoint_fingerprint(&path).map_err(|e| {
        anyhow::anyhow!(
            "run checkpoint {} cannot be read ({e}); delete {} to restart that run",
            path.display(),
            dir.display()
        )
    })?;
    if found != fingerprint {
        bail!(
            "run checkpoint {} was made with other settings than this sweep's; use another \
             --out or delete {} to restart that run",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The `fingerprint` of a trainer checkpoint's `run_state` metadata, reading the header only.
fn checkpoint_fingerprint(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .context("shorter than a safetensors header")?;
    let n = u64::from_le_bytes(len);
    let size = file.metadata()?.len();
    if n > 100 << 20 || n + 8 > size {
        bail!("the header length {n} does not fit a file of {size} bytes");
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).context("the header is not JSON")?;
    let state = header
        .get("__metadata__")
        .and_then(|m| m.get("run_state"))
        .and_then(|s| s.as_str())
        .context("no `run_state` metadata")?;
    let state: serde_json::Value =
        serde_json::from_str(state).context("`run_state` is not JSON")?;
    state
        .get("fingerprint")
        .and_then(|f| f.as_str())
        .map(str::to_string)
        .context("`run_state` has no fingerprint")
}

/// The adapter-tuning recipe the `vl` and `concept` sweeps share: AdamW (weight decay 0.01,
/// gradient clip 1), linear warm-up over the first 10% of `steps` then cosine to 0 from `lr`,
/// and Coeff's alphas at their own peak rate `coeff_lr`.
pub fn adapter_trainer_config(
    lr: f64,
    coeff_lr: f64,
    steps: usize,
    seed: u64,
    checkpoint_secs: f64,
) -> coeff_tuning::train::TrainerConfig {
    use coeff_tuning::train::{AdamWConfig, ParamGroup, TrainerConfig, WarmupCosine};
    TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            ..AdamWConfig::default()
        },
        schedule: WarmupCosine {
            base_lr: lr,
            min_lr: 0.0,
            warmup_steps: steps / 10,
            total_steps: steps,
        },
        groups: vec![ParamGroup {
            patterns: vec!["coeff".into()],
            lr: coeff_lr,
        }],
        seed,
        checkpoint_secs,
        stop_after: None,
        grad_accum: 1,
    }
}

/// Mean loss of the last 10% of steps (at least one).
pub fn tail_mean_loss(losses: &[f32]) -> f64 {
    let tail = (losses.len() / 10).max(1).min(losses.len());
    losses[losses.len() - tail..]
        .iter()
        .map(|&v| v as f64)
        .sum::<f64>()
        / tail.max(1) as f64
}

/// A method of a tuning sweep: one of the core crate's PEFT methods, or full fine-tuning.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SweepMethod {
    /// A PEFT method of the core crate.
    Peft(coeff_tuning::Method),
    /// Every parameter trained (reference).
    Full,
}

impl SweepMethod {
    /// Its name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SweepMethod::Peft(m) => m.name(),
            SweepMethod::Full => "full",
        }
    }

    /// Parse a comma-separated `--methods` list; each must be one of `allowed`.
    pub fn parse_list(list: &str, allowed: &[SweepMethod]) -> Result<Vec<Self>> {
        list.split(',')
            .map(|s| {
                let s = s.trim();
                allowed
                    .iter()
                    .copied()
                    .find(|m| m.name() == s)
                    .with_context(|| {
                        let names: Vec<&str> = allowed.iter().map(|m| m.name()).collect();
                        format!("--methods: unknown method `{s}` ({})", names.join(", "))
                    })
            })
            .collect()
    }
}
