//! The fused image-text model: a BERT warm start encodes exactly as the BERT, its decoder
//! copies train independently, and the whole VL model (LoRA + Coeff + trained cross-attention
//! and visual embedding) learns to answer from image features and generates the answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use coeff_tuning::checkpoint::Checkpoint;
use coeff_tuning::params;
use coeff_tuning::train::{AdamW, AdamWConfig};
use coeff_tuning::{inject, Method};
use coeff_vl::{load_bert, Bart, GenerationConfig, Seq2SeqTokens, VlBart};

type Inner = burn::backend::NdArray<f32>;
type B = Autodiff<Inner>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn ids<B: Backend>(rows: &[&[i64]]) -> Tensor<B, 2, Int> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), len]),
        &Default::default(),
    )
}

const TOKENS: Seq2SeqTokens = Seq2SeqTokens {
    start: 3,
    eos: 4,
    pad: 0,
};

#[test]
fn bert_warm_start_encodes_as_the_bert() {
    let dev = Default::default();
    let bert = load_bert::<Inner>(fixture("bert_tiny"), &dev).unwrap();
    let r = Checkpoint::open(fixture("bert_tiny").join("reference.safetensors")).unwrap();
    let (shape, v) = r.read_i64("input_ids").unwrap();
    let input = Tensor::<Inner, 2, Int>::from_data(TensorData::new(v, shape.clone()), &dev);
    let (_, m) = r.read_i64("attention_mask").unwrap();
    let mask = Tensor::<Inner, 2, Int>::from_data(TensorData::new(m, shape), &dev);
    let want = bert
        .forward(input.clone(), Some(mask.clone()), None)
        .unwrap()
        .last_hidden_state;
    let model = Bart::from_bert(bert, TOKENS, &dev).unwrap();
    let got = model.encode(input, Some(mask)).unwrap();
    let d: f32 = (got - want).abs().max().into_scalar();
    assert!(
        d < 1e-5,
        "warm-started encoder differs from the BERT by {d}"
    );
    let (enc, dec) = (&model.encoder.layers[0].attn, &model.decoder.layers[0].attn);
    assert_ne!(enc.query.base.weight.id, dec.query.base.weight.id);
    assert!(model.decoder.layers[0].cross_attn.is_some());
}

/// SplitMix64 with Box-Muller: a generator local to the test, so its draws depend on nothing
/// else in the process (the backend's generator is global and shared by parallel tests).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1)`.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal.
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The VL model of the learning test: the BERT warm start, a visual embedding for 4 tokens of
/// 6-wide features, LoRA on the self-attentions' query and value, Coeff on every attention
/// (alpha dropout off: dropout draws from the backend's global generator), the
/// cross-attentions and the visual embedding trained in full.
fn vl_model(dev: &burn::tensor::Device<B>) -> (VlBart<B>, coeff_tuning::Injected) {
    let bert = load_bert::<B>(fixture("bert_tiny"), dev).unwrap();
    let text = Bart::from_bert(bert, TOKENS, dev).unwrap();
    let vl = VlBart::new(text, 6, 4, dev);
    let mut config = Method::LoraCoeff.config(4, &["attn.query", "attn.value"]);
    config.modules_to_save = vec![r"re:.*cross_(attn|norm)".into(), "visual".into()];
    config
        .coeff
        .as_mut()
        .expect("LoraCoeff has coefficients")
        .dropout = 0.0;
    inject(vl, &config).unwrap()
}

/// Redraw from `seed` every parameter of `model` that differs from `other`, an independent
/// build of the same model: what the backend's global generator initialised (the visual
/// embedding, the decoder's cross-attention, LoRA A), as opposed to what the checkpoint or a
/// constant set (the BERT's weights, LoRA B, Coeff alpha, LayerNorms). Each is drawn from the
/// distribution of its initialiser. Returns the redrawn paths.
fn redraw_random_params(
    model: VlBart<B>,
    other: &VlBart<B>,
    seed: u64,
) -> (VlBart<B>, Vec<String>) {
    let mine = params::all_params(&model);
    let theirs = params::all_params(other);
    assert_eq!(mine.len(), theirs.len());
    let shapes: BTreeMap<String, Vec<usize>> = mine
        .iter()
        .map(|(p, s, _)| (p.clone(), s.clone()))
        .collect();
    let fan_in = |weight: &str| shapes[weight][0] as f64;
    let mut rng = SplitMix(seed);
    let mut values = BTreeMap::new();
    for ((path, shape, a), (path_b, _, b)) in mine.iter().zip(&theirs) {
        assert_eq!(path, path_b);
        if a == b {
            continue;
        }
        // (normal, scale): N(0, scale) or U(-scale, scale).
        let (normal, scale) = if path.ends_with("visual.positions") {
            (true, 0.02)
        } else if path.ends_with("image_order.weight") {
            (true, 1.0) // burn's Embedding
        } else if path.ends_with(".lora.a") || (path.ends_with(".weight") && shape.len() == 2) {
            // LoRA A and burn's Linear ([d_in, d_out]): U(+-1/sqrt(d_in)).
            (false, 1.0 / fan_in(path.as_str()).sqrt())
        } else if let Some(module) = path.strip_suffix(".bias") {
            // burn's Linear bias: U(+-1/sqrt(d_in)) of its weight.
            let weight = format!("{module}.weight");
            (false, 1.0 / fan_in(weight.as_str()).sqrt())
        } else {
            panic!("{path} {shape:?}: randomly initialised, and no redraw rule for it")
        };
        let v: Vec<f32> = (0..a.len())
            .map(|_| {
                let x = if normal {
                    rng.normal()
                } else {
                    2.0 * rng.uniform() - 1.0
                };
                (x * scale) as f32
            })
            .collect();
        values.insert(path.clone(), (shape.clone(), v));
    }
    let redrawn: Vec<String> = values.keys().cloned().collect();
    (params::replace_params(model, &values), redrawn)
}

/// `[2, 1, 4, 6]` image features (one image of 4 tokens per example) from two rows of 24.
fn features<T: Backend>(rows: [&[f32]; 2]) -> Tensor<T, 4> {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [2, 1, 4, 6]), &Default::default())
}

#[test]
fn vl_model_learns_to_answer_from_image_features() {
    let dev = Default::default();
    let (vl, injected) = vl_model(&dev);
    assert_eq!(
        injected.coeff_layers.len(),
        2 + 2 * 2,
        "encoder self + decoder self and cross"
    );
    // Nothing of this test draws from the backend's generator: every parameter it initialised
    // randomly is redrawn here from a fixed seed (found by comparing with a second build).
    let (mut vl, redrawn) = redraw_random_params(vl, &vl_model(&dev).0, 0);
    for part in [
        "visual.proj",
        "visual.positions",
        "visual.image_order",
        "cross_attn",
        "lora.a",
    ] {
        assert!(
            redrawn.iter().any(|p| p.contains(part)),
            "no {part} among the redrawn {redrawn:?}"
        );
    }
    assert!(
        !redrawn
            .iter()
            .any(|p| p.ends_with("lora.b") || p.ends_with("coeff.alpha")),
        "zero-initialised adapters were redrawn: {redrawn:?}"
    );

    // Two examples with the same question and different images: the answer must come from
    // the image. Answers: [7, 8, eos] and [9, eos, pad].
    let question = ids::<B>(&[&[3, 10, 11, 12, 4], &[3, 10, 11, 12, 4]]);
    let mut rng = SplitMix(1);
    let rows: Vec<Vec<f32>> = (0..2)
        .map(|_| (0..4 * 6).map(|_| rng.normal() as f32).collect())
        .collect();
    let feats = features::<B>([rows[0].as_slice(), rows[1].as_slice()]);
    let targets = ids::<B>(&[&[7, 8, 4], &[9, 4, 0]]);
    let mut opt = AdamW::new(AdamWConfig {
        grad_clip: Some(1.0),
        ..AdamWConfig::default()
    });
    let mut first = None;
    let mut last = 0.0;
    // Deterministic: the weights and features above come from fixed seeds, Coeff's dropout is
    // off and nothing else is random, so every invocation runs the same steps. The lr was
    // chosen when this test drew unseeded (and with alpha dropout 0.2): at 3e-2 about one
    // draw in four stalled at a loss near 1.8 (the image path never separated the two
    // answers); at 1e-2, 0 of 330 draws failed, and 100 steps leave a margin.
    for _ in 0..100 {
        let loss = vl
            .loss(question.clone(), None, feats.clone(), targets.clone())
            .unwrap();
        last = loss.clone().into_scalar();
        first.get_or_insert(last);
        let grads = loss.backward();
        vl = opt.step(vl, &grads, 1e-2).unwrap().0;
    }
    let first = first.unwrap();
    assert!(last < 0.05 * first, "loss went from {first} to {last}");
    let vl = vl.valid();
    let gen = GenerationConfig {
        max_new_tokens: 5,
        num_beams: 2,
        ..Default::default()
    };
    let out = vl
        .generate(question.clone().inner(), None, feats.inner(), &gen)
        .unwrap();
    assert_eq!(out, vec![vec![3, 7, 8, 4], vec![3, 9, 4, 0]]);
    // The same question with the images swapped: the answers swap with them.
    let swapped = vl
        .generate(
            question.inner(),
            None,
            features::<Inner>([rows[1].as_slice(), rows[0].as_slice()]),
            &gen,
        )
        .unwrap();
    assert_eq!(swapped, vec![vec![3, 9, 4, 0], vec![3, 7, 8, 4]]);
}
