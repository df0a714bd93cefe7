//! One run of the VL experiment: the method applied, trained on the core crate's `Trainer`,
//! and scored on the test examples of every task.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use coeff_data::sampler::SplitMix;
use coeff_tuning::train::{Finish, Step, StepOutput, StepReport, Trainer};
use coeff_tuning::{inject, PeftConfig};
use coeff_vl::{GenerationConfig, TextTokenizer, VlBart};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::config::{VlConfig, VlMethod};
use super::data::{Data, Sample};
use super::metrics;
use super::tasks::Task;
use coeff_harness::report::write_json;
use coeff_harness::runs::{checkpoint_path, result_path, RunRecord};

/// Test scores of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Exact match on `vqa`, %.
    pub vqa: f64,
    /// Exact match on `gqa`, %.
    pub gqa: f64,
    /// Accuracy on `nlvr`, %.
    pub nlvr: f64,
    /// Caption BLEU-4, %.
    pub caption_bleu4: f64,
    /// Caption CIDEr-D (x100, as COCO papers report).
    pub caption_cider: f64,
    /// Caption exact match (with any reference), %.
    pub caption_em: f64,
    /// Mean of vqa, gqa, nlvr and caption CIDEr-D (x100), as the paper averages its table.
    pub average: f64,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlRunResult {
    /// Method.
    pub method: VlMethod,
    /// Seed.
    pub seed: u64,
    /// Test scores.
    pub scores: Scores,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Parameters of the method itself (LoRA/DoRA/alpha), without the new parts every
    /// method trains.
    pub method_params: usize,
    /// All parameters.
    pub total_params: usize,
    /// Median step time, ms.
    pub step_ms: f64,
    /// Training seconds.
    pub train_seconds: f64,
    /// Mean loss of the last 10% of steps.
    pub final_loss: f64,
    /// A few test outputs per task (input, output, target).
    pub samples: Vec<(String, String, String)>,
    /// Settings fingerprint.
    pub fingerprint: String,
}

impl RunRecord for VlRunResult {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn train_run<B: AutodiffBackend>(
    cfg: &VlConfig,
    method: VlMethod,
    seed: u64,
    fingerprint: &str,
    model: VlBart<B>,
    train: &Data,
    test: &Data,
    tokenizer: &TextTokenizer,
    dir: &Path,
    device: &B::Device,
) -> Result<VlRunResult> {
    std::fs::create_dir_all(dir)?;
    let total_params = coeff_tuning::params::ParamReport::of(&model, &[]).total;
    // What a warm start leaves new is trained by every method.
    let new_parts = vec![r"re:.*cross_(attn|norm)".to_string(), "visual".to_string()];
    let (model, trainable, method_params) = match method {
        VlMethod::Full => {
            let all = vec!["text".to_string(), "visual".to_string()];
            (coeff_tuning::params::set_trainable(model, &all), all, 0)
        }
        VlMethod::Peft(m) => {
            let mut pc: PeftConfig = m.config(cfg.lora_rank, &["attn.query", "attn.value"]);
            if let Some(c) = pc.coeff.as_mut() {
                c.dropout = cfg.coeff_dropout;
            }
            let only_method = inject(model.clone(), &pc)?.1.params.trainable;
            pc.modules_to_save = new_parts.clone();
            let (model, injected) = inject(model, &pc)?;
            (model, injected.trainable_prefixes(), only_method)
        }
    };
    let report = coeff_tuning::params::ParamReport::of(&model, &trainable);
    let lr = if method == VlMethod::Full {
        cfg.full_lr
    } else {
        cfg.lr
    };
    let config = coeff_harness::runs::adapter_trainer_config(
        lr,
        cfg.coeff_lr,
        cfg.steps,
        seed,
        cfg.checkpoint_secs,
    );
    let mut trainer =
        Trainer::<B>::new(config, trainable.clone(), checkpoint_path(dir), fingerprint)?;
    let model = trainer.resume(model, device)?;
    let label = format!("{}-s{seed}", method.name());
    let bar = ProgressBar::new(cfg.steps as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.clone());
    bar.set_position(trainer.state().step as u64);
    let by_task: Vec<Vec<usize>> = Task::ALL.iter().map(|&t| train.by_task(t)).collect();
    let pad = model.text.config.pad_token_id;
    let bs = cfg.batch_size;
    let loss_fn = |model: &VlBart<B>, step: &Step| -> Result<StepOutput<B>> {
        let t = step.index % Task::ALL.len();
        let pool = &by_task[t];
        let mut rng = SplitMix::new(step.seed);
        let idx: Vec<usize> = (0..bs.min(pool.len()))
            .map(|_| pool[(rng.next_u64() % pool.len() as u64) as usize])
            .collect();
        let (ids, mask) =
            Data::ids::<B>(idx.iter().map(|&i| &train.inputs[i]).collect(), pad, device);
        let (targets, _) = Data::ids::<B>(
            idx.iter().map(|&i| &train.targets[i]).collect(),
            pad,
            device,
        );
        let loss = model.loss(ids, Some(mask), train.features::<B>(&idx, device), targets)?;
        Ok(StepOutput {
            loss,
            message: Task::ALL[t].name().to_string(),
        })
    };
    let mut on_step = |r: &StepReport| {
        bar.set_position(r.completed as u64);
        bar.set_message(format!("loss {:.3} ({})", r.loss, r.message));
    };
    let model = match trainer.run(model, device, loss_fn, &mut on_step)? {
        Finish::Done(m) => m,
        Finish::Stopped(_) => bail!("{label}: stopped early"),
    };
    bar.set_message("evaluating");
    let (scores, samples) = evaluate(&model.valid(), cfg, test, tokenizer, device)?;
    bar.finish_and_clear();
    let state = trainer.state();
    let final_loss = coeff_harness::runs::tail_mean_loss(&state.losses);
    let result = VlRunResult {
        method,
        seed,
        scores,
        trainable_params: report.trainable,
        method_params,
        total_params,
        step_ms: coeff_harness::report::median(state.timed_step_ms()),
        train_seconds: state.train_seconds,
        final_loss,
        samples,
        fingerprint: fingerprint.to_string(),
    };
    write_json(&result_path(dir), &result)?;
    Ok(result)
}

/// Greedy generation on every test example; the four tasks' metrics.
pub(crate) fn evaluate<B: Backend>(
    model: &VlBart<B>,
    cfg: &VlConfig,
    test: &Data,
    tokenizer: &TextTokenizer,
    device: &B::Device,
) -> Result<(Scores, Vec<Sample>)> {
    let c = &model.text.config;
    let generation = GenerationConfig {
        max_new_tokens: cfg.max_new_tokens,
        num_beams: 1,
        ..Default::default()
    };
    let mut per_task: BTreeMap<Task, (Vec<String>, Vec<Vec<String>>)> = BTreeMap::new();
    let mut samples = Vec::new();
    for task in Task::ALL {
        let idx = test.by_task(task);
        for chunk in idx.chunks(50) {
            let (ids, mask) = Data::ids::<B>(
                chunk.iter().map(|&i| &test.inputs[i]).collect(),
                c.pad_token_id,
                device,
            );
            let out = model.generate(
                ids,
                Some(mask),
                test.features::<B>(chunk, device),
                &generation,
            )?;
            for (&i, row) in chunk.iter().zip(out) {
                let body: Vec<u32> = row
                    .into_iter()
                    .skip(1)
                    .take_while(|&t| t != c.eos_token_id)
                    .collect();
                let text = tokenizer.decode(&body)?;
                let e = &test.examples[i];
                if samples
                    .iter()
                    .filter(|s: &&(String, String, String)| s.0.starts_with(task.name()))
                    .count()
                    < 3
                {
                    samples.push((e.text.clone(), text.clone(), e.target.clone()));
                }
                let entry = per_task.entry(task).or_default();
                entry.0.push(text);
                entry.1.push(e.refs.clone());
            }
        }
    }
    let em = |t: Task| {
        let (h, r) = &per_task[&t];
        100.0
            * h.iter()
                .zip(r)
                .filter(|(h, r)| r.iter().any(|r| metrics::exact_match(h, r)))
                .count() as f64
            / h.len().max(1) as f64
    };
    let (ch, cr) = &per_task[&Task::Caption];
    let (vqa, gqa, nlvr) = (em(Task::Vqa), em(Task::Gqa), em(Task::Nlvr));
    let bleu = 100.0 * metrics::bleu4(ch, cr);
    let cider = 100.0 * metrics::cider_d(ch, cr);
    Ok((
        Scores {
            vqa,
            gqa,
            nlvr,
            caption_bleu4: bleu,
            caption_cider: cider,
            caption_em: em(Task::Caption),
            average: (vqa + gqa + nlvr + cider) / 4.0,
        },
        samples,
    ))
}
