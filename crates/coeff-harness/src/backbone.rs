//! The real pretrained ViTs the experiments and commands fetch ([`Backbone`]), and a ViT with a
//! fresh classification head on its pooled output ([`Classifier`]): the model of the few-shot
//! sweep, the VL experiment's image features, the concept scorers and `infer` on a few-shot
//! adapter.

use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, Site};
use coeff_vit::VisionTransformer;
use serde::{Deserialize, Serialize};

use crate::rng::Lcg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// DINOv2 ViT-S/14 (22 M parameters, 6 heads), ImageNet normalisation.
    Dinov2S14,
    /// CLIP ViT-B/16 image tower (86 M parameters, 12 heads), CLIP normalisation.
    ClipB16,
}

impl Backbone {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Dinov2S14 => "dinov2-s14",
            Backbone::ClipB16 => "clip-b16",
        }
    }

    /// The asset to fetch.
    pub fn asset(self) -> coeff_vit::pretrained::Asset {
        match self {
            Backbone::Dinov2S14 => coeff_vit::pretrained::DINOV2_S14,
            Backbone::ClipB16 => coeff_vit::pretrained::CLIP_B16_INT8,
        }
    }

    /// Patch side.
    pub fn patch(self) -> usize {
        match self {
            Backbone::Dinov2S14 => 14,
            Backbone::ClipB16 => 16,
        }
    }

    /// Attention heads per layer (for memory bounds).
    pub fn heads(self) -> usize {
        match self {
            Backbone::Dinov2S14 => 6,
            Backbone::ClipB16 => 12,
        }
    }

    /// The checkpoint's input normalisation at `size` pixels.
    pub fn preprocess(self, size: usize) -> coeff_data::Preprocess {
        let n = match self {
            Backbone::Dinov2S14 => coeff_vit::Family::Dinov2,
            Backbone::ClipB16 => coeff_vit::Family::Clip,
        }
        .default_normalization();
        coeff_data::Preprocess::new(size, n.mean, n.std)
    }
}

/// Backbone + linear head. Paths: `backbone.layers.N.attn.query`, ..., `head`.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// The pretrained ViT.
    pub backbone: VisionTransformer<B>,
    /// `[D] -> [classes]` on the backbone's pooled output.
    pub head: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    /// Attach a head for `classes` classes, initialised from `seed` (uniform in
    /// `±1/sqrt(D)`, PyTorch's `nn.Linear` range), the same for every method of a seed.
    pub fn new(backbone: VisionTransformer<B>, classes: usize, seed: u64) -> Self {
        let d = backbone.config.hidden_size;
        let device = backbone.cls_token.val().device();
        let head = seeded_head(d, classes, seed, &device);
        Self { backbone, head }
    }

    /// Pooled features `[B, D]` of `pixels: [B, 3, S, S]`.
    pub fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        self.backbone
            .forward(pixels)
            .expect("input shape is checked when the data is prepared")
            .pooler_output
    }

    /// Logits `[B, classes]` of `pixels: [B, 3, S, S]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.features(pixels))
    }
}

impl<B: Backend> Adaptable<B> for Classifier<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.backbone.visit_sites(&join(path, "backbone"), f)
    }
}

/// A fresh classification head `[d_in] -> [classes]` drawn from `seed`: weight and bias uniform
/// in `±1/sqrt(d_in)` (PyTorch's `nn.Linear` range), the same on every backend and for every
/// method of a seed.
pub fn seeded_head<B: Backend>(
    d_in: usize,
    classes: usize,
    seed: u64,
    device: &B::Device,
) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let mut rng = Lcg::new(seed ^ 0x6865_6164);
    let mut draw = |n: usize| -> Vec<f32> {
        rng.uniform_vec(n, -bound, bound)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    };
    let mut head = LinearConfig::new(d_in, classes).init::<B>(device);
    head.weight = Param::initialized(
        ParamId::new(),
        Tensor::from_data(
            TensorData::new(draw(d_in * classes), [d_in, classes]),
            device,
        ),
    );
    head.bias = Some(Param::initialized(
        ParamId::new(),
        Tensor::from_data(TensorData::new(draw(classes), [classes]), device),
    ));
    head
}
