//! The real easy-VQA wheel (fetched with pip, pinned, sha256-checked, cached): counts as its
//! README states, and the per-image labels recovered from the questions answer every question
//! of both splits (yes/no with negations included).

use coeff_data::easy_vqa::{easy_vqa, image_labels, ShapeLabel, COLOURS, SHAPES};

/// The answer `label` implies for `question`, or `None` if the question names no shape/colour.
fn implied(label: ShapeLabel, question: &str) -> Option<String> {
    if question.starts_with("what") {
        let colour = question.contains("color");
        return Some(
            if colour {
                COLOURS[label.colour]
            } else {
                SHAPES[label.shape]
            }
            .to_string(),
        );
    }
    let negated = question.contains(" not ") || question.contains(" no ");
    let shape = SHAPES
        .iter()
        .position(|w| question.contains(&format!(" {w}")));
    let colour = COLOURS
        .iter()
        .position(|w| question.contains(&format!(" {w} ")));
    let truth = match (shape, colour) {
        (Some(s), _) => s == label.shape,
        (None, Some(c)) => c == label.colour,
        (None, None) => return None,
    };
    Some(if truth != negated { "yes" } else { "no" }.to_string())
}

#[test]
fn easy_vqa_loads_and_labels_answer_every_question() {
    let data = easy_vqa(&coeff_assets::cache_dir(), &mut |m| eprintln!("{m}")).unwrap();
    for (split, images, questions) in [(&data.train, 4000, 38_575), (&data.test, 1000, 9_673)] {
        assert_eq!(split.images.len(), images);
        assert_eq!(split.questions.len(), questions);
        assert!(split
            .images
            .iter()
            .all(|i| i.channels == 3 && i.height == 64 && i.width == 64));
        let labels = image_labels(split);
        let missing = labels.iter().filter(|l| l.is_none()).count();
        assert_eq!(missing, 0, "images without a recovered label");
        for q in &split.questions {
            let label = labels[q.image].unwrap();
            assert_eq!(
                implied(label, &q.text).as_deref(),
                Some(q.answer.as_str()),
                "{q:?} {label:?}"
            );
        }
    }
}

#[test]
fn pixel_labels_agree_with_the_questions() {
    use coeff_data::easy_vqa::pixel_label;
    let data = easy_vqa(&coeff_assets::cache_dir(), &mut |m| eprintln!("{m}")).unwrap();
    let labels = image_labels(&data.train);
    let agree = data
        .train
        .images
        .iter()
        .zip(&labels)
        .filter(|(img, l)| pixel_label(img) == **l)
        .count();
    let rate = agree as f64 / labels.len() as f64;
    eprintln!(
        "pixel labels agree with the question labels on {agree}/{} images",
        labels.len()
    );
    assert!(rate > 0.97, "agreement {rate}");
}
