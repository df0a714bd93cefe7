//! The real architectures (SDXL base 1.0, SD 1.5) from the configs diffusers writes for them
//! (`scripts/fixtures/make_unet_fixtures.py`, no weights): attention layers and parameter
//! counts against diffusers' own counts, and Coeff / LoRA attaching to every attention.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::module::Module;
use coeff_sdxl::UnetConfig;
use coeff_tuning::{inject, Method};

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected(name: &str, field: &str) -> usize {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v[field].as_u64().unwrap_or_else(|| panic!("{field}")) as usize
}

/// The same architecture with every width divided by 8 (heads, depths and conditioning kept;
/// 8 groups per GroupNorm), as the fixture script counts it: small enough to build here.
fn narrow8(name: &str) -> UnetConfig {
    let mut c = UnetConfig::from_file(fixture(name)).expect("config");
    c.block_out_channels = c.block_out_channels.iter().map(|&x| x / 8).collect();
    c.norm_num_groups = 8;
    c.cross_attention_dim /= 8;
    c
}

#[test]
fn real_configs_have_diffusers_attention_layers_and_parameters() {
    for name in ["sdxl_base_config", "sd15_config"] {
        let config = UnetConfig::from_file(fixture(name)).expect("config");
        assert_eq!(
            config.attention_layers(),
            expected(name, "attention_layers"),
            "{name}"
        );
        let model = narrow8(name).init::<B>(&Default::default());
        assert_eq!(
            model.num_params(),
            expected(name, "narrow8_parameters"),
            "{name} (widths / 8)"
        );
    }
    let sdxl = UnetConfig::from_file(fixture("sdxl_base_config")).expect("config");
    assert_eq!(sdxl.attention_layers(), 140);
    assert_eq!(sdxl.num_attention_heads, vec![5, 10, 20]);
    assert_eq!(sdxl.transformer_layers_per_block, vec![1, 2, 10]);
}

#[test]
fn coeff_and_lora_attach_to_every_attention_layer_of_sdxl() {
    let model = narrow8("sdxl_base_config").init::<B>(&Default::default());
    let (_, inj) = inject(
        model,
        &Method::LoraCoeff.config(4, &["query", "key", "value", "output"]),
    )
    .expect("inject");
    assert_eq!(inj.coeff_layers.len(), 140);
    // The self- and the cross-attention of each of the 70 transformer blocks.
    let ends = |s: &str| inj.coeff_layers.iter().filter(|p| p.ends_with(s)).count();
    assert_eq!((ends(".attn"), ends(".cross_attn")), (70, 70));
    // diffusers' to_q, to_k, to_v, to_out.0 of every attention.
    assert_eq!(inj.lora_layers.len(), 4 * 140);
}
