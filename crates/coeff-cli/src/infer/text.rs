//! `infer` for the text and image-text checkpoints of `coeff-vl`, chosen by the folder's
//! `config.json` `model_type`:
//!
//! | `model_type` | inputs | outputs |
//! |---|---|---|
//! | `bert` | `input_ids`, `attention_mask`?, `token_type_ids`? | `last_hidden_state`, `pooler_output` (with a pooler) |
//! | `clip_text_model` | `input_ids`, `attention_mask`? | `last_hidden_state`, `penultimate_hidden_state`, `pooler_output`, `text_embeds` (with a projection) |
//! | `clip` | `input_ids`, `attention_mask`?, `pixel_values` | `text_embeds`, `image_embeds`, `logits_per_image`, `logits_per_text` |
//! | `bart` | `input_ids`, `attention_mask`?, `decoder_input_ids` | `encoder_last_hidden_state`, `logits` |
//!
//! Ids are any integer dtype; `?` marks optional inputs. The output checks are the ViT path's
//! (never overwrite an input, finite outputs, atomic write); the models check ids against
//! their vocabulary and lengths against their positions; the attention maps of the longest
//! sequence are bounded by [`MAX_ATTENTION_ELEMENTS`] before the weights are
//! read. `--adapter PATH` loads an adapter first: ours (`coeff_tuning::save_adapter`), or a PEFT
//! folder for BERT, CLIP text and BART (see [`crate::adapter`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use coeff_tuning::checkpoint::Checkpoint;
use coeff_tuning::peft::interop::{import_peft, PeftNames};
use coeff_tuning::{load_adapter, Adaptable};
use coeff_vl::peft_format::{bart_names, bert_names, clip_text_names};
use coeff_vl::{load_bart, load_bert, load_clip, load_clip_text};

use coeff_harness::family::Family;
use coeff_harness::limits::{attention_elements, MAX_ATTENTION_ELEMENTS};

use super::args::InferArgs;
use super::output::{put_output, write_outputs, Outputs};
use crate::adapter::AdapterSource;

struct Inputs<'a> {
    file: Checkpoint,
    path: &'a Path,
}

impl Inputs<'_> {
    fn err(&self, message: String) -> anyhow::Error {
        anyhow::anyhow!("input {}: {message}", self.path.display())
    }

    fn ids<B: Backend>(&self, name: &str, device: &B::Device) -> Result<Option<Tensor<B, 2, Int>>> {
        if !self.file.contains(name) {
            return Ok(None);
        }
        let (shape, values) = self
            .file
            .read_i64(name)
            .map_err(|e| self.err(e.to_string()))?;
        if shape.len() != 2 || shape.contains(&0) {
            return Err(self.err(format!(
                "tensor `{name}` has shape {shape:?}, expected [batch, len]"
            )));
        }
        Ok(Some(Tensor::from_data(
            TensorData::new(values, shape),
            device,
        )))
    }

    fn required<B: Backend>(&self, name: &str, device: &B::Device) -> Result<Tensor<B, 2, Int>> {
        self.ids(name, device)?.ok_or_else(|| {
            self.err(format!(
                "no tensor `{name}` (found: {})",
                self.file.keys().join(", ")
            ))
        })
    }

    fn pixels<B: Backend>(&self, device: &B::Device) -> Result<Tensor<B, 4>> {
        let name = "pixel_values";
        if !self.file.contains(name) {
            return Err(self.err(format!("no tensor `{name}` (a CLIP model needs images)")));
        }
        let (shape, values) = self
            .file
            .read_f32(name)
            .map_err(|e| self.err(e.to_string()))?;
        if shape.len() != 4 || shape[0] == 0 {
            return Err(self.err(format!(
                "tensor `{name}` has shape {shape:?}, expected [B, C, H, W]"
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.err(format!(
                "tensor `{name}` has a non-finite value at flat index {i}"
            )));
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Bound the attention maps of `name` (`[batch, len]`) with `heads` heads.
    fn bound(&self, name: &str, heads: usize) -> Result<()> {
        if let Ok(info) = self.file.info(name) {
            if let [batch, len] = info.shape[..] {
                let elements = attention_elements(batch, heads, len);
                if elements > MAX_ATTENTION_ELEMENTS {
                    return Err(self.err(format!(
                        "tensor `{name}` of shape {:?} makes attention maps of {elements} elements per layer, above the limit of {MAX_ATTENTION_ELEMENTS}; split the batch",
                        info.shape
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `model` with the `--adapter` of `args` loaded: ours, or a PEFT folder read with the
/// model's PEFT `names` (`None`: the model has none, so a PEFT folder is an error).
fn adapted<B: Backend, M: Adaptable<B>>(
    model: M,
    args: &InferArgs,
    family: &str,
    names: Option<&dyn PeftNames>,
) -> Result<M> {
    let Some(path) = &args.adapter else {
        return Ok(model);
    };
    let context = || format!("loading adapter {}", path.display());
    match (AdapterSource::detect(path)?, names) {
        (AdapterSource::Ours(dir), _) => Ok(load_adapter(model, &dir).with_context(context)?.0),
        (AdapterSource::Peft(dir), Some(names)) => {
            Ok(import_peft(model, names, &dir).with_context(context)?.0)
        }
        (source, _) => Err(source.unsupported(family)),
    }
}

/// Run a text checkpoint on the input file and write its outputs.
pub fn run<B: Backend>(kind: Family, args: &InferArgs, device: &B::Device) -> Result<()> {
    let inputs = Inputs {
        file: Checkpoint::open(&args.input)
            .with_context(|| format!("reading input {}", args.input.display()))?,
        path: &args.input,
    };
    let ckpt = &args.checkpoint;
    let loading = || format!("loading checkpoint {}", ckpt.display());
    let config_path = ckpt.join("config.json");
    let mut out = Outputs::new();
    let mut put = |name: &str, t: TensorData| put_output(&mut out, name, t, &args.input);
    let ids = inputs.required::<B>("input_ids", device)?;
    let mask = inputs.ids::<B>("attention_mask", device)?;
    match kind {
        Family::Bert => {
            let config = coeff_vl::BertConfig::from_file(&config_path)?;
            inputs.bound("input_ids", config.num_attention_heads)?;
            let model = adapted(
                load_bert::<B>(ckpt, device).with_context(loading)?,
                args,
                "BERT",
                Some(&bert_names()),
            )?;
            let types = inputs.ids::<B>("token_type_ids", device)?;
            let o = model.forward(ids, mask, types)?;
            put("last_hidden_state", o.last_hidden_state.into_data())?;
            if let Some(p) = o.pooler_output {
                put("pooler_output", p.into_data())?;
            }
        }
        Family::ClipText | Family::Clip => {
            let config = coeff_vl::ClipTextConfig::from_file(&config_path)?;
            inputs.bound("input_ids", config.num_attention_heads)?;
            if kind == Family::ClipText {
                let model = adapted(
                    load_clip_text::<B>(ckpt, device).with_context(loading)?,
                    args,
                    "CLIP text",
                    Some(&clip_text_names()),
                )?;
                let o = model.forward(ids, mask)?;
                put("last_hidden_state", o.last_hidden_state.into_data())?;
                put(
                    "penultimate_hidden_state",
                    o.penultimate_hidden_state.into_data(),
                )?;
                put("pooler_output", o.pooler_output.into_data())?;
                if let Some(e) = o.text_embeds {
                    put("text_embeds", e.into_data())?;
                }
            } else {
                let pixels = inputs.pixels::<B>(device)?;
                let model = adapted(
                    load_clip::<B>(ckpt, device).with_context(loading)?,
                    args,
                    "CLIP dual-encoder",
                    None,
                )?;
                let o = model.forward(ids, mask, pixels)?;
                put("text_embeds", o.text_embeds.into_data())?;
                put("image_embeds", o.image_embeds.into_data())?;
                put("logits_per_image", o.logits_per_image.into_data())?;
                put("logits_per_text", o.logits_per_text.into_data())?;
            }
        }
        Family::Bart => {
            let config = coeff_vl::BartConfig::from_file(&config_path)?;
            let heads = config
                .encoder_attention_heads
                .max(config.decoder_attention_heads);
            inputs.bound("input_ids", heads)?;
            inputs.bound("decoder_input_ids", heads)?;
            let dec = inputs.required::<B>("decoder_input_ids", device)?;
            if dec.dims()[0] != ids.dims()[0] {
                bail!(
                    "input {}: `decoder_input_ids` has {} rows, `input_ids` {}",
                    args.input.display(),
                    dec.dims()[0],
                    ids.dims()[0]
                );
            }
            let model = adapted(
                load_bart::<B>(ckpt, device).with_context(loading)?,
                args,
                "BART",
                Some(&bart_names()),
            )?;
            let pad = mask.clone().map(|m| m.equal_elem(0));
            let enc = model.encode(ids, mask)?;
            let logits = model.decode(dec, enc.clone(), pad)?;
            put("encoder_last_hidden_state", enc.into_data())?;
            put("logits", logits.into_data())?;
        }
        other => bail!("{other:?} is not a text model"),
    }
    write_outputs(&args.output, &out)
}
