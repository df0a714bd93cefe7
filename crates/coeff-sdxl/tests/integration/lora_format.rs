//! UNet LoRA in diffusers' `load_lora_weights` format: keys and config as `save_lora_weights`
//! writes them, loads back to the same output; the committed export
//! (`tests/fixtures/ours_unet_lora/`) was checked with diffusers itself by
//! `scripts/fixtures/check_unet_lora_export.py`, and an export made now must equal it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use coeff_sdxl::lora_format::{export_unet_lora, import_unet_lora, LORA_FILE};
use coeff_sdxl::{load_unet, UNet2DConditionModel, UnetInput};
use coeff_tuning::checkpoint::{write_f32_safetensors, Checkpoint};
use coeff_tuning::peft::params;
use coeff_tuning::{inject, Method};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(unet: &UNet2DConditionModel<B>, r: &Checkpoint) -> Tensor<B, 4> {
    let t = |k: &str| {
        let (s, v) = r.read_f32(k).unwrap();
        TensorData::new(v, s)
    };
    let dev = Default::default();
    unet.forward(UnetInput {
        sample: Tensor::from_data(t("sample"), &dev),
        timestep: Tensor::from_data(t("timestep"), &dev),
        encoder_hidden_states: Tensor::from_data(t("encoder_hidden_states"), &dev),
        text_embeds: Some(Tensor::from_data(t("text_embeds"), &dev)),
        time_ids: Some(Tensor::from_data(t("time_ids"), &dev)),
    })
    .unwrap()
}

/// Deterministic non-zero LoRA values (B starts at zero, which would make any export look right).
fn fill(model: UNet2DConditionModel<B>, prefixes: &[String]) -> UNet2DConditionModel<B> {
    let mut values = BTreeMap::new();
    let mut state = 99u64;
    for (path, shape, old) in params::collect_params(&model, prefixes) {
        let v = old
            .iter()
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                0.3 * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect();
        values.insert(path, (shape, v));
    }
    params::replace_params(model, &values)
}

#[test]
fn unet_lora_exports_in_diffusers_format_and_loads_back() {
    let dev = Default::default();
    let (config, base) = load_unet::<B>(fixture("sdxl_tiny"), &dev).unwrap();
    let r = Checkpoint::open(fixture("sdxl_tiny").join("reference.safetensors")).unwrap();
    let pc = Method::Lora.config(
        2,
        &["attn.query", "attn.value", "cross_attn.key", "attn.output"],
    );
    let (model, injected) = inject(base.clone(), &pc).unwrap();
    let model = fill(model, &injected.trainable_prefixes());
    let out = run(&model, &r);

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(LORA_FILE);
    let export = export_unet_lora(&model, &config, &injected, &file).unwrap();
    assert_eq!(export.tensors, 2 * injected.lora_layers.len());
    let ckpt = Checkpoint::open(&file).unwrap();
    assert!(ckpt
        .contains("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"));
    let meta: serde_json::Value =
        serde_json::from_str(&ckpt.metadata()["lora_adapter_metadata"]).unwrap();
    assert_eq!(meta["unet.r"], 2);
    assert_eq!(meta["unet.lora_alpha"], 8.0);

    let committed = fixture("ours_unet_lora");
    if std::env::var_os("COEFF_SDXL_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(&committed).unwrap();
        std::fs::copy(&file, committed.join(LORA_FILE)).unwrap();
        let data = out.clone().into_data();
        let mut t = BTreeMap::new();
        t.insert(
            "out_sample".to_string(),
            (data.shape.to_vec(), data.to_vec::<f32>().unwrap()),
        );
        write_f32_safetensors(&committed.join("reference.safetensors"), &t).unwrap();
    }
    let theirs = Checkpoint::open(committed.join(LORA_FILE)).unwrap();
    assert_eq!(ckpt.keys(), theirs.keys());
    for k in ckpt.keys() {
        assert_eq!(
            ckpt.read_f32(&k).unwrap(),
            theirs.read_f32(&k).unwrap(),
            "{k}"
        );
    }
    assert_eq!(ckpt.metadata(), theirs.metadata());

    let (again, injected_again) = import_unet_lora(base, &config, &file).unwrap();
    assert_eq!(injected_again.lora_layers, injected.lora_layers);
    let d: f32 = (run(&again, &r) - out.clone()).abs().max().into_scalar();
    assert!(d < 1e-6, "re-imported adapter differs by {d}");
    let reference = Checkpoint::open(committed.join("reference.safetensors")).unwrap();
    let (s, v) = reference.read_f32("out_sample").unwrap();
    let d: f32 = (out - Tensor::from_data(TensorData::new(v, s), &dev))
        .abs()
        .max()
        .into_scalar();
    assert!(
        d < 1e-5,
        "output differs from the committed reference by {d}"
    );
}
