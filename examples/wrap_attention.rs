//! Wrap an attention model from another Burn project with Coeff-Tuning + LoRA, train one step,
//! save the adapter, and load it back. Run: `cargo run --release -p coeff-examples --example wrap_attention`
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use coeff_tuning::peft::join;
use coeff_tuning::*;

/// Your model: any module whose attention is `coeff_tuning::MultiHeadAttention`.
#[derive(Module, Debug)]
struct Encoder<B: Backend> {
    layers: Vec<MultiHeadAttention<B>>,
}

impl<B: Backend> Encoder<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layers.iter().fold(x, |h, l| {
            h.clone() + l.forward(AttentionInput::self_attn(h)).context
        })
    }
}

/// Tell the PEFT machinery where the adaptable layers are (paths as Burn's visitors spell them).
impl<B: Backend> Adaptable<B> for Encoder<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> PeftResult<()>,
    ) -> PeftResult<()> {
        self.layers.visit_sites(&join(path, "layers"), f)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let layers = (0..2)
        .map(|_| MultiHeadAttentionConfig::new(64, 8).init::<B>(&device))
        .collect();
    let base = Encoder { layers };

    // LoRA rank 8 on query/value + Coeff-Tuning (8x8 alpha per layer, dropout 0.2).
    let (model, injected) = inject(
        base.clone(),
        &Method::LoraCoeff.config(8, &["query", "value"]),
    )?;
    println!("{}", injected.params);

    let x = Tensor::<B, 3>::random([4, 16, 64], Distribution::Normal(0.0, 1.0), &device);
    let loss = model.forward(x.clone()).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamWConfig::new().init().step(1e-3, model, grads);

    save_adapter(&model, &injected, "target/example-adapter")?;
    let (reloaded, _) = load_adapter(base, "target/example-adapter")?;
    // Compare in inference mode (`valid()`: no dropout on alpha).
    let (a, b) = (
        model.valid().forward(x.clone().inner()),
        reloaded.valid().forward(x.inner()),
    );
    let diff = (a - b).abs().max().into_scalar();
    println!("saved and reloaded target/example-adapter; max output difference {diff}");
    Ok(())
}
