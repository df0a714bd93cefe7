//! AdamW whose state is keyed by parameter *path*, with global-norm gradient clipping.
//!
//! Burn's optimizers key their state by `ParamId`, which is random per model instance; a
//! checkpoint written by one process could not be matched to the model a resumed process
//! rebuilds from the pretrained weights. Keying by module path (`backbone.layers.3.attn.coeff.
//! alpha`) makes the state portable: [`AdamW::state`] / [`AdamW::load_state`] round-trip it
//! through any tensor file.
//!
//! The update is PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments)
//! applied after `torch.nn.utils.clip_grad_norm_` over all trainable parameters together.

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{PeftError, Result};

/// Hyper-parameters of [`AdamW`] (PyTorch defaults except the weight decay).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the second-moment root.
    pub eps: f64,
    /// Decoupled weight decay (the paper's ViT recipe: 1e-4).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; `None` = no clipping.
    pub grad_clip: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            grad_clip: Some(5.0),
        }
    }
}

/// What one [`AdamW::step`] saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// Number of parameter tensors updated.
    pub tensors: usize,
}

/// AdamW over the trainable (gradient-requiring) parameters of a module, state keyed by path.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    /// Steps taken (for bias correction).
    steps: usize,
    /// Path -> (first moment, second moment), flattened.
    moments: BTreeMap<String, (Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One update of every parameter of `model` that requires a gradient, with learning rate
    /// `lr`. Gradients are clipped to the global norm in the config first.
    ///
    /// Errors (nothing is updated then): a non-finite gradient norm, a trainable parameter
    /// without a gradient.
    pub fn step<AB, M>(&mut self, model: M, grads: &AB::Gradients, lr: f64) -> Result<(M, StepInfo)>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step_with(model, grads, &|_| lr)
    }

    /// [`AdamW::step`] with a learning rate per parameter path (parameter groups), e.g. a
    /// larger one for `*.coeff.alpha`.
    pub fn step_with<AB, M>(
        &mut self,
        model: M,
        grads: &AB::Gradients,
        lr: &dyn Fn(&str) -> f64,
    ) -> Result<(M, StepInfo)>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.update(model, &Grads::<AB>::Raw(grads), lr)
    }

    /// [`AdamW::step_with`] on gradients by parameter id (`GradientsParams`): accumulated
    /// over micro-batches, or all-reduced over devices.
    pub fn step_params<AB, M>(
        &mut self,
        model: M,
        grads: &GradientsParams,
        lr: &dyn Fn(&str) -> f64,
    ) -> Result<(M, StepInfo)>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.update(model, &Grads::<AB>::Params(grads), lr)
    }

    fn update<AB, M>(
        &mut self,
        model: M,
        grads: &Grads<'_, AB>,
        lr: &dyn Fn(&str) -> f64,
    ) -> Result<(M, StepInfo)>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut norm = NormVisitor::<AB> {
            grads,
            sum: None,
            missing: Vec::new(),
            numel: BTreeMap::new(),
            stack: Vec::new(),
        };
        model.visit(&mut norm);
        self.check_moments(&norm.numel)?;
        if let Some(path) = norm.missing.first() {
            return Err(PeftError::Training(format!(
                "parameter `{path}` is trainable but received no gradient (is it used by the loss?)"
            )));
        }
        let grad_norm = match norm.sum {
            Some(s) => {
                use burn::tensor::ElementConversion;
                s.into_scalar().elem::<f64>().sqrt()
            }
            None => 0.0,
        };
        if !grad_norm.is_finite() {
            return Err(PeftError::Training(format!(
                "gradient norm is {grad_norm} at optimizer step {}",
                self.steps + 1
            )));
        }
        let scale = match self.config.grad_clip {
            Some(c) if grad_norm > c => c / (grad_norm + 1e-6),
            _ => 1.0,
        };
        self.steps += 1;
        let t = self.steps as i32;
        let (bias1, bias2) = (
            1.0 - self.config.beta1.powi(t),
            1.0 - self.config.beta2.powi(t),
        );
        let mut mapper = UpdateMapper::<AB> {
            grads,
            opt: self,
            lr,
            scale,
            bias1,
            bias2,
            stack: Vec::new(),
            tensors: 0,
        };
        let model = model.map(&mut mapper);
        let tensors = mapper.tensors;
        Ok((model, StepInfo { grad_norm, tensors }))
    }

    /// The state as named tensors: `m.<path>`, `v.<path>` (flattened), for a checkpoint file.
    /// The step count is [`AdamW::steps`].
    pub fn state(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::with_capacity(2 * self.moments.len());
        for (path, (m, v)) in &self.moments {
            for (tag, t) in [("m", m), ("v", v)] {
                let data = t.clone().into_data().convert::<f32>();
                out.push((
                    format!("{tag}.{path}"),
                    data.shape.to_vec(),
                    data.into_vec::<f32>().expect("converted to f32"),
                ));
            }
        }
        out
    }

    /// Check the stored moments against the trainable parameters of a model (path -> element
    /// count): every stored path must be a trainable parameter of the same size, and after the
    /// first step every trainable parameter must have moments. Errors name the parameter.
    pub fn check_moments(&self, numel: &BTreeMap<String, usize>) -> Result<()> {
        for (path, (m, _)) in &self.moments {
            match numel.get(path) {
                None => {
                    return Err(PeftError::Training(format!(
                        "optimizer state has moments for `{path}`, which is not a trainable \
                         parameter of the model"
                    )))
                }
                Some(&n) if m.dims() != [n] => {
                    return Err(PeftError::Training(format!(
                        "optimizer state for `{path}` has {} values, the parameter has {n}",
                        m.dims()[0]
                    )))
                }
                Some(_) => {}
            }
        }
        if self.steps > 0 {
            if let Some(path) = numel.keys().find(|p| !self.moments.contains_key(*p)) {
                return Err(PeftError::Training(format!(
                    "optimizer state after {} steps has no moments for the trainable parameter \
                     `{path}`",
                    self.steps
                )));
            }
        }
        Ok(())
    }

    /// [`AdamW::load_state`], then [`AdamW::check_moments`] against the model's trainable
    /// parameters (path -> element count); on error the optimizer is left unchanged.
    pub fn load_state_checked(
        &mut self,
        steps: usize,
        tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        numel: &BTreeMap<String, usize>,
        device: &B::Device,
    ) -> Result<()> {
        let mut fresh = Self::new(self.config);
        fresh.load_state(steps, tensors, device)?;
        fresh.check_moments(numel)?;
        *self = fresh;
        Ok(())
    }

    /// Restore the state written by [`AdamW::state`] after `steps` steps.
    ///
    /// Errors: a name that is not `m.<path>` / `v.<path>`, a path with only one moment, a
    /// moment whose length differs from its partner.
    pub fn load_state(
        &mut self,
        steps: usize,
        tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        device: &B::Device,
    ) -> Result<()> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, (shape, data)) in tensors {
            let t = Tensor::<B, 1>::from_data(
                TensorData::new(data, [shape.iter().product::<usize>()]),
                device,
            );
            if let Some(p) = name.strip_prefix("m.") {
                m.insert(p.to_string(), t);
            } else if let Some(p) = name.strip_prefix("v.") {
                v.insert(p.to_string(), t);
            } else {
                return Err(PeftError::Training(format!(
                    "optimizer state key `{name}` is neither `m.<path>` nor `v.<path>`"
                )));
            }
        }
        let mut moments = BTreeMap::new();
        for (path, mt) in m {
            let vt = v.remove(&path).ok_or_else(|| {
                PeftError::Training(format!("optimizer state has `m.{path}` but no `v.{path}`"))
            })?;
            if mt.dims() != vt.dims() {
                return Err(PeftError::Training(format!(
                    "optimizer state `v.{path}` has shape {:?} but `m.{path}` has {:?}",
                    vt.dims(),
                    mt.dims()
                )));
            }
            moments.insert(path, (mt, vt));
        }
        if let Some(path) = v.keys().next() {
            return Err(PeftError::Training(format!(
                "optimizer state has `v.{path}` but no `m.{path}`"
            )));
        }
        self.moments = moments;
        self.steps = steps;
        Ok(())
    }
}

/// Where the update reads a parameter's gradient: the autodiff graph's gradients, or
/// gradients by parameter id.
enum Grads<'a, AB: AutodiffBackend> {
    Raw(&'a AB::Gradients),
    Params(&'a GradientsParams),
}

impl<AB: AutodiffBackend> Grads<'_, AB> {
    fn of<const D: usize>(
        &self,
        param: &Param<Tensor<AB, D>>,
    ) -> Option<Tensor<AB::InnerBackend, D>> {
        match self {
            Grads::Raw(g) => param.val().grad(g),
            Grads::Params(g) => g.get::<AB::InnerBackend, D>(param.id),
        }
    }
}

/// Sums the squared gradients of every trainable parameter.
struct NormVisitor<'a, AB: AutodiffBackend> {
    grads: &'a Grads<'a, AB>,
    sum: Option<Tensor<AB::InnerBackend, 1>>,
    missing: Vec<String>,
    /// Path -> element count of every trainable parameter.
    numel: BTreeMap<String, usize>,
    stack: Vec<String>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for NormVisitor<'_, AB> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let t = param.val();
        if !t.is_require_grad() {
            return;
        }
        self.numel
            .insert(self.stack.join("."), t.shape().num_elements());
        match self.grads.of(param) {
            Some(g) => {
                // In f32: squares of f16 gradients underflow and their sum overflows.
                let s = g.cast(FloatDType::F32).powi_scalar(2).sum();
                self.sum = Some(match self.sum.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
            None => self.missing.push(self.stack.join(".")),
        }
    }
}

/// Applies the AdamW update to every trainable parameter.
struct UpdateMapper<'a, AB: AutodiffBackend> {
    grads: &'a Grads<'a, AB>,
    opt: &'a mut AdamW<AB::InnerBackend>,
    lr: &'a dyn Fn(&str) -> f64,
    scale: f64,
    bias1: f64,
    bias2: f64,
    stack: Vec<String>,
    tensors: usize,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for UpdateMapper<'_, AB> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let grad = self.grads.of(&param);
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let Some(grad) = grad else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.stack.join(".");
        let lr = (self.lr)(&path);
        let cfg = self.opt.config;
        let shape = tensor.shape();
        let n = shape.num_elements();
        // Moments and the update in f32 whatever the parameter's dtype (f16 moments lose small
        // second moments to underflow: v = 0 turns the step into m / eps). No-op casts for f32.
        let dtype = tensor.dtype();
        let p = tensor.inner().reshape([n]).cast(FloatDType::F32);
        let g = grad.reshape([n]).cast(FloatDType::F32) * self.scale;
        // Sizes were checked against the model before the update (`check_moments`).
        let (m, v) = match self.opt.moments.remove(&path) {
            Some((m, v)) => (m, v),
            None => (p.zeros_like(), p.zeros_like()),
        };
        let m = m * cfg.beta1 + g.clone() * (1.0 - cfg.beta1);
        let v = v * cfg.beta2 + g.powi_scalar(2) * (1.0 - cfg.beta2);
        let m_hat = m.clone() / self.bias1;
        let v_hat = v.clone() / self.bias2;
        let p = p * (1.0 - lr * cfg.weight_decay) - m_hat / (v_hat.sqrt() + cfg.eps) * lr;
        self.opt.moments.insert(path, (m, v));
        self.tensors += 1;
        // A fresh leaf: the previous step's graph is dropped.
        let new = Tensor::<AB, D>::from_inner(p.reshape(shape).cast(dtype)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Learning rate with linear warm-up then cosine decay to `min_lr` (timm's `CosineLRScheduler`
/// stepped per optimizer step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Steps of linear warm-up (from `base_lr / warmup_steps`).
    pub warmup_steps: usize,
    /// Total steps.
    pub total_steps: usize,
}

impl WarmupCosine {
    /// Learning rate of step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}
