//! `coeff infer --adapter` with adapters made by the reference libraries, compared with what
//! those libraries compute (fixtures: `scripts/fixtures/make_lora_format_fixtures.py` and
//! `make_peft_fixtures.py`):
//! - PEFT LoRA and DoRA folders of a Hugging Face ViT, in transformers 5 and 4 module names,
//!   against `PeftModel`'s logits;
//! - kohya (diffusers names and the SDXL original-UNet names), older diffusers and PEFT-folder
//!   LoRAs of a tiny SDXL-style UNet, against diffusers' `load_lora_weights` path (a kohya file
//!   with per-module ranks and alphas against the merge by hand: diffusers ignores those
//!   alphas).
//!
//! Tolerance: 4e-5 absolute, about 10x the largest measured difference (3.7e-6, kohya with
//! per-module ranks; the ViTs 4e-7 to 1.7e-6); run with `--nocapture` to see them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coeff_harness::testing;

const BIN: &str = env!("CARGO_BIN_EXE_coeff");
const TOL: f32 = 4e-5;

fn fixtures(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("tests/fixtures")
}

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn read(path: &Path) -> Tensors {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("fixture {} missing: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

fn max_diff(a: &(Vec<usize>, Vec<f32>), b: &(Vec<usize>, Vec<f32>)) -> f32 {
    assert_eq!(a.0, b.0, "shapes");
    a.1.iter()
        .zip(&b.1)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Run `infer` and return its outputs.
fn infer(checkpoint: &Path, input: &Path, adapter: Option<&Path>) -> (Tensors, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let mut args = vec![
        "infer".to_string(),
        "--checkpoint".into(),
        checkpoint.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        out.display().to_string(),
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter".into(), a.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = testing::succeeds(BIN, tmp.path(), &args);
    (read(&out), stderr)
}

/// A ViT PEFT folder gives `PeftModel`'s logits and hidden states.
fn vit_case(adapter: &str) {
    let vit = fixtures("coeff-vit");
    let dir = vit.join(adapter);
    let reference = dir.join("reference.safetensors");
    let want = read(&reference);
    let (bare, _) = infer(&vit.join("hf_vit_cls"), &reference, None);
    let (got, _) = infer(&vit.join("hf_vit_cls"), &reference, Some(&dir));
    for name in ["logits", "last_hidden_state"] {
        let d = max_diff(&got[name], &want[name]);
        let moved = max_diff(&bare[name], &want[name]);
        eprintln!(
            "{adapter}: {name} max |ours - peft| = {d:.2e} (the adapter moves it {moved:.3})"
        );
        assert!(d < TOL, "{adapter}: {name} differs from PEFT by {d}");
        assert!(moved > 1e-2, "{adapter}: the adapter changes nothing");
    }
}

#[test]
fn peft_lora_vit_transformers5_names() {
    vit_case("peft_lora_vit");
}

#[test]
fn peft_lora_vit_transformers4_names() {
    vit_case("peft_lora_vit_tf4");
}

#[test]
fn peft_dora_vit_transformers5_names() {
    vit_case("peft_dora_vit");
}

#[test]
fn peft_dora_vit_transformers4_names() {
    vit_case("peft_dora_vit_tf4");
}

/// A UNet LoRA of one form gives diffusers' output.
fn unet_case(adapter: &str, says: &str) {
    let sdxl = fixtures("coeff-sdxl");
    let input = sdxl.join("sdxl_tiny/reference.safetensors");
    let formats = sdxl.join("lora_formats");
    let want = read(&formats.join("reference.safetensors"));
    let (got, stderr) = infer(
        &sdxl.join("sdxl_tiny"),
        &input,
        Some(&formats.join(adapter)),
    );
    assert!(
        stderr.contains(says),
        "{adapter}: expected `{says}` in\n{stderr}"
    );
    let stem = adapter.trim_end_matches(".safetensors");
    let d = max_diff(&got["sample"], &want[&format!("out_{stem}")]);
    let moved = max_diff(&want["bare"], &want[&format!("out_{stem}")]);
    eprintln!("{adapter}: max |ours - diffusers| = {d:.2e} (the LoRA moves it {moved:.3})");
    assert!(d < TOL, "{adapter}: differs from diffusers by {d}");
    assert!(moved > 1e-2, "{adapter}: the LoRA changes nothing");
}

#[test]
fn kohya_unet_lora_with_diffusers_names() {
    unet_case("kohya.safetensors", "kohya/A1111 LoRA");
}

#[test]
fn kohya_unet_lora_with_original_sdxl_names() {
    unet_case("kohya_sgm.safetensors", "kohya/A1111 LoRA");
}

/// Per-module ranks and alphas: equal to the merge by hand (`W + alpha / rank * up down`,
/// kohya's and A1111's rule); diffusers 0.35.2 ignores these alphas, so its output is far.
#[test]
fn kohya_unet_lora_with_per_module_ranks_and_alphas() {
    unet_case("kohya_mixed.safetensors", "kohya/A1111 LoRA");
    let want = read(&fixtures("coeff-sdxl").join("lora_formats/reference.safetensors"));
    let d = max_diff(&want["out_kohya_mixed"], &want["diffusers_kohya_mixed"]);
    assert!(
        d > 0.1,
        "diffusers now applies per-module alphas ({d}): update the docs"
    );
}

#[test]
fn legacy_diffusers_unet_lora() {
    unet_case("diffusers_legacy.safetensors", "legacy");
}

#[test]
fn peft_folder_of_a_unet() {
    unet_case("peft_unet", "");
}

#[test]
fn bare_unet_matches_diffusers() {
    let sdxl = fixtures("coeff-sdxl");
    let input = sdxl.join("sdxl_tiny/reference.safetensors");
    let want = read(&sdxl.join("lora_formats/reference.safetensors"));
    let (got, _) = infer(&sdxl.join("sdxl_tiny"), &input, None);
    let d = max_diff(&got["sample"], &want["bare"]);
    assert!(d < TOL, "bare UNet differs from diffusers by {d}");
}

/// A kohya file with a key the UNet does not have, or a text-encoder part, is refused, naming
/// the key.
#[test]
fn kohya_files_with_foreign_keys_are_refused() {
    let sdxl = fixtures("coeff-sdxl");
    let input = sdxl.join("sdxl_tiny/reference.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let src = read(&sdxl.join("lora_formats/kohya.safetensors"));
    let write = |name: &str, extra: &str, shape: Vec<usize>| {
        let mut t = src.clone();
        let n = shape.iter().product();
        t.insert(extra.to_string(), (shape, vec![0.5; n]));
        let path = tmp.path().join(name);
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = t
            .iter()
            .map(|(k, (s, v))| {
                (
                    k.clone(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(k, s, b)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, &None, &path).unwrap();
        path
    };
    let out = tmp.path().join("out.safetensors");
    for (file, key, shape, says) in [
        (
            "unknown.safetensors",
            "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight",
            vec![2, 32],
            "down_blocks_9",
        ),
        (
            "te.safetensors",
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
            vec![2, 32],
            "text-encoder",
        ),
    ] {
        let path = write(file, key, shape);
        testing::fails_saying(
            BIN,
            tmp.path(),
            &[
                "infer",
                "--checkpoint",
                &sdxl.join("sdxl_tiny").display().to_string(),
                "--input",
                &input.display().to_string(),
                "--output",
                &out.display().to_string(),
                "--adapter",
                &path.display().to_string(),
            ],
            &[says],
        );
        assert!(!out.exists(), "nothing is written on an error");
    }
}

/// PEFT folders of text models (exported here, loaded by `PeftModel.from_pretrained` in
/// `scripts/fixtures/check_text_peft_export.py`, which agrees with the recorded output to
/// 5.7e-6 / 1.1e-6) give that output through `infer --adapter`.
fn text_case(base: &str, adapter: &str, output: &str) {
    let vl = fixtures("coeff-vl");
    let input = vl.join(base).join("reference.safetensors");
    let want = read(&vl.join(adapter).join("reference.safetensors"));
    let (bare, _) = infer(&vl.join(base), &input, None);
    let (got, _) = infer(&vl.join(base), &input, Some(&vl.join(adapter)));
    let d = max_diff(&got[output], &want["output"]);
    let moved = max_diff(&bare[output], &want["output"]);
    eprintln!(
        "{adapter}: {output} max |ours - recorded| = {d:.2e} (the adapter moves it {moved:.3})"
    );
    assert!(d < TOL, "{adapter}: {output} differs by {d}");
    assert!(moved > 1e-2, "{adapter}: the adapter changes nothing");
}

#[test]
fn peft_lora_bart() {
    text_case("bart_tiny", "ours_bart_lora", "logits");
}

#[test]
fn peft_dora_bert() {
    text_case("bert_tiny", "ours_bert_dora", "last_hidden_state");
}
