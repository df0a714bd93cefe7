//! What the VL experiment writes: the table with the floor and ceiling rows, summary.json and
//! the score plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::config::VlConfig;
use super::metrics;
use super::tasks::{Example, Task};
use super::train::{Scores, VlRunResult};
use coeff_harness::plot::{self, Axis, Figure, Panel};
use coeff_harness::report::{markdown_table, mean_sd, write_json, Provenance};

/// Where the scores lie: the floor (every test example answered with its task's most common
/// training target) and the ceiling (every answer right, captions = the training template).
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    /// Most-common-answer scores.
    pub floor: Scores,
    /// Oracle scores.
    pub ceiling: Scores,
}

pub(crate) fn reference_points(train: &[Example], test: &[Example]) -> Bounds {
    let score = |answer: &dyn Fn(&Example) -> String| -> Scores {
        let of = |t: Task| -> (Vec<String>, Vec<Vec<String>>) {
            test.iter()
                .filter(|e| e.task == t)
                .map(|e| (answer(e), e.refs.clone()))
                .unzip()
        };
        let em = |t: Task| {
            let (h, r) = of(t);
            100.0
                * h.iter()
                    .zip(&r)
                    .filter(|(h, r)| r.iter().any(|r| metrics::exact_match(h, r)))
                    .count() as f64
                / h.len().max(1) as f64
        };
        let (ch, cr) = of(Task::Caption);
        let (vqa, gqa, nlvr) = (em(Task::Vqa), em(Task::Gqa), em(Task::Nlvr));
        let cider = 100.0 * metrics::cider_d(&ch, &cr);
        Scores {
            vqa,
            gqa,
            nlvr,
            caption_bleu4: 100.0 * metrics::bleu4(&ch, &cr),
            caption_cider: cider,
            caption_em: em(Task::Caption),
            average: (vqa + gqa + nlvr + cider) / 4.0,
        }
    };
    let mut common: BTreeMap<Task, String> = BTreeMap::new();
    for t in Task::ALL {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in train.iter().filter(|e| e.task == t) {
            *counts.entry(e.target.as_str()).or_default() += 1;
        }
        let top = counts
            .into_iter()
            .max_by_key(|(_, c)| *c)
            .map(|(a, _)| a.to_string());
        common.insert(t, top.unwrap_or_default());
    }
    Bounds {
        floor: score(&|e| common[&e.task].clone()),
        ceiling: score(&|e| e.target.clone()),
    }
}

#[derive(Serialize)]
pub(crate) struct Summary<'a> {
    config: &'a VlConfig,
    bounds: &'a Bounds,
    provenance: Provenance,
    wall_seconds: f64,
    runs: &'a [VlRunResult],
    /// method -> metric -> (mean, sd) over seeds.
    table: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

pub(crate) fn write_summary(
    cfg: &VlConfig,
    results: &[VlRunResult],
    bounds: &Bounds,
    out: &Path,
    backend: &'static str,
    wall: f64,
) -> Result<()> {
    let metrics_of = |s: &Scores| -> [(&'static str, f64); 7] {
        [
            ("vqa", s.vqa),
            ("gqa", s.gqa),
            ("nlvr", s.nlvr),
            ("caption_bleu4", s.caption_bleu4),
            ("caption_cider", s.caption_cider),
            ("caption_em", s.caption_em),
            ("average", s.average),
        ]
    };
    let mut table: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    let mut rows = Vec::new();
    let fmt = |(m, s): (f64, f64), seeds: usize| {
        if seeds > 1 {
            format!("{m:.1} ± {s:.1}")
        } else {
            format!("{m:.1}")
        }
    };
    for &method in &cfg.methods {
        let runs: Vec<&VlRunResult> = results.iter().filter(|r| r.method == method).collect();
        if runs.is_empty() {
            continue;
        }
        let mut row = BTreeMap::new();
        for (k, _) in metrics_of(&runs[0].scores) {
            let vals: Vec<f64> = runs
                .iter()
                .map(|r| {
                    metrics_of(&r.scores)
                        .iter()
                        .find(|m| m.0 == k)
                        .expect("metric")
                        .1
                })
                .collect();
            row.insert(k.to_string(), mean_sd(&vals));
        }
        let step_ms = mean_sd(&runs.iter().map(|r| r.step_ms).collect::<Vec<_>>()).0;
        let n = runs.len();
        rows.push(vec![
            method.name().to_string(),
            format!("{}", runs[0].method_params),
            format!("{}", runs[0].trainable_params),
            fmt(row["vqa"], n),
            fmt(row["gqa"], n),
            fmt(row["nlvr"], n),
            fmt(row["caption_bleu4"], n),
            fmt(row["caption_cider"], n),
            fmt(row["average"], n),
            format!("{step_ms:.0}"),
        ]);
        table.insert(method.name().to_string(), row);
    }
    for (name, b) in [
        ("(floor: most common answer)", &bounds.floor),
        ("(ceiling: oracle)", &bounds.ceiling),
    ] {
        rows.push(vec![
            name.to_string(),
            "-".into(),
            "-".into(),
            format!("{:.1}", b.vqa),
            format!("{:.1}", b.gqa),
            format!("{:.1}", b.nlvr),
            format!("{:.1}", b.caption_bleu4),
            format!("{:.1}", b.caption_cider),
            format!("{:.1}", b.average),
            "-".into(),
        ]);
    }
    let mut md = format!(
        "# Vision-language multi-task tuning on easy-VQA\n\n{} seed(s), {} steps of batch {}, {} train / {} test examples per task, image features: {} at {} px, text model: {}.\n\n",
        cfg.seeds.len(), cfg.steps, cfg.batch_size, cfg.train_per_task, cfg.test_per_task, cfg.backbone, cfg.resolution,
        cfg.text_model.as_ref().map_or("all-MiniLM-L6-v2 (BERT2BERT warm start)".to_string(), |p| p.display().to_string())
    );
    md.push_str(&markdown_table(
        &[
            "method",
            "method params",
            "trainable params",
            "VQA",
            "GQA",
            "NLVR",
            "Caption BLEU-4",
            "Caption CIDEr-D",
            "Avg",
            "ms/step",
        ],
        &rows,
    ));
    // Coeff overhead per step, paired by seed.
    let timings: Vec<(&str, u64, f64)> = results
        .iter()
        .map(|r| (r.method.name(), r.seed, r.step_ms))
        .collect();
    md.push_str(&coeff_harness::report::coeff_step_ratios(&timings));
    md.push_str("\nAvg = mean of VQA, GQA, NLVR (exact match / accuracy, %) and caption CIDEr-D (x100), as the paper averages VQAv2, GQA, NLVR2 and COCO CIDEr. Sample outputs (input -> output | target):\n\n");
    if let Some(r) = results.first() {
        for (i, o, t) in &r.samples {
            md.push_str(&format!("- `{i}` -> `{o}` | `{t}`\n"));
        }
    }
    std::fs::write(out.join("results.md"), &md)?;
    write_json(
        &out.join("summary.json"),
        &Summary {
            config: cfg,
            bounds,
            provenance: Provenance::new(backend, cfg.seeds[0]),
            wall_seconds: wall,
            runs: results,
            table: table.clone(),
        },
    )?;
    plot_scores(cfg, &table, &out.join("vl_scores.png"))?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

pub(crate) fn plot_scores(
    cfg: &VlConfig,
    table: &BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    path: &Path,
) -> Result<()> {
    let keys = ["vqa", "gqa", "nlvr", "caption_cider", "average"];
    let x = Axis::new("1 VQA, 2 GQA, 3 NLVR (%), 4 caption CIDEr-D (x100), 5 average")
        .range((0.5, 5.5))
        .ticks(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let y = Axis::new("score").range(plot::padded_range(
        table.values().flat_map(|r| {
            keys.iter()
                .flat_map(|k| [r[*k].0 - r[*k].1, r[*k].0 + r[*k].1])
        }),
        0.08,
    ));
    let names: Vec<&str> = cfg.methods.iter().map(|m| m.name()).collect();
    let (panel, legend) = plot::method_points(
        Panel::new("test scores", x, y),
        &names,
        table,
        &keys,
        0.08,
        cfg.seeds.len() > 1,
    );
    let title = if cfg.seeds.len() > 1 {
        format!(
            "easy-VQA multi-task, mean ± std over {} seeds",
            cfg.seeds.len()
        )
    } else {
        "easy-VQA multi-task, one seed".to_string()
    };
    Figure::new(760, 480)
        .title(title)
        .panel(panel)
        .legend(legend)
        .save_png(path)
}
