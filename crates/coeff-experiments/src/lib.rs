//! The paper's experiments, as a library the `coeff-experiments` binary (and `cargo xtask
//! experiment`) drives. Each experiment writes `summary.json`, `results.md` and PNG plots.
//!
//! - [`toy`]: Fig. 3, the toy graph (convex hull, Prop. 4.2).
//! - [`fewshot`]: the paper's few-shot ViT table on real pretrained weights and real data.
//! - [`bench`]: step time and memory of an attention stack or a ViT with/without Coeff-Tuning,
//!   with the PyTorch reference ([`torch_ref`]) in the same run.
//! - [`fetch`]: download, convert and verify the real pretrained ViTs.
//! - [`infer`]: run a ViT checkpoint on a `pixel_values` file.
//! - shared pieces: [`backend`] (chosen by Cargo feature), [`report`], [`plot`], [`geometry`],
//!   [`rng`], [`limits`] (bounds on flags, see `docs/input-checks.md`), [`memory`] (host
//!   bytes in use, for the benchmarks).

pub mod backend;
pub mod bench;
pub mod concept;
pub mod fetch;
pub mod fewshot;
pub mod geometry;
pub mod infer;
pub mod infer_diffusion;
pub mod infer_text;
pub mod limits;
pub mod memory;
pub mod plot;
pub mod report;
pub mod rng;
pub mod runs;
pub mod sample;
pub mod torch_ref;
pub mod toy;
pub mod vl;
