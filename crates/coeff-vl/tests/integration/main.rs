//! coeff-vl's integration tests, one module per subject, built as one test binary (one link
//! and one copy of the monomorphised models instead of one per file).
//!
//! Run one subject with `cargo test --release -p coeff-vl --test integration <module>::`.

mod parity;
mod peft;
mod pretrained;
mod vl;
