//! LoRA files in the forms people share them, recognised from their keys and loaded through
//! the same path as PEFT folders ([`interop`](super::interop)):
//!
//! | form | keys (linear layers) | scale |
//! |---|---|---|
//! | diffusers, current ([`LoraFileFormat::Diffusers`]) | `<component>.<module>.lora_A.weight [r, in]`, `.lora_B.weight [out, r]` (DoRA `.lora_magnitude_vector`), config in the `lora_adapter_metadata` header | `lora_alpha / r` of the config |
//! | diffusers, older ([`LoraFileFormat::DiffusersLegacy`]) | `<component>.<module>.lora.down.weight`, `.lora.up.weight`; attention processors `<attn>.processor.to_q_lora.down.weight` (`to_out_lora` is `to_out.0`); `network_alphas` as `<module>.alpha` | `alpha / r`, 1 without an alpha |
//! | kohya / A1111 ([`LoraFileFormat::Kohya`]) | `lora_unet_<module, '.' -> '_'>.lora_down.weight`, `.lora_up.weight`, `.alpha` (scalar) | `alpha / r`, 1 without an alpha |
//!
//! A file may give each module its own rank and alpha (kohya's and PEFT's `rank_pattern`). The
//! adapter here has one rank and one alpha, so such a file is loaded exactly by padding every
//! module to the largest rank with zero rows / columns (`B A` unchanged) and folding each
//! module's scale into its `B` (`lora_alpha = r`, scale 1); the outputs are the file's.
//!
//! Every key must be understood: a key of another component (e.g. a text encoder's
//! `lora_te1_*` in a UNet command), an unknown leaf, a module the model does not have, or a
//! tensor of the wrong rank or shape is an error naming the key - never a partial load.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;

use super::interop::{import_diffusers_lora, load_entries, no_unexpected, split_leaf, PeftNames};
use super::{list_sites, Adaptable, Injected, LoraConfig};
use crate::checkpoint::Checkpoint;
use crate::error::{PeftError, Result};

/// The forms of LoRA file [`import_lora_file`] reads (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFileFormat {
    /// diffusers' `save_lora_weights` (PEFT key layout).
    Diffusers,
    /// diffusers before PEFT (`lora.down` / `lora.up`, attention-processor keys).
    DiffusersLegacy,
    /// kohya's sd-scripts / A1111 (`lora_unet_*.lora_down.weight`).
    Kohya,
}

impl LoraFileFormat {
    /// The form of the LoRA file `ckpt`, read off its keys; `None` if it is none of them.
    pub fn detect(ckpt: &Checkpoint) -> Option<Self> {
        let keys = ckpt.keys();
        let any = |f: &dyn Fn(&str) -> bool| keys.iter().any(|k| f(k));
        if any(&|k| k.starts_with("lora_unet_") || k.starts_with("lora_te")) {
            Some(Self::Kohya)
        } else if any(&|k| k.contains(".lora_A.") || k.ends_with(".lora_magnitude_vector")) {
            Some(Self::Diffusers)
        } else if any(&|k| k.contains(".lora.down.") || k.contains("_lora.down.")) {
            Some(Self::DiffusersLegacy)
        } else {
            None
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Diffusers => "diffusers",
            Self::DiffusersLegacy => "diffusers (legacy lora.down/lora.up)",
            Self::Kohya => "kohya/A1111",
        }
    }
}

/// How a model's modules are named in a kohya file: the prefix of its keys (`lora_unet_`) and
/// an optional rewrite of the flattened names the model's crate knows in another naming (SDXL
/// kohya files use the original Stability UNet's `input_blocks_4_1_...`).
pub struct KohyaNames<'a> {
    /// Key prefix of this model's tensors (`lora_unet_`).
    pub prefix: &'a str,
    /// Flattened name in the file -> flattened name of the reference module (`.` -> `_`).
    pub rewrite: &'a dyn Fn(&str) -> Option<String>,
}

/// Inject and load the `component` part of a LoRA file of any form in the module docs.
/// Returns the form found with the model and what was injected.
pub fn import_lora_file<B: Backend, M: Module<B> + Adaptable<B>>(
    mut model: M,
    names: &dyn PeftNames,
    component: &str,
    kohya: &KohyaNames,
    path: &Path,
) -> Result<(M, Injected, LoraFileFormat)> {
    let ckpt = Checkpoint::open(path)?;
    let Some(format) = LoraFileFormat::detect(&ckpt) else {
        let first = ckpt.keys().into_iter().next().unwrap_or_default();
        return Err(bad(
            path,
            format!(
                "not a LoRA file this crate reads (diffusers `lora_A`/`lora_B`, diffusers \
                 `lora.down`/`lora.up`, kohya `lora_unet_*`); first key `{first}`"
            ),
        ));
    };
    if format == LoraFileFormat::Diffusers {
        let (model, injected) = import_diffusers_lora(model, names, component, path)?;
        return Ok((model, injected, format));
    }
    let pieces = match format {
        LoraFileFormat::Kohya => {
            // Flattened module names of every layer that takes a LoRA.
            let mut flat = BTreeMap::new();
            for (ours, kind) in list_sites(&mut model)? {
                if !kind.takes_lora() {
                    continue;
                }
                if let Some(module) = names.peft_module(&ours) {
                    flat.insert(module.replace('.', "_"), module);
                }
            }
            read_kohya(&ckpt, path, kohya, &flat)?
        }
        _ => read_legacy(&ckpt, path, component)?,
    };
    let (lora, entries) = uniform(pieces, path)?;
    let (model, injected) = load_entries(model, names, lora, entries, path, "")?;
    Ok((model, injected, format))
}

/// One module's LoRA as read: `down [r, in]`, `up [out, r]`, its alpha, and the key it came
/// from.
#[derive(Default)]
struct Piece {
    down: Option<(Vec<usize>, Vec<f32>)>,
    up: Option<(Vec<usize>, Vec<f32>)>,
    alpha: Option<f64>,
    key: String,
}

type Pieces = BTreeMap<String, Piece>;

fn bad(path: &Path, message: impl Into<String>) -> PeftError {
    PeftError::BadAdapterConfig {
        file: path.to_path_buf(),
        message: message.into(),
    }
}

/// A scalar tensor's value (kohya's and diffusers' `.alpha`: shape `[]` or `[1]`).
fn scalar(ckpt: &Checkpoint, key: &str, path: &Path) -> Result<f64> {
    let (shape, data) = ckpt.read_f32(key)?;
    match data[..] {
        [v] if v.is_finite() && v > 0.0 => Ok(v as f64),
        _ => Err(bad(
            path,
            format!("`{key}` must be one positive finite number; it has shape {shape:?}"),
        )),
    }
}

/// Put a `down` / `up` / `alpha` tensor of `module` into `pieces`.
fn put(
    pieces: &mut Pieces,
    ckpt: &Checkpoint,
    path: &Path,
    key: &str,
    module: String,
    leaf: &str,
) -> Result<()> {
    let piece = pieces.entry(module).or_default();
    if piece.key.is_empty() {
        piece.key = key.to_string();
    }
    match leaf {
        "alpha" => piece.alpha = Some(scalar(ckpt, key, path)?),
        _ => {
            let (shape, data) = ckpt.read_f32(key)?;
            if shape.len() != 2 {
                return Err(bad(
                    path,
                    format!(
                        "tensor `{key}` has shape {shape:?}; only LoRA of linear layers \
                         (two dimensions) is read"
                    ),
                ));
            }
            let slot = if leaf == "down" {
                &mut piece.down
            } else {
                &mut piece.up
            };
            *slot = Some((shape, data));
        }
    }
    Ok(())
}

/// The modules of a kohya file (keys `prefix` + flattened module + `.lora_down.weight`, ...).
fn read_kohya(
    ckpt: &Checkpoint,
    path: &Path,
    names: &KohyaNames,
    flat: &BTreeMap<String, String>,
) -> Result<Pieces> {
    let mut pieces = Pieces::new();
    let mut unexpected = Vec::new();
    for key in ckpt.keys() {
        let Some(rest) = key.strip_prefix(names.prefix) else {
            if key.starts_with("lora_te") {
                return Err(bad(
                    path,
                    format!(
                        "`{key}` is a text-encoder LoRA; this command applies the \
                         `{}*` part only (remove the text-encoder keys to load the rest)",
                        names.prefix
                    ),
                ));
            }
            unexpected.push(key);
            continue;
        };
        let leaves = [
            (".lora_down.weight", "down"),
            (".lora_up.weight", "up"),
            (".alpha", "alpha"),
        ];
        let Some((name, leaf)) = split_leaf(rest, &leaves) else {
            unexpected.push(key);
            continue;
        };
        let module = flat
            .get(name)
            .or_else(|| (names.rewrite)(name).and_then(|n| flat.get(&n)));
        let Some(module) = module else {
            unexpected.push(key);
            continue;
        };
        put(&mut pieces, ckpt, path, &key, module.clone(), leaf)?;
    }
    no_unexpected(path, unexpected)?;
    Ok(pieces)
}

/// The modules of an older diffusers file (`component.` prefix optional, as the oldest files
/// have none).
fn read_legacy(ckpt: &Checkpoint, path: &Path, component: &str) -> Result<Pieces> {
    let prefix = format!("{component}.");
    let mut pieces = Pieces::new();
    let mut unexpected = Vec::new();
    for key in ckpt.keys() {
        let rest = key.strip_prefix(&prefix).unwrap_or(&key);
        let leaves = [
            (".lora.down.weight", "down"),
            (".lora.up.weight", "up"),
            ("_lora.down.weight", "down"),
            ("_lora.up.weight", "up"),
            (".alpha", "alpha"),
        ];
        let Some((name, leaf)) = split_leaf(rest, &leaves) else {
            unexpected.push(key);
            continue;
        };
        // Attention processors: `<attn>.processor.to_q` (`_lora` stripped) is `<attn>.to_q`.
        let module = match name.split_once(".processor.") {
            Some((attn, "to_out")) => format!("{attn}.to_out.0"),
            Some((attn, proj)) => format!("{attn}.{proj}"),
            None => name.strip_suffix(".lora").unwrap_or(name).to_string(),
        };
        put(&mut pieces, ckpt, path, &key, module, leaf)?;
    }
    no_unexpected(path, unexpected)?;
    Ok(pieces)
}

/// One rank and one alpha for every module, in PEFT's layout (see the module docs), with
/// every piece checked: both matrices present and of one rank.
#[allow(clippy::type_complexity)]
fn uniform(
    pieces: Pieces,
    path: &Path,
) -> Result<(LoraConfig, Vec<(String, Vec<usize>, Vec<f32>)>)> {
    if pieces.is_empty() {
        return Err(bad(path, "the file holds no LoRA tensors"));
    }
    let mut full = Vec::new();
    for (module, p) in pieces {
        let (Some(down), Some(up)) = (p.down, p.up) else {
            return Err(bad(
                path,
                format!(
                    "module `{module}` (`{}`) needs both its down and up matrices",
                    p.key
                ),
            ));
        };
        let r = down.0[0];
        if r == 0 || up.0[1] != r {
            return Err(bad(
                path,
                format!(
                    "module `{module}` (`{}`): down {:?} and up {:?} are not of one rank",
                    p.key, down.0, up.0
                ),
            ));
        }
        let alpha = p.alpha.unwrap_or(r as f64);
        full.push((module, down, up, r, alpha));
    }
    let rank = full.iter().map(|f| f.3).max().expect("non-empty");
    let same = full.iter().all(|f| f.3 == rank && f.4 == full[0].4);
    let lora_alpha = if same { full[0].4 } else { rank as f64 };
    let mut entries = Vec::new();
    for (module, (ds, mut d), (us, mut u), r, alpha) in full {
        if !same {
            let scale = (alpha / r as f64) as f32;
            u.iter_mut().for_each(|v| *v *= scale);
            // down [r, in] -> [rank, in]: zero rows below.
            d.resize(rank * ds[1], 0.0);
            // up [out, r] -> [out, rank]: zero columns to the right.
            let out = us[0];
            let mut wide = vec![0.0; out * rank];
            for (row, chunk) in u.chunks(r).enumerate() {
                wide[row * rank..row * rank + r].copy_from_slice(chunk);
            }
            u = wide;
        }
        entries.push((format!("{module}.lora_A.weight"), vec![rank, ds[1]], d));
        entries.push((format!("{module}.lora_B.weight"), vec![us[0], rank], u));
    }
    let lora = LoraConfig::new().with_rank(rank).with_alpha(lora_alpha);
    Ok((lora, entries))
}

/// Scale the LoRA / DoRA update of every injected layer by `scale` (diffusers' `lora_scale`,
/// `load_lora_weights(...); fuse_lora(lora_scale=s)`): each `B` is multiplied, which scales
/// `B A` in LoRA and in DoRA's direction alike. `scale` must be finite.
pub fn scale_lora<B: Backend, M: Module<B>>(model: M, injected: &Injected, scale: f32) -> M {
    assert!(scale.is_finite(), "the LoRA scale must be finite");
    let prefixes: Vec<String> = injected
        .lora_layers
        .iter()
        .map(|l| format!("{l}.lora.b"))
        .collect();
    let values: BTreeMap<String, (Vec<usize>, Vec<f32>)> =
        crate::params::collect_params(&model, &prefixes)
            .into_iter()
            .map(|(path, shape, mut v)| {
                v.iter_mut().for_each(|x| *x *= scale);
                (path, (shape, v))
            })
            .collect();
    crate::params::replace_params(model, &values)
}
