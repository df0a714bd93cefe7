//! coeff-vit's integration tests, one module per subject, built as one test binary (one link
//! and one copy of the monomorphised models instead of one per file).
//!
//! Run one subject with `cargo test --release -p coeff-vit --test integration <module>::`.

mod bad_input;
mod formats;
mod loading;
mod parity;
mod peft_interop;
mod pretrained;
