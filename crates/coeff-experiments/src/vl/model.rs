//! The VL experiment's text model: the real MiniLM warm-started into an encoder-decoder
//! (BERT2BERT, `coeff_vl::Bart::from_bert`) or a BART / BERT folder of the user's, with its
//! tokenizer. The VL-BART fusion itself is `coeff_vl::VlBart`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use coeff_harness::family::Family;
use coeff_vl::{Bart, Seq2SeqTokens, TextTokenizer};

use super::config::VlConfig;

/// A text model folder, its family and its tokenizer (no padding, no truncation).
pub(crate) struct TextModel {
    /// The folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub(crate) dir: PathBuf,
    family: Family,
    /// The folder's tokenizer.
    pub(crate) tokenizer: TextTokenizer,
}

impl TextModel {
    /// `cfg.text_model`, or the real MiniLM fetched into `cache`.
    pub(crate) fn new(cfg: &VlConfig, cache: &Path) -> Result<Self> {
        let dir = match &cfg.text_model {
            Some(d) => d.clone(),
            None => {
                coeff_vl::pretrained::fetch(&coeff_vl::pretrained::MINILM_L6, cache, &mut |m| {
                    eprintln!("MiniLM: {m}")
                })
                .context("fetching MiniLM")?
            }
        };
        let mut tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
        tokenizer.inner_mut().with_padding(None);
        tokenizer
            .inner_mut()
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        let family = Family::of(&dir.join("config.json"));
        Ok(Self {
            dir,
            family,
            tokenizer,
        })
    }

    /// A fresh encoder-decoder: the BART folder's, or the BERT folder warm-started.
    pub(crate) fn load<B: Backend>(&self, device: &B::Device) -> Result<Bart<B>> {
        match self.family {
            Family::Bart => Ok(coeff_vl::load_bart::<B>(&self.dir, device)?),
            Family::Bert => {
                let bert = coeff_vl::load_bert::<B>(&self.dir, device)?;
                let id = |t: &str| {
                    self.tokenizer
                        .token_id(t)
                        .with_context(|| format!("{}: no token {t}", self.dir.display()))
                };
                let tokens = Seq2SeqTokens {
                    start: id("[CLS]")?,
                    eos: id("[SEP]")?,
                    pad: id("[PAD]")?,
                };
                Ok(Bart::from_bert(bert, tokens, device)?)
            }
            _ => bail!(
                "--text-model {}: a BART or BERT folder is needed",
                self.dir.display()
            ),
        }
    }
}
