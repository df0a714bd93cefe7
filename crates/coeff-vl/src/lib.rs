//! # coeff-vl
//!
//! Text and image-text models for Burn whose every attention (encoder self, decoder causal
//! self, decoder cross) is `coeff_tuning::MultiHeadAttention`, so Coeff-Tuning, LoRA and DoRA
//! attach to them by module path like everywhere else:
//!
//! - [`bert`]: BERT (`BertModel`; MiniLM and sentence-transformers encoders);
//! - [`clip`]: the CLIP text transformer and the dual-encoder CLIP (with the ViT crate's CLIP
//!   vision tower);
//! - [`bart`]: BART encoder-decoder with greedy and beam search on a key-value cache.
//!
//! Configs are read from transformers' `config.json` ([`config`]); weights from safetensors in
//! transformers' key names through the tables in [`loader`]; text through the `tokenizers`
//! crate reading `tokenizer.json` ([`tokenizer`]).
//!
//! ```ignore
//! let bert = coeff_vl::load_bert::<B>("all-MiniLM-L6-v2", &device)?;
//! let tok = coeff_vl::TextTokenizer::from_file("all-MiniLM-L6-v2/tokenizer.json")?;
//! let (ids, mask) = tok.encode_batch(&["a red circle"])?.to_tensors(&device);
//! let emb = bert.sentence_embeddings(ids, mask)?;    // [1, 384], unit norm
//! ```

pub mod bart;
pub mod bert;
pub mod clip;
pub mod config;
pub mod error;
pub mod inputs;
pub mod loader;
pub mod peft_format;
pub mod pretrained;
pub mod tokenizer;
pub mod vl;

pub use bart::{Bart, EarlyStopping, Generated, GenerationConfig};
pub use bert::{Bert, BertOutput};
pub use clip::{Clip, ClipOutput, ClipTextModel, ClipTextOutput};
pub use config::{BartConfig, BertConfig, ClipTextConfig};
pub use error::{Result, VlError};
pub use loader::{load_bart, load_bert, load_clip, load_clip_text};
pub use tokenizer::{Encoded, TextTokenizer};
pub use vl::{Seq2SeqTokens, VisualEmbedding, VlBart};
