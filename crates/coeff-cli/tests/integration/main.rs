//! coeff-cli's integration tests, one module per subject, built as one test binary (one link
//! and one copy of the monomorphised models instead of one per file).
//!
//! Run one subject with `cargo test --release -p coeff-cli --test integration <module>::`.

mod adapter_formats;
mod bad_input;
mod common;
mod dreambooth;
mod infer_text;
mod sample;
mod tune;
