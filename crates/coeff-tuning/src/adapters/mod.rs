//! The layers that carry weight-space adapters: a linear and a 2-D convolution, each with an
//! optional LoRA / DoRA adapter that can be merged into its weight and unmerged again.
//!
//! This module depends on nothing else in the crate but the error type and
//! [`params`](crate::params); the attention operator builds its projections from
//! [`PeftLinear`], and the PEFT machinery ([`peft`](crate::peft)) injects into both.

pub mod conv;
pub mod linear;
pub mod lora;

pub use conv::{LoraConvAdapter, PeftConv2d};
pub use linear::PeftLinear;
pub use lora::{LoraAdapter, LoraConfig};
