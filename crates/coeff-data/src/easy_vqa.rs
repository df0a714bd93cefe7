//! easy-VQA (PyPI `easy-vqa==1.0`, MIT): 4,000 train + 1,000 test 64x64 RGB images, each one
//! coloured shape on a light background, and 38,575 + 9,673 questions `[question, answer,
//! image_id]` with 13 answers: "what" questions (shape or colour) and yes/no questions,
//! negations included.
//!
//! The wheel is fetched with pip (pinned, sha256-checked, cached) and read in memory: the
//! questions from `easy_vqa/data/{train,test}/questions.json`, the images from
//! `easy_vqa/data/{train,test}/images/N.png`. Every image's label (its shape and colour) is
//! recovered from the answers of its questions ([`image_labels`]).

use std::collections::BTreeMap;
use std::path::Path;

use coeff_assets::{fetch_wheel, zip_entries, Wheel};

use crate::error::{format, Result};
use crate::image::Image;

/// The pinned wheel.
pub const EASY_VQA_WHEEL: Wheel = Wheel {
    package: "easy-vqa",
    version: "1.0",
    file: "easy_vqa-1.0-py3-none-any.whl",
    sha256: "fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f",
};

/// The shapes of easy-VQA.
pub const SHAPES: [&str; 3] = ["circle", "rectangle", "triangle"];
/// The colours of easy-VQA.
pub const COLOURS: [&str; 8] = [
    "red", "green", "blue", "yellow", "teal", "brown", "black", "gray",
];

/// One question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question text.
    pub text: String,
    /// Its answer (one word).
    pub answer: String,
    /// Index of its image in the split.
    pub image: usize,
}

/// One split: images (index = image id) and questions.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaSplit {
    /// Images, `[3, 64, 64]`, values in `[0, 1]`.
    pub images: Vec<Image>,
    /// Questions.
    pub questions: Vec<Question>,
}

/// Both splits.
#[derive(Debug, Clone, PartialEq)]
pub struct EasyVqa {
    /// 4,000 images, 38,575 questions.
    pub train: VqaSplit,
    /// 1,000 images, 9,673 questions.
    pub test: VqaSplit,
}

/// Fetch (if needed) and read easy-VQA.
pub fn easy_vqa(cache: &Path, log: &mut dyn FnMut(&str)) -> Result<EasyVqa> {
    let (path, bytes) = fetch_wheel(&EASY_VQA_WHEEL, cache, log)?;
    let entries = zip_entries(&path, &bytes, "easy_vqa/data/")?;
    let mut files: BTreeMap<String, Vec<u8>> = entries.into_iter().collect();
    let mut split = |name: &str| -> Result<VqaSplit> {
        let member = |m: &str| path.join(m);
        let qpath = format!("easy_vqa/data/{name}/questions.json");
        let raw = files
            .remove(&qpath)
            .ok_or_else(|| format(&member(&qpath), "missing from the wheel"))?;
        let questions = parse_questions(&member(&qpath), &raw)?;
        let count = questions.iter().map(|q| q.image + 1).max().unwrap_or(0);
        let mut images = Vec::with_capacity(count);
        for id in 0..count {
            let ipath = format!("easy_vqa/data/{name}/images/{id}.png");
            let png = files.get(&ipath).ok_or_else(|| {
                format(
                    &member(&ipath),
                    "missing from the wheel (a question refers to it)",
                )
            })?;
            images.push(decode_rgb(&member(&ipath), png)?);
        }
        Ok(VqaSplit { images, questions })
    };
    Ok(EasyVqa {
        train: split("train")?,
        test: split("test")?,
    })
}

fn parse_questions(path: &Path, raw: &[u8]) -> Result<Vec<Question>> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format(path, format!("not JSON: {e}")))?;
    let rows = value
        .as_array()
        .ok_or_else(|| format(path, "not a JSON list"))?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let bad = || {
                format(
                    path,
                    format!("entry {i} is not [question, answer, image_id]: {row}"),
                )
            };
            let r = row.as_array().filter(|r| r.len() == 3).ok_or_else(bad)?;
            let image = r[2].as_u64().filter(|&n| n < 1_000_000).ok_or_else(bad)? as usize;
            Ok(Question {
                text: r[0].as_str().ok_or_else(bad)?.to_string(),
                answer: r[1].as_str().ok_or_else(bad)?.to_string(),
                image,
            })
        })
        .collect()
}

fn decode_rgb(path: &Path, png: &[u8]) -> Result<Image> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|e| format(path, format!("cannot decode: {e}")))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut pixels = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            pixels[c * h * w + y as usize * w + x as usize] = p[c] as f32 / 255.0;
        }
    }
    Ok(Image {
        channels: 3,
        height: h,
        width: w,
        pixels,
    })
}

/// The label of an image: indices into [`SHAPES`] and [`COLOURS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeLabel {
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
}

impl ShapeLabel {
    /// "red circle".
    pub fn words(&self) -> String {
        format!("{} {}", COLOURS[self.colour], SHAPES[self.shape])
    }
}

/// Each image's shape and colour, recovered from its questions: a "what" answer names the
/// shape or colour; a yes/no question about a named shape or colour tells whether the image
/// has it (the answer, flipped when the question is negated: "does the image not contain",
/// "is no ... present"), which fixes it or rules it out. `None` where the questions leave more
/// than one candidate.
pub fn image_labels(split: &VqaSplit) -> Vec<Option<ShapeLabel>> {
    let n = split.images.len();
    // Candidate sets as bit masks.
    let mut shapes = vec![(1u32 << SHAPES.len()) - 1; n];
    let mut colours = vec![(1u32 << COLOURS.len()) - 1; n];
    let find = |list: &[&str], word: &str| list.iter().position(|w| *w == word);
    for q in &split.questions {
        let (s, c) = (&mut shapes[q.image], &mut colours[q.image]);
        if let Some(i) = find(&SHAPES, &q.answer) {
            *s = 1 << i;
            continue;
        }
        if let Some(i) = find(&COLOURS, &q.answer) {
            *c = 1 << i;
            continue;
        }
        let negated = q.text.contains(" not ") || q.text.contains(" no ");
        let has = (q.answer == "yes") != negated;
        let shape = SHAPES
            .iter()
            .position(|w| q.text.contains(&format!(" {w}")));
        let colour = COLOURS
            .iter()
            .position(|w| q.text.contains(&format!(" {w} ")));
        let (set, i) = match (shape, colour) {
            (Some(i), _) => (s, i),
            (None, Some(i)) => (c, i),
            (None, None) => continue,
        };
        if has {
            *set = 1 << i;
        } else {
            *set &= !(1 << i);
        }
    }
    let single = |m: u32| (m.count_ones() == 1).then(|| m.trailing_zeros() as usize);
    // Where the questions leave candidates, the pixels decide among them.
    let pick = |m: u32, seen: Option<usize>| single(m).or(seen.filter(|&i| m & (1 << i) != 0));
    shapes
        .into_iter()
        .zip(colours)
        .zip(&split.images)
        .map(|((s, c), img)| {
            let seen = (single(s).is_none() || single(c).is_none())
                .then(|| pixel_label(img))
                .flatten();
            Some(ShapeLabel {
                shape: pick(s, seen.map(|l| l.shape))?,
                colour: pick(c, seen.map(|l| l.colour))?,
            })
        })
        .collect()
}

/// The palette of the shapes (CSS named colours), in [`COLOURS`] order.
pub const PALETTE: [[u8; 3]; 8] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [0, 128, 128],
    [165, 42, 42],
    [0, 0, 0],
    [128, 128, 128],
];

/// The label read off the pixels: the colour is the palette entry most pixels have exactly;
/// the shape follows from how much of its bounding box those pixels fill (a triangle about
/// half, a disc about pi/4, a rectangle nearly all). `None` for an image with no palette
/// pixel.
pub fn pixel_label(img: &Image) -> Option<ShapeLabel> {
    let (h, w) = (img.height, img.width);
    if img.channels != 3 {
        return None;
    }
    let at =
        |c: usize, y: usize, x: usize| (img.pixels[c * h * w + y * w + x] * 255.0).round() as u8;
    let mut counts = [0usize; 8];
    let mut boxes = [(usize::MAX, usize::MAX, 0usize, 0usize); 8];
    for y in 0..h {
        for x in 0..w {
            let rgb = [at(0, y, x), at(1, y, x), at(2, y, x)];
            if let Some(k) = PALETTE.iter().position(|p| *p == rgb) {
                counts[k] += 1;
                let b = &mut boxes[k];
                *b = (b.0.min(y), b.1.min(x), b.2.max(y), b.3.max(x));
            }
        }
    }
    let (colour, &count) = counts.iter().enumerate().max_by_key(|(_, c)| **c)?;
    if count == 0 {
        return None;
    }
    let (y0, x0, y1, x1) = boxes[colour];
    let fill = count as f64 / ((y1 - y0 + 1) * (x1 - x0 + 1)) as f64;
    let shape = if fill < 0.62 {
        2 // triangle
    } else if fill < 0.88 {
        0 // circle
    } else {
        1 // rectangle
    };
    Some(ShapeLabel { shape, colour })
}
