//! coeff-sdxl's integration tests, one module per subject, built as one test binary (one link
//! and one copy of the monomorphised models instead of one per file).
//!
//! Run one subject with `cargo test --release -p coeff-sdxl --test integration <module>::`.

mod lora_format;
mod parity;
mod pipeline;
mod scheduler;
mod structure;
mod vae;
