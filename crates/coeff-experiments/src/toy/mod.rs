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

mod config;
mod data;
pub mod geometry;
mod model;
mod summary;
mod train;

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use coeff_tuning::{inject, AttentionInput, CoeffSpec, PeftConfig};

use coeff_harness::report::{self, Provenance};
use coeff_harness::rng::Lcg;
use geometry::{convex_hull, distance_to_hull, P2};

pub use config::ToyArgs;
use data::{points, ring_graph, tensor2};
use model::{start_layer, value_bound};
use summary::{draw_graphs, draw_losses, markdown};
pub use summary::{Prop42, ToyRun, ToySummary};
use train::{mse, train};

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
