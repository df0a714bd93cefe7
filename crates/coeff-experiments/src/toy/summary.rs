//! What the toy experiment writes: the summary, the Markdown table, the two figures.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::config::ToyArgs;
use super::geometry::P2;
use super::model::HEAD_DIM;
use coeff_harness::plot::{
    self, colors, Axis, Figure, LegendEntry, LegendPos, Mark, Marker, Panel, Series,
};
use coeff_harness::report::{self, Provenance};

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

pub(crate) fn markdown(s: &ToySummary) -> String {
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

pub(crate) fn draw_graphs(s: &ToySummary, input_hull: &[P2], r0: &[P2], path: &Path) -> Result<()> {
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

pub(crate) fn draw_losses(s: &ToySummary, path: &Path) -> Result<()> {
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
