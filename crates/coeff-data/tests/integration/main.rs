//! coeff-data's integration tests, one module per subject, built as one test binary (one link
//! and one copy of the monomorphised models instead of one per file).
//!
//! Run one subject with `cargo test --release -p coeff-data --test integration <module>::`.

mod easy_vqa;
mod emoji;
mod formats;
mod image_folder;
