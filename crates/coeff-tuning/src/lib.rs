//! # coeff-tuning
//!
//! Backend-generic Coeff-Tuning for Burn: the attention operator every model crate calls, and
//! the PEFT machinery around it.
//!
//! Coeff-Tuning (Miao, Chen, Qiu, "Coeff-Tuning: A Graph Filter Subspace View for Tuning
//! Attention-Based Large Models", CVPR 2025) treats each head's softmax map as a graph filter and
//! learns a per-layer `[H, H]` matrix that recombines them: `A_hat = (I + dropout(alpha)) A`,
//! `alpha` zero-initialised. It costs `H^2` parameters per layer and composes with LoRA / DoRA.
//!
//! - [`attention`]: [`MultiHeadAttention`] (self/cross, masks, chunked long-sequence path) and
//!   the [`Coeff`] operator.
//! - [`train`]: AdamW with path-keyed (resumable) state, global-norm clipping, warm-up + cosine.
//! - [`peft`]: [`PeftLinear`] with LoRA / DoRA, choosing layers by module-path pattern
//!   ([`inject`]), freezing, parameter reports, merging, adapter files.
//! - [`checkpoint`]: safetensors checkpoints (single or sharded, memory-mapped, stored dtype
//!   kept), loaded into any Burn module through a key table one parameter at a time; atomic
//!   writes ([`io::write_atomic`]).
//!
//! ```ignore
//! let (model, injected) = inject(model, &Method::LoraCoeff.config(8, &["query", "value"]))?;
//! println!("{}", injected.params);   // trainable params: ... || all params: ...
//! // ... train ...
//! save_adapter(&model, &injected, "my-adapter")?;
//! let (model, _) = load_adapter(base_model, "my-adapter")?;
//! ```

pub mod adapters;
pub mod attention;
pub mod checkpoint;
pub mod error;
pub mod io;
pub mod nn;
pub mod params;
pub mod peft;
pub mod train;

pub use adapters::{LoraConfig, PeftConv2d, PeftLinear};
pub use attention::{
    AttentionInput, AttentionOutput, Coeff, CoeffConfig, KvCache, MultiHeadAttention,
    MultiHeadAttentionConfig,
};
pub use checkpoint::CheckpointError;
pub use error::{LoadError, PeftError, PeftResult};
pub use peft::{
    inject, load_adapter, merge_adapters, save_adapter, set_adapters_enabled, set_query_chunk,
    unmerge_adapters, Adaptable, CoeffSpec, Injected, Method, ParamReport, PeftConfig, Site,
    SiteKind,
};
