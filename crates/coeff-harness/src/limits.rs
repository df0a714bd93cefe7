//! Bounds on the sizes that no file can confirm - flags and sweep-config fields - so that a
//! typo (`--resolution 14000`, `--nodes 100000`) is an error naming the flag and its limit
//! instead of an allocation that exhausts memory. Listed, with the checks the libraries make,
//! in `docs/input-checks.md`.
//!
//! Sizes that a file does confirm are checked against the file instead: a ViT config against
//! its checkpoint's tensor shapes (`coeff_vit::loader::check_config_against_checkpoint`), an
//! adapter's LoRA rank against its factors (`coeff_tuning::load_adapter`).

/// `toy --nodes`: the geometry of Prop. 4.2 builds `heads * nodes^2` candidate points.
pub const TOY_MAX_NODES: usize = 1024;
/// `toy --heads`.
pub const TOY_MAX_HEADS: usize = 16;
/// `toy --steps`.
pub const TOY_MAX_STEPS: usize = 1_000_000;
/// `fewshot` `resolution` (`--resolution`), pixels per side.
pub const MAX_RESOLUTION: usize = 1024;
/// `fewshot` `recipe.batch_size` (`--batch-size`).
pub const MAX_BATCH_SIZE: usize = 1024;
/// `fewshot` `recipe.lora_rank`.
pub const MAX_LORA_RANK: usize = 1024;
/// Attention-map elements of one layer for one forward pass, `batch * heads * tokens^2`:
/// 2^31, 8 GiB in f32 (`infer` on the input's batch; `fewshot` on its largest batch). Real
/// use is a small multiple of this (softmax, Coeff's mix, and for training every layer's map
/// kept for the backward pass); the bound stops absurd sizes, it does not promise a fit.
pub const MAX_ATTENTION_ELEMENTS: u128 = 1 << 31;

/// `batch * heads * tokens^2` without overflow.
pub fn attention_elements(batch: usize, heads: usize, tokens: usize) -> u128 {
    batch as u128 * heads as u128 * tokens as u128 * tokens as u128
}
