//! Shared test fixtures: the backend under test and a tiny transformer that implements
//! `Adaptable`, standing in for the model crates.
#![allow(dead_code)]

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use coeff_tuning::peft::{join, params};
use coeff_tuning::{
    Adaptable, AttentionInput, MultiHeadAttention, MultiHeadAttentionConfig, PeftConv2d,
    PeftLinear, Site,
};

#[cfg(feature = "test-cuda")]
pub type Inner = burn::backend::Cuda;
#[cfg(all(feature = "test-wgpu", not(feature = "test-cuda")))]
pub type Inner = burn::backend::Wgpu;
#[cfg(all(
    feature = "test-flex",
    not(any(feature = "test-wgpu", feature = "test-cuda"))
))]
pub type Inner = burn::backend::Flex;
#[cfg(not(any(feature = "test-wgpu", feature = "test-flex", feature = "test-cuda")))]
pub type Inner = burn::backend::NdArray<f32>;

/// The backend tests train on.
pub type TB = burn::backend::Autodiff<Inner>;

pub fn device() -> burn::tensor::Device<TB> {
    Default::default()
}

/// Deterministic random tensor.
pub fn randn<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    dev: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    // A small LCG keeps fixtures identical on every backend (backend RNGs differ).
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let vals: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(vals, shape), dev)
}

/// The backend's generator is process-global: tests that seed it (`B::seed`, or a trainer
/// re-seeding every step) and depend on its draws hold this lock, and so does every other
/// test of the same binary that draws from it, so none draws in between.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    use burn::tensor::ElementConversion;
    (a - b).abs().max().into_scalar().elem::<f32>()
}

/// One pre-norm-free transformer block: attention + MLP, residual.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub attn: MultiHeadAttention<B>,
    pub fc1: PeftLinear<B>,
    pub fc2: PeftLinear<B>,
}

/// A token-mixing convolution (kernel 3 along the sequence), two blocks, mean pooling, a
/// classification head. The convolution puts a conv site through every conformance check.
#[derive(Module, Debug)]
pub struct TinyModel<B: Backend> {
    pub mixer: PeftConv2d<B>,
    pub blocks: Vec<Block<B>>,
    pub head: Linear<B>,
}

pub const D_MODEL: usize = 12;
pub const HEADS: usize = 3;
pub const CLASSES: usize = 4;

impl<B: Backend> TinyModel<B> {
    pub fn new(dev: &B::Device) -> Self {
        let blocks = (0..2)
            .map(|_| Block {
                attn: MultiHeadAttentionConfig::new(D_MODEL, HEADS).init(dev),
                fc1: PeftLinear::new(&LinearConfig::new(D_MODEL, 2 * D_MODEL), dev),
                fc2: PeftLinear::new(&LinearConfig::new(2 * D_MODEL, D_MODEL), dev),
            })
            .collect();
        let mixer = PeftConv2d::new(
            &Conv2dConfig::new([D_MODEL, D_MODEL], [3, 1])
                .with_padding(PaddingConfig2d::Explicit(1, 0, 1, 0)),
            dev,
        );
        let model = Self {
            mixer,
            blocks,
            head: LinearConfig::new(D_MODEL, CLASSES).init(dev),
        };
        // Burn's initialisers draw from the backend's global generator, which is unseeded
        // and shared by the tests running in parallel; every parameter is redrawn from a
        // fixed stream so each check sees the same model on every run and backend. The
        // bound is Burn's default (Kaiming uniform): 1 / sqrt(fan_in).
        let values = params::collect_where(&model, |_| true)
            .into_iter()
            .enumerate()
            .map(|(k, (path, shape, _))| {
                let fan_in: usize = match shape.len() {
                    2 => shape[0],
                    4 => shape[1..].iter().product(),
                    _ => D_MODEL,
                };
                let bound = 1.0 / (fan_in as f32).sqrt();
                let v = randn::<B, 1>([shape.iter().product()], 1000 + k as u64, dev)
                    .mul_scalar(bound)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap();
                (path, (shape, v))
            })
            .collect();
        params::replace_params(params::materialize(model), &values)
    }

    /// `x: [batch, seq, D_MODEL]` -> logits `[batch, CLASSES]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        // [B, N, D] -> [B, D, N, 1] -> conv -> back; residual.
        let [batch, n, d] = x.dims();
        let grid = x.clone().swap_dims(1, 2).reshape([batch, d, n, 1]);
        let mixed = self
            .mixer
            .forward(grid)
            .reshape([batch, d, n])
            .swap_dims(1, 2);
        let mut x = x + mixed;
        for b in &self.blocks {
            x = x.clone() + b.attn.forward(AttentionInput::self_attn(x)).context;
            x = x.clone()
                + b.fc2
                    .forward(coeff_tuning::nn::Activation::Gelu.forward(b.fc1.forward(x)));
        }
        self.head.forward(x.mean_dim(1).squeeze_dim(1))
    }
}

impl<B: Backend> Adaptable<B> for Block<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.attn.visit_sites(&join(path, "attn"), f)?;
        self.fc1.visit_sites(&join(path, "fc1"), f)?;
        self.fc2.visit_sites(&join(path, "fc2"), f)
    }
}

impl<B: Backend> Adaptable<B> for TinyModel<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> coeff_tuning::PeftResult<()>,
    ) -> coeff_tuning::PeftResult<()> {
        self.mixer.visit_sites(&join(path, "mixer"), f)?;
        self.blocks.visit_sites(&join(path, "blocks"), f)
    }
}

/// Move every parameter under `prefixes` away from its initial value, deterministically, so
/// adapters act (B != 0, alpha != 0) without training.
pub fn perturb<B: Backend, M: Module<B>>(model: M, prefixes: &[String], scale: f32) -> M {
    let values = params::collect_params(&model, prefixes)
        .into_iter()
        .enumerate()
        .map(|(k, (path, shape, v))| {
            let v = v
                .iter()
                .enumerate()
                .map(|(i, x)| x + scale * ((i as f32 * 0.37 + k as f32 * 1.3).sin()))
                .collect();
            (path, (shape, v))
        })
        .collect();
    params::replace_params(model, &values)
}
