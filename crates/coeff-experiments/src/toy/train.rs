//! One run: Adam on the mean squared error.

use anyhow::{bail, Result};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use coeff_tuning::{AttentionInput, MultiHeadAttention};
use indicatif::{ProgressBar, ProgressStyle};

use super::config::ToyArgs;

/// Adam on the MSE; a non-finite loss (divergence) is an error naming the step and the flags.
pub(crate) fn train<B: AutodiffBackend>(
    mut layer: MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    target: Tensor<B::InnerBackend, 3>,
    args: &ToyArgs,
    name: &str,
) -> Result<(MultiHeadAttention<B>, Vec<f64>)> {
    let target = Tensor::<B, 3>::from_inner(target);
    let mut optim = AdamConfig::new().init::<B, MultiHeadAttention<B>>();
    let bar = ProgressBar::new(args.steps as u64).with_style(
        ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} loss {msg} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    let mut curve = Vec::new();
    for step in 0..args.steps {
        let y = layer.forward(AttentionInput::self_attn(x.clone())).context;
        let loss = (y - target.clone()).powi_scalar(2).mean();
        let l: f64 = loss.clone().into_scalar().elem::<f64>();
        if !l.is_finite() {
            bar.finish_and_clear();
            bail!(
                "run {name}: the loss is {l} at step {step} (--lr {:?}, --scale {:?}): training \
                 diverged; try a smaller --lr",
                args.lr,
                args.scale
            );
        }
        if step % 10 == 0 {
            curve.push(l);
            bar.set_message(format!("{l:.5}"));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(args.lr, layer, grads);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((layer, curve))
}

pub(crate) fn mse<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f64 {
    (a - b).powi_scalar(2).mean().into_scalar().elem::<f64>()
}
