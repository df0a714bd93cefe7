//! The real architectures (SDXL base 1.0, SD 1.5) from the configs diffusers writes for them
//! (`scripts/fixtures/make_unet_fixtures.py`, no weights): attention layers and parameter
//! counts against diffusers' own counts, and Coeff / LoRA attaching to every attention.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
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

/// Sums the float parameters' element counts from `Param::lazy_shape`, which reads the shape
/// an uninitialised parameter will have without running its initialiser (`Module::num_params`
/// goes through `Param::val`, which runs it).
struct LazyCount(usize);

impl ModuleVisitor<B> for LazyCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 += param.lazy_shape().num_elements();
    }
}

fn lazy_params<M: Module<B>>(model: &M) -> usize {
    let mut count = LazyCount(0);
    model.visit(&mut count);
    count.0
}

/// `config` with the widths divided by `k` (`block_out_channels`, `cross_attention_dim`; the
/// latent channels and SDXL's text-time input stay), one attention head and one GroupNorm
/// group everywhere: neither changes a parameter's shape, and both divide any width.
fn scaled(config: &UnetConfig, k: usize) -> UnetConfig {
    let mut c = config.clone();
    assert!(
        c.block_out_channels.iter().all(|&x| x % k == 0) && c.cross_attention_dim % k == 0,
        "widths / {k}"
    );
    c.block_out_channels = c.block_out_channels.iter().map(|&x| x / k).collect();
    c.cross_attention_dim /= k;
    c.num_attention_heads = vec![1; c.num_attention_heads.len()];
    c.norm_num_groups = 1;
    c
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The parameter count at widths / `k`, from counts `(k_i, params_i)` at three other widths.
///
/// Every parameter's size is a product of at most two widths (each proportional to `1 / k`)
/// and fixed sizes, so `Q(k) = k^2 params(1 / k)` is a polynomial of degree 2 in `k`: Lagrange
/// through three points gives it exactly (rational arithmetic, the result must be an integer).
fn extrapolate(points: &[(i128, i128)], k: i128) -> i128 {
    let (mut num, mut den) = (0i128, 1i128);
    for &(ki, pi) in points {
        let (mut n, mut d) = (pi * ki * ki, 1i128);
        for &(kj, _) in points {
            if kj != ki {
                n *= k - kj;
                d *= ki - kj;
            }
        }
        num = num * d + n * den;
        den *= d;
        let g = gcd(num, den);
        (num, den) = (num / g, den / g);
    }
    if den < 0 {
        (num, den) = (-num, -den);
    }
    let whole = den * k * k;
    assert_eq!(num % whole, 0, "not an integer count: {num} / {whole}");
    num / whole
}

/// The full-size counts (2.6e9 parameters for SDXL) without building the full-size models:
/// `UnetConfig::init` materialises every `PeftLinear` (attention and MLP weights, 8 GiB of f32
/// for SDXL), so the full model is counted through the exact quadratic in the widths instead,
/// from three small builds counted lazily, and checked at a fourth width against diffusers'
/// own count of the widths / 8 model.
#[test]
fn real_configs_have_diffusers_full_size_parameter_counts() {
    for name in ["sdxl_base_config", "sd15_config"] {
        let config = UnetConfig::from_file(fixture(name)).expect("config");
        let points: Vec<(i128, i128)> = [16usize, 32, 64]
            .into_iter()
            .map(|k| {
                let model = scaled(&config, k).init::<B>(&Default::default());
                let n = lazy_params(&model);
                // Counting ran no initialiser: burn-nn's layers are still lazy.
                assert!(
                    !model.conv_in.weight.is_initialized(),
                    "{name}: the count initialised a parameter"
                );
                (k as i128, n as i128)
            })
            .collect();
        assert_eq!(
            extrapolate(&points, 8),
            expected(name, "narrow8_parameters") as i128,
            "{name} (widths / 8): {points:?}"
        );
        assert_eq!(
            extrapolate(&points, 1),
            expected(name, "parameters") as i128,
            "{name}: {points:?}"
        );
    }
    // The lazy count is what `num_params` counts (which initialises everything).
    let sd15 = UnetConfig::from_file(fixture("sd15_config")).expect("config");
    let model = scaled(&sd15, 64).init::<B>(&Default::default());
    let lazy = lazy_params(&model);
    assert_eq!(lazy, model.num_params());
    // And the full-size fixtures are what diffusers reports for SDXL base 1.0 and SD 1.5.
    assert_eq!(expected("sdxl_base_config", "parameters"), 2_567_463_684);
    assert_eq!(expected("sd15_config", "parameters"), 859_520_964);
}
