//! Adapter files: only what was trained, as safetensors plus a JSON config.
//!
//! `DIR/coeff_adapter_config.json` holds the [`PeftConfig`] and a format tag;
//! `DIR/coeff_adapter.safetensors` holds one tensor per trainable parameter, keyed by its
//! module path (e.g. `encoder.layers.0.attn.coeff.alpha`, `...attn.query.lora.a`), in Burn's
//! layout (`lora.a: [d_input, r]`). Files are written to a temporary name and renamed, so a
//! crash never leaves a half-written adapter.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{inject, params, Adaptable, Injected, PeftConfig};
use crate::error::{PeftError, Result};

/// Name of the JSON config inside an adapter directory.
pub const ADAPTER_CONFIG_FILE: &str = "coeff_adapter_config.json";
/// Name of the tensor file inside an adapter directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "coeff_adapter.safetensors";
/// Format tag written into the config.
pub const FORMAT: &str = "coeff-tuning-burn/adapter/v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    format: String,
    #[serde(flatten)]
    config: PeftConfig,
}

/// Save the trained adapter of `model` (injected as `injected`) into `dir`.
pub fn save_adapter<B: Backend, M: Adaptable<B>>(
    model: &M,
    injected: &Injected,
    dir: impl AsRef<Path>,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;

    let config = ConfigFile {
        format: FORMAT.to_string(),
        config: injected.config.clone(),
    };
    let json = serde_json::to_vec_pretty(&config).expect("config serialises");
    write_atomic(&dir.join(ADAPTER_CONFIG_FILE), &json)?;

    let tensors = params::collect_params(model, &injected.trainable_prefixes());
    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    let data = crate::io::f32_safetensors(
        tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice())),
        &[("format", FORMAT)],
    )
    .map_err(|source| PeftError::Safetensors {
        path: weights.clone(),
        tensor: None,
        source,
    })?;
    write_atomic(&weights, &data)
}

/// Inject the adapter saved in `dir` into `model` and load its tensors.
///
/// Every tensor the injected model expects must be in the file with the same shape and finite
/// values, and the file may hold nothing else; otherwise the error names the key. A malformed
/// file is an error naming the tensor its header is wrong about. The config's LoRA rank is
/// checked against the file's factors before anything is allocated from it.
pub fn load_adapter<B: Backend, M: Adaptable<B>>(
    model: M,
    dir: impl AsRef<Path>,
) -> Result<(M, Injected)> {
    let dir = dir.as_ref();
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let config = read_config(&config_path)?;

    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).map_err(|source| io(&weights, source))?;
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|source| PeftError::Safetensors {
            path: weights.clone(),
            tensor: match &source {
                safetensors::SafeTensorError::InvalidOffset(t)
                | safetensors::SafeTensorError::TensorNotFound(t) => Some(t.clone()),
                _ => crate::io::blame_safetensors_header(&bytes),
            },
            source,
        })?;
    check_rank(&config, &config_path, &file, &weights)?;
    let (model, injected) = inject(model, &config)?;

    let expected = params::param_shapes(&model, &injected.trainable_prefixes());
    let mut values = BTreeMap::new();
    for (key, shape) in &expected {
        let view = file.tensor(key).map_err(|_| PeftError::MissingKey {
            file: weights.clone(),
            key: key.clone(),
            expected: shape.clone(),
        })?;
        if view.shape() != shape.as_slice() {
            return Err(PeftError::ShapeMismatch {
                file: weights.clone(),
                key: key.clone(),
                found: view.shape().to_vec(),
                expected: shape.clone(),
            });
        }
        let data = crate::io::view_to_f32(&view).ok_or_else(|| PeftError::BadDtype {
            file: weights.clone(),
            key: key.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let count = data.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(PeftError::NonFinite {
                file: weights.clone(),
                key: key.clone(),
                count,
                numel: data.len(),
            });
        }
        values.insert(key.clone(), (shape.clone(), data));
    }
    let mut extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(PeftError::UnexpectedKeys {
            file: weights,
            keys: extra,
        });
    }
    Ok((params::replace_params(model, &values), injected))
}

/// The config's LoRA rank against the factors stored in the file (`*.lora.a`, `*.lora.b` of
/// linear and conv layers), before `inject` allocates factors of that rank: a config that says
/// `rank: 1000000000` is refused here instead of exhausting memory.
fn check_rank(
    config: &PeftConfig,
    config_path: &Path,
    file: &safetensors::SafeTensors<'_>,
    weights: &Path,
) -> Result<()> {
    let Some(lora) = &config.lora else {
        return Ok(());
    };
    let mut names = file.names();
    names.sort();
    let mut factors = 0;
    for name in names {
        let shape = file
            .tensor(name)
            .map(|v| v.shape().to_vec())
            .unwrap_or_default();
        // Where the rank sits: linear `a [in, r]`, `b [r, out]`; conv `a [r, in, kh, kw]`,
        // `b [out, r, 1, 1]`.
        let (a, b) = (name.ends_with(".lora.a"), name.ends_with(".lora.b"));
        let axis = match (a, b, shape.len()) {
            (true, _, 4) | (_, true, 2) => 0,
            (true, _, _) | (_, true, _) => 1,
            _ => continue,
        };
        let rank = shape.get(axis).copied();
        factors += 1;
        if rank != Some(lora.rank) {
            return Err(PeftError::BadAdapterConfig {
                file: config_path.to_path_buf(),
                message: format!(
                    "lora.rank is {}, but `{name}` in {} has shape {shape:?}",
                    lora.rank,
                    weights.display()
                ),
            });
        }
    }
    if factors == 0 {
        return Err(PeftError::BadAdapterConfig {
            file: config_path.to_path_buf(),
            message: format!(
                "`lora` is set, but {} holds no LoRA factor (`*.lora.a`, `*.lora.b`)",
                weights.display()
            ),
        });
    }
    Ok(())
}

/// Read and check an adapter config file.
pub fn read_config(path: &Path) -> Result<PeftConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| io(path, source))?;
    let bad = |message: String| PeftError::BadAdapterConfig {
        file: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(bad(format!(
                "format `{other}` is not supported by this build (expected `{FORMAT}`)"
            )))
        }
        None => return Err(bad(format!("missing `format` field (expected `{FORMAT}`)"))),
    }
    let file: ConfigFile = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    Ok(file.config)
}

fn io(path: &Path, source: std::io::Error) -> PeftError {
    PeftError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically (see [`crate::io::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::io::write_atomic(path, bytes).map_err(|source| io(path, source))
}
