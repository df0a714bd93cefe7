//! The pixel normalisation a checkpoint was trained with: `(x / 255 - mean) / std` per RGB
//! channel. The one place in the workspace that knows these numbers.
//!
//! [`Normalization::from_dir`] takes them from the checkpoint folder, in this order:
//! `preprocessor_config.json` (`image_mean` / `image_std`, `do_normalize`), then
//! `config.json` (`image_mean` / `image_std` as this crate's converter writes them, or timm's
//! `pretrained_cfg.mean` / `std`), then the family's known default
//! ([`Family::default_normalization`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Family, VitConfig};
use coeff_tuning::LoadError;

use crate::error::{Result, VitError};

/// Per-channel (RGB) mean and standard deviation of inputs scaled to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet statistics (`IMAGENET_DEFAULT_MEAN/STD` of timm and `transformers`): DINOv2,
    /// timm's default.
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// OpenAI CLIP's statistics (`OPENAI_CLIP_MEAN/STD`).
    pub const OPENAI_CLIP: Self = Self {
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
    };
    /// `[0.5; 3]` both (`IMAGENET_STANDARD_MEAN/STD`): `ViTImageProcessor`'s default.
    pub const HALF: Self = Self {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    /// No normalisation (`do_normalize: false`).
    pub const IDENTITY: Self = Self {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// The normalisation of the checkpoint in `dir` (see the module docs for the order).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let family = VitConfig::from_file(dir.join("config.json"))?.family;
        Self::from_dir_for(dir, family)
    }

    /// As [`Normalization::from_dir`], with the family already known.
    pub fn from_dir_for(dir: &Path, family: Family) -> Result<Self> {
        let pre = dir.join("preprocessor_config.json");
        if let Some(v) = read_json(&pre)? {
            if v.get("do_normalize").and_then(Value::as_bool) == Some(false) {
                return Ok(Self::IDENTITY);
            }
            if let Some(n) = pair_of(&v, "image_mean", "image_std", &pre)? {
                return Ok(n);
            }
        }
        let cfg = dir.join("config.json");
        if let Some(v) = read_json(&cfg)? {
            if let Some(n) = pair_of(&v, "image_mean", "image_std", &cfg)? {
                return Ok(n);
            }
            if let Some(p) = v.get("pretrained_cfg") {
                if let Some(n) = pair_of(p, "mean", "std", &cfg)? {
                    return Ok(n);
                }
            }
        }
        Ok(family.default_normalization())
    }
}

impl Family {
    /// What the reference library's image processor uses when a checkpoint says nothing:
    /// `ViTImageProcessor` ([`Normalization::HALF`]), `CLIPImageProcessor`
    /// ([`Normalization::OPENAI_CLIP`]), DINOv2's `BitImageProcessor` and timm's default config
    /// ([`Normalization::IMAGENET`]).
    pub fn default_normalization(self) -> Normalization {
        match self {
            Family::HfVit => Normalization::HALF,
            Family::Clip => Normalization::OPENAI_CLIP,
            Family::Dinov2 | Family::Timm => Normalization::IMAGENET,
        }
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::io(path, source))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| config_err(path, format!("not valid JSON: {e}")))
}

/// `v[mean_key]` and `v[std_key]`, each three numbers or one (for all channels); `None` when
/// both are absent.
fn pair_of(v: &Value, mean_key: &str, std_key: &str, path: &Path) -> Result<Option<Normalization>> {
    let (mean, std) = match (v.get(mean_key), v.get(std_key)) {
        (None, None) => return Ok(None),
        (Some(m), Some(s)) => (m, s),
        _ => {
            return Err(config_err(
                path,
                format!("`{mean_key}` and `{std_key}` must be given together"),
            ))
        }
    };
    let three = |x: &Value, key: &str| -> Result<[f32; 3]> {
        let vals: Option<Vec<f32>> = match x {
            Value::Array(a) => a.iter().map(|n| n.as_f64().map(|f| f as f32)).collect(),
            n => n.as_f64().map(|f| vec![f as f32; 3]),
        };
        match vals.as_deref() {
            Some(&[r, g, b]) => Ok([r, g, b]),
            _ => Err(config_err(
                path,
                format!("`{key}` must be 3 numbers (RGB) or one, got {x}"),
            )),
        }
    };
    let norm = Normalization {
        mean: three(mean, mean_key)?,
        std: three(std, std_key)?,
    };
    if norm.std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
        return Err(config_err(
            path,
            format!("`{std_key}` must be positive, got {std}"),
        ));
    }
    Ok(Some(norm))
}

/// The JSON numbers of `x` written as short `f32` decimals (`0.48145466`, not
/// `0.4814546704292297`); they read back to the same `f32`.
pub fn json_floats(x: [f32; 3]) -> Value {
    serde_json::from_str(&serde_json::to_string(&x).expect("floats serialise")).expect("json")
}

fn config_err(path: &Path, message: String) -> VitError {
    LoadError::config(path, message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written to JSON and read back, every constant is bit-identical (the few-shot runs
    /// depend on it).
    #[test]
    fn constants_round_trip_through_json_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            Normalization::IMAGENET,
            Normalization::OPENAI_CLIP,
            Normalization::HALF,
        ] {
            let json = serde_json::json!({
                "image_mean": json_floats(n.mean),
                "image_std": json_floats(n.std),
            });
            assert!(!json.to_string().contains("0000"), "{json}");
            std::fs::write(
                dir.path().join("preprocessor_config.json"),
                json.to_string(),
            )
            .unwrap();
            let back = Normalization::from_dir_for(dir.path(), Family::Timm).unwrap();
            assert_eq!(back.mean.map(f32::to_bits), n.mean.map(f32::to_bits));
            assert_eq!(back.std.map(f32::to_bits), n.std.map(f32::to_bits));
        }
    }

    #[test]
    fn sources_in_order_and_bad_values_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert_eq!(
            Normalization::from_dir_for(p, Family::Clip).unwrap(),
            Normalization::OPENAI_CLIP
        );
        std::fs::write(
            p.join("config.json"),
            r#"{"pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}"#,
        )
        .unwrap();
        assert_eq!(
            Normalization::from_dir_for(p, Family::Timm).unwrap(),
            Normalization::HALF
        );
        std::fs::write(
            p.join("preprocessor_config.json"),
            r#"{"do_normalize": false}"#,
        )
        .unwrap();
        assert_eq!(
            Normalization::from_dir_for(p, Family::Timm).unwrap(),
            Normalization::IDENTITY
        );
        std::fs::write(
            p.join("preprocessor_config.json"),
            r#"{"image_mean": [0.1, 0.2], "image_std": 0.3}"#,
        )
        .unwrap();
        let err = Normalization::from_dir_for(p, Family::Timm)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("preprocessor_config.json") && err.contains("image_mean"),
            "{err}"
        );
    }
}
