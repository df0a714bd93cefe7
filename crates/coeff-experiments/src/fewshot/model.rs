//! A pretrained ViT with a fresh classification head on its pooled output.

use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::peft::join;
use coeff_tuning::{Adaptable, Site};
use coeff_vit::VisionTransformer;

use crate::rng::Lcg;

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
        let bound = 1.0 / (d as f64).sqrt();
        let mut rng = Lcg::new(seed ^ 0x6865_6164);
        let mut draw = |n: usize| -> Vec<f32> {
            rng.uniform_vec(n, -bound, bound)
                .into_iter()
                .map(|v| v as f32)
                .collect()
        };
        let mut head = LinearConfig::new(d, classes).init::<B>(&device);
        head.weight = Param::initialized(
            ParamId::new(),
            Tensor::from_data(TensorData::new(draw(d * classes), [d, classes]), &device),
        );
        head.bias = Some(Param::initialized(
            ParamId::new(),
            Tensor::from_data(TensorData::new(draw(classes), [classes]), &device),
        ));
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
