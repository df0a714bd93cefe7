//! LoRA / DoRA adapters of a Hugging Face ViT in PEFT's own file layout, so Python users can
//! load what was trained here (`PeftModel.from_pretrained(vit, dir)`) and the other way round.
//!
//! Layout (peft 0.21, transformers 5): `adapter_config.json` and `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_A.weight [r, in]`, `.lora_B.weight [out, r]`,
//! DoRA `.lora_magnitude_vector [out]`, and `modules_to_save` as
//! `base_model.model.classifier.{weight,bias}`. `<module>` follows transformers 5's module
//! names (`vit.layers.0.attention.q_proj`); adapters saved with transformers 4 names
//! (`vit.encoder.layer.0.attention.attention.query`) are accepted on import.
//!
//! | ours | transformers 5 (written) | transformers 4 (also read) |
//! |---|---|---|
//! | `layers.{i}.attn.query` | `layers.{i}.attention.q_proj` | `encoder.layer.{i}.attention.attention.query` |
//! | `layers.{i}.attn.key` | `layers.{i}.attention.k_proj` | `encoder.layer.{i}.attention.attention.key` |
//! | `layers.{i}.attn.value` | `layers.{i}.attention.v_proj` | `encoder.layer.{i}.attention.attention.value` |
//! | `layers.{i}.attn.output` | `layers.{i}.attention.o_proj` | `encoder.layer.{i}.attention.output.dense` |
//! | `layers.{i}.mlp.fc1` | `layers.{i}.mlp.fc1` | `encoder.layer.{i}.intermediate.dense` |
//! | `layers.{i}.mlp.fc2` | `layers.{i}.mlp.fc2` | `encoder.layer.{i}.output.dense` |
//! | `head` (modules_to_save) | `classifier` | `classifier` |
//!
//! PEFT has no Coeff-Tuning: the alpha matrices travel in this project's own adapter file
//! (`coeff_tuning::save_adapter`). Exporting an adapter that has them writes the LoRA/DoRA
//! part and reports the Coeff layers that were left out.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use coeff_tuning::checkpoint::{write_f32_safetensors, Checkpoint, CheckpointError, ShapeMismatch};
use coeff_tuning::io::transpose;
use coeff_tuning::peft::params;
use coeff_tuning::{inject, Injected, LoraConfig, PeftConfig};
use regex::Regex;
use serde_json::{json, Value};

use crate::config::Family;
use crate::error::{Result, VitError};
use crate::model::VisionTransformer;

const PREFIX: &str = "base_model.model.";

fn err(path: &Path, message: String) -> VitError {
    VitError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// transformers 5 module name (inside the ViT) of one of our linear layers.
fn to_peft_module(ours: &str) -> Option<String> {
    let re = Regex::new(r"^layers\.(\d+)\.(attn\.(query|key|value|output)|mlp\.(fc1|fc2))$")
        .expect("static");
    let c = re.captures(ours)?;
    let leaf = match (c.get(3).map(|m| m.as_str()), c.get(4).map(|m| m.as_str())) {
        (Some("query"), _) => "attention.q_proj",
        (Some("key"), _) => "attention.k_proj",
        (Some("value"), _) => "attention.v_proj",
        (Some("output"), _) => "attention.o_proj",
        (_, Some("fc1")) => "mlp.fc1",
        (_, Some("fc2")) => "mlp.fc2",
        _ => return None,
    };
    Some(format!("layers.{}.{leaf}", &c[1]))
}

/// Our linear layer for a PEFT module name of either transformers generation.
fn from_peft_module(module: &str) -> Option<String> {
    let new =
        Regex::new(r"^layers\.(\d+)\.(attention\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(fc1|fc2))$")
            .expect("static");
    let old = Regex::new(
        r"^encoder\.layer\.(\d+)\.(attention\.attention\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$",
    )
    .expect("static");
    if let Some(c) = new.captures(module) {
        let ours = match &c[2] {
            "attention.q_proj" => "attn.query",
            "attention.k_proj" => "attn.key",
            "attention.v_proj" => "attn.value",
            "attention.o_proj" => "attn.output",
            "mlp.fc1" => "mlp.fc1",
            _ => "mlp.fc2",
        };
        return Some(format!("layers.{}.{ours}", &c[1]));
    }
    let c = old.captures(module)?;
    let ours = match &c[2] {
        "attention.attention.query" => "attn.query",
        "attention.attention.key" => "attn.key",
        "attention.attention.value" => "attn.value",
        "attention.output.dense" => "attn.output",
        "intermediate.dense" => "mlp.fc1",
        _ => "mlp.fc2",
    };
    Some(format!("layers.{}.{ours}", &c[1]))
}

/// The prefix of the ViT inside the PEFT-wrapped model: `vit.` for
/// `ViTForImageClassification`, none for `ViTModel`.
fn vit_prefix<B: Backend>(model: &VisionTransformer<B>) -> &'static str {
    if model.head.is_some() {
        "vit."
    } else {
        ""
    }
}

/// What [`export_peft`] wrote and left out.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftExport {
    /// Tensors written.
    pub tensors: usize,
    /// Attention layers whose Coeff-Tuning coefficients PEFT cannot hold.
    pub coeff_layers_left_out: Vec<String>,
}

/// Write the LoRA / DoRA part of `model`'s adapter (and a trained `head` in
/// `modules_to_save`) in PEFT's layout into `dir`.
pub fn export_peft<B: Backend>(
    model: &VisionTransformer<B>,
    injected: &Injected,
    dir: &Path,
) -> Result<PeftExport> {
    let cfg_path = dir.join("adapter_config.json");
    if model.config.family != Family::HfVit {
        return Err(err(
            &cfg_path,
            "PEFT export is implemented for Hugging Face ViT checkpoints".into(),
        ));
    }
    let lora = injected.config.lora.as_ref().ok_or_else(|| {
        err(
            &cfg_path,
            "the adapter has no LoRA/DoRA part to export".into(),
        )
    })?;
    let prefix = vit_prefix(model);
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut modules = Vec::new();
    let values: BTreeMap<String, (Vec<usize>, Vec<f32>)> =
        params::collect_params(model, &injected.trainable_prefixes())
            .into_iter()
            .map(|(p, s, v)| (p, (s, v)))
            .collect();
    for ours in &injected.lora_layers {
        let module = to_peft_module(ours)
            .ok_or_else(|| err(&cfg_path, format!("layer `{ours}` has no PEFT module name")))?;
        let get = |leaf: &str| {
            values
                .get(&format!("{ours}.lora.{leaf}"))
                .ok_or_else(|| err(&cfg_path, format!("`{ours}.lora.{leaf}` missing")))
        };
        let (a_shape, a) = get("a")?; // [in, r]
        let (b_shape, b) = get("b")?; // [r, out]
        let key = format!("{PREFIX}{prefix}{module}");
        tensors.insert(
            format!("{key}.lora_A.weight"),
            (
                vec![a_shape[1], a_shape[0]],
                transpose(a, a_shape[0], a_shape[1]),
            ),
        );
        tensors.insert(
            format!("{key}.lora_B.weight"),
            (
                vec![b_shape[1], b_shape[0]],
                transpose(b, b_shape[0], b_shape[1]),
            ),
        );
        if lora.use_dora {
            let (m_shape, m) = get("magnitude")?;
            tensors.insert(
                format!("{key}.lora_magnitude_vector"),
                (m_shape.clone(), m.clone()),
            );
        }
        modules.push(format!("{prefix}{module}"));
    }
    let mut modules_to_save = Vec::new();
    for saved in &injected.saved_modules {
        if saved != "head" {
            return Err(err(&cfg_path, format!("modules_to_save `{saved}` has no PEFT equivalent (only `head` -> `classifier`)")));
        }
        let (w_shape, w) = values
            .get("head.base.weight")
            .ok_or_else(|| err(&cfg_path, "head weight missing".into()))?;
        tensors.insert(
            format!("{PREFIX}classifier.weight"),
            (
                vec![w_shape[1], w_shape[0]],
                transpose(w, w_shape[0], w_shape[1]),
            ),
        );
        if let Some((s, b)) = values.get("head.base.bias") {
            tensors.insert(format!("{PREFIX}classifier.bias"), (s.clone(), b.clone()));
        }
        modules_to_save.push("classifier");
    }
    // An exact regex over the adapted modules: PEFT full-matches a string target_modules.
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
    std::fs::create_dir_all(dir).map_err(|source| VitError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_string_pretty(&config).expect("json");
    coeff_tuning::io::write_atomic(&cfg_path, json.as_bytes()).map_err(|source| VitError::Io {
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

/// Load a PEFT LoRA / DoRA adapter directory onto a Hugging Face ViT.
///
/// Refused with an error naming the field: other PEFT methods, `use_rslora`, `bias` other
/// than `none`, `lora_bias`, `fan_in_fan_out`, per-module `rank_pattern` / `alpha_pattern`,
/// `layers_to_transform`. Every tensor in the file must be used.
pub fn import_peft<B: Backend>(
    model: VisionTransformer<B>,
    dir: &Path,
) -> Result<(VisionTransformer<B>, Injected)> {
    let cfg_path = dir.join("adapter_config.json");
    if model.config.family != Family::HfVit {
        return Err(err(
            &cfg_path,
            "PEFT import is implemented for Hugging Face ViT checkpoints".into(),
        ));
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| VitError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let c: Value =
        serde_json::from_str(&text).map_err(|e| err(&cfg_path, format!("not valid JSON: {e}")))?;
    let field = |k: &str| c.get(k).filter(|v| !v.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(err(
                &cfg_path,
                format!("peft_type {other:?} is not supported (LORA)"),
            ))
        }
    }
    let refuse_true = |k: &str| -> Result<()> {
        if field(k).and_then(Value::as_bool) == Some(true) {
            return Err(err(&cfg_path, format!("`{k}: true` is not supported")));
        }
        Ok(())
    };
    refuse_true("use_rslora")?;
    refuse_true("lora_bias")?;
    refuse_true("fan_in_fan_out")?;
    if let Some(b) = field("bias")
        .and_then(Value::as_str)
        .filter(|b| *b != "none")
    {
        return Err(err(
            &cfg_path,
            format!("`bias: {b}` is not supported (none)"),
        ));
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if field(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(err(&cfg_path, format!("per-module `{k}` is not supported")));
        }
    }
    if field("layers_to_transform").is_some() {
        return Err(err(
            &cfg_path,
            "`layers_to_transform` is not supported".into(),
        ));
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| err(&cfg_path, "missing `r`".into()))? as usize;
    let alpha = field("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
    let lora = LoraConfig::new()
        .with_rank(rank)
        .with_alpha(alpha)
        .with_dropout(field("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0))
        .with_use_dora(field("use_dora").and_then(Value::as_bool).unwrap_or(false));

    let weights = dir.join("adapter_model.safetensors");
    let ckpt = Checkpoint::open(&weights)?;
    let prefix = vit_prefix(&model);
    let mut layers = BTreeMap::new();
    let mut values: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    // Our parameter -> the file's key that fed it, for messages.
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut head = false;
    let mut unexpected = Vec::new();
    for key in ckpt.keys() {
        let (shape, data) = ckpt.read_f32(&key)?;
        let Some(rest) = key.strip_prefix(PREFIX) else {
            unexpected.push(key);
            continue;
        };
        if rest == "classifier.weight" || rest == "classifier.bias" {
            head = true;
            let v = if rest.ends_with("weight") {
                (
                    vec![shape[1], shape[0]],
                    transpose(&data, shape[0], shape[1]),
                )
            } else {
                (shape, data)
            };
            let param = format!(
                "head.base.{}",
                if rest.ends_with("weight") {
                    "weight"
                } else {
                    "bias"
                }
            );
            sources.insert(param.clone(), key.clone());
            values.insert(param, v);
            continue;
        }
        let split = [
            ".lora_A.weight",
            ".lora_B.weight",
            ".lora_magnitude_vector",
            ".lora_magnitude_vector.weight",
        ]
        .iter()
        .find_map(|s| rest.strip_suffix(s).map(|m| (m, *s)));
        let Some((module, leaf)) = split else {
            unexpected.push(key);
            continue;
        };
        let module = module.strip_prefix(prefix).unwrap_or(module);
        let Some(ours) = from_peft_module(module) else {
            unexpected.push(key);
            continue;
        };
        let (our_leaf, v) = match leaf {
            ".lora_A.weight" => (
                "a",
                (
                    vec![shape[1], shape[0]],
                    transpose(&data, shape[0], shape[1]),
                ),
            ),
            ".lora_B.weight" => (
                "b",
                (
                    vec![shape[1], shape[0]],
                    transpose(&data, shape[0], shape[1]),
                ),
            ),
            _ => ("magnitude", (shape, data)),
        };
        let param = format!("{ours}.lora.{our_leaf}");
        sources.insert(param.clone(), key.clone());
        values.insert(param, v);
        layers.insert(ours, ());
    }
    if !unexpected.is_empty() {
        return Err(CheckpointError::KeysMismatch {
            path: weights,
            missing: vec![],
            unexpected: unexpected.iter().map(|k| format!("`{k}`")).collect(),
            prefixes: vec![],
        }
        .into());
    }
    if layers.is_empty() {
        return Err(err(&cfg_path, "the adapter holds no LoRA tensors".into()));
    }
    let config = PeftConfig {
        lora: Some(lora),
        target_modules: layers.keys().cloned().collect(),
        coeff: None,
        coeff_targets: vec![],
        exclude_modules: vec![],
        modules_to_save: if head { vec!["head".into()] } else { vec![] },
    };
    let (model, injected) = inject(model, &config).map_err(|e| err(&cfg_path, e.to_string()))?;
    let expected = params::param_shapes(&model, &injected.trainable_prefixes());
    let missing: Vec<String> = expected
        .keys()
        .filter(|p| !values.contains_key(*p))
        .map(|p| format!("(model parameter `{p}`)"))
        .collect();
    if !missing.is_empty() {
        return Err(CheckpointError::KeysMismatch {
            path: weights,
            missing,
            unexpected: vec![],
            prefixes: vec![],
        }
        .into());
    }
    for (path, shape) in &expected {
        let (found, _) = &values[path];
        if found != shape {
            return Err(CheckpointError::from(ShapeMismatch {
                path: weights,
                key: sources[path].clone(),
                param: path.clone(),
                found: found.clone(),
                note: " (in Burn's layout)".into(),
                expected: shape.clone(),
            })
            .into());
        }
    }
    Ok((params::replace_params(model, &values), injected))
}
