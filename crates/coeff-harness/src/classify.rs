//! Image classification on a labelled split, shared by the few-shot sweep and
//! `coeff tune classify`: model inputs (pixels, preprocessed per batch, or cached features),
//! logits, accuracy and the confusion matrix, and the example order of an epoch.
//!
//! ```text
//! Split { inputs: Pixels{images, preprocess} | Features{[n, dim]}, labels }
//!   logits(model, split, idx)      -> [idx.len(), classes]   (whole model | head only)
//!   confusion(model, split, batch) -> counts[truth][prediction]
//!   accuracy(model, split, batch)  = trace / n
//! ```

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use coeff_data::sampler::SplitMix;
use coeff_data::{Image, Preprocess};
use coeff_vit::VisionTransformer;

use crate::backbone::Classifier;

/// A model that classifies preprocessed images, with its head callable on cached features.
pub trait ImageClassifier<B: Backend> {
    /// Features `[B, D_in]` the head takes, of `pixels: [B, 3, S, S]`.
    fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2>;
    /// Logits `[B, classes]` of features `[B, D_in]` (the head alone).
    fn head_logits(&self, features: Tensor<B, 2>) -> Tensor<B, 2>;
    /// Logits `[B, classes]` of `pixels: [B, 3, S, S]`.
    fn logits(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head_logits(self.features(pixels))
    }
}

impl<B: Backend> ImageClassifier<B> for Classifier<B> {
    fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        Classifier::features(self, pixels)
    }
    fn head_logits(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(features)
    }
}

/// A ViT with its own classification head ([`VisionTransformer::with_head`]); the features
/// are the family's head input ([`VisionTransformer::head_input`]).
impl<B: Backend> ImageClassifier<B> for VisionTransformer<B> {
    fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let out = self
            .forward(pixels)
            .expect("input shape is checked when the data is prepared");
        self.head_input(out.last_hidden_state)
    }
    fn head_logits(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head
            .as_ref()
            .expect("a classifier ViT has a head (VisionTransformer::with_head)")
            .forward(features)
    }
}

/// Model inputs of a set of images: pixels (preprocessed on demand) or cached features.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Raw images and how to preprocess them.
    Pixels {
        /// The images.
        images: Vec<Image>,
        /// Resize + normalisation.
        preprocess: Preprocess,
    },
    /// Features `[n, dim]` the head takes, row-major.
    Features {
        /// Values.
        data: Vec<f32>,
        /// Feature width.
        dim: usize,
    },
}

/// Inputs with labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Inputs.
    pub inputs: Inputs,
    /// Labels.
    pub labels: Vec<usize>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Labels `[idx.len()]` of the examples `idx`.
    pub fn labels<B: Backend>(&self, idx: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
        let v: Vec<i64> = idx.iter().map(|&i| self.labels[i] as i64).collect();
        Tensor::from_data(TensorData::new(v, [idx.len()]), device)
    }
}

/// Features of `images` through `features` (a frozen model), in batches of `batch`.
pub fn cached_features<B: Backend>(
    images: &[Image],
    preprocess: &Preprocess,
    batch: usize,
    device: &B::Device,
    features: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
) -> Inputs {
    let mut data = Vec::new();
    let mut dim = 0;
    for chunk in images.chunks(batch.max(1)) {
        let refs: Vec<&Image> = chunk.iter().collect();
        let f = features(preprocess.batch(&refs, device));
        dim = f.dims()[1];
        data.extend(
            f.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32"),
        );
    }
    Inputs::Features { data, dim }
}

/// Logits of the examples `idx` of `split`: through the whole model (pixels) or the head only
/// (features). `augment` = `Some(rng)` applies random flips and shifts to pixels.
pub fn logits<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    split: &Split,
    idx: &[usize],
    augment: Option<&mut SplitMix>,
    device: &B::Device,
) -> Tensor<B, 2> {
    match &split.inputs {
        Inputs::Pixels { images, preprocess } => {
            let imgs: Vec<&Image> = idx.iter().map(|&i| &images[i]).collect();
            let x = match augment {
                Some(rng) => preprocess.augmented_batch::<B>(&imgs, 2, rng, device),
                None => preprocess.batch::<B>(&imgs, device),
            };
            model.logits(x)
        }
        Inputs::Features { data, dim } => {
            let v: Vec<f32> = idx
                .iter()
                .flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            let f = Tensor::from_data(TensorData::new(v, [idx.len(), *dim]), device);
            model.head_logits(f)
        }
    }
}

/// The confusion matrix of `model` on `split` (`counts[truth][prediction]`, `classes` square),
/// in batches of `batch`. Non-finite logits (a model that diverged on its last steps) are an
/// error, not a prediction.
pub fn confusion<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    split: &Split,
    classes: usize,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Vec<usize>>> {
    let mut counts = vec![vec![0usize; classes]; classes];
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(batch.max(1)) {
        let out = logits(model, split, idx, None, device);
        check_finite(&out)?;
        let pred: Vec<i64> = out
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("i64");
        for (&i, &p) in idx.iter().zip(&pred) {
            counts[split.labels[i]][(p as usize).min(classes - 1)] += 1;
        }
    }
    Ok(counts)
}

fn check_finite<B: Backend>(out: &Tensor<B, 2>) -> Result<()> {
    let bad: i64 = out
        .clone()
        .is_finite()
        .bool_not()
        .int()
        .sum()
        .into_scalar()
        .elem();
    if bad > 0 {
        bail!("{bad} of the model's logits on the evaluated images are not finite (NaN or ±inf)");
    }
    Ok(())
}

/// Accuracy of `model` on `split`, in batches of `batch`. Non-finite logits (a model that
/// diverged on its last steps) are an error, not an accuracy.
pub fn accuracy<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    split: &Split,
    batch: usize,
    device: &B::Device,
) -> Result<f64> {
    let mut correct = 0usize;
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(batch.max(1)) {
        let out = logits(model, split, idx, None, device);
        check_finite(&out)?;
        let pred = out.argmax(1);
        let truth = split.labels::<B>(idx, device).reshape([idx.len(), 1]);
        let hits: i64 = pred.equal(truth).int().sum().into_scalar().elem();
        correct += hits as usize;
    }
    Ok(correct as f64 / split.len().max(1) as f64)
}

/// Accuracy of a confusion matrix (its trace over its total).
pub fn confusion_accuracy(counts: &[Vec<usize>]) -> f64 {
    let total: usize = counts.iter().flatten().sum();
    let hits: usize = counts.iter().enumerate().map(|(i, row)| row[i]).sum();
    hits as f64 / total.max(1) as f64
}

/// The order of the `n` training examples in `epoch` of a run seeded `seed`: a permutation
/// drawn from `(seed, epoch)` alone, so a resumed run replays the same batches.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    SplitMix::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64) ^ 0x0065_706f_6368)
        .shuffle(&mut v);
    v
}

/// The mean cross-entropy `[1]` of `logits: [B, C]` against `labels: [B]`, and the batch's
/// correct predictions.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, usize) {
    let n = labels.dims()[0];
    let hits: i64 = logits
        .clone()
        .detach()
        .argmax(1)
        .equal(labels.clone().reshape([n, 1]))
        .int()
        .sum()
        .into_scalar()
        .elem();
    let loss = burn::tensor::activation::log_softmax(logits, 1)
        .gather(1, labels.reshape([n, 1]))
        .mean()
        .neg();
    (loss, hits as usize)
}
