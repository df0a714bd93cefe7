//! # coeff-bench
//!
//! The `coeff-bench` binary: the benchmarks behind docs/benchmarks.md, on the backend chosen by
//! Cargo feature (through coeff-harness). Speed and memory targets are checked here, as ratios
//! measured in one run (ours vs PyTorch, Coeff vs none), never by timed assertions in tests.
//! Usually run through `cargo xtask bench ...`.
//!
//! - [`attention`]: step time and host memory of an attention stack, ViT-S or ViT-B with and
//!   without Coeff / LoRA, interleaved, with the PyTorch reference ([`torch_ref`]) in the same
//!   invocation; the memory-bounded (query-chunked, recomputing) paths;
//! - [`mix`]: the head-mixing kernel alone;
//! - [`load`]: peak memory of a streaming checkpoint load;
//! - [`memory`]: the counting allocator the binary installs (host bytes in use).
//!
//! Used by: maintainers and `xtask`. Imports the library crates and coeff-harness only.

pub mod attention;
pub mod load;
pub mod memory;
pub mod mix;
pub mod torch_ref;
