//! PEFT interop of the text models: our LoRA / DoRA exports carry transformers' module names
//! and load back to the same outputs; the committed exports (`tests/fixtures/ours_*`) were
//! checked with `peft` itself by `scripts/fixtures/check_text_peft_export.py`, and an export
//! made now must equal them tensor for tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use coeff_tuning::checkpoint::{write_f32_safetensors, Checkpoint};
use coeff_tuning::peft::interop::{export_peft, import_peft, TableNames};
use coeff_tuning::peft::params;
use coeff_tuning::{inject, Method};
use coeff_vl::peft_format::{bart_names, bert_names};
use coeff_vl::{load_bart, load_bert};

type B = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn ids(ckpt: &Checkpoint, key: &str) -> Tensor<B, 2, Int> {
    let (shape, values) = ckpt.read_i64(key).unwrap();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Deterministic non-zero values for every trainable parameter (LoRA B starts at zero, which
/// would make any export look right).
fn fill<M: burn::module::Module<B>>(model: M, prefixes: &[String]) -> M {
    let mut values = BTreeMap::new();
    let mut state = 12345u64;
    for (path, shape, old) in params::collect_params(&model, prefixes) {
        let v: Vec<f32> = old
            .iter()
            .map(|o| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if path.ends_with("magnitude") {
                    o * (1.0 + 0.2 * u)
                } else {
                    0.3 * u
                }
            })
            .collect();
        values.insert(path, (shape, v));
    }
    params::replace_params(model, &values)
}

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// Tensors of two safetensors files are equal key for key.
fn same_files(a: &Path, b: &Path) {
    let (a, b) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    assert_eq!(a.keys(), b.keys());
    for k in a.keys() {
        assert_eq!(a.read_f32(&k).unwrap(), b.read_f32(&k).unwrap(), "{k}");
    }
}

/// Export to a temporary folder, compare with (or, with `COEFF_VL_WRITE_FIXTURES=1`, write)
/// the committed export, import into a fresh base and compare outputs.
fn check_export<M, F>(
    name: &str,
    tuned: &M,
    injected: &coeff_tuning::Injected,
    names: &TableNames,
    fresh: M,
    run: F,
) where
    M: burn::module::Module<B> + coeff_tuning::Adaptable<B>,
    F: Fn(&M) -> Tensor<B, 3>,
{
    let dir = tempfile::tempdir().unwrap();
    let export = export_peft(tuned, injected, names, dir.path()).unwrap();
    assert!(export.tensors > 0);
    let out = run(tuned);
    let committed = fixture(name);
    if std::env::var_os("COEFF_VL_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(&committed).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(dir.path().join(f), committed.join(f)).unwrap();
        }
        let data = out.clone().into_data();
        let mut t = BTreeMap::new();
        t.insert(
            "output".to_string(),
            (data.shape.to_vec(), data.to_vec::<f32>().unwrap()),
        );
        write_f32_safetensors(&committed.join("reference.safetensors"), &t).unwrap();
    }
    same_files(
        &dir.path().join("adapter_model.safetensors"),
        &committed.join("adapter_model.safetensors"),
    );
    let config = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
            .unwrap()
    };
    assert_eq!(config(dir.path()), config(&committed));
    let (imported, again) = import_peft(fresh, names, dir.path()).unwrap();
    assert_eq!(again.lora_layers, injected.lora_layers);
    let d = max_diff(run(&imported), out.clone());
    assert!(d < 1e-6, "{name}: re-imported adapter differs by {d}");
    let reference = Checkpoint::open(committed.join("reference.safetensors")).unwrap();
    let (shape, values) = reference.read_f32("output").unwrap();
    let d = max_diff(
        out,
        Tensor::from_data(TensorData::new(values, shape), &Default::default()),
    );
    assert!(
        d < 1e-5,
        "{name}: output differs from the committed reference by {d}"
    );
}

#[test]
fn bart_lora_exports_in_peft_layout_and_loads_back() {
    let dev = Default::default();
    let base = load_bart::<B>(fixture("bart_tiny"), &dev).unwrap();
    let config = Method::Lora.config(
        2,
        &[
            "attn.query",
            "attn.value",
            "cross_attn.query",
            "cross_attn.value",
            "mlp.fc1",
        ],
    );
    let (model, injected) = inject(base.clone(), &config).unwrap();
    let model = fill(model, &injected.trainable_prefixes());
    let reference = Checkpoint::open(fixture("bart_tiny").join("reference.safetensors")).unwrap();
    let run = |m: &coeff_vl::Bart<B>| {
        let mask = ids(&reference, "attention_mask");
        let enc = m
            .encode(ids(&reference, "input_ids"), Some(mask.clone()))
            .unwrap();
        m.decode(
            ids(&reference, "decoder_input_ids"),
            enc,
            Some(mask.equal_elem(0)),
        )
        .unwrap()
    };
    let names = bart_names();
    check_export("ours_bart_lora", &model, &injected, &names, base, run);
    let keys = Checkpoint::open(fixture("ours_bart_lora").join("adapter_model.safetensors"))
        .unwrap()
        .keys();
    assert!(keys.contains(
        &"base_model.model.model.decoder.layers.1.encoder_attn.v_proj.lora_B.weight".to_string()
    ));
}

#[test]
fn bert_dora_exports_in_peft_layout_and_loads_back() {
    let dev = Default::default();
    let base = load_bert::<B>(fixture("bert_tiny"), &dev).unwrap();
    let config = Method::Dora.config(2, &["attn.query", "attn.key", "attn.value", "attn.output"]);
    let (model, injected) = inject(base.clone(), &config).unwrap();
    let model = fill(model, &injected.trainable_prefixes());
    let reference = Checkpoint::open(fixture("bert_tiny").join("reference.safetensors")).unwrap();
    let run = |m: &coeff_vl::Bert<B>| {
        m.forward(
            ids(&reference, "input_ids"),
            Some(ids(&reference, "attention_mask")),
            Some(ids(&reference, "token_type_ids")),
        )
        .unwrap()
        .last_hidden_state
    };
    check_export(
        "ours_bert_dora",
        &model,
        &injected,
        &bert_names(),
        base,
        run,
    );
}
