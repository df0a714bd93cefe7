//! The toy experiment's settings (flags) and their bounds.

use anyhow::{ensure, Result};
use serde::Serialize;

/// Settings of the toy run.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct ToyArgs {
    /// Random seed for inputs, start weights and teacher.
    #[arg(long, default_value_t = 3)]
    pub seed: u64,
    /// Number of nodes `N`.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// Number of heads `H`.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Optimizer steps per run (full batch).
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f64,
    /// The target is the input graph expanded by this factor about its centroid.
    #[arg(long, default_value_t = 1.5)]
    pub scale: f64,
}

impl ToyArgs {
    /// Refuse flags the experiment cannot run with, naming the flag, the value and the limit
    /// (see [`coeff_harness::limits`]).
    pub fn validate(&self) -> Result<()> {
        use coeff_harness::limits::{TOY_MAX_HEADS, TOY_MAX_NODES, TOY_MAX_STEPS};
        for (flag, value, min, max) in [
            ("--nodes", self.nodes, 3, TOY_MAX_NODES),
            ("--heads", self.heads, 1, TOY_MAX_HEADS),
            ("--steps", self.steps, 1, TOY_MAX_STEPS),
        ] {
            ensure!(
                (min..=max).contains(&value),
                "{flag} must be between {min} and {max}, got {value} (see docs/input-checks.md)"
            );
        }
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr must be a positive finite number, got {:?}",
            self.lr
        );
        ensure!(
            self.scale.is_finite(),
            "--scale must be a finite number, got {:?}",
            self.scale
        );
        Ok(())
    }
}
