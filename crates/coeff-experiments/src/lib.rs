//! # coeff-experiments
//!
//! The paper's experiments, as a library the `coeff-experiments` binary (and `cargo xtask
//! experiment`) drives, on the backend chosen by Cargo feature (through coeff-harness). Each
//! experiment is a folder with the same small files - `config` (presets, flags), `data`,
//! `model`, `train` (one run on the core crate's `Trainer`), `summary` (tables, plots) - and a
//! `mod.rs` that runs the sweep; each writes `summary.json`, `results.md` and PNG plots into
//! its output folder, and resumes finished and interrupted runs.
//!
//! - [`toy`]: Fig. 3, the toy graph (convex hull, Prop. 4.2);
//! - [`fewshot`]: the paper's few-shot ViT table on real pretrained weights and real data;
//! - [`vl`]: the vision-language table at CPU scale (VL-BART-style, easy-VQA);
//! - [`concept`]: the SDXL experiment at CPU scale (DreamBooth-style concept customisation).
//!
//! Used by: people reproducing the paper, and `xtask`. Imports the library crates and
//! coeff-harness only; the commands for one's own files are in coeff-cli, the benchmarks in
//! coeff-bench.

pub mod concept;
pub mod fewshot;
pub mod toy;
pub mod vl;
