//! Bad input gives errors that name the file, key, shape, pattern or value.

mod common;

use coeff_tuning::peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use coeff_tuning::{
    inject, load_adapter, save_adapter, CheckpointError, LoadError, Method, PeftError,
};
use common::{Inner, TinyModel};

fn saved_adapter(method: Method) -> (tempfile::TempDir, TinyModel<Inner>) {
    let dev = Default::default();
    let base = TinyModel::<Inner>::new(&dev);
    let (model, injected) = inject(base.clone(), &method.config(2, &["query", "value"])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&model, &injected, dir.path()).unwrap();
    (dir, base)
}

#[test]
fn unmatched_target_lists_existing_layers() {
    let base = TinyModel::<Inner>::new(&Default::default());
    let err = inject(base, &Method::Lora.config(2, &["q_proj"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`q_proj`") && err.contains("target_modules"),
        "{err}"
    );
    assert!(
        err.contains("blocks.0.attn.query") && err.contains("blocks.1.fc2"),
        "{err}"
    );
}

#[test]
fn unmatched_module_to_save_is_an_error() {
    let base = TinyModel::<Inner>::new(&Default::default());
    let mut cfg = Method::Coeff.config(2, &[]);
    cfg.modules_to_save = vec!["classifier".into()];
    let err = inject(base, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("`classifier`") && err.contains("head"),
        "{err}"
    );
}

#[test]
fn double_injection_is_refused() {
    let base = TinyModel::<Inner>::new(&Default::default());
    let (model, _) = inject(base, &Method::Coeff.config(2, &[])).unwrap();
    let err = inject(model, &Method::Coeff.config(2, &[])).unwrap_err();
    assert!(
        matches!(err, PeftError::AlreadyAdapted(ref p) if p == "blocks.0.attn"),
        "{err}"
    );
}

#[test]
fn missing_key_is_named() {
    let (dir, base) = saved_adapter(Method::LoraCoeff);
    // Rewrite the file without one tensor.
    let path = dir.path().join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "blocks.1.attn.coeff.alpha")
        .collect();
    safetensors::serialize_to_file(kept, &None, &path).unwrap();
    let err = load_adapter(base, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("blocks.1.attn.coeff.alpha") && err.contains(ADAPTER_WEIGHTS_FILE),
        "{err}"
    );
}

#[test]
fn shape_mismatch_is_named() {
    let (dir, base) = saved_adapter(Method::Lora);
    // Saved with rank 2; claim rank 4 in the config.
    let cfg_path = dir.path().join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"rank\": 2", "\"rank\": 4");
    std::fs::write(&cfg_path, text).unwrap();
    // The rank is compared with the file's factors before anything of that rank is allocated.
    let err = load_adapter(base.clone(), dir.path()).unwrap_err();
    match &err {
        PeftError::BadAdapterConfig { file, message } => {
            assert!(file.ends_with(ADAPTER_CONFIG_FILE), "{err}");
            assert!(message.contains("lora.rank is 4"), "{err}");
            assert!(
                message.contains(".lora.a") || message.contains(".lora.b"),
                "{err}"
            );
        }
        other => panic!("expected a config error, got {other}"),
    }
    // A factor of the right rank but the wrong width is a shape mismatch naming the key.
    std::fs::write(
        &cfg_path,
        std::fs::read_to_string(&cfg_path)
            .unwrap()
            .replace("\"rank\": 4", "\"rank\": 2"),
    )
    .unwrap();
    rewrite(dir.path(), |name, shape, data| {
        if name == "blocks.0.attn.query.lora.a" {
            *shape = vec![shape[0] / 2, 2];
            data.truncate(data.len() / 2);
        }
    });
    match load_adapter(base, dir.path()).unwrap_err() {
        PeftError::ShapeMismatch {
            key,
            found,
            expected,
            ..
        } => {
            assert_eq!(key, "blocks.0.attn.query.lora.a");
            assert_ne!(found, expected);
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
}

/// Rewrite an adapter's tensors (f32) through `edit(name, shape, values)`.
fn rewrite(dir: &std::path::Path, mut edit: impl FnMut(&str, &mut Vec<usize>, &mut Vec<f32>)) {
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = coeff_tuning::io::view_to_f32(&v).unwrap();
            (k, v.shape().to_vec(), data)
        })
        .collect();
    for (k, s, v) in &mut tensors {
        edit(k, s, v);
    }
    let out = coeff_tuning::io::f32_safetensors(
        tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
        &[],
    )
    .unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn a_huge_rank_is_refused_before_allocating() {
    let (dir, base) = saved_adapter(Method::Lora);
    let cfg_path = dir.path().join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"rank\": 2", "\"rank\": 1000000000000");
    std::fs::write(&cfg_path, text).unwrap();
    let err = load_adapter(base, dir.path()).unwrap_err().to_string();
    assert!(err.contains("lora.rank is 1000000000000"), "{err}");
    assert!(err.contains(ADAPTER_CONFIG_FILE), "{err}");
}

#[test]
fn non_finite_adapter_values_are_named() {
    let (dir, base) = saved_adapter(Method::LoraCoeff);
    rewrite(dir.path(), |name, _, data| {
        if name == "blocks.1.attn.coeff.alpha" {
            data[0] = f32::NAN;
            data[1] = f32::INFINITY;
        }
    });
    let err = load_adapter(base, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("`blocks.1.attn.coeff.alpha`") && err.contains("2 non-finite"),
        "{err}"
    );
    assert!(err.contains(ADAPTER_WEIGHTS_FILE), "{err}");
}

#[test]
fn a_malformed_adapter_file_names_the_tensor() {
    let (dir, base) = saved_adapter(Method::Coeff);
    // A header whose second tensor claims 4 values but spans 8 bytes (`TensorInvalidInfo`,
    // which the parser reports without a name).
    let header = r#"{"blocks.0.attn.coeff.alpha":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"blocks.1.attn.coeff.alpha":{"dtype":"F32","shape":[2,2],"data_offsets":[8,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(dir.path().join(ADAPTER_WEIGHTS_FILE), bytes).unwrap();
    let err = load_adapter(base, dir.path()).unwrap_err().to_string();
    assert!(err.contains("tensor `blocks.1.attn.coeff.alpha`"), "{err}");
    assert!(err.contains(ADAPTER_WEIGHTS_FILE), "{err}");
}

#[test]
fn unexpected_keys_are_listed() {
    let (dir, base) = saved_adapter(Method::LoraCoeff);
    // The config now asks for coefficients only: the LoRA tensors are left over.
    let cfg_path = dir.path().join(ADAPTER_CONFIG_FILE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["lora"] = serde_json::Value::Null;
    cfg["target_modules"] = serde_json::json!([]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = load_adapter(base, dir.path()).unwrap_err().to_string();
    assert!(err.contains("blocks.0.attn.query.lora.a"), "{err}");
}

#[test]
fn unknown_format_and_fields_are_refused() {
    let (dir, base) = saved_adapter(Method::Coeff);
    let cfg_path = dir.path().join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, text.replace("adapter/v1", "adapter/v9")).unwrap();
    let err = load_adapter(base.clone(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter/v9") && err.contains(ADAPTER_CONFIG_FILE),
        "{err}"
    );

    std::fs::write(
        &cfg_path,
        text.replace("\"coeff\":", "\"method\": \"fact\", \"coeff\":"),
    )
    .unwrap();
    let err = load_adapter(base, dir.path()).unwrap_err().to_string();
    assert!(err.contains("method"), "{err}");
}

#[test]
fn missing_directory_names_the_path() {
    let base = TinyModel::<Inner>::new(&Default::default());
    let err = load_adapter(base, "/nonexistent/adapter-dir")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/adapter-dir"), "{err}");
}

#[test]
fn out_of_range_dropout_is_refused() {
    let base = TinyModel::<Inner>::new(&Default::default());
    let mut cfg = Method::Coeff.config(2, &[]);
    cfg.coeff.as_mut().unwrap().dropout = 1.5;
    let err = inject(base, &cfg).unwrap_err().to_string();
    assert!(err.contains("1.5"), "{err}");
}

/// A model whose `visit_sites` misspells a field name: injecting must fail, naming the path,
/// instead of attaching an adapter the forward pass never uses.
mod misspelled {
    use burn::module::Module;
    use burn::tensor::backend::Backend;
    use coeff_tuning::peft::join;
    use coeff_tuning::{
        inject, Adaptable, Method, MultiHeadAttention, MultiHeadAttentionConfig, PeftError,
        PeftResult, Site,
    };

    #[derive(Module, Debug)]
    pub struct Net<B: Backend> {
        pub attention: MultiHeadAttention<B>,
    }

    impl<B: Backend> Adaptable<B> for Net<B> {
        fn visit_sites(
            &mut self,
            path: &str,
            f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
        ) -> PeftResult<()> {
            // The field is `attention`, not `attn`.
            self.attention.visit_sites(&join(path, "attn"), f)
        }
    }

    #[test]
    fn a_misspelled_site_path_is_an_error() {
        let dev = Default::default();
        let net = Net::<super::Inner> {
            attention: MultiHeadAttentionConfig::new(8, 2).init(&dev),
        };
        let err = inject(net, &Method::LoraCoeff.config(2, &["query"])).unwrap_err();
        assert!(matches!(err, PeftError::BadSitePath { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("`attn`") && msg.contains("attn.query.base.weight"),
            "{msg}"
        );
    }
}

#[test]
fn lora_attaches_to_a_conv2d_site() {
    use coeff_tuning::SiteKind;
    let base = TinyModel::<Inner>::new(&Default::default());
    let (mut model, injected) = inject(base, &Method::Dora.config(2, &["mixer"])).unwrap();
    assert_eq!(injected.lora_layers, vec!["mixer".to_string()]);
    let sites = coeff_tuning::peft::list_sites(&mut model).unwrap();
    assert!(sites.contains(&("mixer".to_string(), SiteKind::Conv2d)));
    let lora = model.mixer.lora.as_ref().expect("adapter attached");
    // PEFT's layout: A is a conv with the base kernel, B a 1x1 conv.
    assert_eq!(lora.a.dims(), [2, common::D_MODEL, 3, 1]);
    assert_eq!(lora.b.dims(), [common::D_MODEL, 2, 1, 1]);
    assert!(lora.magnitude.is_some());
    // Only the adapter is trainable: A, B, magnitude.
    let expected = 2 * common::D_MODEL * 3 + common::D_MODEL * 2 + common::D_MODEL;
    assert_eq!(injected.params.trainable, expected);
}

#[test]
fn load_error_names_the_file_and_wraps_the_core_kinds() {
    let e = LoadError::config("dir/config.json", "`hidden_size` is missing");
    assert_eq!(
        e.to_string(),
        "config dir/config.json: `hidden_size` is missing"
    );
    let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    let e = LoadError::io("dir/model.safetensors", missing);
    assert_eq!(e.to_string(), "dir/model.safetensors: no such file");
    assert!(std::error::Error::source(&e).is_some());
    // Checkpoint and adapter errors pass through with their own text.
    let e: LoadError = CheckpointError::MissingKey {
        path: "w.safetensors".into(),
        key: "k".into(),
    }
    .into();
    assert_eq!(e.to_string(), "checkpoint w.safetensors has no tensor `k`");
    assert!(matches!(
        e,
        LoadError::Checkpoint(CheckpointError::MissingKey { .. })
    ));
    let e: LoadError = PeftError::EmptyConfig.into();
    assert_eq!(e.to_string(), PeftError::EmptyConfig.to_string());
    assert!(matches!(e, LoadError::Peft(PeftError::EmptyConfig)));
}
