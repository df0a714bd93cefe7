//! LoRA / DoRA adapters of these models in Hugging Face PEFT's file layout, read and written by
//! the core crate (`coeff_tuning::peft::interop`). The module names PEFT sees are
//! transformers' own, which for these models are the checkpoint keys of the weights (the
//! tables in [`loader`](crate::loader)), under the model class's prefix:
//!
//! | model class PEFT wraps | prefix | e.g. ours `layers.0.attn.query` / `decoder.layers.0.cross_attn.value` |
//! |---|---|---|
//! | `BertModel` | none | `encoder.layer.0.attention.self.query` |
//! | `CLIPTextModel[WithProjection]` | `text_model.` | `text_model.encoder.layers.0.self_attn.q_proj` |
//! | `BartForConditionalGeneration` | `model.` | `model.decoder.layers.0.encoder_attn.v_proj` |
//!
//! Coeff-Tuning's alpha matrices are not part of PEFT: they travel in this project's adapter
//! file (`coeff_tuning::save_adapter`), and an export reports the Coeff layers it left out.

use coeff_tuning::peft::interop::TableNames;

use crate::loader::{bart_table, bert_table, clip_text_table};

/// Names of a `BertModel`.
pub fn bert_names() -> TableNames<'static> {
    TableNames {
        table: bert_table(),
        prefix: "",
        saved: vec![],
    }
}

/// Names of a `CLIPTextModel` / `CLIPTextModelWithProjection`.
pub fn clip_text_names() -> TableNames<'static> {
    TableNames {
        table: clip_text_table(),
        prefix: "text_model.",
        saved: vec![],
    }
}

/// Names of a `BartForConditionalGeneration`.
pub fn bart_names() -> TableNames<'static> {
    TableNames {
        table: bart_table(true),
        prefix: "model.",
        saved: vec![],
    }
}
