//! The small world of `experiment concept`: Twitter's emoji with captions from their Unicode
//! names, the held-out concept (every cat face), the concept prompts, and the frozen text
//! encoder (the real all-MiniLM-L6-v2) that turns captions into cross-attention states and a
//! pooled embedding.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use coeff_data::emoji::Emoji;
use coeff_data::Image;
use coeff_vl::{Bert, TextTokenizer};

/// The background the RGBA artwork is composited onto (white).
pub const BACKGROUND: [f32; 3] = [1.0, 1.0, 1.0];

/// The identifier token bound to the subject (DreamBooth's rare token).
pub const IDENTIFIER: &str = "sks";

/// The class prompt of prior preservation.
pub const CLASS_PROMPT: &str = "a cat face";

/// Emoji the base model learned, sampled before and after tuning to measure what tuning
/// disturbs (animal faces first: the nearest neighbours of the concept).
pub const PRIOR_NAMES: [&str; 6] = [
    "TIGER FACE",
    "DOG FACE",
    "GRINNING FACE",
    "RED APPLE",
    "ROCKET",
    "FIRE",
];

/// Text tokens per caption (every caption is padded or cut to this many).
pub const TEXT_TOKENS: usize = 32;

/// Whether an emoji belongs to the held-out concept.
pub fn is_cat_face(name: &str) -> bool {
    name.contains("CAT FACE")
}

/// The base model's caption of an emoji: its Unicode name in lower case.
pub fn caption(name: &str) -> String {
    name.to_lowercase()
}

/// A cat face's expression: its name without `CAT FACE` (`"plain"` for `CAT FACE` itself).
pub fn expression(name: &str) -> String {
    let rest = name.replace("CAT FACE", " ");
    let words: Vec<&str> = rest
        .split_whitespace()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        "plain".into()
    } else {
        words.join(" ").to_lowercase()
    }
}

/// The concept prompt of a cat face: `a sks cat face, <expression>`.
pub fn concept_prompt(name: &str) -> String {
    format!("a {IDENTIFIER} cat face, {}", expression(name))
}

/// The emoji split three ways.
pub struct World {
    /// Every emoji but the cat faces: the base model's training set.
    pub base: Vec<Emoji>,
    /// The first `subjects` cat faces in Unicode order: the concept's training images.
    pub subject: Vec<Emoji>,
    /// The other cat faces: generated from their concept prompts and scored against their
    /// real artwork.
    pub held_out: Vec<Emoji>,
    /// Base emoji sampled before and after tuning ([`PRIOR_NAMES`]), indices into `base`.
    pub prior: Vec<usize>,
}

impl World {
    /// Split the emoji; the cat faces are sorted by code point so the split never depends on
    /// the package's display order.
    pub fn new(emoji: Vec<Emoji>, subjects: usize) -> Result<Self> {
        let (mut cats, base): (Vec<Emoji>, Vec<Emoji>) =
            emoji.into_iter().partition(|e| is_cat_face(&e.name));
        cats.sort_by(|a, b| a.unified.cmp(&b.unified));
        if cats.len() <= subjects || subjects == 0 {
            bail!(
                "{} cat faces found: need more than --subjects {subjects} (and at least one subject)",
                cats.len()
            );
        }
        let held_out = cats.split_off(subjects);
        let prior = PRIOR_NAMES
            .iter()
            .map(|n| {
                base.iter()
                    .position(|e| e.name == *n)
                    .with_context(|| format!("emoji `{n}` is not in the package"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            base,
            subject: cats,
            held_out,
            prior,
        })
    }
}

/// `img` (`[3, 64, 64]` in `[0, 1]`) averaged down to `side` (a divisor of its side), as
/// `[3, side, side]` values in `[-1, 1]`.
pub fn downsample(img: &Image, side: usize) -> Vec<f32> {
    let (h, w) = (img.height, img.width);
    let f = h / side;
    let mut out = vec![0f32; 3 * side * side];
    for c in 0..3 {
        for y in 0..side {
            for x in 0..side {
                let mut s = 0.0;
                for dy in 0..f {
                    for dx in 0..f {
                        s += img.pixels[c * h * w + (y * f + dy) * w + x * f + dx];
                    }
                }
                out[c * side * side + y * side + x] = 2.0 * s / (f * f) as f32 - 1.0;
            }
        }
    }
    out
}

/// Frozen text conditioning of every caption the experiment uses.
pub struct TextStates {
    /// Width of the states.
    pub dim: usize,
    /// caption -> (`[TEXT_TOKENS, dim]` last hidden states, `[dim]` sentence embedding).
    pub by_caption: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

impl TextStates {
    /// Encode `captions` (and the empty caption) with MiniLM from `dir`: states at every
    /// position of the padded caption (as SD-style UNets see CLIP's padded 77 tokens) and the
    /// normalised mean-pooled sentence embedding.
    pub fn encode<B: Backend>(dir: &Path, captions: &[String], device: &B::Device) -> Result<Self> {
        let mut tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
        tokenizer.inner_mut().with_padding(None);
        tokenizer
            .inner_mut()
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        let pad = tokenizer
            .token_id("[PAD]")
            .with_context(|| format!("{}: no [PAD] token", dir.display()))?;
        let bert: Bert<B> = coeff_vl::load_bert::<B>(dir, device)?;
        let dim = bert.config.hidden_size;
        let mut all: Vec<String> = captions.to_vec();
        all.push(String::new());
        all.sort();
        all.dedup();
        let mut by_caption = BTreeMap::new();
        for chunk in all.chunks(64) {
            let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let rows = tokenizer.encode_batch(&texts)?.ids;
            let n = rows.len();
            let mut ids = Vec::with_capacity(n * TEXT_TOKENS);
            let mut mask = Vec::with_capacity(n * TEXT_TOKENS);
            for (text, r) in texts.iter().zip(&rows) {
                let real: Vec<u32> = r.iter().copied().filter(|&t| t != pad).collect();
                if real.len() > TEXT_TOKENS {
                    bail!(
                        "caption `{text}` has {} tokens, more than the {TEXT_TOKENS} kept",
                        real.len()
                    );
                }
                for j in 0..TEXT_TOKENS {
                    ids.push(real.get(j).copied().unwrap_or(pad) as i64);
                    mask.push((j < real.len()) as i64);
                }
            }
            let ids =
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, TEXT_TOKENS]), device);
            let mask =
                Tensor::<B, 2, Int>::from_data(TensorData::new(mask, [n, TEXT_TOKENS]), device);
            let states = bert
                .forward(ids.clone(), Some(mask.clone()), None)?
                .last_hidden_state
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let pooled = bert
                .sentence_embeddings(ids, mask)?
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for (i, text) in chunk.iter().enumerate() {
                let per = TEXT_TOKENS * dim;
                by_caption.insert(
                    text.clone(),
                    (
                        states[i * per..(i + 1) * per].to_vec(),
                        pooled[i * dim..(i + 1) * dim].to_vec(),
                    ),
                );
            }
        }
        Ok(Self { dim, by_caption })
    }

    /// `[n, TEXT_TOKENS, dim]` states and `[n, dim]` pooled embeddings of `captions`.
    pub fn batch<B: Backend>(
        &self,
        captions: &[&str],
        device: &B::Device,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 2>)> {
        let n = captions.len();
        let mut states = Vec::with_capacity(n * TEXT_TOKENS * self.dim);
        let mut pooled = Vec::with_capacity(n * self.dim);
        for c in captions {
            let (s, p) = self
                .by_caption
                .get(*c)
                .with_context(|| format!("caption `{c}` was not encoded"))?;
            states.extend_from_slice(s);
            pooled.extend_from_slice(p);
        }
        Ok((
            Tensor::from_data(TensorData::new(states, [n, TEXT_TOKENS, self.dim]), device),
            Tensor::from_data(TensorData::new(pooled, [n, self.dim]), device),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_from_unicode_names() {
        assert_eq!(
            concept_prompt("GRINNING CAT FACE WITH SMILING EYES"),
            "a sks cat face, grinning with smiling eyes"
        );
        assert_eq!(concept_prompt("CAT FACE"), "a sks cat face, plain");
        assert_eq!(
            expression("CAT FACE WITH TEARS OF JOY"),
            "with tears of joy"
        );
        assert_eq!(caption("RED APPLE"), "red apple");
        assert!(is_cat_face("WEARY CAT FACE") && !is_cat_face("CAT"));
    }

    #[test]
    fn downsampling_averages_blocks_into_minus_one_to_one() {
        let mut pixels = vec![1.0f32; 3 * 4 * 4];
        pixels[0] = 0.0; // one dark pixel in the red channel's top-left 2x2 block
        let img = Image {
            channels: 3,
            height: 4,
            width: 4,
            pixels,
        };
        let out = downsample(&img, 2);
        assert_eq!(out.len(), 12);
        assert!((out[0] - 0.5).abs() < 1e-6, "{}", out[0]);
        assert!(out[1..].iter().all(|&v| v == 1.0));
    }
}
