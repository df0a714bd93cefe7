//! The four tasks, built from easy-VQA and its per-image labels, mirroring the paper's four
//! (VQAv2, GQA, NLVR2, COCO captions) in one multi-task model with task prefixes:
//!
//! | task | input | target | metric |
//! |---|---|---|---|
//! | `vqa` | `vqa: <a "what" question>` | the shape or colour word | exact match |
//! | `gqa` | `gqa: <a yes/no question, negations included>` | yes / no | exact match |
//! | `nlvr` | `nlvr: <a statement about two images>` (left, right) | true / false (balanced) | accuracy |
//! | `caption` | `caption:` | a sentence naming the shape and colour (4-8 words) | CIDEr-D, BLEU-4 (5 references) |
//!
//! Statements and captions are generated here from the labels by fixed templates; which
//! example, pair, truth value and statement is drawn from a seeded generator, so the sets are
//! reproducible. Test examples come from the test split only (fixed seed, the same for every
//! method and seed), training examples from the train split only.

use coeff_data::easy_vqa::{ShapeLabel, VqaSplit, COLOURS, SHAPES};
use coeff_data::sampler::SplitMix;
use serde::{Deserialize, Serialize};

/// One of the four tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Open "what" questions.
    Vqa,
    /// Yes/no questions.
    Gqa,
    /// True/false statements about an image pair.
    Nlvr,
    /// Captions.
    Caption,
}

impl Task {
    /// All four, in table order.
    pub const ALL: [Task; 4] = [Task::Vqa, Task::Gqa, Task::Nlvr, Task::Caption];

    /// Name and text prefix.
    pub fn name(self) -> &'static str {
        match self {
            Task::Vqa => "vqa",
            Task::Gqa => "gqa",
            Task::Nlvr => "nlvr",
            Task::Caption => "caption",
        }
    }

    /// Images per example.
    pub fn images(self) -> usize {
        if self == Task::Nlvr {
            2
        } else {
            1
        }
    }
}

/// One example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Its task.
    pub task: Task,
    /// The encoder's text, prefix included.
    pub text: String,
    /// Image indices in the split (two for `nlvr`: left, right).
    pub images: Vec<usize>,
    /// The decoder's target.
    pub target: String,
    /// Every correct output (captions: all templates; other tasks: the target).
    pub refs: Vec<String>,
}

/// The caption templates: all are references; the first is the training target (a fixed
/// target trains in the few steps of the CPU default, where drawing one of five did not).
pub fn captions(l: ShapeLabel) -> Vec<String> {
    let (c, s) = (COLOURS[l.colour], SHAPES[l.shape]);
    vec![
        format!("a {c} {s} shape."),
        format!("a {c} {s} on a light background."),
        format!("an image of a {c} {s}."),
        format!("there is a {c} {s} in the image."),
        format!("a picture showing one {c} {s}."),
    ]
}

/// Every statement the templates make about a (left, right) pair, with its truth.
pub fn statements(a: ShapeLabel, b: ShapeLabel) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (s, shape) in SHAPES.iter().enumerate() {
        let (ha, hb) = (a.shape == s, b.shape == s);
        out.push((format!("both images contain a {shape}."), ha && hb));
        out.push((format!("exactly one image contains a {shape}."), ha != hb));
        out.push((format!("the left image contains a {shape}."), ha));
        out.push((format!("the right image contains a {shape}."), hb));
    }
    for (c, colour) in COLOURS.iter().enumerate() {
        let (ha, hb) = (a.colour == c, b.colour == c);
        out.push((format!("both shapes are {colour}."), ha && hb));
        out.push((format!("the left shape is {colour}."), ha));
        out.push((format!("the right shape is {colour}."), hb));
    }
    out.push((
        "the two shapes have the same color.".into(),
        a.colour == b.colour,
    ));
    out.push((
        "the two images show the same shape.".into(),
        a.shape == b.shape,
    ));
    out
}

fn pick<'a, T>(rng: &mut SplitMix, items: &'a [T]) -> &'a T {
    &items[(rng.next_u64() % items.len() as u64) as usize]
}

/// `per_task` examples of each task from `split` (seeded). "what" questions go to `vqa`,
/// yes/no ones to `gqa`; each is used at most once.
pub fn build(split: &VqaSplit, labels: &[ShapeLabel], per_task: usize, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity(4 * per_task);
    let mut questions: Vec<usize> = (0..split.questions.len()).collect();
    rng.shuffle(&mut questions);
    for (task, open) in [(Task::Vqa, true), (Task::Gqa, false)] {
        out.extend(
            questions
                .iter()
                .map(|&i| &split.questions[i])
                .filter(|q| q.text.starts_with("what") == open)
                .take(per_task)
                .map(|q| Example {
                    task,
                    text: format!("{}: {}", task.name(), q.text),
                    images: vec![q.image],
                    target: q.answer.clone(),
                    refs: vec![q.answer.clone()],
                }),
        );
    }
    let n = labels.len() as u64;
    for i in 0..per_task {
        let (a, b) = ((rng.next_u64() % n) as usize, (rng.next_u64() % n) as usize);
        // Balanced: even examples true, odd false (when the pair allows both).
        let all = statements(labels[a], labels[b]);
        let want = i % 2 == 0;
        let matching: Vec<&(String, bool)> = all.iter().filter(|(_, t)| *t == want).collect();
        let (text, truth) = if matching.is_empty() {
            pick(&mut rng, &all).clone()
        } else {
            (*pick(&mut rng, &matching)).clone()
        };
        let answer = if truth { "true" } else { "false" };
        out.push(Example {
            task: Task::Nlvr,
            text: format!("nlvr: {text}"),
            images: vec![a, b],
            target: answer.into(),
            refs: vec![answer.into()],
        });
    }
    let mut images: Vec<usize> = (0..labels.len()).collect();
    rng.shuffle(&mut images);
    for &img in images.iter().cycle().take(per_task) {
        let refs = captions(labels[img]);
        out.push(Example {
            task: Task::Caption,
            text: "caption:".into(),
            images: vec![img],
            target: refs[0].clone(),
            refs,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_both_truths_for_any_pair() {
        for s1 in 0..3 {
            for c1 in 0..8 {
                let (a, b) = (
                    ShapeLabel {
                        shape: s1,
                        colour: c1,
                    },
                    ShapeLabel {
                        shape: (s1 + 1) % 3,
                        colour: c1,
                    },
                );
                let all = statements(a, b);
                assert!(all.iter().any(|s| s.1) && all.iter().any(|s| !s.1));
                assert!(all.contains(&("the two shapes have the same color.".into(), true)));
                assert!(all.contains(&("the two images show the same shape.".into(), false)));
            }
        }
    }
}
