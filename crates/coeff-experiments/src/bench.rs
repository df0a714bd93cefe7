//! `bench-attention`: step time of a ViT-sized stack of attention layers with no adapter,
//! Coeff, LoRA and LoRA+Coeff, forward and forward+backward. Prints ratios; used to choose the
//! CPU default backend and to track Coeff's overhead (goal: under 5 %).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use coeff_tuning::peft::join;
use coeff_tuning::{
    inject, Adaptable, AttentionInput, Method, MultiHeadAttention, MultiHeadAttentionConfig, Site,
};
use coeff_vit::{Activation, Family, VisionTransformer, VitConfig};
use serde::Serialize;

use crate::report::{self, median, Provenance};
use crate::rng::Lcg;

/// Which model to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BenchModel {
    /// A stack of bare attention layers (sizes from the other flags).
    Stack,
    /// ViT-S/16 at 224 px (12 layers, width 384, 6 heads, MLP 1536), random weights.
    VitS,
    /// ViT-B/16 at 224 px (12 layers, width 768, 12 heads, MLP 3072), random weights.
    VitB,
}

/// Sizes of the benchmark.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct BenchArgs {
    /// Model to time.
    #[arg(long, value_enum, default_value_t = BenchModel::Stack)]
    pub model: BenchModel,
    /// Attention layers in the stack.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Model width (ViT-S: 384, ViT-B: 768).
    #[arg(long, default_value_t = 384)]
    pub width: usize,
    /// Heads (ViT-S: 6, ViT-B: 12).
    #[arg(long, default_value_t = 6)]
    pub heads: usize,
    /// Tokens (ViT at 224 px, patch 16: 197).
    #[arg(long, default_value_t = 197)]
    pub tokens: usize,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
}

/// A stack of residual attention layers.
#[derive(Module, Debug)]
struct Stack<B: Backend> {
    layers: Vec<MultiHeadAttention<B>>,
}

impl<B: Backend> Stack<B> {
    fn forward(&self, mut x: Tensor<B, 3>) -> Tensor<B, 3> {
        for l in &self.layers {
            x = x.clone() + l.forward(AttentionInput::self_attn(x)).context;
        }
        x
    }
}

impl<B: Backend> Adaptable<B> for Stack<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.layers.visit_sites(&join(path, "layers"), f)
    }
}

#[derive(Debug, Serialize)]
struct Row {
    method: String,
    trainable_params: usize,
    forward_ms: f64,
    forward_backward_ms: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    experiment: &'static str,
    provenance: Provenance,
    args: BenchArgs,
    rows: Vec<Row>,
    coeff_over_none_forward: f64,
    coeff_over_none_forward_backward: f64,
    lora_coeff_over_lora_forward_backward: f64,
}

/// A Hugging Face ViT config of the given width (patch 16, 224 px, 12 layers).
fn vit_config(width: usize, heads: usize) -> VitConfig {
    VitConfig {
        family: Family::HfVit,
        hidden_size: width,
        num_hidden_layers: 12,
        num_attention_heads: heads,
        intermediate_size: 4 * width,
        patch_size: 16,
        num_channels: 3,
        image_size: [224, 224],
        layer_norm_eps: 1e-12,
        activation: Activation::Gelu,
        qkv_bias: true,
        layer_scale: false,
        num_labels: None,
        projection_dim: None,
        hf_pooler: false,
    }
}

/// Time `none`, `coeff`, `lora`, `lora+coeff` (LoRA rank 8 on query/value) on `model`.
fn measure<B, M>(
    model: M,
    iters: usize,
    device: &B::Device,
    train_loss: impl Fn(&M) -> Tensor<B, 1>,
    infer: impl Fn(&M::InnerModule) -> Tensor<B::InnerBackend, 1>,
) -> Result<Vec<Row>>
where
    B: AutodiffBackend,
    M: Adaptable<B> + AutodiffModule<B>,
{
    let variants: Vec<(&str, Option<Method>)> = vec![
        ("none", None),
        ("coeff", Some(Method::Coeff)),
        ("lora", Some(Method::Lora)),
        ("lora+coeff", Some(Method::LoraCoeff)),
    ];
    let mut rows = Vec::new();
    for (name, method) in variants {
        // Every variant back-propagates to the input, so "none" (a frozen model) and the
        // adapters differ only by the adapter's own work.
        let (model, trainable) = match method {
            None => (
                coeff_tuning::peft::params::set_trainable(model.clone(), &[]),
                0,
            ),
            Some(m) => {
                let (model, inj) = inject(model.clone(), &m.config(8, &["query", "value"]))?;
                (model, inj.params.trainable)
            }
        };
        let inner = model.valid();
        let mut fwd = Vec::new();
        let mut fb = Vec::new();
        for it in 0..=iters {
            let t0 = Instant::now();
            let _ = infer(&inner).into_data();
            let f = t0.elapsed().as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let grads = train_loss(&model).backward();
            drop(grads);
            B::sync(device)?;
            let b = t0.elapsed().as_secs_f64() * 1e3;
            if it > 0 {
                // iteration 0 is warm-up
                fwd.push(f);
                fb.push(b);
            }
        }
        let row = Row {
            method: name.to_string(),
            trainable_params: trainable,
            forward_ms: median(fwd),
            forward_backward_ms: median(fb),
        };
        eprintln!(
            "{:>11}: forward {:8.1} ms, forward+backward {:8.1} ms",
            row.method, row.forward_ms, row.forward_backward_ms
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Run the benchmark and write `summary.json` and `results.md`.
pub fn run<B: AutodiffBackend>(
    args: &BenchArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut rng = Lcg::new(0);
    let mut uniform = |shape: Vec<usize>| {
        let n = shape.iter().product();
        let v: Vec<f32> = rng
            .uniform_vec(n, -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        burn::tensor::TensorData::new(v, shape)
    };
    let rows = match args.model {
        BenchModel::Stack => {
            let stack = Stack::<B> {
                layers: (0..args.layers)
                    .map(|_| MultiHeadAttentionConfig::new(args.width, args.heads).init(device))
                    .collect(),
            };
            let x = Tensor::<B, 3>::from_data(
                uniform(vec![args.batch, args.tokens, args.width]),
                device,
            );
            let xi = x.clone().inner();
            measure(
                stack,
                args.iters,
                device,
                |m: &Stack<B>| {
                    m.forward(x.clone().detach().require_grad())
                        .powi_scalar(2)
                        .mean()
                },
                |m: &Stack<B::InnerBackend>| m.forward(xi.clone()).sum(),
            )?
        }
        BenchModel::VitS | BenchModel::VitB => {
            let (width, heads) = if args.model == BenchModel::VitS {
                (384, 6)
            } else {
                (768, 12)
            };
            let config = vit_config(width, heads);
            let px = Tensor::<B, 4>::from_data(uniform(vec![args.batch, 3, 224, 224]), device);
            let pxi = px.clone().inner();
            measure(
                config.init::<B>(device),
                args.iters,
                device,
                |m: &VisionTransformer<B>| {
                    let out = m
                        .forward(px.clone().detach().require_grad())
                        .expect("valid input");
                    out.last_hidden_state.powi_scalar(2).mean()
                },
                |m: &VisionTransformer<B::InnerBackend>| {
                    m.forward(pxi.clone())
                        .expect("valid input")
                        .last_hidden_state
                        .sum()
                },
            )?
        }
    };
    let summary = Summary {
        experiment: "bench",
        provenance: Provenance::new(backend, 0),
        coeff_over_none_forward: rows[1].forward_ms / rows[0].forward_ms,
        coeff_over_none_forward_backward: rows[1].forward_backward_ms / rows[0].forward_backward_ms,
        lora_coeff_over_lora_forward_backward: rows[3].forward_backward_ms
            / rows[2].forward_backward_ms,
        args: args.clone(),
        rows,
    };
    report::write_json(&out.join("summary.json"), &summary)?;
    let table = report::markdown_table(
        &[
            "method",
            "trainable params",
            "forward ms",
            "forward+backward ms",
        ],
        &summary
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.method.clone(),
                    r.trainable_params.to_string(),
                    format!("{:.1}", r.forward_ms),
                    format!("{:.1}", r.forward_backward_ms),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let md = format!(
        "# Step-time benchmark\n\nbackend `{backend}`, model {}, batch {}, median of {} (stack sizes: {} layers x width {} x {} heads, {} tokens).\n\n{table}\n\
         Coeff / none: forward {:.3}, forward+backward {:.3}. LoRA+Coeff / LoRA (fwd+bwd): {:.3}.\n",
        match args.model {
            BenchModel::Stack => "attention stack",
            BenchModel::VitS => "ViT-S/16 224px",
            BenchModel::VitB => "ViT-B/16 224px",
        },
        args.batch,
        args.iters,
        args.layers,
        args.width,
        args.heads,
        args.tokens,
        summary.coeff_over_none_forward,
        summary.coeff_over_none_forward_backward,
        summary.lora_coeff_over_lora_forward_backward
    );
    report::write_atomic(&out.join("results.md"), md.as_bytes())?;
    println!("{md}");
    Ok(())
}

/// `bench-mix`: the head-mixing kernel alone, forward and forward+backward, in two
/// formulations, on maps of ViT size.
pub fn run_mix<B: AutodiffBackend>(
    batch: usize,
    heads: usize,
    tokens: usize,
    iters: usize,
    device: &B::Device,
) -> Result<()> {
    use coeff_tuning::attention::{mix_heads, mix_heads_2d};
    let mut rng = Lcg::new(1);
    let n = batch * heads * tokens * tokens;
    let v: Vec<f32> = rng
        .uniform_vec(n, 0.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let maps = Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(v, [batch, heads, tokens, tokens]),
        device,
    );
    let c: Vec<f32> = rng
        .uniform_vec(heads * heads, -0.5, 0.5)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let coeffs =
        Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(c, [heads, heads]), device);
    type Mix<B> = fn(Tensor<B, 4>, Tensor<B, 2>) -> Tensor<B, 4>;
    let kernels: [(&str, Mix<B>); 2] = [
        ("batched [B,H,H]x[B,H,NM]", mix_heads),
        ("2-D [H,H]x[H,B*NM]", mix_heads_2d),
    ];
    for (name, f) in kernels {
        let mut fwd = Vec::new();
        let mut fb = Vec::new();
        for it in 0..=iters {
            let t0 = Instant::now();
            let _ = f(maps.clone().detach(), coeffs.clone().detach())
                .sum()
                .into_data();
            let a = t0.elapsed().as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let m = maps.clone().detach().require_grad();
            let c = coeffs.clone().detach().require_grad();
            let g = f(m, c).powi_scalar(2).mean().backward();
            drop(g);
            B::sync(device)?;
            let b = t0.elapsed().as_secs_f64() * 1e3;
            if it > 0 {
                fwd.push(a);
                fb.push(b);
            }
        }
        println!(
            "{name:>28}: forward {:7.1} ms, forward+backward {:7.1} ms",
            median(fwd),
            median(fb)
        );
    }
    Ok(())
}
