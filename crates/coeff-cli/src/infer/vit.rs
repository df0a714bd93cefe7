//! `infer` for vision transformers (Hugging Face ViT / CLIP vision / DINOv2, timm), with an
//! adapter of the bare ViT or a few-shot run's adapter with its classification head (see the
//! [module docs](super)).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_harness::backbone::Classifier;
use coeff_harness::limits::{attention_elements, MAX_ATTENTION_ELEMENTS};
use coeff_tuning::peft::ADAPTER_WEIGHTS_FILE;
use coeff_vit::{load_pretrained, Checkpoint, VisionTransformer, VitConfig, VitOutput};

use super::args::InferArgs;
use super::output::{put_output, write_outputs};
use crate::adapter::AdapterSource;

/// Run the ViT checkpoint of `args` and write its outputs.
pub fn run<B: Backend>(args: &InferArgs, device: &B::Device) -> Result<()> {
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

fn forward<B: Backend>(
    model: &VisionTransformer<B>,
    x: Tensor<B, 4>,
    args: &InferArgs,
) -> Result<VitOutput<B>> {
    model
        .forward(x)
        .with_context(|| format!("running {}", args.checkpoint.display()))
}

/// Load the adapter at `dir` onto `model` and run it: a PEFT folder (Hugging Face ViTs,
/// transformers 4 or 5 names), or ours (see the module docs for its two kinds).
fn with_adapter<B: Backend>(
    model: VisionTransformer<B>,
    dir: &Path,
    x: Tensor<B, 4>,
    args: &InferArgs,
) -> Result<VitOutput<B>> {
    let context = || format!("loading adapter {}", dir.display());
    let dir = match AdapterSource::detect(dir)? {
        AdapterSource::Ours(dir) => dir,
        AdapterSource::Peft(peft) => {
            // A classifier saved whole (`modules_to_save`, PyTorch layout `[classes, D_in]`).
            let weights = peft.join(crate::adapter::PEFT_WEIGHTS_FILE);
            let file = Checkpoint::open(&weights).with_context(context)?;
            let key = "base_model.model.classifier.weight";
            let model = match file.contains(key) {
                true => {
                    let shape = file.info(key).with_context(context)?.shape;
                    with_head_of(model, &shape.iter().rev().copied().collect::<Vec<_>>())
                        .with_context(context)?
                }
                false => model,
            };
            let (model, _) =
                coeff_vit::peft_format::import_peft(model, &peft).with_context(context)?;
            return forward(&model, x, args);
        }
        source => return Err(source.unsupported("vision transformer")),
    };
    let dir = dir.as_path();
    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    // The tensor names say which model the adapter was saved from (header only).
    let file = Checkpoint::open(&weights).with_context(context)?;
    let classifier_head =
        file.contains("head.weight") && file.keys().iter().any(|k| k.starts_with("backbone."));
    if !classifier_head {
        // A `tune classify` adapter carries the ViT's own head (`head.*`, modules_to_save):
        // give the model a head of the file's shape first (its values are the file's).
        let key = "head.base.weight";
        let model = match file.contains(key) {
            true => with_head_of(model, &file.info(key).with_context(context)?.shape)
                .with_context(context)?,
            false => model,
        };
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

/// `model` with a new head of `shape` = `[D_in, classes]` (Burn's layout), to be overwritten by
/// an adapter's saved head.
fn with_head_of<B: Backend>(
    model: VisionTransformer<B>,
    shape: &[usize],
) -> Result<VisionTransformer<B>> {
    let [d_in, classes] = shape[..] else {
        bail!("the saved head's weight has shape {shape:?}, expected 2 dimensions");
    };
    ensure!(
        classes > 0 && classes <= coeff_vit::config::limits::MAX_LABELS,
        "the saved head has {classes} classes (at most {} are read)",
        coeff_vit::config::limits::MAX_LABELS
    );
    let device = model.cls_token.val().device();
    let head = coeff_tuning::PeftLinear::new(&burn::nn::LinearConfig::new(d_in, classes), &device);
    Ok(model.with_head(head)?)
}
