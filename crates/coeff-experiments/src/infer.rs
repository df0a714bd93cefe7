//! `infer`: run a ViT checkpoint directory, optionally with a saved adapter, on an input tensor
//! file.
//!
//! Input: safetensors with `pixel_values [B, C, H, W]` (a float dtype, already normalised as the
//! checkpoint expects). Output: safetensors with `last_hidden_state [B, 1 + N, D]`,
//! `pooler_output [B, D]` (HF ViT pooler / CLIP post-layernorm CLS / DINOv2 CLS / timm
//! pre-logits) and, when the model has them, `logits [B, C]` and `image_embeds [B, P]`.
//!
//! `--adapter DIR` loads an adapter saved by `coeff_tuning::save_adapter` onto the checkpoint
//! first. Two kinds are recognised by their tensor names:
//! - an adapter of the bare ViT (`layers.N...`, `head` for a checkpoint with a head);
//! - a few-shot run's adapter (`OUT/runs/.../adapter`: `backbone.layers.N...` plus the trained
//!   classification head `head.{weight,bias}` as `modules_to_save`): the ViT is wrapped in the
//!   few-shot [`Classifier`] with a head of the file's size, and `logits` are that head's output
//!   on `pooler_output` (the few-shot model's prediction, before softmax).
//!
//! Checked before anything is computed (see `docs/input-checks.md`): the output is not the same
//! file as any input (the pixels, the config, the weights, the adapter) and its directory exists
//! and is writable; `pixel_values` exists, has a float dtype, four dimensions, at least one
//! image, finite values, and attention maps within [`crate::limits::MAX_ATTENTION_ELEMENTS`].
//! After the forward pass every output must be finite; nothing is written otherwise. The output
//! is written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::checkpoint::find_weights;
use coeff_tuning::peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use coeff_vit::{load_pretrained, Checkpoint, VisionTransformer, VitConfig, VitOutput};

use crate::fewshot::model::Classifier;
use crate::limits::{attention_elements, MAX_ATTENTION_ELEMENTS};

/// Arguments of `infer`.
#[derive(Debug, Clone, clap::Args)]
pub struct InferArgs {
    /// Checkpoint directory: `config.json` (Hugging Face or timm) + `model.safetensors`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// safetensors file holding `pixel_values [B, C, H, W]`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (safetensors); must not be one of the input files.
    #[arg(long)]
    pub output: PathBuf,
    /// Adapter directory (`coeff_adapter_config.json` + `coeff_adapter.safetensors`) to load
    /// onto the checkpoint first: one saved for the bare ViT, or a few-shot run's `adapter/`
    /// (then `logits` are its classification head's).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

/// Run the model and write its outputs.
pub fn run<B: Backend>(args: &InferArgs, device: &B::Device) -> Result<()> {
    check_output(args)?;
    let config = args.checkpoint.join("config.json");
    if let Some(kind) = crate::infer_text::text_model(&config) {
        return crate::infer_text::run::<B>(kind, args, device);
    }
    if let Some(kind) = crate::infer_diffusion::diffusion_model(&config) {
        return crate::infer_diffusion::run::<B>(kind, args, device);
    }

    // The input's header: name, dtype, shape, before anything is read or built.
    let input = Checkpoint::open(&args.input)
        .with_context(|| format!("reading input {}", args.input.display()))?;
    let name = "pixel_values";
    let bad_input = |message: String| anyhow::anyhow!("input {}: {message}", args.input.display());
    if !input.contains(name) {
        return Err(bad_input(format!(
            "no tensor `{name}` (found: {})",
            input.keys().join(", ")
        )));
    }
    let info = input.info(name)?;
    if !matches!(
        info.dtype,
        safetensors::Dtype::F32
            | safetensors::Dtype::F16
            | safetensors::Dtype::BF16
            | safetensors::Dtype::F64
    ) {
        return Err(bad_input(format!(
            "tensor `{name}` has dtype {:?}; pixel values must be a float dtype (F32, F16, BF16, \
             F64), normalised as the checkpoint expects",
            info.dtype
        )));
    }
    let [batch, channels, h, w] = info.shape[..] else {
        return Err(bad_input(format!(
            "tensor `{name}` has shape {:?}, expected [B, C, H, W]",
            info.shape
        )));
    };
    if batch == 0 {
        return Err(bad_input(format!(
            "tensor `{name}` has shape {:?}: 0 images; give at least one",
            info.shape
        )));
    }

    // The config alone, to bound the attention maps before the weights are read.
    let config_path = args.checkpoint.join("config.json");
    let config = VitConfig::from_file(&config_path)?;
    let p = config.patch_size;
    ensure!(
        h >= p && w >= p && channels == config.num_channels,
        "input {}: tensor `{name}` has shape {:?}; the model takes {} channels and images of at \
         least one {p}x{p} patch",
        args.input.display(),
        info.shape,
        config.num_channels
    );
    let tokens = 1 + (h / p) * (w / p);
    let elements = attention_elements(batch, config.num_attention_heads, tokens);
    if elements > MAX_ATTENTION_ELEMENTS {
        return Err(bad_input(format!(
            "tensor `{name}` of shape {:?} makes attention maps of {elements} elements per layer \
             ({batch} images x {} heads x {tokens}^2 tokens), above the limit of \
             {MAX_ATTENTION_ELEMENTS}; split the batch or lower the resolution (see \
             docs/input-checks.md)",
            info.shape, config.num_attention_heads
        )));
    }

    let (shape, data) = input.read_f32(name)?;
    let non_finite = data.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        let first = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(bad_input(format!(
            "tensor `{name}` has {non_finite} non-finite value(s) (NaN or ±inf) out of {}, the \
             first at flat index {first} ({})",
            data.len(),
            data[first]
        )));
    }

    let model = load_pretrained::<B>(&args.checkpoint, device)
        .with_context(|| format!("loading checkpoint {}", args.checkpoint.display()))?;
    let x = Tensor::<B, 4>::from_data(TensorData::new(data, shape), device);
    let out = match &args.adapter {
        None => forward(&model, x, args)?,
        Some(dir) => with_adapter(model, dir, x, args)?,
    };

    let mut tensors = BTreeMap::new();
    let mut put = |name: &str, t: TensorData| put_output(&mut tensors, name, t, &args.input);
    put("last_hidden_state", out.last_hidden_state.into_data())?;
    put("pooler_output", out.pooler_output.into_data())?;
    if let Some(l) = out.logits {
        put("logits", l.into_data())?;
    }
    if let Some(e) = out.image_embeds {
        put("image_embeds", e.into_data())?;
    }
    write_outputs(&args.output, &tensors)
}

/// Outputs by name: shape and f32 values.
pub(crate) type Outputs = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Add one output, which must be finite (else nothing is written: the error names the output
/// and the input file).
pub(crate) fn put_output(
    tensors: &mut Outputs,
    name: &str,
    data: TensorData,
    input: &Path,
) -> Result<()> {
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
pub(crate) fn write_outputs(path: &Path, tensors: &Outputs) -> Result<()> {
    coeff_tuning::checkpoint::write_f32_safetensors(path, tensors)
        .with_context(|| format!("writing {}", path.display()))?;
    for (k, (s, _)) in tensors {
        eprintln!("{k}: {s:?}");
    }
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn forward<B: Backend>(
    model: &VisionTransformer<B>,
    x: Tensor<B, 4>,
    args: &InferArgs,
) -> Result<VitOutput<B>> {
    model
        .forward(x)
        .with_context(|| format!("running {}", args.checkpoint.display()))
}

/// Load the adapter in `dir` onto `model` and run it (see the module docs for the two kinds).
fn with_adapter<B: Backend>(
    model: VisionTransformer<B>,
    dir: &Path,
    x: Tensor<B, 4>,
    args: &InferArgs,
) -> Result<VitOutput<B>> {
    let context = || format!("loading adapter {}", dir.display());
    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    // The tensor names say which model the adapter was saved from (header only).
    let file = Checkpoint::open(&weights).with_context(context)?;
    let classifier_head =
        file.contains("head.weight") && file.keys().iter().any(|k| k.starts_with("backbone."));
    if !classifier_head {
        let (model, _) = coeff_tuning::load_adapter(model, dir).with_context(context)?;
        return forward(&model, x, args);
    }
    let head = file.info("head.weight").with_context(context)?;
    let d = model.config.hidden_size;
    let classes = match head.shape[..] {
        [rows, classes] if rows == d && classes > 0 => classes,
        _ => bail!(
            "{}: the few-shot head `head.weight` has shape {:?}; this checkpoint needs [{d}, \
             classes]",
            weights.display(),
            head.shape
        ),
    };
    // The head is replaced by the adapter's (modules_to_save); the seed does not matter.
    let classifier = Classifier::new(model, classes, 0);
    let (classifier, _) = coeff_tuning::load_adapter(classifier, dir).with_context(context)?;
    let mut out = forward(&classifier.backbone, x, args)?;
    out.logits = Some(classifier.head.forward(out.pooler_output.clone()));
    Ok(out)
}

/// Refuse an output that is one of the inputs, or that cannot be written, before any work.
fn check_output(args: &InferArgs) -> Result<()> {
    let out = &args.output;
    if out.is_dir() {
        bail!(
            "--output {} is a directory; give a file name",
            out.display()
        );
    }
    let mut inputs: Vec<(&str, PathBuf)> = vec![
        ("--input", args.input.clone()),
        (
            "the checkpoint's config",
            args.checkpoint.join("config.json"),
        ),
    ];
    if let Ok(weights) = find_weights(
        &args.checkpoint,
        &["pytorch_model.safetensors", "open_clip_model.safetensors"],
    ) {
        // A sharded checkpoint: the index and every shard.
        if let Ok(ckpt) = Checkpoint::open(&weights) {
            inputs.extend(
                ckpt.files()
                    .into_iter()
                    .map(|f| ("the checkpoint's weights", f.to_path_buf())),
            );
        }
        inputs.push(("the checkpoint's weights", weights));
    }
    if let Some(dir) = &args.adapter {
        inputs.push(("the adapter", dir.join(ADAPTER_CONFIG_FILE)));
        inputs.push(("the adapter", dir.join(ADAPTER_WEIGHTS_FILE)));
    }
    for (what, input) in &inputs {
        if same_file(out, input) {
            bail!(
                "--output {} is {what} ({}); refusing to overwrite an input",
                out.display(),
                input.display()
            );
        }
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "--output {}: the directory {} does not exist",
            out.display(),
            dir.display()
        );
    }
    // Writable: create (and remove) a file next to the output, as the atomic writer will.
    let probe = dir.join(format!(".coeff-infer-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "--output {}: the directory {} is not writable",
                out.display(),
                dir.display()
            )
        })?;
    Ok(())
}

/// Whether two paths name the same existing file (same device and inode on Unix, so hard links
/// and symbolic links count; the same canonical path elsewhere).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}
