//! `attention`: step time of a ViT-sized stack of attention layers with no adapter, Coeff, LoRA
//! and LoRA+Coeff, forward and forward+backward. Prints ratios; used to choose the CPU default
//! backend and to track Coeff's overhead (goal: under 5 %).

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

use crate::memory;
use crate::torch_ref::{self, TorchMode, TorchReference};
use coeff_harness::report::{self, median, Provenance};
use coeff_harness::rng::Lcg;

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
    /// Stack only: compute attention in blocks of this many queries (the memory-bounded path
    /// of the core attention; SDXL's 4096-token levels).
    #[arg(long)]
    pub query_chunk: Option<usize>,
    /// Stack only, with `--query-chunk`: recompute each chunk's maps in the backward pass
    /// instead of keeping them (`coeff_tuning::attention::recompute`).
    #[arg(long)]
    pub recompute: bool,
    /// Timed rounds (each runs every variant once; medians are reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Run the PyTorch reference (ViT models) in the same invocation.
    #[arg(long, value_enum, default_value_t = TorchMode::Auto)]
    pub torch: TorchMode,
    /// The Python for the reference (needs torch and transformers); default
    /// `$COEFF_TUNING_PYTHON`, else `python3`.
    #[arg(long)]
    pub python: Option<String>,
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
    /// Median peak host memory of one forward+backward step above what was in use before it
    /// (bytes the program allocated, see `memory.rs`), MiB; `None` without the counting
    /// allocator. Device memory of GPU backends is not included.
    step_peak_host_mb: Option<f64>,
}

/// A ratio of two variants measured in the same rounds: median and quartiles of the per-round
/// ratios (each round times every variant once, back to back).
#[derive(Debug, Clone, Serialize)]
struct PairedRatio {
    median: f64,
    q25: f64,
    q75: f64,
    rounds: usize,
}

impl PairedRatio {
    fn new(num: &[f64], den: &[f64]) -> Self {
        let mut r: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        let q = |f: f64| r[((r.len() - 1) as f64 * f).round() as usize];
        Self {
            median: q(0.5),
            q25: q(0.25),
            q75: q(0.75),
            rounds: r.len(),
        }
    }

    fn show(&self) -> String {
        format!(
            "{:.3} (quartiles {:.3}-{:.3}, {} rounds)",
            self.median, self.q25, self.q75, self.rounds
        )
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    experiment: &'static str,
    provenance: Provenance,
    args: BenchArgs,
    rows: Vec<Row>,
    coeff_over_none_forward: PairedRatio,
    coeff_over_none_forward_backward: PairedRatio,
    lora_coeff_over_lora_forward_backward: PairedRatio,
    /// The PyTorch reference (ViT models only).
    torch: Option<TorchReference>,
    /// Ours ("none") / PyTorch: forward, forward+backward.
    ours_over_torch: Option<[f64; 2]>,
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

/// Peak host memory of `step` above what was in use before it, in bytes, when the program
/// counts its allocations ([`crate::memory`]); `None` otherwise.
fn step_peak_bytes(step: impl FnOnce() -> Result<()>) -> Result<Option<u64>> {
    let before = memory::reset_peak();
    step()?;
    Ok(memory::counting().then(|| memory::peak().saturating_sub(before) as u64))
}

/// The four variants: `none`, `coeff`, `lora`, `lora+coeff` (LoRA rank 8 on query/value).
const VARIANTS: [(&str, Option<Method>); 4] = [
    ("none", None),
    ("coeff", Some(Method::Coeff)),
    ("lora", Some(Method::Lora)),
    ("lora+coeff", Some(Method::LoraCoeff)),
];

/// Time the four variants of `model`, interleaved: each round runs every variant once (the
/// order rotating from round to round), so slow drifts of a shared machine hit all variants
/// alike and the per-round ratios are paired. Round 0 is a warm-up.
/// Returns the rows and the per-variant forward and forward+backward times of each round.
#[allow(clippy::type_complexity)]
fn measure<B, M>(
    model: M,
    rounds: usize,
    device: &B::Device,
    train_loss: impl Fn(&M) -> Tensor<B, 1>,
    infer: impl Fn(&M::InnerModule) -> Tensor<B::InnerBackend, 1>,
) -> Result<(Vec<Row>, Vec<Vec<f64>>, Vec<Vec<f64>>)>
where
    B: AutodiffBackend,
    M: Adaptable<B> + AutodiffModule<B>,
{
    let mut models = Vec::new();
    for (_, method) in VARIANTS {
        // Every variant back-propagates to the input, so "none" (a frozen model) and the
        // adapters differ only by the adapter's own work.
        models.push(match method {
            None => (
                coeff_tuning::peft::params::set_trainable(model.clone(), &[]),
                0,
            ),
            Some(m) => {
                let (model, inj) = inject(model.clone(), &m.config(8, &["query", "value"]))?;
                (model, inj.params.trainable)
            }
        });
    }
    drop(model);
    let n = VARIANTS.len();
    let mut fwd = vec![Vec::new(); n];
    let mut fb = vec![Vec::new(); n];
    let mut peak = vec![Vec::new(); n];
    for round in 0..=rounds {
        for k in 0..n {
            let v = (k + round) % n;
            let (model, _) = &models[v];
            let t0 = Instant::now();
            let _ = infer(&model.valid()).into_data();
            let f = t0.elapsed().as_secs_f64() * 1e3;
            let mut b = 0.0;
            let p = step_peak_bytes(|| {
                let t0 = Instant::now();
                let grads = train_loss(model).backward();
                drop(grads);
                B::sync(device)?;
                b = t0.elapsed().as_secs_f64() * 1e3;
                Ok(())
            })?;
            if round > 0 {
                fwd[v].push(f);
                fb[v].push(b);
                if let Some(p) = p {
                    peak[v].push(p as f64 / (1u64 << 20) as f64);
                }
            }
        }
        if round > 0 {
            eprintln!(
                "round {round}/{rounds}: forward+backward ms {}",
                (0..n)
                    .map(|v| format!("{} {:.0}", VARIANTS[v].0, fb[v][round - 1]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let rows = (0..n)
        .map(|v| Row {
            method: VARIANTS[v].0.to_string(),
            trainable_params: models[v].1,
            forward_ms: median(fwd[v].clone()),
            forward_backward_ms: median(fb[v].clone()),
            step_peak_host_mb: (!peak[v].is_empty()).then(|| median(peak[v].clone())),
        })
        .collect();
    Ok((rows, fwd, fb))
}

/// Run the benchmark and write `summary.json` and `results.md`.
pub fn run<B: AutodiffBackend>(
    args: &BenchArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<()> {
    anyhow::ensure!(args.iters >= 1, "--iters must be at least 1");
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
    let (rows, fwd, fb) = match args.model {
        BenchModel::Stack => {
            let stack = Stack::<B> {
                layers: (0..args.layers)
                    .map(|_| {
                        MultiHeadAttentionConfig::new(args.width, args.heads)
                            .with_query_chunk(args.query_chunk)
                            .init(device)
                    })
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
    let torch = match args.model {
        BenchModel::Stack => None,
        BenchModel::VitS | BenchModel::VitB => {
            let name = if args.model == BenchModel::VitS {
                "vit-s"
            } else {
                "vit-b"
            };
            let dev = if matches!(backend, "cuda" | "wgpu") {
                "cuda"
            } else {
                "cpu"
            };
            let python = args
                .python
                .clone()
                .or_else(|| std::env::var("COEFF_TUNING_PYTHON").ok())
                .unwrap_or_else(|| "python3".into());
            eprintln!("PyTorch reference ({python}, {dev})...");
            Some(torch_ref::run(
                args.torch, &python, name, args.batch, args.iters, dev,
            )?)
        }
    };
    let ours_over_torch = torch.as_ref().and_then(|t| t.timing.as_ref()).map(|t| {
        [
            rows[0].forward_ms / t.forward_ms,
            rows[0].forward_backward_ms / t.forward_backward_ms,
        ]
    });
    let summary = Summary {
        experiment: "bench",
        provenance: Provenance::new(backend, 0),
        coeff_over_none_forward: PairedRatio::new(&fwd[1], &fwd[0]),
        coeff_over_none_forward_backward: PairedRatio::new(&fb[1], &fb[0]),
        lora_coeff_over_lora_forward_backward: PairedRatio::new(&fb[3], &fb[2]),
        args: args.clone(),
        rows,
        torch,
        ours_over_torch,
    };
    report::write_json(&out.join("summary.json"), &summary)?;
    let mb = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let table = report::markdown_table(
        &[
            "method",
            "trainable params",
            "forward ms",
            "forward+backward ms",
            "step peak host MiB",
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
                    mb(r.step_peak_host_mb),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let torch_text = match &summary.torch {
        None => String::new(),
        Some(TorchReference {
            timing: Some(t), ..
        }) => {
            let [f, b] = summary.ours_over_torch.expect("timing present");
            format!(
                "\nPyTorch {} on {} ({} threads, eager attention, frozen weights, same shapes): \
                 forward {:.1} ms, forward+backward {:.1} ms{}.\n\
                 **Ours (none) / PyTorch: forward {f:.2}x, forward+backward {b:.2}x.**\n",
                t.torch,
                t.device,
                t.threads,
                t.forward_ms,
                t.forward_backward_ms,
                t.peak_device_mb.map_or(String::new(), |m| format!(
                    ", step peak {m:.0} MiB on the device"
                )),
            )
        }
        Some(TorchReference {
            skipped: Some(why), ..
        }) => format!("\nPyTorch reference not run: {why}.\n"),
        Some(_) => String::new(),
    };
    let md = format!(
        "# Step-time benchmark\n\nbackend `{backend}`, model {}, batch {}, {} interleaved rounds after a warm-up, medians (stack sizes: {} layers x width {} x {} heads, {} tokens, query chunk {:?}{}).\n\n{table}\n\
         Paired ratios (median of the per-round ratios, quartiles):\n\
         - Coeff / none, forward: {}\n- Coeff / none, forward+backward: {}\n- LoRA+Coeff / LoRA, forward+backward: {}\n{torch_text}",
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
        args.query_chunk,
        if args.recompute && args.query_chunk.is_some() {
            ", maps recomputed in the backward pass"
        } else {
            ""
        },
        summary.coeff_over_none_forward.show(),
        summary.coeff_over_none_forward_backward.show(),
        summary.lora_coeff_over_lora_forward_backward.show(),
    );
    report::write_atomic(&out.join("results.md"), md.as_bytes())?;
    println!("{md}");
    Ok(())
}
