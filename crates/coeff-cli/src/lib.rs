//! # coeff-cli
//!
//! The `coeff` binary: the commands a practitioner runs on their own files, on the backend
//! chosen by Cargo feature (through coeff-harness). Usually run through `cargo xtask infer`,
//! `cargo xtask sample`, `cargo xtask tune` and `cargo xtask fetch`, which pick the feature and
//! a release build and forward every flag.
//!
//! - [`infer`]: run a checkpoint folder (ViT, BERT / CLIP / BART, diffusers UNet / VAE),
//!   optionally with a saved adapter, on a safetensors input file;
//! - [`sample`]: SDXL text-to-image from a diffusers folder to PNG;
//! - [`tune`]: tune a checkpoint on one's own data (`tune classify`: a ViT folder and an
//!   image folder, the adapter in our format and PEFT's, metrics and plots; `tune
//!   dreambooth`: an SDXL folder, subject images and a prompt, the LoRA in diffusers' format
//!   and ours, validation grids);
//! - [`adapter`]: the adapter formats every command reads, recognised from the files;
//! - [`fetch`]: download, convert and verify the real pretrained ViTs.
//!
//! Used by: people, and `xtask`. Imports the library crates and coeff-harness only.

pub mod adapter;
pub mod fetch;
pub mod infer;
pub mod sample;
pub mod tune;
