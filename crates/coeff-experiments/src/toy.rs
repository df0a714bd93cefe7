//! The paper's toy experiment (Fig. 3): one attention layer maps an input graph `X` to a target
//! graph `O`; three runs from the same start show what tuning the filters, the values, or the
//! filter-subspace coefficients can reach.
//!
//! - `X`: `N` nodes with 2-D features (so everything can be drawn).
//! - The layer: `H` heads of width 2, no biases; out = `sum_h A_h X W_v^h W_o^h`.
//! - `X` is a noisy ring; the target `O` is the ring expanded by `--scale` (1.5) about its
//!   centroid, so every target node lies outside the convex hull of `X`. The start's value
//!   paths are `W_v^h W_o^h = I / H`, which makes Prop. 4.2's region `R0` equal to conv(X).
//! - Runs: (i) tune `W_q, W_k`; (ii) tune `W_q, W_k, W_v, W_o`; (iii) tune `W_q, W_k` + alpha.
//!   All three start from the same weights, use Adam on the mean squared error, and choose
//!   what to train through the core crate's `inject` (modules_to_save / coeff).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use burn::module::{AutodiffModule, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use coeff_tuning::{
    inject, AttentionInput, CoeffSpec, MultiHeadAttention, MultiHeadAttentionConfig, PeftConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::geometry::{convex_hull, distance_to_hull, minkowski_sum, P2};
use crate::plot::{
    self, colors, Axis, Figure, LegendEntry, LegendPos, Mark, Marker, Panel, Series,
};
use crate::report::{self, Provenance};
use crate::rng::Lcg;

/// Settings of the toy run.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct ToyArgs {
    /// Random seed for inputs, start weights and teacher.
    #[arg(long, default_value_t = 3)]
    pub seed: u64,
    /// Number of nodes `N`.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// Number of heads `H`.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Optimizer steps per run (full batch).
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f64,
    /// The target is the input graph expanded by this factor about its centroid.
    #[arg(long, default_value_t = 1.5)]
    pub scale: f64,
}

impl ToyArgs {
    /// Refuse flags the experiment cannot run with, naming the flag, the value and the limit
    /// (see [`crate::limits`]).
    pub fn validate(&self) -> Result<()> {
        use crate::limits::{TOY_MAX_HEADS, TOY_MAX_NODES, TOY_MAX_STEPS};
        for (flag, value, min, max) in [
            ("--nodes", self.nodes, 3, TOY_MAX_NODES),
            ("--heads", self.heads, 1, TOY_MAX_HEADS),
            ("--steps", self.steps, 1, TOY_MAX_STEPS),
        ] {
            ensure!(
                (min..=max).contains(&value),
                "{flag} must be between {min} and {max}, got {value} (see docs/input-checks.md)"
            );
        }
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr must be a positive finite number, got {:?}",
            self.lr
        );
        ensure!(
            self.scale.is_finite(),
            "--scale must be a finite number, got {:?}",
            self.scale
        );
        Ok(())
    }
}

/// One run's result.
#[derive(Debug, Clone, Serialize)]
pub struct ToyRun {
    /// `(i)`, `(ii)`, `(iii)`.
    pub name: &'static str,
    /// What was tuned.
    pub tuned: &'static str,
    /// Number of trainable parameters.
    pub trainable_params: usize,
    /// Mean squared error to the target after training.
    pub final_loss: f64,
    /// Output nodes outside the convex hull of the inputs `X`.
    pub outside_input_hull: usize,
    /// Output nodes outside the Prop. 4.2 bound `R0` of the start's value projections.
    pub outside_start_bound: usize,
    /// Output nodes outside the Prop. 4.2 bound of the run's own final value projections.
    pub outside_own_bound: usize,
    /// Loss every 10 steps.
    pub loss_curve: Vec<f64>,
    /// Final outputs `[N][2]`.
    pub outputs: Vec<P2>,
    /// Wall time of the run in seconds.
    pub wall_s: f64,
}

/// The numerical check of Prop. 4.2 for run (i).
#[derive(Debug, Clone, Serialize)]
pub struct Prop42 {
    /// Largest distance of a run-(i) output from `R0` (0 = all inside, up to float error).
    pub run_i_max_distance_outside: f64,
    /// `sum_j dist(O_j, R0)^2 / (2N)`: no choice of `W_q, W_k` can get the MSE below this.
    pub mse_lower_bound: f64,
    /// Run (i)'s final MSE, for comparison with the bound.
    pub run_i_final_loss: f64,
    /// Whether run (i) respects the bound (loss >= bound and outputs inside `R0`).
    pub holds: bool,
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct ToySummary {
    /// Experiment name.
    pub experiment: &'static str,
    /// Backend, git revision, seed.
    pub provenance: Provenance,
    /// Settings.
    pub args: ToyArgs,
    /// Input nodes `X`.
    pub inputs: Vec<P2>,
    /// Target nodes `O`.
    pub target: Vec<P2>,
    /// Target nodes outside the convex hull of `X`.
    pub target_outside_input_hull: usize,
    /// Target nodes outside `R0`.
    pub target_outside_start_bound: usize,
    /// The Prop. 4.2 check.
    pub prop_4_2: Prop42,
    /// The three runs.
    pub runs: Vec<ToyRun>,
}

const HEAD_DIM: usize = 2;

/// Run the toy experiment and write `summary.json`, `results.md`, `toy.png`, `loss.png`.
pub fn run<B: AutodiffBackend>(
    args: &ToyArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<ToySummary> {
    args.validate()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let provenance = Provenance::new(backend, args.seed);
    let mut rng = Lcg::new(args.seed);
    let (n, h) = (args.nodes, args.heads);

    let x_vals = ring_graph(n, &mut rng);
    let x = tensor2::<B>(&x_vals, [n, 2], device).unsqueeze::<3>(); // [1, N, 2]
    let start = start_layer::<B>(h, &mut rng, device);
    // The target graph: the input ring expanded about its centroid (the origin) by `scale`.
    // Every target node lies outside conv(X); attention with softmax maps cannot get there.
    let target = x.clone().inner().mul_scalar(args.scale);
    let target_pts = points(target.clone());
    ensure!(
        target_pts.iter().flatten().all(|v| v.is_finite()),
        "--scale {:?} makes the target graph non-finite in f32",
        args.scale
    );
    let input_pts = points(x.clone().inner());
    let input_hull = convex_hull(&input_pts);
    let r0 = value_bound(&start.valid(), &input_pts);

    let runs_spec: [(&'static str, &'static str, Vec<&str>, bool); 3] = [
        ("(i)", "W_q, W_k", vec!["query", "key"], false),
        (
            "(ii)",
            "W_q, W_k, W_v, W_o",
            vec!["query", "key", "value", "output"],
            false,
        ),
        ("(iii)", "W_q, W_k + alpha", vec!["query", "key"], true),
    ];
    let mut runs = Vec::new();
    for (name, tuned, modules, coeff) in runs_spec {
        let config = PeftConfig {
            lora: None,
            target_modules: vec![],
            // The toy fits one graph exactly; dropout on alpha would only add noise.
            coeff: coeff.then_some(CoeffSpec { dropout: 0.0 }),
            coeff_targets: vec![],
            exclude_modules: vec![],
            modules_to_save: modules.iter().map(|s| s.to_string()).collect(),
        };
        let (layer, injected) = inject(start.clone(), &config)?;
        let t0 = Instant::now();
        let (layer, loss_curve) = train(layer, x.clone(), target.clone(), args, name)?;
        let wall_s = t0.elapsed().as_secs_f64();
        let layer = layer.valid();
        let y = layer
            .forward(AttentionInput::self_attn(x.clone().inner()))
            .context;
        let final_loss = mse(y.clone(), target.clone());
        let outputs = points(y);
        // The last update can still overflow; the geometry below needs finite points.
        ensure!(
            final_loss.is_finite() && outputs.iter().flatten().all(|v| v.is_finite()),
            "run {name}: the outputs are not finite after step {} (--lr {:?}, --scale {:?}): \
             training diverged; try a smaller --lr",
            args.steps,
            args.lr,
            args.scale
        );
        let own_bound = value_bound(&layer, &input_pts);
        let outside = |hull: &[P2]| {
            outputs
                .iter()
                .filter(|p| distance_to_hull(**p, hull) > 1e-5)
                .count()
        };
        runs.push(ToyRun {
            name,
            tuned,
            trainable_params: injected.params.trainable,
            final_loss,
            outside_input_hull: outside(&input_hull),
            outside_start_bound: outside(&r0),
            outside_own_bound: outside(&own_bound),
            loss_curve,
            outputs,
            wall_s,
        });
    }

    let run_i = &runs[0];
    let run_i_max_distance_outside = run_i
        .outputs
        .iter()
        .map(|p| distance_to_hull(*p, &r0))
        .fold(0.0, f64::max);
    let mse_lower_bound = target_pts
        .iter()
        .map(|p| distance_to_hull(*p, &r0).powi(2))
        .sum::<f64>()
        / (2 * n) as f64;
    let prop = Prop42 {
        run_i_max_distance_outside,
        mse_lower_bound,
        run_i_final_loss: run_i.final_loss,
        holds: run_i_max_distance_outside < 1e-4
            && run_i.final_loss >= mse_lower_bound * (1.0 - 1e-4),
    };
    let summary = ToySummary {
        experiment: "toy",
        provenance,
        args: args.clone(),
        target_outside_input_hull: target_pts
            .iter()
            .filter(|p| distance_to_hull(**p, &input_hull) > 1e-5)
            .count(),
        target_outside_start_bound: target_pts
            .iter()
            .filter(|p| distance_to_hull(**p, &r0) > 1e-5)
            .count(),
        inputs: input_pts.clone(),
        target: target_pts.clone(),
        prop_4_2: prop,
        runs,
    };
    report::write_json(&out.join("summary.json"), &summary)?;
    report::write_atomic(&out.join("results.md"), markdown(&summary).as_bytes())?;
    draw_graphs(&summary, &input_hull, &r0, &out.join("toy.png"))?;
    draw_losses(&summary, &out.join("loss.png"))?;
    Ok(summary)
}

/// Adam on the MSE; a non-finite loss (divergence) is an error naming the step and the flags.
fn train<B: AutodiffBackend>(
    mut layer: MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    target: Tensor<B::InnerBackend, 3>,
    args: &ToyArgs,
    name: &str,
) -> Result<(MultiHeadAttention<B>, Vec<f64>)> {
    let target = Tensor::<B, 3>::from_inner(target);
    let mut optim = AdamConfig::new().init::<B, MultiHeadAttention<B>>();
    let bar = ProgressBar::new(args.steps as u64).with_style(
        ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} loss {msg} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    let mut curve = Vec::new();
    for step in 0..args.steps {
        let y = layer.forward(AttentionInput::self_attn(x.clone())).context;
        let loss = (y - target.clone()).powi_scalar(2).mean();
        let l: f64 = loss.clone().into_scalar().elem::<f64>();
        if !l.is_finite() {
            bar.finish_and_clear();
            bail!(
                "run {name}: the loss is {l} at step {step} (--lr {:?}, --scale {:?}): training \
                 diverged; try a smaller --lr",
                args.lr,
                args.scale
            );
        }
        if step % 10 == 0 {
            curve.push(l);
            bar.set_message(format!("{l:.5}"));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(args.lr, layer, grads);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((layer, curve))
}

/// Start weights: random filters `W_q, W_k` sharp enough to be interesting, and value paths
/// `W_v^h W_o^h = I / H`, so that the Prop. 4.2 region `R0 = sum_h conv(X / H)` is exactly the
/// convex hull of the inputs: run (i) cannot leave conv(X).
fn start_layer<B: Backend>(
    heads: usize,
    rng: &mut Lcg,
    device: &B::Device,
) -> MultiHeadAttention<B> {
    let inner = heads * HEAD_DIM;
    let mut layer = MultiHeadAttentionConfig::new(2, heads)
        .with_head_dim(Some(HEAD_DIM))
        .with_qkv_bias(false)
        .with_output_bias(false)
        .init::<B>(device);
    let random = |shape: [usize; 2], scale: f64, rng: &mut Lcg| {
        Param::from_tensor(tensor2(
            &rng.uniform_vec(shape[0] * shape[1], -scale, scale),
            shape,
            device,
        ))
    };
    layer.query.base.weight = random([2, inner], 2.0, rng);
    layer.key.base.weight = random([2, inner], 2.0, rng);
    // W_v = [I I ... I] : [2, 2H];  W_o = [I; I; ...; I] / H : [2H, 2].
    let wv: Vec<f64> = (0..2 * inner)
        .map(|k| ((k / inner) == (k % inner) % 2) as u8 as f64)
        .collect();
    let wo: Vec<f64> = (0..inner * 2)
        .map(|k| ((k / 2) % 2 == k % 2) as u8 as f64 / heads as f64)
        .collect();
    layer.value.base.weight = Param::from_tensor(tensor2(&wv, [2, inner], device));
    layer.output.base.weight = Param::from_tensor(tensor2(&wo, [inner, 2], device));
    layer
}

/// The input graph: `N` nodes on a noisy ring around the origin (every node is a vertex of
/// the convex hull, so a node can single itself out by dot-product attention).
fn ring_graph(n: usize, rng: &mut Lcg) -> Vec<f64> {
    let mut v = Vec::with_capacity(2 * n);
    for j in 0..n {
        let theta = std::f64::consts::TAU * (j as f64 + 0.3 * (rng.uniform() - 0.5)) / n as f64;
        let r = 1.0 + 0.15 * (rng.uniform() - 0.5);
        v.extend([r * theta.cos(), r * theta.sin()]);
    }
    let (mx, my) = (
        v.iter().step_by(2).sum::<f64>() / n as f64,
        v.iter().skip(1).step_by(2).sum::<f64>() / n as f64,
    );
    v.chunks_exact(2)
        .flat_map(|c| [c[0] - mx, c[1] - my])
        .collect()
}

/// Prop. 4.2's region for a layer without coefficients: `sum_h conv{X[i] W_v^h W_o^h}`.
fn value_bound<B: Backend>(layer: &MultiHeadAttention<B>, x: &[P2]) -> Vec<P2> {
    let values =
        |w: &Param<Tensor<B, 2>>| -> Vec<f32> { w.val().into_data().to_vec().expect("f32") };
    let (wv, wo) = (
        values(&layer.value.base.weight),
        values(&layer.output.base.weight),
    );
    let inner = layer.n_heads * HEAD_DIM;
    let sets: Vec<Vec<P2>> = (0..layer.n_heads)
        .map(|h| {
            // M_h = W_v[:, h-block] @ W_o[h-block, :], a 2x2 map.
            let mut m = [[0.0f64; 2]; 2];
            for (r, row) in m.iter_mut().enumerate() {
                for (c, cell) in row.iter_mut().enumerate() {
                    *cell = (0..HEAD_DIM)
                        .map(|k| {
                            let j = h * HEAD_DIM + k;
                            wv[r * inner + j] as f64 * wo[j * 2 + c] as f64
                        })
                        .sum();
                }
            }
            x.iter()
                .map(|p| {
                    [
                        p[0] * m[0][0] + p[1] * m[1][0],
                        p[0] * m[0][1] + p[1] * m[1][1],
                    ]
                })
                .collect()
        })
        .collect();
    minkowski_sum(&sets)
}

fn tensor2<B: Backend>(vals: &[f64], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    let v: Vec<f32> = vals.iter().map(|v| *v as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn points<B: Backend>(t: Tensor<B, 3>) -> Vec<P2> {
    let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32");
    v.chunks_exact(2)
        .map(|c| [c[0] as f64, c[1] as f64])
        .collect()
}

fn mse<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f64 {
    (a - b).powi_scalar(2).mean().into_scalar().elem::<f64>()
}

fn markdown(s: &ToySummary) -> String {
    let n = s.args.nodes;
    let rows: Vec<Vec<String>> = s
        .runs
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                r.tuned.to_string(),
                r.trainable_params.to_string(),
                format!("{:.5}", r.final_loss),
                format!("{}/{n}", r.outside_input_hull),
                format!("{}/{n}", r.outside_start_bound),
                format!("{:.2}", r.wall_s),
            ]
        })
        .collect();
    let table = report::markdown_table(
        &[
            "run",
            "tuned",
            "trainable params",
            "final MSE",
            "outputs outside conv(X)",
            "outputs outside R0",
            "wall s",
        ],
        &rows,
    );
    let p = &s.prop_4_2;
    format!(
        "# Toy experiment (paper Fig. 3)\n\n\
         backend `{}`, seed {}, git `{}`; {} nodes, {} heads of width {HEAD_DIM}, {} Adam steps at lr {}.\n\n\
         Target: {}/{n} nodes outside conv(X), {}/{n} outside R0 = sum_h conv(X W_v^h W_o^h) \
         (the region Prop. 4.2 confines run (i) to).\n\n{table}\n\
         Prop. 4.2 for run (i): largest distance of an output from R0 = {:.2e} (0 = inside); \
         no W_q, W_k can reach an MSE below {:.5}; run (i) reached {:.5} - {}.\n\n\
         Plots: `toy.png` (grey dots: inputs X; black rings: target O; coloured discs: outputs; \
         dashed grey: conv(X); dashed orange: R0), `loss.png` (MSE vs step, log scale).\n",
        s.provenance.backend,
        s.provenance.seed,
        s.provenance.git_revision,
        n,
        s.args.heads,
        s.args.steps,
        s.args.lr,
        s.target_outside_input_hull,
        s.target_outside_start_bound,
        p.run_i_max_distance_outside,
        p.mse_lower_bound,
        p.run_i_final_loss,
        if p.holds { "the bound holds" } else { "THE BOUND IS VIOLATED" },
    )
}

fn draw_graphs(s: &ToySummary, input_hull: &[P2], r0: &[P2], path: &Path) -> Result<()> {
    let all = s
        .inputs
        .iter()
        .chain(&s.target)
        .chain(s.runs.iter().flat_map(|r| r.outputs.iter()))
        .chain(r0);
    let xs = plot::padded_range(all.clone().map(|p| p[0]), 0.06);
    let ys = plot::padded_range(all.map(|p| p[1]), 0.06);
    let pts = |ps: &[P2]| ps.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>();
    let closed = |ps: &[P2]| {
        let mut v = pts(ps);
        v.extend(v.first().copied());
        v
    };
    let inputs = Mark::points(Marker::Disc(3));
    let target = Mark::points(Marker::Ring(6));
    let output = Mark::points(Marker::Disc(4));
    let series = [colors::RED, colors::BLUE, colors::GREEN];
    let mut fig = Figure::new(1200, 470);
    let mut legend = vec![
        LegendEntry::new("inputs X", colors::GREY, inputs),
        LegendEntry::new("target O", colors::BLACK, target),
    ];
    for (k, run) in s.runs.iter().enumerate() {
        let mut panel = Panel::new(
            format!("{} {}: MSE {:.5}", run.name, run.tuned, run.final_loss),
            Axis::new("").range(xs),
            Axis::new("").range(ys),
        )
        .equal_aspect()
        .series(Series::new(
            colors::GREY,
            Mark::dashed(2),
            closed(input_hull),
        ))
        .series(Series::new(colors::ORANGE, Mark::dashed(2), closed(r0)));
        for (o, t) in run.outputs.iter().zip(&s.target) {
            panel = panel.series(Series::new(
                colors::LIGHT_GREY,
                Mark::line(1),
                vec![(o[0], o[1]), (t[0], t[1])],
            ));
        }
        fig = fig.panel(
            panel
                .series(Series::new(colors::GREY, inputs, pts(&s.inputs)))
                .series(Series::new(colors::BLACK, target, pts(&s.target)))
                .series(Series::new(series[k], output, pts(&run.outputs))),
        );
        legend.push(LegendEntry::new(
            format!("outputs {}", run.name),
            series[k],
            output,
        ));
    }
    legend.extend([
        LegendEntry::new("output to its target", colors::LIGHT_GREY, Mark::line(1)),
        LegendEntry::new("conv(X)", colors::GREY, Mark::dashed(2)),
        LegendEntry::new(
            "R0 = Σ_h conv(X W_v^h W_o^h)",
            colors::ORANGE,
            Mark::dashed(2),
        ),
    ]);
    fig.legend(legend).save_png(path)
}

fn draw_losses(s: &ToySummary, path: &Path) -> Result<()> {
    let series = [colors::RED, colors::BLUE, colors::GREEN];
    let mut panel = Panel::new(
        "Toy: training loss",
        Axis::new("step").range((0.0, s.args.steps as f64)),
        Axis::new("MSE (log scale)").log(),
    )
    .legend(LegendPos::MiddleRight);
    for (k, run) in s.runs.iter().enumerate() {
        let pts: Vec<(f64, f64)> = run
            .loss_curve
            .iter()
            .enumerate()
            .filter(|(_, l)| **l > 0.0)
            .map(|(i, l)| ((i * 10) as f64, *l))
            .collect();
        panel = panel.series(
            Series::new(series[k], Mark::line(2), pts).label(format!("{} {}", run.name, run.tuned)),
        );
    }
    let bound = s.prop_4_2.mse_lower_bound;
    if bound > 0.0 {
        panel = panel.series(
            Series::new(
                colors::ORANGE,
                Mark::dashed(2),
                vec![(0.0, bound), (s.args.steps as f64, bound)],
            )
            .label("Prop. 4.2 floor for (i)"),
        );
    }
    Figure::new(680, 440).panel(panel).save_png(path)
}
