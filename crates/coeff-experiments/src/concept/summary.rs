//! What the concept experiment writes: the base model's quality, the table, summary.json and
//! the score plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::config::*;
use super::data::{self, World};
use super::score::{cosine, Embeddings, Scores};
use super::train::{BaseRecord, ConceptRunResult, Setup};
use coeff_harness::plot::{self, colors, Axis, Figure, LegendEntry, Mark, Marker, Panel, Series};
use coeff_harness::report::{markdown_table, mean_sd, write_json, Provenance};

/// How well the base model draws prompts it was trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseQuality {
    /// Prompts scored.
    pub prompts: usize,
    /// Mean DINO similarity of a sample to its own prompt's real emoji.
    pub dino_own: f64,
    /// ... to the other prompts' real emoji.
    pub dino_other: f64,
    /// Mean CLIP-I similarity to its own prompt's real emoji.
    pub clip_own: f64,
    /// ... to the other prompts' real emoji.
    pub clip_other: f64,
    /// Share of samples whose most DINO-similar real emoji (among the prompts') is their own.
    pub dino_top1: f64,
}

pub(crate) fn base_quality(generated: &Embeddings, real: &Embeddings) -> BaseQuality {
    let n = real.dino.len();
    let (mut own, mut other, mut cown, mut cother, mut top1) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for i in 0..n {
        let sims: Vec<f64> = (0..n)
            .map(|j| cosine(&generated.dino[i], &real.dino[j]))
            .collect();
        own += sims[i];
        other += (sims.iter().sum::<f64>() - sims[i]) / (n - 1).max(1) as f64;
        let csims: Vec<f64> = (0..n)
            .map(|j| cosine(&generated.clip[i], &real.clip[j]))
            .collect();
        cown += csims[i];
        cother += (csims.iter().sum::<f64>() - csims[i]) / (n - 1).max(1) as f64;
        let best = (0..n)
            .max_by(|&a, &b| sims[a].total_cmp(&sims[b]))
            .unwrap_or(0);
        top1 += (best == i) as usize;
    }
    let k = n.max(1) as f64;
    BaseQuality {
        prompts: n,
        dino_own: own / k,
        dino_other: other / k,
        clip_own: cown / k,
        clip_other: cother / k,
        dino_top1: top1 as f64 / k,
    }
}

/// The reference of a model that ignores the expression and draws a subject image: each
/// held-out artwork's mean similarity to the subject images.
pub(crate) fn copy_subject_scores(setup: &Setup) -> (f64, f64) {
    let h = setup.world.held_out.len();
    let s = setup.world.subject.len();
    let t = &setup.truth;
    let mut d = 0.0;
    let mut c = 0.0;
    for i in 0..h {
        for j in 0..s {
            d += cosine(&t.dino[i], &t.dino[h + j]);
            c += cosine(&t.clip[i], &t.clip[h + j]);
        }
    }
    let k = (h * s).max(1) as f64;
    (d / k, c / k)
}

#[derive(Serialize)]
pub(crate) struct Summary<'a> {
    config: &'a ConceptConfig,
    base: &'a BaseRecord,
    base_quality: &'a BaseQuality,
    base_scores: &'a Scores,
    copy_subject: (f64, f64),
    provenance: Provenance,
    wall_seconds: f64,
    runs: &'a [ConceptRunResult],
    /// method -> metric -> (mean, sd) over seeds.
    table: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

pub(crate) const METRICS: [&str; 6] = [
    "dino",
    "clip_i",
    "dino_subject",
    "prior_dino",
    "prior_clip_i",
    "prior_truth_dino",
];

pub(crate) fn metric(s: &Scores, k: &str) -> f64 {
    match k {
        "dino" => s.dino,
        "clip_i" => s.clip_i,
        "dino_subject" => s.dino_subject,
        "prior_dino" => s.prior_dino,
        "prior_clip_i" => s.prior_clip_i,
        _ => s.prior_truth_dino,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn write_summary(
    cfg: &ConceptConfig,
    world: &World,
    results: &[ConceptRunResult],
    base: &BaseRecord,
    base_quality: &BaseQuality,
    base_scores: &Scores,
    copy_subject: &(f64, f64),
    out: &Path,
    backend: &'static str,
    wall: f64,
) -> Result<()> {
    let mut table: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    let mut rows = Vec::new();
    let fmt = |(m, s): (f64, f64), seeds: usize| {
        if seeds > 1 {
            format!("{m:.3} ± {s:.3}")
        } else {
            format!("{m:.3}")
        }
    };
    for &method in &cfg.methods {
        let runs: Vec<&ConceptRunResult> = results.iter().filter(|r| r.method == method).collect();
        if runs.is_empty() {
            continue;
        }
        let mut row = BTreeMap::new();
        for k in METRICS {
            let vals: Vec<f64> = runs.iter().map(|r| metric(&r.scores, k)).collect();
            row.insert(k.to_string(), mean_sd(&vals));
        }
        let step_ms = mean_sd(&runs.iter().map(|r| r.step_ms).collect::<Vec<_>>()).0;
        let n = runs.len();
        let mut cells = vec![
            method.name().to_string(),
            format!("{}", runs[0].trainable_params),
        ];
        cells.extend(METRICS.iter().map(|k| fmt(row[*k], n)));
        cells.push(format!("{step_ms:.0}"));
        rows.push(cells);
        table.insert(method.name().to_string(), row);
    }
    let mut base_row = vec!["(base, untuned)".to_string(), "0".to_string()];
    base_row.extend(
        METRICS
            .iter()
            .map(|k| format!("{:.3}", metric(base_scores, k))),
    );
    base_row.push("-".into());
    rows.push(base_row);
    let mut copy_row = vec![
        "(reference: the subject images themselves)".to_string(),
        "-".to_string(),
        format!("{:.3}", copy_subject.0),
        format!("{:.3}", copy_subject.1),
    ];
    copy_row.extend(["-", "-", "-", "-", "-"].map(String::from));
    rows.push(copy_row);
    let held: Vec<String> = world
        .held_out
        .iter()
        .map(|e| format!("`{}`", data::concept_prompt(&e.name)))
        .collect();
    let subj: Vec<String> = world
        .subject
        .iter()
        .map(|e| e.name.to_lowercase())
        .collect();
    let mut md = format!(
        "# Concept customisation on Twitter emoji\n\n\
         Base: {} parameters, {} px, {} steps of batch {} in {:.0} s ({:.0} ms/step), loss {:.4} -> {:.4}. \
         Its samples of {} known prompts: DINO to their own emoji {:.3} vs to the other prompts' {:.3} \
         (CLIP-I {:.3} vs {:.3}; own emoji the most similar for {:.0}%).\n\n\
         Subject: {}. Held out: {}. {} seed(s), {} steps per run, DDIM {} steps, guidance {}, {} sample(s) per held-out prompt, \
         prior preservation weight {}.\n\n",
        base.params, cfg.base.side, cfg.base.steps, cfg.base.batch_size, base.train_seconds, base.step_ms,
        base.loss_first_last.0, base.loss_first_last.1,
        base_quality.prompts, base_quality.dino_own, base_quality.dino_other, base_quality.clip_own, base_quality.clip_other,
        100.0 * base_quality.dino_top1,
        subj.join(", "), held.join(", "), cfg.seeds.len(), cfg.steps, cfg.sampling.steps, cfg.sampling.guidance,
        cfg.samples_per_prompt, cfg.prior_weight
    );
    md.push_str(&markdown_table(
        &[
            "method",
            "trainable params",
            "DINO (held-out)",
            "CLIP-I (held-out)",
            "DINO (subject)",
            "prior kept DINO",
            "prior kept CLIP-I",
            "prior DINO to truth",
            "ms/step",
        ],
        &rows,
    ));
    let timings: Vec<(&str, u64, f64)> = results
        .iter()
        .map(|r| (r.method.name(), r.seed, r.step_ms))
        .collect();
    md.push_str(&coeff_harness::report::coeff_step_ratios(&timings));
    md.push_str(
        "\nDINO / CLIP-I (held-out): cosine similarity of the held-out expressions' samples to their real artwork. \
         DINO (subject): to the subject images. Prior kept: non-cat prompts' samples after tuning vs before (same noise). \
         Grid (concept_grid.png): rows = real held-out artwork and prior emoji, the base model, then each method (first seed); \
         columns = the held-out expressions, then the prior prompts. base_grid.png: the subject images; real known emoji; the base model's samples of them.\n",
    );
    std::fs::write(out.join("results.md"), &md)?;
    write_json(
        &out.join("summary.json"),
        &Summary {
            config: cfg,
            base,
            base_quality,
            base_scores,
            copy_subject: *copy_subject,
            provenance: Provenance::new(backend, cfg.seeds[0]),
            wall_seconds: wall,
            runs: results,
            table: table.clone(),
        },
    )?;
    plot_scores(cfg, &table, base_scores, &out.join("concept_scores.png"))?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

pub(crate) fn plot_scores(
    cfg: &ConceptConfig,
    table: &BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    base: &Scores,
    path: &Path,
) -> Result<()> {
    let keys = ["dino", "clip_i", "dino_subject", "prior_dino"];
    let x = Axis::new("1 DINO held-out, 2 CLIP-I held-out, 3 DINO subject, 4 prior kept (DINO)")
        .range((0.5, 4.5))
        .ticks(vec![1.0, 2.0, 3.0, 4.0]);
    let y = Axis::new("cosine similarity").range(plot::padded_range(
        table
            .values()
            .flat_map(|r| {
                keys.iter()
                    .flat_map(|k| [r[*k].0 - r[*k].1, r[*k].0 + r[*k].1])
            })
            .chain(keys.iter().map(|k| metric(base, k))),
        0.08,
    ));
    let mut panel = Panel::new("concept scores", x, y);
    let mut legend = Vec::new();
    let base_mark = Mark::points(Marker::Disc(3));
    panel = panel.series(Series::new(
        colors::GREY,
        base_mark,
        keys.iter()
            .enumerate()
            .map(|(i, k)| (i as f64 + 1.0, metric(base, k)))
            .collect(),
    ));
    legend.push(LegendEntry::new("base (untuned)", colors::GREY, base_mark));
    let names: Vec<&str> = cfg.methods.iter().map(|m| m.name()).collect();
    let (panel, more) = plot::method_points(panel, &names, table, &keys, 0.07, cfg.seeds.len() > 1);
    legend.extend(more);
    let title = if cfg.seeds.len() > 1 {
        format!(
            "concept customisation, mean ± std over {} seeds",
            cfg.seeds.len()
        )
    } else {
        "concept customisation, one seed".to_string()
    };
    Figure::new(760, 480)
        .title(title)
        .panel(panel)
        .legend(legend)
        .save_png(path)
}
