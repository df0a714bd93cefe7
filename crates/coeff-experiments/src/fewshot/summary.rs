//! Aggregation over seeds and the sweep's outputs: `summary.json`, `results.md` (the paper's
//! table shape: methods x datasets, a params column, an average column; then the step-time
//! overhead), `accuracy_vs_shots.png`, `accuracy_vs_params.png`.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::config::{FewShotConfig, FsMethod};
use super::data::Dataset;
use super::train::RunResult;
use crate::plot::{self, colors, Canvas, Frame};
use crate::report::{self, markdown_table, Provenance};

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
            self.plot_shots(&out.join("accuracy_vs_shots.png"))?;
            self.plot_params(&out.join("accuracy_vs_params.png"))?;
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
                        Some(c) => format!("{:.1} ± {:.1}", 100.0 * c.mean, 100.0 * c.std),
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
             Backbone `{}` at {} px, backend `{}`, seeds {:?}. Test accuracy (%), mean ± std over seeds; \
             params = trainable parameters outside the classification head.{}\n\n{table}\n\
             Datasets: {}.\n\n\
             Recipe: AdamW (lr {:e}, full fine-tuning lr {:e}, weight decay {:e}, gradient clip {:?}), \
             {} epochs with {} warm-up, cosine, batch {}; LoRA/DoRA rank {} on {:?}; Coeff dropout {}{}; \
             augmentation {}.\n\n## Step time\n\n{time_table}\n\
             The linear probe trains the head on cached features, so its step time excludes the backbone.\n",
            cfg.backbone.name(),
            cfg.resolution,
            self.provenance.backend,
            cfg.seeds,
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

    fn plot_shots(&self, path: &Path) -> Result<()> {
        let cfg = &self.config;
        let panels = cfg.datasets.len();
        let (pw, ph) = (340.0, 300.0);
        let mut c = Canvas::new((60 + panels * 380).max(560), 430);
        let xs: Vec<f64> = cfg.shots.iter().map(|&s| (s as f64).log2()).collect();
        let xr = plot::padded_range(xs.iter().copied(), 0.1);
        let yr = plot::padded_range(
            self.cells
                .iter()
                .flat_map(|c| [c.mean - c.std, c.mean + c.std])
                .map(|v| 100.0 * v),
            0.08,
        );
        let ticks: Vec<(f64, String)> = cfg
            .shots
            .iter()
            .map(|&s| ((s as f64).log2(), s.to_string()))
            .collect();
        for (k, d) in cfg.datasets.iter().enumerate() {
            let frame = Frame {
                left: 60.0 + k as f64 * 380.0,
                top: 50.0,
                width: pw,
                height: ph,
                x: xr,
                y: yr,
                log_y: false,
            };
            frame.draw_axes_with_x_ticks(
                &mut c,
                d,
                "shots per class (mean +- std over seeds)",
                "test accuracy %",
                Some(&ticks),
            );
            for m in self.methods() {
                let pts: Vec<(f64, f64, f64)> = cfg
                    .shots
                    .iter()
                    .filter_map(|&s| {
                        self.cell(d, s, m)
                            .map(|c| ((s as f64).log2(), 100.0 * c.mean, 100.0 * c.std))
                    })
                    .collect();
                let col = self.color(m);
                let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
                frame.polyline(&mut c, &line, col, 2.0);
                for (x, y, s) in pts {
                    c.line(frame.px(x, y - s), frame.px(x, y + s), col, 1.0);
                    c.disc(frame.px(x, y), 3.5, col);
                }
            }
        }
        let entries: Vec<(&str, plot::Rgb)> = self
            .methods()
            .into_iter()
            .map(|m| (m.name(), self.color(m)))
            .collect();
        // One row under the panels.
        let mut x = 60.0;
        for e in &entries {
            plot::legend(&mut c, x, 405.0, std::slice::from_ref(e));
            x += Canvas::text_width(e.0, 1) + 34.0;
        }
        c.save_png(path)?;
        Ok(())
    }

    fn plot_params(&self, path: &Path) -> Result<()> {
        let mut c = Canvas::new(560, 420);
        let pts: Vec<(FsMethod, f64, f64)> = self
            .methods()
            .into_iter()
            .filter_map(|m| {
                let params = self.cells.iter().find(|c| c.method == m)?.trainable_params;
                Some((m, (params as f64).log10(), 100.0 * self.average(m)?))
            })
            .collect();
        if pts.is_empty() {
            return Ok(());
        }
        let xr = plot::padded_range(pts.iter().map(|p| p.1), 0.15);
        let yr = plot::padded_range(pts.iter().map(|p| p.2), 0.15);
        let lo = xr.0.ceil() as i32;
        let hi = xr.1.floor() as i32;
        let ticks: Vec<(f64, String)> = (lo..=hi).map(|e| (e as f64, format!("1e{e}"))).collect();
        let frame = Frame {
            left: 70.0,
            top: 50.0,
            width: 440.0,
            height: 300.0,
            x: xr,
            y: yr,
            log_y: false,
        };
        frame.draw_axes_with_x_ticks(
            &mut c,
            "accuracy vs trainable parameters",
            "trainable parameters incl. head (log)",
            "average accuracy %",
            Some(&ticks),
        );
        for (m, x, y) in &pts {
            let (px, py) = frame.px(*x, *y);
            c.disc((px, py), 5.0, self.color(*m));
            c.text(px + 8.0, py - 10.0, m.name(), colors::BLACK, 1);
        }
        c.save_png(path)?;
        Ok(())
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
