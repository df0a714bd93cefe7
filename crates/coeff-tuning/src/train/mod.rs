//! Training machinery for adapters: an optimizer whose state is keyed by module path (so a
//! checkpoint can be resumed in a fresh process) and a warm-up + cosine schedule.

pub mod adamw;

pub use adamw::{AdamW, AdamWConfig, StepInfo, WarmupCosine};
