//! `infer`'s outputs: every one checked finite, then written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::TensorData;

/// Outputs by name: shape and f32 values.
pub type Outputs = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Add one output, which must be finite (else nothing is written: the error names the output
/// and the input file).
pub fn put_output(tensors: &mut Outputs, name: &str, data: TensorData, input: &Path) -> Result<()> {
    let dims = data.shape.to_vec();
    let values = data
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("output `{name}` cannot be read back as f32: {e:?}"))?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        bail!(
            "output `{name}` has {bad} non-finite value(s) (NaN or ±inf) out of {}: the model \
             overflowed on this input (check that the inputs in {} are what the checkpoint \
             expects); nothing was written",
            values.len(),
            input.display()
        );
    }
    tensors.insert(name.to_string(), (dims, values));
    Ok(())
}

/// Write the outputs atomically and list them.
pub fn write_outputs(path: &Path, tensors: &Outputs) -> Result<()> {
    coeff_tuning::checkpoint::write_f32_safetensors(path, tensors)
        .with_context(|| format!("writing {}", path.display()))?;
    for (k, (s, _)) in tensors {
        eprintln!("{k}: {s:?}");
    }
    eprintln!("wrote {}", path.display());
    Ok(())
}
