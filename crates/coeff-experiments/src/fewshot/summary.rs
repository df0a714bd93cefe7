//! Aggregation over seeds and the sweep's outputs: `summary.json`, `results.md` (the paper's
//! table shape: methods x datasets, a params column, an average column; then the step-time
//! overhead), `accuracy_vs_shots.png`, `accuracy_vs_params.png`.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::config::{FewShotConfig, FsMethod};
use super::data::Dataset;
use super::train::RunResult;
use coeff_harness::plot::{
    self, colors, Axis, Figure, LegendEntry, LegendPos, Mark, Marker, Panel, Series,
};
use coeff_harness::report::{self, markdown_table, Provenance};

/// One dataset of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    /// Name.
    pub name: String,
    /// Where the files came from.
    pub source: String,
    /// Classes.
    pub classes: usize,
    /// Images k-shot samples are drawn from.
    pub pool: usize,
    /// Fixed test images.
    pub test: usize,
}

/// One (dataset, shots, method) cell over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Dataset.
    pub dataset: String,
    /// Training images per class.
    pub shots: usize,
    /// Method.
    pub method: FsMethod,
    /// Backbone.
    pub backbone: &'static str,
    /// Seeds that finished.
    pub seeds: Vec<u64>,
    /// Test accuracy of each seed.
    pub accuracies: Vec<f64>,
    /// Mean accuracy.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
    /// Trainable parameters (head included).
    pub trainable_params: usize,
    /// Trainable parameters outside the head.
    pub method_params: usize,
    /// Optimizer steps per run.
    pub steps: usize,
    /// Median wall time per training step, mean over seeds, ms.
    pub step_ms: f64,
}

impl Cell {
    /// Test accuracy in %: `mean ± std` over seeds, or just the accuracy with one seed (whose
    /// spread is unknown, not zero).
    pub fn accuracy_pct(&self) -> String {
        if self.accuracies.len() > 1 {
            format!("{:.1} ± {:.1}", 100.0 * self.mean, 100.0 * self.std)
        } else {
            format!("{:.1}", 100.0 * self.mean)
        }
    }
}

/// Step time of a method with coefficients over the same method without.
#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    /// Dataset.
    pub dataset: String,
    /// Shots.
    pub shots: usize,
    /// The method with coefficients.
    pub method: FsMethod,
    /// The method without.
    pub base: FsMethod,
    /// ms per step with coefficients.
    pub step_ms: f64,
    /// ms per step without.
    pub base_step_ms: f64,
    /// `step_ms / base_step_ms`.
    pub ratio: f64,
}

/// Everything the sweep measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `fewshot`.
    pub experiment: &'static str,
    /// Backend, git revision, time.
    pub provenance: Provenance,
    /// The resolved settings.
    pub config: FewShotConfig,
    /// The datasets.
    pub datasets: Vec<DatasetInfo>,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// Coeff / no-Coeff step-time ratios.
    pub overhead: Vec<Overhead>,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Wall time of this invocation, s.
    pub wall_seconds: f64,
    /// Whether every run of the config finished.
    pub complete: bool,
}

impl Summary {
    /// Aggregate `runs`.
    pub fn new(
        cfg: &FewShotConfig,
        backend: &'static str,
        datasets: &[Dataset],
        runs: Vec<RunResult>,
        wall_seconds: f64,
    ) -> Self {
        let mut cells = Vec::new();
        for d in &cfg.datasets {
            for &shots in &cfg.shots {
                for &method in &cfg.methods {
                    let rs: Vec<&RunResult> = runs
                        .iter()
                        .filter(|r| {
                            &r.spec.dataset == d && r.spec.shots == shots && r.spec.method == method
                        })
                        .collect();
                    if rs.is_empty() {
                        continue;
                    }
                    let acc: Vec<f64> = rs.iter().map(|r| r.accuracy).collect();
                    let (mean, std) = mean_std(&acc);
                    cells.push(Cell {
                        dataset: d.clone(),
                        shots,
                        method,
                        backbone: cfg.backbone.name(),
                        seeds: rs.iter().map(|r| r.spec.seed).collect(),
                        accuracies: acc,
                        mean,
                        std,
                        trainable_params: rs[0].trainable_params,
                        method_params: rs[0].method_params,
                        steps: rs[0].steps,
                        step_ms: rs.iter().map(|r| r.step_ms).sum::<f64>() / rs.len() as f64,
                    });
                }
            }
        }
        let mut overhead = Vec::new();
        for c in &cells {
            let Some(base) = c.method.without_coeff() else {
                continue;
            };
            if let Some(b) = cells
                .iter()
                .find(|b| b.dataset == c.dataset && b.shots == c.shots && b.method == base)
            {
                overhead.push(Overhead {
                    dataset: c.dataset.clone(),
                    shots: c.shots,
                    method: c.method,
                    base,
                    step_ms: c.step_ms,
                    base_step_ms: b.step_ms,
                    ratio: c.step_ms / b.step_ms,
                });
            }
        }
        let expected = cfg.datasets.len() * cfg.shots.len() * cfg.methods.len() * cfg.seeds.len();
        Summary {
            experiment: "fewshot",
            provenance: Provenance::new(backend, cfg.seeds.first().copied().unwrap_or(0)),
            config: cfg.clone(),
            datasets: datasets
                .iter()
                .map(|d| DatasetInfo {
                    name: d.name.clone(),
                    source: d.source.clone(),
                    classes: d.train.classes.len(),
                    pool: d.train.len(),
                    test: d.test.len(),
                })
                .collect(),
            complete: runs.len() == expected,
            cells,
            overhead,
            runs,
            wall_seconds,
        }
    }

    /// Write `summary.json`, `results.md` and the plots into `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        report::write_json(&out.join("summary.json"), self)?;
        report::write_atomic(&out.join("results.md"), self.markdown().as_bytes())?;
        if !self.cells.is_empty() {
            self.shots_figure()
                .save_png(&out.join("accuracy_vs_shots.png"))?;
            if let Some(f) = self.params_figure() {
                f.save_png(&out.join("accuracy_vs_params.png"))?;
            }
        }
        Ok(())
    }

    fn methods(&self) -> Vec<FsMethod> {
        self.config
            .methods
            .iter()
            .copied()
            .filter(|m| self.cells.iter().any(|c| c.method == *m))
            .collect()
    }

    fn cell(&self, dataset: &str, shots: usize, method: FsMethod) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.dataset == dataset && c.shots == shots && c.method == method)
    }

    /// Mean over every (dataset, shots) column the method has, or `None` if one is missing.
    fn average(&self, method: FsMethod) -> Option<f64> {
        let mut sum = 0.0;
        let mut n = 0;
        for d in &self.config.datasets {
            for &s in &self.config.shots {
                sum += self.cell(d, s, method)?.mean;
                n += 1;
            }
        }
        Some(sum / n as f64)
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let cfg = &self.config;
        let mut header: Vec<String> = vec!["method".into(), "params (M)".into()];
        for d in &cfg.datasets {
            for s in &cfg.shots {
                header.push(format!("{d} {s}-shot"));
            }
        }
        header.push("average".into());
        let mut rows = Vec::new();
        for m in self.methods() {
            let params = self
                .cells
                .iter()
                .find(|c| c.method == m)
                .map(|c| c.method_params)
                .unwrap_or(0);
            let mut row = vec![m.name().to_string(), format!("{:.4}", params as f64 / 1e6)];
            for d in &cfg.datasets {
                for &s in &cfg.shots {
                    row.push(match self.cell(d, s, m) {
                        Some(c) => c.accuracy_pct(),
                        None => "-".into(),
                    });
                }
            }
            row.push(
                self.average(m)
                    .map(|a| format!("**{:.1}**", 100.0 * a))
                    .unwrap_or_else(|| "-".into()),
            );
            rows.push(row);
        }
        let h: Vec<&str> = header.iter().map(String::as_str).collect();
        let table = markdown_table(&h, &rows);

        let mut time_rows = Vec::new();
        for m in self.methods() {
            let cs: Vec<&Cell> = self.cells.iter().filter(|c| c.method == m).collect();
            let ms = cs.iter().map(|c| c.step_ms).sum::<f64>() / cs.len() as f64;
            let ratios: Vec<f64> = self
                .overhead
                .iter()
                .filter(|o| o.method == m)
                .map(|o| o.ratio)
                .collect();
            time_rows.push(vec![
                m.name().to_string(),
                cs[0].trainable_params.to_string(),
                format!("{ms:.1}"),
                if ratios.is_empty() {
                    "-".into()
                } else {
                    let (mean, _) = mean_std(&ratios);
                    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    format!(
                        "{mean:.3} (range {lo:.3}-{hi:.3}, vs {})",
                        m.without_coeff().map(|b| b.name()).unwrap_or("-")
                    )
                },
            ]);
        }
        let time_table = markdown_table(
            &[
                "method",
                "trainable params (with head)",
                "ms / step (median per run, mean over cells)",
                "Coeff / no-Coeff step time",
            ],
            &time_rows,
        );
        let alpha = self.alpha_table();
        let datasets: Vec<String> = self
            .datasets
            .iter()
            .map(|d| {
                format!(
                    "{} ({} classes; k-shot pool {}, fixed test set {})",
                    d.name, d.classes, d.pool, d.test
                )
            })
            .collect();
        let r = &cfg.recipe;
        format!(
            "# Few-shot image classification\n\n\
             Backbone `{}` at {} px, backend `{}`, seeds {:?}. Test accuracy (%){}; \
             params = trainable parameters outside the classification head.{}\n\n{table}\n\
             Datasets: {}.\n\n\
             Recipe: AdamW (lr {:e}, full fine-tuning lr {:e}, weight decay {:e}, gradient clip {:?}), \
             {} epochs with {} warm-up, cosine, batch {}; LoRA/DoRA rank {} on {:?}; Coeff dropout {}{}; \
             augmentation {}.\n\n## Step time\n\n{time_table}\n\
             The linear probe trains the head on cached features, so its step time excludes the backbone.\n{alpha}",
            cfg.backbone.name(),
            cfg.resolution,
            self.provenance.backend,
            cfg.seeds,
            if cfg.seeds.len() > 1 {
                ", mean ± std over seeds"
            } else {
                " of one seed"
            },
            if self.complete {
                String::new()
            } else {
                " **Incomplete sweep: some runs have not finished.**".into()
            },
            datasets.join("; "),
            r.lr,
            r.full_lr,
            r.adamw.weight_decay,
            r.adamw.grad_clip,
            r.epochs,
            r.warmup_epochs,
            r.batch_size,
            r.lora_rank,
            r.lora_targets,
            r.coeff_dropout,
            r.coeff_lr
                .map(|c| format!(", Coeff lr {c:e}"))
                .unwrap_or_default(),
            if r.augment { "on" } else { "off" },
        )
    }

    /// How far training moved Coeff's alpha from zero (the identity): per Coeff method, the
    /// mean over runs of the largest `|alpha|`, and of each layer's largest `|alpha|`.
    fn alpha_table(&self) -> String {
        let mut rows = Vec::new();
        for m in self.methods() {
            let rs: Vec<&RunResult> = self
                .runs
                .iter()
                .filter(|r| r.spec.method == m && !r.alpha_max_abs.is_empty())
                .collect();
            let Some(first) = rs.first() else { continue };
            let n = rs.len() as f64;
            let layer_mean = |l: usize| {
                rs.iter()
                    .map(|r| r.alpha_max_abs.get(l).copied().unwrap_or(0.0) as f64)
                    .sum::<f64>()
                    / n
            };
            let overall = rs
                .iter()
                .map(|r| r.alpha_max_abs.iter().fold(0f32, |a, &b| a.max(b)) as f64)
                .sum::<f64>()
                / n;
            rows.push(vec![
                m.name().to_string(),
                rs.len().to_string(),
                format!("{overall:.3}"),
                (0..first.alpha_max_abs.len())
                    .map(|l| format!("{:.3}", layer_mean(l)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]);
        }
        if rows.is_empty() {
            return String::new();
        }
        format!(
            "\n## How far alpha moved\n\n{}\nmax |alpha| of a layer's `H x H` coefficients after \
             training (alpha starts at 0, the identity mix); per-run values in summary.json \
             (`runs[].alpha_max_abs`).\n",
            markdown_table(
                &[
                    "method",
                    "runs",
                    "max over layers (mean over runs)",
                    "per layer, first to last (mean over runs)",
                ],
                &rows,
            )
        )
    }

    fn color(&self, m: FsMethod) -> plot::Rgb {
        let i = FsMethod::ALL.iter().position(|x| *x == m).unwrap_or(0);
        [
            colors::GREY,
            colors::BLACK,
            colors::ORANGE,
            colors::BLUE,
            colors::RED,
            colors::GREEN,
            colors::PURPLE,
        ][i]
    }

    /// Accuracy vs shots, a panel per dataset, error bars where a cell has two seeds or more.
    fn shots_figure(&self) -> Figure {
        let cfg = &self.config;
        // Log-scale shots, ticks at the shot counts, a margin of a tenth of the span.
        let (lo, hi) = cfg
            .shots
            .iter()
            .fold((f64::INFINITY, 0f64), |(lo, hi), &s| {
                (lo.min(s as f64), hi.max(s as f64))
            });
        let pad = (hi / lo).powf(0.1).max(1.3);
        let x = Axis::new("shots per class")
            .log()
            .range((lo / pad, hi * pad))
            .ticks(cfg.shots.iter().map(|&s| s as f64).collect());
        // One accuracy range for every panel, so they compare at a glance.
        let y = Axis::new("test accuracy (%)").range(plot::padded_range(
            self.cells
                .iter()
                .flat_map(|c| [c.mean - c.std, c.mean + c.std])
                .map(|v| 100.0 * v),
            0.06,
        ));
        let mark = Mark::line_points(2, Marker::Disc(4));
        // Methods side by side around each shot count (1 % of the axis apart), so that their
        // error bars do not hide each other.
        let methods = self.methods();
        let dodge = |k: usize| {
            let step = 0.01 * (hi * pad / (lo / pad)).ln();
            (step * (k as f64 - (methods.len() as f64 - 1.0) / 2.0)).exp()
        };
        let mut fig = Figure::new(40 + 420 * cfg.datasets.len().max(1) as u32, 470);
        for d in &cfg.datasets {
            let mut panel = Panel::new(d.as_str(), x.clone(), y.clone());
            for (k, &m) in methods.iter().enumerate() {
                let cells: Vec<&Cell> = cfg
                    .shots
                    .iter()
                    .filter_map(|&s| self.cell(d, s, m))
                    .collect();
                let pts = cells
                    .iter()
                    .map(|c| (c.shots as f64 * dodge(k), 100.0 * c.mean))
                    .collect();
                // Error bars only where there is a spread: two seeds or more.
                let spread = cells
                    .iter()
                    .map(|c| {
                        if c.accuracies.len() > 1 {
                            100.0 * c.std
                        } else {
                            0.0
                        }
                    })
                    .collect();
                panel = panel.series(Series::new(self.color(m), mark, pts).spread(spread));
            }
            fig = fig.panel(panel);
        }
        let legend = methods
            .into_iter()
            .map(|m| LegendEntry::new(m.name(), self.color(m), mark))
            .collect();
        let seeds = cfg.seeds.len();
        fig.title(if seeds > 1 {
            format!("Few-shot test accuracy, mean ± std over {seeds} seeds")
        } else {
            "Few-shot test accuracy, one seed".to_string()
        })
        .legend(legend)
    }

    /// Average accuracy vs trainable parameters (log scale), a point per method; `None`
    /// without a method that has every cell.
    fn params_figure(&self) -> Option<Figure> {
        let pts: Vec<(FsMethod, f64, f64)> = self
            .methods()
            .into_iter()
            .filter_map(|m| {
                let params = self.cells.iter().find(|c| c.method == m)?.trainable_params;
                Some((m, params as f64, 100.0 * self.average(m)?))
            })
            .collect();
        if pts.is_empty() {
            return None;
        }
        let mut panel = Panel::new(
            "Average accuracy vs trainable parameters",
            Axis::new("trainable parameters, head included (log scale)").log(),
            Axis::new("average test accuracy (%)")
                .range(plot::padded_range(pts.iter().map(|p| p.2), 0.12)),
        )
        .legend(LegendPos::LowerRight);
        for (m, x, y) in pts {
            panel = panel.series(
                Series::new(self.color(m), Mark::points(Marker::Disc(6)), vec![(x, y)])
                    .label(m.name()),
            );
        }
        Some(Figure::new(640, 460).panel(panel))
    }
}

/// Mean and sample standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coeff_tuning::Method;

    /// Method, trainable parameters with the head, then (mean, std) in % for fashion-mnist
    /// 1/4-shot, animals 1/4-shot.
    type Row = (FsMethod, usize, [(f64, f64); 4]);

    /// The default preset's 7-method sweep of `docs/fewshot.md` (the plots there are those of
    /// `synthetic(2)`).
    const DOCS: [Row; 7] = [
        (
            FsMethod::Linear,
            3_850,
            [(38.5, 0.7), (55.0, 5.7), (29.2, 1.1), (44.8, 1.8)],
        ),
        (
            FsMethod::Full,
            22_060_042,
            [(41.8, 1.8), (61.0, 3.5), (32.0, 2.8), (52.5, 13.4)],
        ),
        (
            FsMethod::Peft(Method::Coeff),
            4_282,
            [(35.8, 0.4), (51.2, 3.9), (29.2, 5.3), (47.2, 3.2)],
        ),
        (
            FsMethod::Peft(Method::Lora),
            151_306,
            [(42.8, 1.1), (59.0, 4.2), (29.0, 1.4), (53.8, 6.0)],
        ),
        (
            FsMethod::Peft(Method::LoraCoeff),
            151_738,
            [(42.5, 1.4), (60.2, 3.9), (29.2, 1.8), (56.0, 6.4)],
        ),
        (
            FsMethod::Peft(Method::Dora),
            160_522,
            [(43.5, 1.4), (60.7, 6.0), (29.2, 0.4), (54.2, 5.3)],
        ),
        (
            FsMethod::Peft(Method::DoraCoeff),
            160_954,
            [(42.0, 1.4), (60.5, 4.9), (29.0, 1.4), (55.0, 4.9)],
        ),
    ];

    /// A summary of the [`DOCS`] numbers with `seeds` seeds per cell (two seeds reproduce the
    /// means and sample stds; one seed keeps the means).
    fn synthetic(seeds: usize) -> Summary {
        let mut config = FewShotConfig {
            methods: DOCS.iter().map(|d| d.0).collect(),
            seeds: (0..seeds as u64).collect(),
            ..FewShotConfig::default()
        };
        config.shots = vec![1, 4];
        config.datasets = vec!["fashion-mnist".into(), "animals".into()];
        let mut cells = Vec::new();
        for (di, d) in config.datasets.iter().enumerate() {
            for (si, &shots) in config.shots.iter().enumerate() {
                for &(method, params, acc) in &DOCS {
                    let (mean, std) = (acc[2 * di + si].0 / 100.0, acc[2 * di + si].1 / 100.0);
                    let accuracies: Vec<f64> = match seeds {
                        1 => vec![mean],
                        _ => vec![mean - std / 2f64.sqrt(), mean + std / 2f64.sqrt()],
                    };
                    let (mean, std) = mean_std(&accuracies);
                    cells.push(Cell {
                        dataset: d.clone(),
                        shots,
                        method,
                        backbone: config.backbone.name(),
                        seeds: config.seeds.clone(),
                        accuracies,
                        mean,
                        std,
                        trainable_params: params,
                        method_params: params - 3_850,
                        steps: 20,
                        step_ms: 800.0,
                    });
                }
            }
        }
        Summary {
            experiment: "fewshot",
            provenance: Provenance::new("ndarray", 0),
            config,
            datasets: Vec::new(),
            cells,
            overhead: Vec::new(),
            runs: Vec::new(),
            wall_seconds: 1.0,
            complete: true,
        }
    }

    #[test]
    fn tables_show_a_spread_only_with_two_seeds_or_more() {
        let two = synthetic(2).markdown();
        assert!(
            two.contains("| linear | 0.0000 | 38.5 ± 0.7 | 55.0 ± 5.7 |"),
            "{two}"
        );
        assert!(two.contains("mean ± std over seeds"), "{two}");
        let one = synthetic(1).markdown();
        assert!(
            one.contains("| linear | 0.0000 | 38.5 | 55.0 | 29.2 | 44.8 | **41.9** |"),
            "{one}"
        );
        assert!(!one.contains('±'), "{one}");
        assert!(one.contains("Test accuracy (%) of one seed"), "{one}");
    }

    #[test]
    fn error_bars_only_with_two_seeds_or_more() {
        let spreads = |s: &Summary| -> Vec<f64> {
            s.shots_figure()
                .panels
                .iter()
                .flat_map(|p| p.series.iter())
                .flat_map(|s| s.spread.clone().unwrap_or_default())
                .collect()
        };
        assert!(spreads(&synthetic(1)).iter().all(|s| *s == 0.0));
        let two = spreads(&synthetic(2));
        assert_eq!(two.len(), 7 * 4);
        assert!(two.iter().all(|s| *s > 0.0), "{two:?}");
    }

    /// Decode a PNG: (width, height, RGB pixels).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn plots_are_written() {
        for seeds in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            synthetic(seeds).write(dir.path()).unwrap();
            for (name, size) in [
                ("accuracy_vs_shots.png", (880, 470)),
                ("accuracy_vs_params.png", (640, 460)),
            ] {
                let (w, h, px) = decode(&dir.path().join(name));
                assert_eq!((w, h), size, "{name}");
                let non_white = px.chunks(3).filter(|p| p.iter().any(|v| *v < 250)).count();
                assert!(non_white > 5_000, "{name}: {non_white} non-white pixels");
                // Every method's colour is drawn.
                for &(m, ..) in &DOCS {
                    let c = synthetic(1).color(m);
                    assert!(px.chunks(3).any(|p| p == c), "{name}: no {}", m.name());
                }
            }
        }
    }
}
