//! PEFT interop: adapters saved by `peft` load here and reproduce PEFT's outputs; adapters we
//! export have PEFT's exact key names and shapes and load back to the same outputs.
//! (`scripts/fixtures/check_peft_export.py DIR` checks an export with `peft` itself.)

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use coeff_vit::peft_format::{export_peft, import_peft};
use coeff_vit::{load_pretrained, Checkpoint, VisionTransformer};

type B = burn::backend::NdArray<f32>;

/// Bound on our output vs PeftModel's: about 10x the largest measured, 3.8e-6 (docs/vit.md).
const TOLERANCE: f32 = 4e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(model: &VisionTransformer<B>, reference: &Checkpoint) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let (s, d) = reference.read_f32("pixel_values").unwrap();
    let out = model
        .forward(Tensor::from_data(
            TensorData::new(d, s),
            &Default::default(),
        ))
        .unwrap();
    (out.logits.unwrap(), out.last_hidden_state)
}

fn reference_outputs(reference: &Checkpoint) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let t = |k: &str| {
        let (s, d) = reference.read_f32(k).unwrap();
        TensorData::new(d, s)
    };
    (
        Tensor::from_data(t("logits"), &Default::default()),
        Tensor::from_data(t("last_hidden_state"), &Default::default()),
    )
}

fn max_abs<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// `name`, a PEFT folder made by `make_peft_fixtures.py` on the `base` fixture, loads here
/// to PEFT's outputs, exports to PEFT's exact tensors and loads back.
fn roundtrip(base: &str, name: &str) {
    let dev = Default::default();
    let base = load_pretrained::<B>(fixture(base), &dev).unwrap();
    let reference = Checkpoint::open(fixture(name).join("reference.safetensors")).unwrap();
    let (model, injected) =
        import_peft(base.clone(), &fixture(name)).unwrap_or_else(|e| panic!("{e}"));
    let (logits, hidden) = run(&model, &reference);
    let (ref_logits, ref_hidden) = reference_outputs(&reference);
    let (base_logits, _) = run(&base, &reference);
    assert!(
        max_abs(base_logits, ref_logits.clone()) > 1e-2,
        "{name}: adapter has no effect"
    );
    let e1 = max_abs(logits.clone(), ref_logits);
    let e2 = max_abs(hidden, ref_hidden);
    eprintln!("{name}: PEFT logits max |diff| {e1:.2e}, hidden {e2:.2e}");
    assert!(
        e1 < TOLERANCE && e2 < TOLERANCE,
        "{name}: logits differ by {e1}, hidden states by {e2}"
    );

    // Export and compare the file layout with PEFT's own.
    let dir = tempfile::tempdir().unwrap();
    let report = export_peft(&model, &injected, dir.path()).unwrap();
    assert!(report.coeff_layers_left_out.is_empty());
    let ours = Checkpoint::open(dir.path().join("adapter_model.safetensors")).unwrap();
    let theirs = Checkpoint::open(fixture(name).join("adapter_model.safetensors")).unwrap();
    let shapes = |c: &Checkpoint| -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<_> = c
            .keys()
            .into_iter()
            .map(|k| {
                let s = c.read_f32(&k).unwrap().0;
                (k, s)
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        !shapes(&theirs).is_empty(),
        "{name}: PEFT's adapter file holds no tensors"
    );
    assert_eq!(
        shapes(&ours),
        shapes(&theirs),
        "{name}: exported keys/shapes differ from PEFT's"
    );
    for (k, _) in shapes(&theirs) {
        assert_eq!(
            ours.read_f32(&k).unwrap().1,
            theirs.read_f32(&k).unwrap().1,
            "{name}: `{k}` values differ"
        );
    }
    let (again, _) = import_peft(base, dir.path()).unwrap();
    let (logits2, _) = run(&again, &reference);
    assert!(max_abs(logits, logits2) < 1e-6);
}

#[test]
fn peft_lora_adapter_imports_and_exports() {
    roundtrip("hf_vit_cls", "peft_lora_vit");
}

#[test]
fn peft_dora_adapter_imports_and_exports() {
    roundtrip("hf_vit_cls", "peft_dora_vit");
}

/// `Dinov2ForImageClassification` under PEFT: transformers 5 names
/// (`dinov2.encoder.layer.N.attention.q_proj`, `mlp.fc1`) and the `classifier` on
/// `[cls, mean patch]`.
#[test]
fn peft_lora_adapter_of_dinov2_imports_and_exports() {
    roundtrip("dinov2_cls", "peft_lora_dinov2");

    // The same adapter under transformers 4's module names (`attention.attention.query`).
    let src = fixture("peft_lora_dinov2");
    let dir = tempfile::tempdir().unwrap();
    let theirs = Checkpoint::open(src.join("adapter_model.safetensors")).unwrap();
    let mut renamed = std::collections::BTreeMap::new();
    for k in theirs.keys() {
        let old = k
            .replace(".attention.q_proj.", ".attention.attention.query.")
            .replace(".attention.v_proj.", ".attention.attention.value.");
        renamed.insert(old, theirs.read_f32(&k).unwrap());
    }
    assert!(renamed
        .keys()
        .any(|k| k.contains("attention.attention.query")));
    coeff_tuning::checkpoint::write_f32_safetensors(
        &dir.path().join("adapter_model.safetensors"),
        &renamed,
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("adapter_config.json")).unwrap();
    let config = config
        .replace("\"q_proj\"", "\"query\"")
        .replace("\"v_proj\"", "\"value\"");
    std::fs::write(dir.path().join("adapter_config.json"), config).unwrap();
    let base = load_pretrained::<B>(fixture("dinov2_cls"), &Default::default()).unwrap();
    let reference = Checkpoint::open(src.join("reference.safetensors")).unwrap();
    let (model, _) = import_peft(base, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let (logits, _) = run(&model, &reference);
    let e = max_abs(logits, reference_outputs(&reference).0);
    eprintln!("transformers 4 names: PEFT logits max |diff| {e:.2e}");
    assert!(e < TOLERANCE, "transformers 4 names: logits differ by {e}");
}

/// `CLIPForImageClassification` under PEFT: `vision_model.encoder.layers.N.self_attn.q_proj`.
#[test]
fn peft_lora_adapter_of_clip_imports_and_exports() {
    roundtrip("clip_cls", "peft_lora_clip");
}

/// timm's fused `qkv` has no PEFT module per projection: a clear error, not a wrong file.
#[test]
fn peft_export_of_a_timm_vit_is_refused() {
    use coeff_tuning::{inject, Method};
    let base = load_pretrained::<B>(fixture("timm_vit"), &Default::default()).unwrap();
    let (model, injected) = inject(base, &Method::Lora.config(2, &["query"])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_peft(&model, &injected, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timm") && err.contains("adapter_config.json"),
        "{err}"
    );
    assert!(!dir.path().join("adapter_model.safetensors").exists());
}

#[test]
fn unsupported_peft_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        std::fs::copy(fixture("peft_lora_vit").join(f), dir.path().join(f)).unwrap();
    }
    let cfg = dir.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"use_rslora\": false", "\"use_rslora\": true"),
    )
    .unwrap();
    let base = load_pretrained::<B>(fixture("hf_vit_cls"), &Default::default()).unwrap();
    let err = import_peft(base, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("use_rslora") && err.contains("adapter_config.json"),
        "{err}"
    );
}

/// An adapter made here (random LoRA / DoRA factors and head), exported with our forward
/// outputs beside it, for `python3 scripts/fixtures/check_peft_export.py DIR` to load in PEFT.
#[test]
fn our_adapters_export_with_reference_outputs() {
    use coeff_tuning::peft::params;
    use coeff_tuning::{inject, Method};
    for (base_name, reference, method, name) in [
        ("hf_vit_cls", "reference_square", Method::Lora, "lora"),
        ("hf_vit_cls", "reference_square", Method::Dora, "dora"),
        ("dinov2_cls", "reference", Method::Lora, "dinov2-lora"),
        ("clip_cls", "reference", Method::Dora, "clip-dora"),
    ] {
        let dev = Default::default();
        let base = load_pretrained::<B>(fixture(base_name), &dev).unwrap();
        let mut cfg = method.config(3, &["query", "value", "fc1"]);
        cfg.modules_to_save = vec!["head".into()];
        let (model, injected) = inject(base, &cfg).unwrap();
        let values = params::collect_params(&model, &injected.trainable_prefixes())
            .into_iter()
            .map(|(p, s, v)| {
                let v = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x + 0.2 * ((i as f32) * 0.7).sin())
                    .collect();
                (p, (s, v))
            })
            .collect();
        let model = params::replace_params(model, &values);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("peft-export-{name}"));
        export_peft(&model, &injected, &dir).unwrap();
        let reference =
            Checkpoint::open(fixture(base_name).join(format!("{reference}.safetensors"))).unwrap();
        let (logits, hidden) = run(&model, &reference);
        let (s, px) = reference.read_f32("pixel_values").unwrap();
        let mut out = std::collections::BTreeMap::new();
        out.insert("pixel_values".to_string(), (s, px));
        out.insert(
            "logits".to_string(),
            (logits.dims().to_vec(), logits.into_data().to_vec().unwrap()),
        );
        out.insert(
            "last_hidden_state".to_string(),
            (hidden.dims().to_vec(), hidden.into_data().to_vec().unwrap()),
        );
        coeff_tuning::checkpoint::write_f32_safetensors(&dir.join("reference.safetensors"), &out)
            .unwrap();
        let (again, _) = import_peft(
            load_pretrained::<B>(fixture(base_name), &dev).unwrap(),
            &dir,
        )
        .unwrap();
        let (l2, _) = run(&again, &reference);
        let (l1, _) = run(&model, &reference);
        assert!(
            max_abs(l1, l2) < 1e-6,
            "{name}: export -> import changed the logits"
        );
    }
}
