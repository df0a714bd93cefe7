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
use serde::Serialize;

use crate::report::{self, Provenance};
use crate::rng::Lcg;

/// Sizes of the benchmark.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct BenchArgs {
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
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::Result<()>,
    ) -> coeff_tuning::Result<()> {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Run the benchmark and write `summary.json` and `results.md`.
pub fn run<B: AutodiffBackend>(
    args: &BenchArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let stack = Stack::<B> {
        layers: (0..args.layers)
            .map(|_| MultiHeadAttentionConfig::new(args.width, args.heads).init(device))
            .collect(),
    };
    let mut rng = Lcg::new(0);
    let n = args.batch * args.tokens * args.width;
    let x_vals: Vec<f32> = rng
        .uniform_vec(n, -1.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let x = Tensor::<B, 3>::from_data(
        burn::tensor::TensorData::new(x_vals, [args.batch, args.tokens, args.width]),
        device,
    );
    let variants: Vec<(String, Option<Method>)> = vec![
        ("none".into(), None),
        ("coeff".into(), Some(Method::Coeff)),
        ("lora".into(), Some(Method::Lora)),
        ("lora+coeff".into(), Some(Method::LoraCoeff)),
    ];
    let mut rows = Vec::new();
    for (name, method) in variants {
        // Every variant back-propagates to the input, so "none" (a frozen model) and the
        // adapters differ only by the adapter's own work.
        let (model, trainable) = match method {
            None => (
                coeff_tuning::peft::params::set_trainable(stack.clone(), &[]),
                0,
            ),
            Some(m) => {
                let (model, inj) = inject(stack.clone(), &m.config(8, &["query", "value"]))?;
                (model, inj.params.trainable)
            }
        };
        let inner = model.valid();
        let xi = x.clone().inner();
        let mut fwd = Vec::new();
        let mut fb = Vec::new();
        for it in 0..=args.iters {
            let t0 = Instant::now();
            let y = inner.forward(xi.clone());
            let _ = y.sum().into_data();
            let f = t0.elapsed().as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let y = model.forward(x.clone().detach().require_grad());
            let grads = y.powi_scalar(2).mean().backward();
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
            method: name,
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
    let summary = Summary {
        experiment: "bench-attention",
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
        "# Attention stack benchmark\n\nbackend `{backend}`, {} layers x width {} x {} heads, {} tokens, batch {}, median of {}.\n\n{table}\n\
         Coeff / none: forward {:.3}, forward+backward {:.3}. LoRA+Coeff / LoRA (fwd+bwd): {:.3}.\n",
        args.layers,
        args.width,
        args.heads,
        args.tokens,
        args.batch,
        args.iters,
        summary.coeff_over_none_forward,
        summary.coeff_over_none_forward_backward,
        summary.lora_coeff_over_lora_forward_backward
    );
    report::write_atomic(&out.join("results.md"), md.as_bytes())?;
    println!("{md}");
    Ok(())
}
