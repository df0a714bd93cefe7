//! Parity with transformers on tiny random models (fixtures made by
//! `scripts/fixtures/make_text_fixtures.py`; no Python needed here).

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use coeff_tuning::checkpoint::Checkpoint;
use coeff_vl::{load_bart, load_bert, load_clip, load_clip_text, EarlyStopping, GenerationConfig};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Reference(Checkpoint);

impl Reference {
    fn open(name: &str) -> Self {
        let path = fixture(name).join("reference.safetensors");
        Self(Checkpoint::open(&path).unwrap_or_else(|e| panic!("{e}")))
    }

    fn float<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        let (shape, values) = self.0.read_f32(key).unwrap();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn ids(&self, key: &str) -> Tensor<B, 2, Int> {
        let (shape, values) = self.0.read_i64(key).unwrap();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn rows(&self, key: &str) -> Vec<Vec<u32>> {
        let (shape, values) = self.0.read_i64(key).unwrap();
        values
            .chunks(shape[1])
            .map(|r| r.iter().map(|&v| v as u32).collect())
            .collect()
    }
}

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}

/// Bound on the max |diff| per model: about 10x the largest error measured (f32, CPU; the
/// figures in docs/vl.md), so that a regression a tenth of a planted bug's size still fails.
const TOLERANCE: [(&str, f32); 3] = [
    ("bert", 1e-5), // measured 1.1e-6
    ("clip", 2e-5), // measured 1.6e-6
    ("bart", 4e-5), // measured 3.3e-6
];

fn assert_close<const D: usize>(what: &str, ours: Tensor<B, D>, reference: Tensor<B, D>) {
    let d = max_diff(ours, reference);
    let tol = TOLERANCE
        .iter()
        .find(|(model, _)| what.starts_with(model))
        .unwrap_or_else(|| panic!("no tolerance for {what:?}"))
        .1;
    eprintln!("{what}: max |diff| {d:.2e} (bound {tol:.0e})");
    assert!(d < tol, "{what}: max |diff| {d} >= {tol}");
}

#[test]
fn bert_matches_transformers() {
    let r = Reference::open("bert_tiny");
    let model = load_bert::<B>(fixture("bert_tiny"), &Default::default()).unwrap();
    let out = model
        .forward(
            r.ids("input_ids"),
            Some(r.ids("attention_mask")),
            Some(r.ids("token_type_ids")),
        )
        .unwrap();
    assert_close(
        "bert last_hidden_state",
        out.last_hidden_state,
        r.float("last_hidden_state"),
    );
    assert_close(
        "bert pooler_output",
        out.pooler_output.unwrap(),
        r.float("pooler_output"),
    );
}

#[test]
fn clip_text_matches_transformers() {
    let r = Reference::open("clip_text_tiny");
    let model = load_clip_text::<B>(fixture("clip_text_tiny"), &Default::default()).unwrap();
    let out = model
        .forward(r.ids("input_ids"), Some(r.ids("attention_mask")))
        .unwrap();
    assert_close(
        "clip text last_hidden_state",
        out.last_hidden_state,
        r.float("last_hidden_state"),
    );
    assert_close(
        "clip text penultimate",
        out.penultimate_hidden_state,
        r.float("penultimate_hidden_state"),
    );
    assert_close(
        "clip text pooler_output",
        out.pooler_output,
        r.float("pooler_output"),
    );
    assert_close(
        "clip text_embeds",
        out.text_embeds.unwrap(),
        r.float("text_embeds"),
    );
}

#[test]
fn clip_dual_encoder_matches_transformers() {
    let r = Reference::open("clip_tiny");
    let model = load_clip::<B>(fixture("clip_tiny"), &Default::default()).unwrap();
    let out = model
        .forward(
            r.ids("input_ids"),
            Some(r.ids("attention_mask")),
            r.float("pixel_values"),
        )
        .unwrap();
    assert_close("clip text_embeds", out.text_embeds, r.float("text_embeds"));
    assert_close(
        "clip image_embeds",
        out.image_embeds,
        r.float("image_embeds"),
    );
    assert_close(
        "clip logits_per_image",
        out.logits_per_image,
        r.float("logits_per_image"),
    );
}

#[test]
fn bart_matches_transformers_teacher_forced_and_cached() {
    let r = Reference::open("bart_tiny");
    let model = load_bart::<B>(fixture("bart_tiny"), &Default::default()).unwrap();
    let mask = r.ids("attention_mask");
    let enc = model
        .encode(r.ids("input_ids"), Some(mask.clone()))
        .unwrap();
    assert_close(
        "bart encoder",
        enc.clone(),
        r.float("encoder_last_hidden_state"),
    );
    let pad = Some(mask.equal_elem(0));
    let logits = model
        .decode(r.ids("decoder_input_ids"), enc.clone(), pad.clone())
        .unwrap();
    assert_close("bart logits", logits.clone(), r.float("logits"));

    // The cached decoder, fed 1, 2 and 3 tokens per step, gives the same logits.
    let dec = r.ids("decoder_input_ids");
    let mut cache = model.start_decoding(enc, pad);
    let mut parts = Vec::new();
    let mut start = 0;
    for step in [1, 2, 3] {
        parts.push(model.decode_step(dec.clone().slice([0..2, start..start + step]), &mut cache));
        start += step;
    }
    assert_close(
        "bart cached logits",
        Tensor::cat(parts, 1),
        r.float("logits"),
    );
}

/// The runs of `make_text_fixtures.py`'s `BART_RUNS` (its script checks that each rule changes
/// the ids and that hypotheses end at different steps): ids identical, beam scores to 1e-5.
#[test]
fn bart_generation_matches_transformers() {
    let r = Reference::open("bart_tiny");
    let base = GenerationConfig {
        max_new_tokens: 10,
        num_beams: 1,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::Finished,
    };
    let beams = |num_beams, length_penalty, early_stopping| GenerationConfig {
        num_beams,
        length_penalty,
        early_stopping,
        ..base.clone()
    };
    // (fixture key, settings, forced BOS, forced EOS)
    let runs = [
        ("greedy", base.clone(), None, None),
        ("beam", beams(3, 1.0, EarlyStopping::Finished), None, None),
        (
            "beam_lp",
            beams(4, 0.6, EarlyStopping::Heuristic),
            None,
            None,
        ),
        (
            "beam_never",
            beams(3, 2.0, EarlyStopping::Never),
            None,
            None,
        ),
        (
            "forced_bos",
            beams(3, 1.0, EarlyStopping::Finished),
            Some(0),
            None,
        ),
        (
            "forced_eos",
            GenerationConfig {
                max_new_tokens: 4,
                ..beams(3, 1.0, EarlyStopping::Finished)
            },
            None,
            Some(2),
        ),
        (
            "forced_eos_greedy",
            GenerationConfig {
                max_new_tokens: 4,
                ..base.clone()
            },
            None,
            Some(2),
        ),
    ];
    for (key, generation, bos, eos) in runs {
        let mut model = load_bart::<B>(fixture("bart_tiny"), &Default::default()).unwrap();
        model.config.forced_bos_token_id = bos;
        model.config.forced_eos_token_id = eos;
        let out = model
            .generate_scored(
                r.ids("input_ids"),
                Some(r.ids("attention_mask")),
                &generation,
            )
            .unwrap();
        assert_eq!(out.ids, r.rows(key), "{key}: ids");
        if generation.num_beams > 1 {
            let (_, want) = r.0.read_f32(&format!("{key}_scores")).unwrap();
            for (got, want) in out.scores.iter().zip(&want) {
                assert!(
                    (got - *want as f64).abs() < 1e-5,
                    "{key}: score {got} vs transformers' {want}"
                );
            }
        }
    }
}
