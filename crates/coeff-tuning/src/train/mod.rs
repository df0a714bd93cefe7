//! Training machinery for adapters: an optimizer whose state is keyed by module path (so a
//! checkpoint can be resumed in a fresh process), a warm-up + cosine schedule, and the one
//! [`Trainer`] loop every experiment plugs its loss into.
//!
//! Ours or `burn::optim`? Burn's `AdamW` keys its state by `ParamId` (random per model
//! instance), so its state cannot be matched to a model rebuilt from pretrained weights in a
//! new process; ours keys it by module path. Use Burn's optimizers for anything that never
//! resumes across processes; use [`AdamW`] / [`Trainer`] for resumable runs.

pub mod adamw;
pub mod trainer;

pub use adamw::{AdamW, AdamWConfig, StepInfo, WarmupCosine};
pub use trainer::{
    step_seed, Finish, ParamGroup, Step, StepOutput, StepReport, TrainState, Trainer, TrainerConfig,
};
