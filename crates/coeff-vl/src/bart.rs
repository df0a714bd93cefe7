//! BART (Lewis et al., 2020) as transformers' `BartForConditionalGeneration`: VL-BART's
//! backbone. Post-norm encoder and decoder on the core crate's shared block (the decoder's
//! blocks have cross-attention), learned positions with BART's offset of 2, tied output
//! embeddings plus `final_logits_bias`, and generation (greedy / beam search) on a key-value
//! cache.
//!
//! ```text
//! embed(ids, from) = LayerNorm(shared[ids] * scale + positions[from + 2 ..])    [B, L, D]
//! enc = encoder blocks(embed(ids, 0), padding mask)
//! dec = decoder blocks(embed(dec_ids, 0), causal mask, cross-attention to enc)
//! logits = dec shared^T + final_logits_bias                                      [B, T, V]
//! ```
//!
//! Module paths: `encoder.layers.{i}.attn.*`, `decoder.layers.{i}.{attn,cross_attn}.*`,
//! `{encoder,decoder}.layers.{i}.mlp.{fc1,fc2}`.

use burn::module::{Module, Param, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use coeff_tuning::nn::{
    BlockCache, BlockInput, NormPlacement, TransformerBlock, TransformerBlockConfig,
};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, Site};

use crate::config::BartConfig;
use crate::error::{Result, VlError};
use crate::inputs::{causal_mask, check_ids, padding_mask, positions};

/// BART's learned positions start at row 2 of the table (the first two rows are unused).
pub const POSITION_OFFSET: usize = 2;

/// One side of BART: positions, the embedding norm, the blocks.
#[derive(Module, Debug)]
pub struct BartStack<B: Backend> {
    /// `[max_position_embeddings + 2, D]`
    pub embed_positions: Embedding<B>,
    /// `layernorm_embedding`
    pub layernorm_embedding: LayerNorm<B>,
    /// Post-norm blocks (the decoder's with cross-attention).
    pub layers: Vec<TransformerBlock<B>>,
}

/// `BartForConditionalGeneration`.
#[derive(Module, Debug)]
pub struct Bart<B: Backend> {
    /// Token embeddings `[V, D]`, shared by encoder, decoder and (tied) output.
    pub shared: Embedding<B>,
    /// The encoder.
    pub encoder: BartStack<B>,
    /// The decoder.
    pub decoder: BartStack<B>,
    /// `final_logits_bias`, `[V]`.
    pub final_logits_bias: Param<Tensor<B, 1>>,
    /// An untied `lm_head` (no bias), when `tie_word_embeddings` is false.
    pub lm_head: Option<Linear<B>>,
    /// The config the model was built from.
    #[module(skip)]
    pub config: BartConfig,
}

impl BartConfig {
    /// A randomly initialised model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Bart<B> {
        let d = self.d_model;
        let stack = |layers: usize, heads: usize, ffn: usize, cross: bool| BartStack {
            embed_positions: EmbeddingConfig::new(
                self.max_position_embeddings + POSITION_OFFSET,
                d,
            )
            .init(device),
            layernorm_embedding: LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            layers: (0..layers)
                .map(|_| {
                    TransformerBlockConfig::new(d, heads, ffn, self.activation)
                        .with_norm(NormPlacement::Post)
                        .with_layer_norm_eps(self.layer_norm_eps)
                        .with_cross_attention(cross.then_some(d))
                        .init(device)
                })
                .collect(),
        };
        Bart {
            shared: EmbeddingConfig::new(self.vocab_size, d).init(device),
            encoder: stack(
                self.encoder_layers,
                self.encoder_attention_heads,
                self.encoder_ffn_dim,
                false,
            ),
            decoder: stack(
                self.decoder_layers,
                self.decoder_attention_heads,
                self.decoder_ffn_dim,
                true,
            ),
            final_logits_bias: Param::initialized(
                ParamId::new(),
                Tensor::zeros([self.vocab_size], device),
            ),
            lm_head: (!self.tie_word_embeddings).then(|| {
                LinearConfig::new(d, self.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            config: self.clone(),
        }
    }
}

/// What the decoder keeps between generation steps.
#[derive(Debug, Clone)]
pub struct DecoderCache<B: Backend> {
    /// One cache per decoder block.
    pub blocks: Vec<BlockCache<B>>,
    /// Tokens decoded so far.
    pub len: usize,
    /// The encoder's padding mask `[B, M]`, true = padding.
    pub context_pad: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> DecoderCache<B> {
    /// Rows picked by `indices` (beam search).
    pub fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        Self {
            blocks: self
                .blocks
                .into_iter()
                .map(|b| b.select(indices.clone()))
                .collect(),
            len: self.len,
            context_pad: self.context_pad.map(|m| m.select(0, indices)),
        }
    }
}

/// Decoding settings of [`Bart::generate`], named as transformers' `generate` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Tokens generated after the start token, at most (transformers' `max_new_tokens`; the
    /// model's position table caps it at `max_position_embeddings - 1`).
    pub max_new_tokens: usize,
    /// 1 = greedy.
    pub num_beams: usize,
    /// Beam scores are `sum log p / generated_len^length_penalty`.
    pub length_penalty: f64,
    /// When a beam search stops (transformers' `early_stopping`).
    pub early_stopping: EarlyStopping,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Finished,
        }
    }
}

/// transformers' `early_stopping` (`True`, `False`, `"never"`): when a batch row's beam search
/// stops adding hypotheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `True`: once `num_beams` hypotheses are finished.
    #[default]
    Finished,
    /// `False` (transformers' default): once `num_beams` hypotheses are finished and the best
    /// running beam, scored at its current length, cannot beat the worst of them.
    Heuristic,
    /// `"never"`: as `Heuristic`, but with a positive `length_penalty` the running beam is scored
    /// at the longest length it could still reach (`max_new_tokens`), the canonical beam search.
    Never,
}

/// What [`Bart::generate_scored`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// `[B]` rows, each starting with `decoder_start_token_id`, finished rows padded with
    /// `pad_token_id` to the longest.
    pub ids: Vec<Vec<u32>>,
    /// `[B]` beam search: each returned hypothesis' length-normalised score (transformers'
    /// `sequences_scores`); greedy: the sum of the chosen tokens' log-probabilities (after the
    /// forced-token rules, as transformers' processors set them).
    pub scores: Vec<f64>,
}

impl<B: Backend> Bart<B> {
    /// Token + position embeddings of `ids: [B, L]` starting at position `from`, normed.
    fn embed(&self, stack: &BartStack<B>, ids: Tensor<B, 2, Int>, from: usize) -> Tensor<B, 3> {
        let [batch, len] = ids.dims();
        let tokens = self.embed_tokens(ids);
        let pos = positions(batch, len, from + POSITION_OFFSET, &tokens.device());
        stack
            .layernorm_embedding
            .forward(tokens + stack.embed_positions.forward(pos))
    }

    /// `shared[ids] * sqrt(D)` (the scale when `scale_embedding`), `[B, L, D]`: what a fused
    /// model (VL-BART) concatenates its visual tokens with.
    pub fn embed_tokens(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.shared.forward(ids);
        match self.config.scale_embedding {
            true => x.mul_scalar((self.config.d_model as f64).sqrt()),
            false => x,
        }
    }

    /// Encoder position embeddings for `len` tokens, `[1, len, D]`.
    pub fn encoder_positions(&self, len: usize) -> Tensor<B, 3> {
        let device = self.shared.weight.device();
        self.encoder
            .embed_positions
            .forward(positions(1, len, POSITION_OFFSET, &device))
    }

    /// Encode `input_ids: [B, L]` with `attention_mask: [B, L]` (1 = token) -> `[B, L, D]`.
    pub fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<Tensor<B, 3>> {
        let c = &self.config;
        let dims = check_ids(
            &input_ids,
            "input_ids",
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        let pad = padding_mask(attention_mask.as_ref(), "attention_mask", dims)?;
        let x = self.embed(&self.encoder, input_ids, 0);
        Ok(self.encode_embedded(x, pad))
    }

    /// The encoder's blocks on embeddings that are already summed with their positions and
    /// normed (`[B, L, D]`); `pad: [B, L]`, true = padding. For fused inputs (VL-BART).
    pub fn encode_embedded(
        &self,
        mut x: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        for block in &self.encoder.layers {
            let mut input = BlockInput::new(x);
            input.mask_pad = pad.clone();
            x = block.forward(input);
        }
        x
    }

    /// Logits of decoder states `[B, T, D]` -> `[B, T, V]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, t, d] = hidden.dims();
        let flat = hidden.reshape([batch * t, d]);
        let logits = match &self.lm_head {
            Some(head) => head.forward(flat),
            None => flat.matmul(self.shared.weight.val().transpose()),
        };
        let v = self.config.vocab_size;
        (logits + self.final_logits_bias.val().reshape([1, v])).reshape([batch, t, v])
    }

    /// Teacher-forced decoding: `decoder_input_ids: [B, T]` attending causally to itself and to
    /// `encoder_out: [B, M, D]` (`encoder_pad: [B, M]`, true = padding) -> logits `[B, T, V]`.
    pub fn decode(
        &self,
        decoder_input_ids: Tensor<B, 2, Int>,
        encoder_out: Tensor<B, 3>,
        encoder_pad: Option<Tensor<B, 2, Bool>>,
    ) -> Result<Tensor<B, 3>> {
        let c = &self.config;
        let [batch, t] = check_ids(
            &decoder_input_ids,
            "decoder_input_ids",
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        self.check_context(&encoder_out, batch)?;
        let device = decoder_input_ids.device();
        let mut x = self.embed(&self.decoder, decoder_input_ids, 0);
        let causal = causal_mask::<B>(batch, t, &device);
        for block in &self.decoder.layers {
            let mut input = BlockInput::new(x)
                .mask_attn(causal.clone())
                .context(encoder_out.clone());
            input.context_mask_pad = encoder_pad.clone();
            x = block.forward(input);
        }
        Ok(self.logits(x))
    }

    fn check_context(&self, encoder_out: &Tensor<B, 3>, batch: usize) -> Result<()> {
        let [b, _, d] = encoder_out.dims();
        if b != batch || d != self.config.d_model {
            return Err(VlError::Input(format!(
                "the encoder output has shape {:?}; the decoder needs [{batch}, M, {}]",
                encoder_out.dims(),
                self.config.d_model
            )));
        }
        Ok(())
    }

    /// `encoder_out: [B, M, D]` -> `[B, M, D]` (and its padding mask) with every row repeated
    /// `k` times in place (`b0 b0 b0 b1 b1 b1 ...`), as beam search lays out its beams.
    fn repeat_rows(x: Tensor<B, 3>, k: usize) -> Tensor<B, 3> {
        let [b, m, d] = x.dims();
        x.unsqueeze_dim::<4>(1)
            .expand([b, k, m, d])
            .reshape([b * k, m, d])
    }

    /// A fresh decoder cache: the cross-attention keys/values of `encoder_out: [B, M, D]`.
    pub fn start_decoding(
        &self,
        encoder_out: Tensor<B, 3>,
        encoder_pad: Option<Tensor<B, 2, Bool>>,
    ) -> DecoderCache<B> {
        DecoderCache {
            blocks: self
                .decoder
                .layers
                .iter()
                .map(|l| l.start_cache(Some(encoder_out.clone())))
                .collect(),
            len: 0,
            context_pad: encoder_pad,
        }
    }

    /// The next tokens `ids: [B, t]` through the cached decoder -> logits `[B, t, V]`.
    pub fn decode_step(&self, ids: Tensor<B, 2, Int>, cache: &mut DecoderCache<B>) -> Tensor<B, 3> {
        let t = ids.dims()[1];
        let mut x = self.embed(&self.decoder, ids, cache.len);
        for (block, c) in self.decoder.layers.iter().zip(cache.blocks.iter_mut()) {
            x = block.forward_step(x, c, cache.context_pad.clone());
        }
        cache.len += t;
        self.logits(x)
    }

    /// Generate from `input_ids: [B, L]` (`attention_mask: [B, L]`, 1 = token): greedy when
    /// `num_beams` is 1, else beam search, as transformers' `generate` (no sampling, no
    /// repetition processors; the config's `forced_bos_token_id` and `forced_eos_token_id`
    /// applied as its forced-token processors). Each returned row starts with
    /// `decoder_start_token_id`; finished rows are padded with `pad_token_id` to the longest,
    /// as transformers returns them.
    pub fn generate(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .generate_scored(input_ids, attention_mask, generation)?
            .ids)
    }

    /// [`generate`](Self::generate) with each row's score.
    pub fn generate_scored(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        generation: &GenerationConfig,
    ) -> Result<Generated> {
        let dims = input_ids.dims();
        let pad = padding_mask(attention_mask.as_ref(), "attention_mask", dims)?;
        let encoded = self.encode(input_ids, attention_mask)?;
        self.generate_from_scored(encoded, pad, generation)
    }

    /// [`generate`](Self::generate) from encoder states `[B, M, D]` (e.g. a fused VL input).
    pub fn generate_from(
        &self,
        encoder_out: Tensor<B, 3>,
        encoder_pad: Option<Tensor<B, 2, Bool>>,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .generate_from_scored(encoder_out, encoder_pad, generation)?
            .ids)
    }

    /// [`generate_from`](Self::generate_from) with each row's score.
    pub fn generate_from_scored(
        &self,
        encoder_out: Tensor<B, 3>,
        encoder_pad: Option<Tensor<B, 2, Bool>>,
        generation: &GenerationConfig,
    ) -> Result<Generated> {
        if generation.num_beams == 0 {
            return Err(VlError::Input("`num_beams` must be at least 1".into()));
        }
        let max_new = generation
            .max_new_tokens
            .min(self.config.max_position_embeddings.saturating_sub(1));
        let batch = encoder_out.dims()[0];
        let k = generation.num_beams;
        let (enc, pad) = if k == 1 {
            (encoder_out, encoder_pad)
        } else {
            let [b, m] = [batch, encoder_out.dims()[1]];
            let pad = encoder_pad.map(|p| {
                p.unsqueeze_dim::<3>(1)
                    .expand([b, k, m])
                    .reshape([b * k, m])
            });
            (Self::repeat_rows(encoder_out, k), pad)
        };
        let cache = self.start_decoding(enc, pad);
        let mut search = Search::new(&self.config, generation, batch, max_new);
        search.run(self, cache)
    }
}

/// Beam (or greedy, `k = 1`) search bookkeeping on the host, transformers' semantics.
struct Search<'a> {
    config: &'a BartConfig,
    generation: &'a GenerationConfig,
    batch: usize,
    k: usize,
    max_new: usize,
    /// `[batch * k]` running sequences, each starting with the start token.
    seqs: Vec<Vec<u32>>,
    /// `[batch * k]` sums of log-probabilities.
    scores: Vec<f64>,
    /// Per batch row: finished hypotheses (normalised score, tokens).
    finished: Vec<Vec<(f64, Vec<u32>)>>,
    done: Vec<bool>,
}

impl<'a> Search<'a> {
    fn new(
        config: &'a BartConfig,
        generation: &'a GenerationConfig,
        batch: usize,
        max_new: usize,
    ) -> Self {
        let k = generation.num_beams;
        let scores = (0..batch * k)
            .map(|i| if i % k == 0 { 0.0 } else { -1e9 })
            .collect();
        Self {
            config,
            generation,
            batch,
            k,
            max_new,
            seqs: vec![vec![config.decoder_start_token_id]; batch * k],
            scores,
            finished: vec![Vec::new(); batch],
            done: vec![false; batch],
        }
    }

    fn normalised(&self, score: f64, generated: usize) -> f64 {
        score / (generated as f64).powf(self.generation.length_penalty)
    }

    fn run<B: Backend>(
        &mut self,
        model: &Bart<B>,
        mut cache: DecoderCache<B>,
    ) -> Result<Generated> {
        let device = model.shared.weight.device();
        let v = self.config.vocab_size;
        let rows = self.batch * self.k;
        for step in 0..self.max_new {
            let last: Vec<i64> = self
                .seqs
                .iter()
                .map(|s| *s.last().unwrap() as i64)
                .collect();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(last, [rows, 1]), &device);
            let logits = model.decode_step(ids, &mut cache).reshape([rows, v]);
            let logp: Vec<f32> = log_softmax(logits, 1)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .map_err(|e| VlError::Input(format!("reading logits: {e:?}")))?;
            let mut logp: Vec<f64> = logp.into_iter().map(f64::from).collect();
            // transformers' ForcedBOS / ForcedEOS processors: the first generated token, and the
            // last one the length limit allows.
            if step == 0 {
                if let Some(forced) = self.config.forced_bos_token_id {
                    force(&mut logp, v, forced as usize);
                }
            }
            if step + 1 == self.max_new {
                if let Some(forced) = self.config.forced_eos_token_id {
                    force(&mut logp, v, forced as usize);
                }
            }
            let order = if self.k == 1 {
                self.greedy_step(&logp, v)
            } else {
                self.beam_step(&logp, v, step)
            };
            if self.done.iter().all(|&d| d) {
                break;
            }
            if let Some(order) = order {
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(order, [rows]), &device);
                cache = cache.select(idx);
            }
        }
        Ok(self.finish())
    }

    /// Greedy: append each row's arg-max (pad once finished). No reordering.
    fn greedy_step(&mut self, logp: &[f64], v: usize) -> Option<Vec<i64>> {
        for b in 0..self.batch {
            let token = if self.done[b] {
                self.config.pad_token_id
            } else {
                let row = &logp[b * v..(b + 1) * v];
                let best = argmax(row);
                self.scores[b] += row[best];
                best as u32
            };
            self.seqs[b].push(token);
            if token == self.config.eos_token_id {
                self.done[b] = true;
            }
        }
        None
    }

    /// One beam step: the top `2k` continuations of each batch row; finished ones (end of
    /// sequence among the first `k`) become hypotheses, the best `k` others run on.
    /// Returns the source row of every new beam.
    fn beam_step(&mut self, logp: &[f64], v: usize, step: usize) -> Option<Vec<i64>> {
        let k = self.k;
        let eos = self.config.eos_token_id;
        let cur_len = step + 1; // tokens in each running sequence, start token included
        let mut order = Vec::with_capacity(self.batch * k);
        let mut new_seqs = Vec::with_capacity(self.batch * k);
        let mut new_scores = Vec::with_capacity(self.batch * k);
        for b in 0..self.batch {
            if self.done[b] {
                for j in 0..k {
                    let row = b * k + j;
                    order.push(row as i64);
                    let mut s = self.seqs[row].clone();
                    s.push(self.config.pad_token_id);
                    new_seqs.push(s);
                    new_scores.push(self.scores[row]);
                }
                continue;
            }
            // Candidates (score, beam, token), best first.
            let mut cands: Vec<(f64, usize, usize)> = Vec::with_capacity(k * v);
            for j in 0..k {
                let row = b * k + j;
                let base = self.scores[row];
                for (t, lp) in logp[row * v..(row + 1) * v].iter().enumerate() {
                    cands.push((base + lp, j, t));
                }
            }
            let keep = (2 * k).min(cands.len());
            cands.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0));
            cands.truncate(keep);
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut running = 0;
            for (rank, &(score, j, t)) in cands.iter().enumerate() {
                let row = b * k + j;
                if t as u32 == eos {
                    if rank < k {
                        let mut hyp = self.seqs[row].clone();
                        hyp.push(eos);
                        let s = self.normalised(score, cur_len);
                        self.add_hypothesis(b, s, hyp);
                    }
                    continue;
                }
                if running < k {
                    order.push(row as i64);
                    let mut s = self.seqs[row].clone();
                    s.push(t as u32);
                    new_seqs.push(s);
                    new_scores.push(score);
                    running += 1;
                }
            }
            // transformers' stopping rule (`_check_early_stop_heuristic`).
            let full = self.finished[b].len() >= k;
            if full {
                let lp = self.generation.length_penalty;
                let best_length = match self.generation.early_stopping {
                    EarlyStopping::Never if lp > 0.0 => self.max_new,
                    _ => cur_len,
                };
                self.done[b] = if self.generation.early_stopping == EarlyStopping::Finished {
                    true
                } else {
                    let best_running = new_scores[b * k..b * k + k]
                        .iter()
                        .cloned()
                        .fold(f64::MIN, f64::max);
                    let worst = self.finished[b]
                        .iter()
                        .map(|h| h.0)
                        .fold(f64::MAX, f64::min);
                    worst >= self.normalised(best_running, best_length)
                };
            }
        }
        self.seqs = new_seqs;
        self.scores = new_scores;
        Some(order)
    }

    fn add_hypothesis(&mut self, b: usize, score: f64, tokens: Vec<u32>) {
        let hyps = &mut self.finished[b];
        hyps.push((score, tokens));
        if hyps.len() > self.k {
            // Drop the worst (the first of equals stays, as transformers' list does).
            let worst = hyps
                .iter()
                .enumerate()
                .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                .map(|(i, _)| i)
                .expect("non-empty");
            hyps.remove(worst);
        }
    }

    /// The result rows, padded with `pad_token_id` to the longest, and their scores.
    fn finish(&mut self) -> Generated {
        let (mut out, scores): (Vec<Vec<u32>>, Vec<f64>) = if self.k == 1 {
            (self.seqs.clone(), self.scores.clone())
        } else {
            (0..self.batch)
                .map(|b| {
                    if !self.done[b] {
                        for j in 0..self.k {
                            let row = b * self.k + j;
                            let generated = self.seqs[row].len() - 1;
                            let s = self.normalised(self.scores[row], generated);
                            self.add_hypothesis(b, s, self.seqs[row].clone());
                        }
                    }
                    self.finished[b]
                        .iter()
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .map(|h| (h.1.clone(), h.0))
                        .unwrap_or((Vec::new(), f64::NEG_INFINITY))
                })
                .unzip()
        };
        let longest = out.iter().map(Vec::len).max().unwrap_or(0);
        for row in &mut out {
            row.resize(longest, self.config.pad_token_id);
        }
        Generated { ids: out, scores }
    }
}

fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

/// Every row's log-probabilities `-inf` except `token`'s, 0 (transformers' forced tokens).
fn force(logp: &mut [f64], v: usize, token: usize) {
    for row in logp.chunks_mut(v) {
        row.fill(f64::NEG_INFINITY);
        if token < v {
            row[token] = 0.0;
        }
    }
}

impl<B: Backend> Adaptable<B> for Bart<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.encoder
            .layers
            .visit_sites(&join(path, "encoder.layers"), f)?;
        self.decoder
            .layers
            .visit_sites(&join(path, "decoder.layers"), f)
    }
}
