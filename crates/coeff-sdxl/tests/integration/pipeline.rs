//! The whole tiny SDXL pipeline (tokenizers from CLIP's vocab.json + merges.txt, both text
//! encoders, UNet, VAE, Euler sampler, classifier-free guidance, fixed initial noise) against
//! diffusers' StableDiffusionXLPipeline (`scripts/fixtures/make_sdxl_pipeline_fixture.py`).

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use coeff_sdxl::{SampleConfig, SdxlPipeline};
use coeff_tuning::checkpoint::Checkpoint;

type B = burn::backend::NdArray<f32>;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl_pipeline_tiny")
}

fn reference() -> Checkpoint {
    Checkpoint::open(dir().join("reference.safetensors")).unwrap()
}

fn float<const D: usize>(r: &Checkpoint, key: &str) -> Tensor<B, D> {
    let (shape, v) = r.read_f32(key).unwrap();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn ids(r: &Checkpoint, key: &str) -> Tensor<B, 2, Int> {
    let (shape, v) = r.read_i64(key).unwrap();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn close<const D: usize>(what: &str, ours: Tensor<B, D>, theirs: Tensor<B, D>, tol: f32) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}");
    let d: f32 = (ours - theirs).abs().max().into_scalar();
    eprintln!("{what}: max |ours - diffusers| = {d:.2e}");
    assert!(d < tol, "{what}: {d} >= {tol}");
}

fn prompts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(dir().join("prompts.json")).unwrap()).unwrap()
}

/// Bounds are about 10x what was measured (2-core Intel Xeon, ndarray): prompt embeddings 1.9e-6,
/// pooled 1.0e-6, final latents after 4 guided Euler steps 4.4e-5, decoded image 2.2e-6.
#[test]
fn tiny_sdxl_pipeline_matches_diffusers() {
    let dev = Default::default();
    let pipe = SdxlPipeline::<B>::load(dir(), &dev).unwrap();
    let r = reference();
    let prompts = prompts();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();

    let [ids_1, ids_2] = pipe.tokenize(&prompts, &dev).unwrap();
    assert_eq!(ids_1.to_data(), ids(&r, "ids_1").to_data(), "tokenizer ids");
    assert_eq!(
        ids_2.to_data(),
        ids(&r, "ids_2").to_data(),
        "tokenizer_2 ids"
    );

    let (embeds, pooled) = pipe.encode_prompt(ids_1, ids_2).unwrap();
    close(
        "prompt_embeds",
        embeds.clone(),
        float(&r, "prompt_embeds"),
        2e-5,
    );
    close(
        "pooled_prompt_embeds",
        pooled.clone(),
        float(&r, "pooled_prompt_embeds"),
        1e-5,
    );

    let cfg = SampleConfig {
        steps: 4,
        guidance: 5.0,
        height: 16,
        width: 16,
    };
    let latents = pipe
        .denoise(embeds, pooled, float(&r, "latents"), &cfg)
        .unwrap();
    close(
        "final latents",
        latents.clone(),
        float(&r, "final_latents"),
        4e-4,
    );
    close("image", pipe.decode(latents), float(&r, "image"), 3e-5);

    let image = pipe.generate(&prompts, float(&r, "latents"), &cfg).unwrap();
    close("generate()", image, float(&r, "image"), 3e-5);
}
