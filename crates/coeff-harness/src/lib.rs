//! # coeff-harness
//!
//! What the project's three binaries share, and nothing else: `coeff` (crates/coeff-cli, the
//! commands a practitioner runs on their own files), `coeff-experiments` (the paper's
//! experiments) and `coeff-bench` (the benchmarks). It imports only the library crates
//! (coeff-tuning, coeff-vit, coeff-data); no binary crate is imported by it or by another
//! binary crate.
//!
//! - [`backend`]: the backend the binary was built for, chosen by Cargo feature;
//! - [`runs`]: run folders (a resumable checkpoint and a result, tied to the settings by a
//!   fingerprint), the adapter trainer config, the method list of the sweeps;
//! - [`report`]: provenance, JSON / Markdown / PNG writers, means, progress lines;
//! - [`plot`]: bitmap plots with embedded text (no system fonts);
//! - [`limits`]: bounds on flags no file can confirm (`docs/input-checks.md`);
//! - [`backbone`]: the real pretrained ViTs ([`backbone::Backbone`]) and a ViT with a
//!   classification head ([`backbone::Classifier`]);
//! - [`classify`]: labelled splits, logits, accuracy, confusion matrices and epoch order for
//!   image classifiers (the few-shot sweep and `coeff tune classify`);
//! - [`family`]: the model families recognised from a `config.json` (the table `infer`
//!   dispatches through);
//! - [`rng`]: a seeded generator, identical on every backend;
//! - [`testing`]: the run-and-assert helper of the binaries' bad-input tests.

pub mod backbone;
pub mod backend;
pub mod classify;
pub mod family;
pub mod limits;
pub mod plot;
pub mod report;
pub mod rng;
pub mod runs;
pub mod testing;
