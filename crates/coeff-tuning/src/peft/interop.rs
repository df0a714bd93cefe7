//! LoRA / DoRA adapters in Hugging Face PEFT's own file layout, for any model of any crate,
//! so Python users load what was trained here (`PeftModel.from_pretrained(model, dir)`) and
//! adapters trained with PEFT load here.
//!
//! Layout (peft 0.21): `adapter_config.json` and `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_A.weight [r, in]`, `.lora_B.weight [out, r]`, DoRA
//! `.lora_magnitude_vector [out]`, and `modules_to_save` as `base_model.model.<module>.weight`
//! / `.bias`. A model crate supplies only the names ([`PeftNames`]): our layer path <->
//! the reference library's module name.
//!
//! PEFT has no Coeff-Tuning: the alpha matrices travel in this project's own adapter file
//! ([`save_adapter`](super::save_adapter)). Exporting an adapter that has them writes the
//! LoRA / DoRA part and reports the Coeff layers left out ([`PeftExport`]).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use super::{inject, params, Adaptable, Injected, LoraConfig, PeftConfig};
use crate::checkpoint::{write_f32_safetensors, Checkpoint, KeyTable};
use crate::error::{PeftError, Result};
use crate::io::transpose;

/// Tensors by name: shape and f32 values.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every key of a PEFT adapter file starts with this.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// How a model's layers are named in the reference library (what PEFT sees).
pub trait PeftNames {
    /// The reference module name of our linear layer `ours` (e.g. `layers.0.attn.query` ->
    /// `encoder.layer.0.attention.self.query`), or `None` if it has none.
    fn peft_module(&self, ours: &str) -> Option<String>;
    /// Our layer path of a reference module name (every naming generation the crate reads).
    fn our_layer(&self, module: &str) -> Option<String>;
    /// Modules saved whole (`modules_to_save`): `(our PeftLinear path, reference module)`.
    fn saved_modules(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Names read off a model's checkpoint [`KeyTable`]: for most Hugging Face models the module
/// PEFT targets is the checkpoint key of its weight without `.weight`. `prefix` is the
/// module prefix of the model class PEFT wraps (`model.` for `BartForConditionalGeneration`,
/// `text_model.` for `CLIPTextModel`, empty for `BertModel`); it is written on export and
/// optional on import (besides the table's own prefixes).
pub struct TableNames<'a> {
    /// The model's key table.
    pub table: KeyTable<'a>,
    /// Module prefix written on export.
    pub prefix: &'a str,
    /// `(our PeftLinear path, reference module)` saved whole.
    pub saved: Vec<(String, String)>,
}

impl PeftNames for TableNames<'_> {
    fn peft_module(&self, ours: &str) -> Option<String> {
        let key = self
            .table
            .checkpoint_key(&format!("{ours}.base.weight"))
            .ok()??;
        Some(format!("{}{}", self.prefix, key.strip_suffix(".weight")?))
    }

    fn our_layer(&self, module: &str) -> Option<String> {
        let module = module.strip_prefix(self.prefix).unwrap_or(module);
        self.table.module_path(module).ok()?
    }

    fn saved_modules(&self) -> Vec<(String, String)> {
        self.saved.clone()
    }
}

/// What [`export_peft`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftExport {
    /// Tensors in `adapter_model.safetensors`.
    pub tensors: usize,
    /// Coeff-Tuning layers of the adapter that PEFT cannot hold (save them with
    /// `save_adapter`).
    pub coeff_layers_left_out: Vec<String>,
}

fn bad(path: &Path, message: impl Into<String>) -> PeftError {
    PeftError::BadAdapterConfig {
        file: path.to_path_buf(),
        message: message.into(),
    }
}

/// `key` without the first of `leaves`' suffixes it ends with, and that suffix's name.
pub(crate) fn split_leaf<'a>(
    key: &'a str,
    leaves: &[(&str, &'static str)],
) -> Option<(&'a str, &'static str)> {
    leaves
        .iter()
        .find_map(|(suffix, leaf)| key.strip_suffix(suffix).map(|m| (m, *leaf)))
}

/// An error listing the keys of `file` that nothing took, if there are any.
pub(crate) fn no_unexpected(file: &Path, keys: Vec<String>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    Err(PeftError::UnexpectedKeys {
        file: file.to_path_buf(),
        keys,
    })
}

/// `[a, b]` row-major -> `[b, a]`, with the shape.
fn transposed(shape: &[usize], data: &[f32]) -> (Vec<usize>, Vec<f32>) {
    (
        vec![shape[1], shape[0]],
        transpose(data, shape[0], shape[1]),
    )
}

/// Trained parameter values by path.
fn trained_values<B: Backend, M: Module<B>>(model: &M, injected: &Injected) -> Tensors {
    params::collect_params(model, &injected.trainable_prefixes())
        .into_iter()
        .map(|(p, s, v)| (p, (s, v)))
        .collect()
}

/// The LoRA / DoRA tensors of `injected` under `prefix` + the reference module names, in
/// PEFT's layout, and those module names.
fn lora_tensors<B: Backend, M: Module<B>>(
    model: &M,
    injected: &Injected,
    names: &dyn PeftNames,
    cfg_path: &Path,
    prefix: &str,
) -> Result<(Tensors, Vec<String>)> {
    let lora = injected
        .config
        .lora
        .as_ref()
        .ok_or_else(|| bad(cfg_path, "the adapter has no LoRA/DoRA part to export"))?;
    let values = trained_values(model, injected);
    let get = |param: String| {
        values
            .get(&param)
            .ok_or_else(|| bad(cfg_path, format!("model parameter `{param}` missing")))
    };
    let mut tensors = BTreeMap::new();
    let mut modules = Vec::new();
    for ours in &injected.lora_layers {
        let module = names
            .peft_module(ours)
            .ok_or_else(|| bad(cfg_path, format!("layer `{ours}` has no PEFT module name")))?;
        let (a_shape, a) = get(format!("{ours}.lora.a"))?; // [in, r]
        let (b_shape, b) = get(format!("{ours}.lora.b"))?; // [r, out]
        if a_shape.len() != 2 || b_shape.len() != 2 {
            return Err(bad(
                cfg_path,
                format!("layer `{ours}` is not a linear layer; PEFT export covers linear LoRA"),
            ));
        }
        let key = format!("{prefix}{module}");
        tensors.insert(format!("{key}.lora_A.weight"), transposed(a_shape, a));
        tensors.insert(format!("{key}.lora_B.weight"), transposed(b_shape, b));
        if lora.use_dora {
            let (m_shape, m) = get(format!("{ours}.lora.magnitude"))?;
            tensors.insert(
                format!("{key}.lora_magnitude_vector"),
                (m_shape.clone(), m.clone()),
            );
        }
        modules.push(module);
    }
    Ok((tensors, modules))
}

/// Write the LoRA / DoRA part of `injected` (and its saved modules) in PEFT's layout.
pub fn export_peft<B: Backend, M: Module<B>>(
    model: &M,
    injected: &Injected,
    names: &dyn PeftNames,
    dir: &Path,
) -> Result<PeftExport> {
    let cfg_path = dir.join("adapter_config.json");
    let lora = injected
        .config
        .lora
        .as_ref()
        .ok_or_else(|| bad(&cfg_path, "the adapter has no LoRA/DoRA part to export"))?;
    let (mut tensors, modules) = lora_tensors(model, injected, names, &cfg_path, PEFT_PREFIX)?;
    let values = trained_values(model, injected);
    let get = |param: String| {
        values
            .get(&param)
            .ok_or_else(|| bad(&cfg_path, format!("model parameter `{param}` missing")))
    };
    let saved_names = names.saved_modules();
    let mut modules_to_save = Vec::new();
    for saved in &injected.saved_modules {
        let (_, peft) = saved_names
            .iter()
            .find(|(o, _)| o == saved)
            .ok_or_else(|| {
                bad(
                    &cfg_path,
                    format!("modules_to_save `{saved}` has no PEFT module name"),
                )
            })?;
        let (w_shape, w) = get(format!("{saved}.base.weight"))?;
        tensors.insert(
            format!("{PEFT_PREFIX}{peft}.weight"),
            transposed(w_shape, w),
        );
        if let Some((s, b)) = values.get(&format!("{saved}.base.bias")) {
            tensors.insert(format!("{PEFT_PREFIX}{peft}.bias"), (s.clone(), b.clone()));
        }
        // PEFT matches modules_to_save by the last name component(s).
        modules_to_save.push(peft.rsplit('.').next().unwrap_or(peft).to_string());
    }
    let target = format!(
        "^({})$",
        modules
            .iter()
            .map(|m| regex::escape(m))
            .collect::<Vec<_>>()
            .join("|")
    );
    let config = json!({
        "peft_type": "LORA",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": target,
        "use_dora": lora.use_dora,
        "use_rslora": false,
        "bias": "none",
        "fan_in_fan_out": false,
        "modules_to_save": if modules_to_save.is_empty() { Value::Null } else { json!(modules_to_save) },
        "inference_mode": true,
        "init_lora_weights": true,
        "task_type": Value::Null,
        "base_model_name_or_path": Value::Null,
    });
    std::fs::create_dir_all(dir).map_err(|source| PeftError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_string_pretty(&config).expect("json");
    crate::io::write_atomic(&cfg_path, json.as_bytes()).map_err(|source| PeftError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let n = tensors.len();
    write_f32_safetensors(&dir.join("adapter_model.safetensors"), &tensors)?;
    Ok(PeftExport {
        tensors: n,
        coeff_layers_left_out: injected.coeff_layers.clone(),
    })
}

/// The LoRA config of a PEFT `adapter_config.json`; what this crate cannot reproduce is an
/// error naming the field.
fn read_config(cfg_path: &Path) -> Result<LoraConfig> {
    let text = std::fs::read_to_string(cfg_path).map_err(|source| PeftError::Io {
        path: cfg_path.to_path_buf(),
        source,
    })?;
    let c: Value =
        serde_json::from_str(&text).map_err(|e| bad(cfg_path, format!("not valid JSON: {e}")))?;
    lora_config(&c, cfg_path)
}

/// The LoRA config of a PEFT config object (`path` names where it came from in errors).
fn lora_config(c: &Value, cfg_path: &Path) -> Result<LoraConfig> {
    let field = |k: &str| c.get(k).filter(|v| !v.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad(
                cfg_path,
                format!("peft_type {other:?} is not supported (LORA)"),
            ))
        }
    }
    for k in ["use_rslora", "lora_bias", "fan_in_fan_out"] {
        if field(k).and_then(Value::as_bool) == Some(true) {
            return Err(bad(cfg_path, format!("`{k}: true` is not supported")));
        }
    }
    if let Some(b) = field("bias")
        .and_then(Value::as_str)
        .filter(|b| *b != "none")
    {
        return Err(bad(
            cfg_path,
            format!("`bias: {b}` is not supported (none)"),
        ));
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if field(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(cfg_path, format!("per-module `{k}` is not supported")));
        }
    }
    if field("layers_to_transform").is_some() {
        return Err(bad(cfg_path, "`layers_to_transform` is not supported"));
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0 && r <= 1 << 16)
        .ok_or_else(|| bad(cfg_path, "`r` is missing or not in 1..=65536"))?
        as usize;
    Ok(LoraConfig::new()
        .with_rank(rank)
        .with_alpha(field("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0))
        .with_dropout(field("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0))
        .with_use_dora(field("use_dora").and_then(Value::as_bool).unwrap_or(false)))
}

/// Inject the adapter of a PEFT folder into `model` and load its values. Every tensor must
/// find its layer and every adapter parameter its tensor, with matching shapes.
pub fn import_peft<B: Backend, M: Module<B> + Adaptable<B>>(
    model: M,
    names: &dyn PeftNames,
    dir: &Path,
) -> Result<(M, Injected)> {
    let cfg_path = dir.join("adapter_config.json");
    let lora = read_config(&cfg_path)?;
    import_tensors(
        model,
        names,
        lora,
        &dir.join("adapter_model.safetensors"),
        PEFT_PREFIX,
    )
}

/// Inject `lora` into the layers the tensors of `weights` (keys `prefix` + module name + the
/// LoRA leaf) name, and load them.
fn import_tensors<B: Backend, M: Module<B> + Adaptable<B>>(
    model: M,
    names: &dyn PeftNames,
    lora: LoraConfig,
    weights: &Path,
    prefix: &str,
) -> Result<(M, Injected)> {
    let ckpt = Checkpoint::open(weights)?;
    let entries = ckpt
        .keys()
        .into_iter()
        .map(|key| {
            let (shape, data) = ckpt.read_f32(&key)?;
            Ok((key, shape, data))
        })
        .collect::<Result<Vec<_>>>()?;
    load_entries(model, names, lora, entries, weights, prefix)
}

/// Inject `lora` into the layers that `entries` (PEFT's layout: `prefix` + module name +
/// `.lora_A.weight [r, in]`, `.lora_B.weight [out, r]`, `.lora_magnitude_vector [out]`, or a
/// saved module's `.weight` / `.bias`) name, and load them. `weights` names the file in errors.
pub(crate) fn load_entries<B: Backend, M: Module<B> + Adaptable<B>>(
    model: M,
    names: &dyn PeftNames,
    lora: LoraConfig,
    entries: Vec<(String, Vec<usize>, Vec<f32>)>,
    weights: &Path,
    prefix: &str,
) -> Result<(M, Injected)> {
    let cfg_path = weights.to_path_buf();
    let weights = weights.to_path_buf();
    let saved_names = names.saved_modules();
    let mut layers = std::collections::BTreeSet::new();
    let mut saved = std::collections::BTreeSet::new();
    let mut values: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    // parameter -> (file key, shape in the file)
    let mut sources: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for (key, shape, data) in entries {
        let Some(rest) = key.strip_prefix(prefix) else {
            unexpected.push(key);
            continue;
        };
        let whole = saved_names.iter().find_map(|(ours, peft)| {
            let leaf = rest.strip_prefix(peft.as_str())?.strip_prefix('.')?;
            matches!(leaf, "weight" | "bias").then(|| (ours.clone(), leaf))
        });
        if let Some((ours, leaf)) = whole {
            let param = format!("{ours}.base.{leaf}");
            sources.insert(param.clone(), (key.clone(), shape.clone()));
            let v = match (leaf, shape.len()) {
                ("weight", 2) => transposed(&shape, &data),
                _ => (shape, data),
            };
            values.insert(param, v);
            saved.insert(ours);
            continue;
        }
        let leaves = [
            (".lora_A.weight", "a"),
            (".lora_B.weight", "b"),
            (".lora_magnitude_vector", "magnitude"),
            (".lora_magnitude_vector.weight", "magnitude"),
        ];
        let Some((module, leaf)) = split_leaf(rest, &leaves) else {
            unexpected.push(key);
            continue;
        };
        let Some(ours) = names.our_layer(module) else {
            unexpected.push(key);
            continue;
        };
        let param = format!("{ours}.lora.{leaf}");
        sources.insert(param.clone(), (key.clone(), shape.clone()));
        let v = match (leaf, shape.len()) {
            ("a" | "b", 2) => transposed(&shape, &data),
            ("magnitude", _) => (shape, data),
            _ => {
                return Err(bad(
                    &weights,
                    format!("tensor `{key}` has shape {shape:?}; only linear LoRA is read"),
                ))
            }
        };
        values.insert(param, v);
        layers.insert(ours);
    }
    no_unexpected(&weights, unexpected)?;
    if layers.is_empty() {
        return Err(bad(&cfg_path, "the adapter holds no LoRA tensors"));
    }
    let config = PeftConfig {
        lora: Some(lora),
        target_modules: layers.into_iter().collect(),
        coeff: None,
        coeff_targets: vec![],
        exclude_modules: vec![],
        modules_to_save: saved.into_iter().collect(),
    };
    let (model, injected) = inject(model, &config)?;
    let expected = params::param_shapes(&model, &injected.trainable_prefixes());
    for (path, shape) in &expected {
        let Some((found, _)) = values.get(path) else {
            return Err(PeftError::MissingKey {
                file: weights,
                key: format!("(model parameter `{path}`)"),
                expected: shape.clone(),
            });
        };
        if found != shape {
            // Report both in the file's layout (PEFT's `[out, in]` for matrices).
            let (key, in_file) = sources[path].clone();
            let expected = match shape.len() {
                2 => vec![shape[1], shape[0]],
                _ => shape.clone(),
            };
            return Err(PeftError::ShapeMismatch {
                file: weights,
                key,
                found: in_file,
                expected,
            });
        }
    }
    Ok((params::replace_params(model, &values), injected))
}

/// The safetensors metadata key under which diffusers keeps the LoRA config of each component.
pub const DIFFUSERS_METADATA_KEY: &str = "lora_adapter_metadata";

/// Write the LoRA / DoRA part of `injected` in the file diffusers' `load_lora_weights` reads
/// (`pytorch_lora_weights.safetensors`): keys `<component>.<module>.lora_A.weight` ...,
/// and the PEFT config as `<component>.r`, `<component>.lora_alpha`, ... in the
/// `lora_adapter_metadata` JSON, as `save_lora_weights` writes them. `component` is
/// `unet` (or `text_encoder`, `text_encoder_2`, `transformer`).
pub fn export_diffusers_lora<B: Backend, M: Module<B>>(
    model: &M,
    injected: &Injected,
    names: &dyn PeftNames,
    component: &str,
    path: &Path,
) -> Result<PeftExport> {
    let lora = injected
        .config
        .lora
        .as_ref()
        .ok_or_else(|| bad(path, "the adapter has no LoRA/DoRA part to export"))?;
    if !injected.saved_modules.is_empty() {
        return Err(bad(
            path,
            format!(
                "modules_to_save ({}) have no place in a diffusers LoRA file",
                injected.saved_modules.join(", ")
            ),
        ));
    }
    let (tensors, modules) = lora_tensors(model, injected, names, path, &format!("{component}."))?;
    let config = json!({
        "peft_type": "LORA",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "use_dora": lora.use_dora,
        "use_rslora": false,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    let prefixed: serde_json::Map<String, Value> = config
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (format!("{component}.{k}"), v.clone()))
        .collect();
    let meta = serde_json::to_string_pretty(&prefixed).expect("json");
    let data: Vec<(String, burn::tensor::TensorData)> = tensors
        .into_iter()
        .map(|(k, (shape, v))| (k, burn::tensor::TensorData::new(v, shape)))
        .collect();
    let n = data.len();
    crate::checkpoint::write_safetensors(
        path,
        data.iter().map(|(k, d)| (k.as_str(), d)),
        &[("format", "pt"), (DIFFUSERS_METADATA_KEY, &meta)],
    )?;
    Ok(PeftExport {
        tensors: n,
        coeff_layers_left_out: injected.coeff_layers.clone(),
    })
}

/// Inject and load the `component` part of a diffusers LoRA file (`load_lora_weights`'s
/// format, PEFT key layout, config in the `lora_adapter_metadata`). Without metadata (older
/// files) the rank is read off the tensors and `lora_alpha` = rank (diffusers' default).
pub fn import_diffusers_lora<B: Backend, M: Module<B> + Adaptable<B>>(
    model: M,
    names: &dyn PeftNames,
    component: &str,
    path: &Path,
) -> Result<(M, Injected)> {
    let ckpt = Checkpoint::open(path)?;
    let prefix = format!("{component}.");
    let meta = ckpt.metadata().get(DIFFUSERS_METADATA_KEY).cloned();
    let lora = match meta {
        Some(text) => {
            let all: Value = serde_json::from_str(&text)
                .map_err(|e| bad(path, format!("`{DIFFUSERS_METADATA_KEY}` is not JSON: {e}")))?;
            let own: serde_json::Map<String, Value> = all
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| {
                            Some((k.strip_prefix(&prefix)?.to_string(), v.clone()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            lora_config(&Value::Object(own), path)?
        }
        None => {
            let rank = ckpt
                .keys()
                .into_iter()
                .find(|k| k.starts_with(&prefix) && k.ends_with(".lora_A.weight"))
                .map(|k| ckpt.info(&k).map(|i| i.shape.first().copied().unwrap_or(0)))
                .transpose()?
                .filter(|&r| r > 0)
                .ok_or_else(|| bad(path, format!("no `{prefix}*.lora_A.weight` tensor")))?;
            LoraConfig::new().with_rank(rank).with_alpha(rank as f64)
        }
    };
    import_tensors(model, names, lora, path, &prefix)
}
