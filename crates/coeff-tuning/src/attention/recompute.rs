//! Memory-bounded attention training: the maps are recomputed, a block of queries at a time,
//! in the backward pass.
//!
//! Coeff-Tuning needs the softmax maps, and at SDXL's 64x64-latent level one layer's maps are
//! `[B, 10, 4096, 4096]` (640 MiB per image in f32). Eager autodiff keeps about three
//! map-sized tensors per layer for the backward (the maps, the mixed maps, the softmax's
//! intermediates); computing the forward in query chunks removes the transient score tensor
//! but still keeps every chunk's maps. This module's operator keeps none: its forward computes
//! the output chunk by chunk and stores only `q`, `k`, `v` and the mixing matrix (all
//! `O(N d)` or `O(H^2)`); its backward recomputes each chunk's maps and derives
//!
//! ```text
//! P  = softmax(scale * q_c k^T + mask)       P' = M P   (heads mixed by M = I + alpha)
//! dV += P'^T dO_c                             dP' = dO_c V^T
//! dM += sum_{b, rows, cols} dP'_g * P_h       dP = M^T dP'
//! dS = P * (dP - rowsum(dP * P))              dq_c = scale * dS k,   dk += scale * dS^T q_c
//! ```
//!
//! so the peak is a few chunk-sized maps, at the price of computing the maps twice.
//!
//! Burn's autodiff has no backend-generic custom operators, so the operator is registered
//! per autodiff backend type: call [`enable`] (or [`enable_with`] for a checkpointing
//! strategy) once for the training backend; every [`super::MultiHeadAttention`] with a
//! `query_chunk` then takes this path when it records gradients (no map dropout, no additive
//! bias: those keep the plain chunked path). The gradients equal eager autodiff's to float
//! rounding (tested).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorPrimitive};

use super::coeff::mix_heads;
use super::slice_rows;

/// The operator's inputs on one backend.
#[derive(Debug, Clone)]
pub struct RecomputeInput<B: Backend> {
    /// `[B, H, n, d]`
    pub q: Tensor<B, 4>,
    /// `[B, H, d, m]` (keys, transposed)
    pub k_t: Tensor<B, 4>,
    /// `[B, H, m, d]`
    pub v: Tensor<B, 4>,
    /// `[H, H]` head-mixing matrix (`I + dropout(alpha)`), or `None` without Coeff.
    pub mix: Option<Tensor<B, 2>>,
    /// `[B, 1, n|1, m]`, true = masked.
    pub mask: Option<Tensor<B, 4, Bool>>,
    /// Score scale (`d^-1/2`).
    pub scale: f64,
    /// Score of masked positions (finite).
    pub mask_value: f64,
    /// Query rows per chunk.
    pub chunk: usize,
}

/// The registered operator of backend `B`: `[B, H, n, d]` output with the maps recomputed in
/// the backward pass.
struct Registered<B: Backend>(fn(RecomputeInput<B>) -> Tensor<B, 4>);

impl<B: Backend> Clone for Registered<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Registered<B> {}

type Registry = RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Enable the recomputing backward for `Autodiff<B>` (no checkpointing strategy: Burn's
/// default autodiff backend).
pub fn enable<B: Backend>() {
    enable_with::<B, NoCheckpointing>();
}

/// Enable the recomputing backward for `Autodiff<B, C>`.
pub fn enable_with<B: Backend, C: CheckpointStrategy>() {
    let f: Registered<Autodiff<B, C>> = Registered(recompute_autodiff::<B, C>);
    registry()
        .write()
        .expect("recompute registry poisoned")
        .insert(TypeId::of::<Autodiff<B, C>>(), Box::new(f));
}

/// Disable it again for `Autodiff<B, C>` (benchmarks compare both paths in one process).
pub fn disable_with<B: Backend, C: CheckpointStrategy>() {
    registry()
        .write()
        .expect("recompute registry poisoned")
        .remove(&TypeId::of::<Autodiff<B, C>>());
}

/// Whether backend `B` has the recomputing backward.
pub fn is_enabled<B: Backend>() -> bool {
    lookup::<B>().is_some()
}

fn lookup<B: Backend>() -> Option<Registered<B>> {
    let map = registry().read().ok()?;
    map.get(&TypeId::of::<B>())?
        .downcast_ref::<Registered<B>>()
        .copied()
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many attention forwards took the recomputing path in this process (to check that a
/// model's layers do).
pub fn calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

/// Run the registered operator of `B`, or give the input back when there is none.
pub(crate) fn try_recompute<B: Backend>(
    input: RecomputeInput<B>,
) -> std::result::Result<Tensor<B, 4>, RecomputeInput<B>> {
    match lookup::<B>() {
        Some(Registered(f)) => {
            CALLS.fetch_add(1, Ordering::Relaxed);
            Ok(f(input))
        }
        None => Err(input),
    }
}

/// Scores of a block of queries: `scale * q_c k^T` with masked positions set.
fn scores<B: Backend>(
    q_c: Tensor<B, 4>,
    k_t: Tensor<B, 4>,
    mask_c: Option<Tensor<B, 4, Bool>>,
    scale: f64,
    mask_value: f64,
) -> Tensor<B, 4> {
    let s = q_c.matmul(k_t).mul_scalar(scale);
    match mask_c {
        Some(mask) => {
            let dims = s.dims();
            s.mask_fill(mask.expand(dims), mask_value)
        }
        None => s,
    }
}

/// The forward on a plain backend, chunk by chunk, keeping no maps: `[B, H, n, d]`.
pub fn chunked_forward<B: Backend>(x: &RecomputeInput<B>) -> Tensor<B, 4> {
    let [batch, heads, n, _] = x.q.dims();
    let chunk = x.chunk.max(1);
    let mut outs = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let q_c = x.q.clone().slice([0..batch, 0..heads, start..end]);
        let mask_c = x.mask.clone().map(|m| slice_rows(m, start, end));
        let p = softmax(scores(q_c, x.k_t.clone(), mask_c, x.scale, x.mask_value), 3);
        let p = match &x.mix {
            Some(m) => mix_heads(p, m.clone()),
            None => p,
        };
        outs.push(p.matmul(x.v.clone()));
    }
    Tensor::cat(outs, 2)
}

/// Gradients of the operator's inputs.
#[derive(Debug, Clone)]
pub struct RecomputeGrads<B: Backend> {
    /// `[B, H, n, d]`
    pub q: Tensor<B, 4>,
    /// `[B, H, d, m]`
    pub k_t: Tensor<B, 4>,
    /// `[B, H, m, d]`
    pub v: Tensor<B, 4>,
    /// `[H, H]`, when there is a mixing matrix.
    pub mix: Option<Tensor<B, 2>>,
}

/// The backward on a plain backend: each chunk's maps recomputed from `q`, `k`, `v`, then
/// the gradients of all inputs given `grad: [B, H, n, d]` (the gradient of the output).
pub fn chunked_backward<B: Backend>(
    x: &RecomputeInput<B>,
    grad: Tensor<B, 4>,
) -> RecomputeGrads<B> {
    let [batch, heads, n, _] = x.q.dims();
    let chunk = x.chunk.max(1);
    let mut dq = Vec::with_capacity(n.div_ceil(chunk));
    let mut dk_t = x.k_t.zeros_like();
    let mut dv = x.v.zeros_like();
    let mut dmix = x.mix.as_ref().map(|m| m.zeros_like());
    let v_t = x.v.clone().swap_dims(2, 3);
    let k = x.k_t.clone().swap_dims(2, 3);
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let q_c = x.q.clone().slice([0..batch, 0..heads, start..end]);
        let g_c = grad.clone().slice([0..batch, 0..heads, start..end]);
        let mask_c = x.mask.clone().map(|m| slice_rows(m, start, end));
        let p = softmax(
            scores(q_c.clone(), x.k_t.clone(), mask_c, x.scale, x.mask_value),
            3,
        );
        let mixed = match &x.mix {
            Some(m) => mix_heads(p.clone(), m.clone()),
            None => p.clone(),
        };
        dv = dv + mixed.swap_dims(2, 3).matmul(g_c.clone());
        let d_mixed = g_c.matmul(v_t.clone()); // [B, H, c, m]
        let dp = match (&x.mix, dmix.as_mut()) {
            (Some(m), Some(acc)) => {
                let [b, h, c, mm] = d_mixed.dims();
                let dm = d_mixed
                    .clone()
                    .reshape([b, h, c * mm])
                    .matmul(p.clone().reshape([b, h, c * mm]).swap_dims(1, 2))
                    .sum_dim(0)
                    .reshape([h, h]);
                *acc = acc.clone() + dm;
                mix_heads(d_mixed, m.clone().transpose())
            }
            _ => d_mixed,
        };
        let ds = p.clone() * (dp.clone() - (dp * p).sum_dim(3));
        dq.push(ds.clone().matmul(k.clone()).mul_scalar(x.scale));
        dk_t = dk_t + q_c.swap_dims(2, 3).matmul(ds).mul_scalar(x.scale);
    }
    RecomputeGrads {
        q: Tensor::cat(dq, 2),
        k_t: dk_t,
        v: dv,
        mix: dmix,
    }
}

/// The autodiff operator's saved state: the inner backend's inputs (no maps).
#[derive(Debug, Clone)]
struct State<B: Backend> {
    input: RecomputeInput<B>,
}

#[derive(Debug)]
struct RecomputeBackward;

impl<B: Backend> Backward<B, 4> for RecomputeBackward {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad =
            Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(grads.consume::<B>(&ops.node)));
        let g = chunked_backward(&ops.state.input, grad);
        let [nq, nk, nv, nm] = ops.parents;
        let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
        if let Some(node) = nq {
            grads.register::<B>(node.id, prim(g.q));
        }
        if let Some(node) = nk {
            grads.register::<B>(node.id, prim(g.k_t));
        }
        if let Some(node) = nv {
            grads.register::<B>(node.id, prim(g.v));
        }
        if let (Some(node), Some(dm)) = (nm, g.mix) {
            grads.register::<B>(node.id, dm.into_primitive().tensor());
        }
    }
}

/// The operator on `Autodiff<B, C>`.
fn recompute_autodiff<B: Backend, C: CheckpointStrategy>(
    x: RecomputeInput<Autodiff<B, C>>,
) -> Tensor<Autodiff<B, C>, 4> {
    let device = x.q.device();
    // Without coefficients the mixing input is a constant identity (no gradient, not applied).
    let has_mix = x.mix.is_some();
    let mix = x.mix.unwrap_or_else(|| Tensor::eye(x.q.dims()[1], &device));
    let q = x.q.into_primitive().tensor();
    let k_t = x.k_t.into_primitive().tensor();
    let v = x.v.into_primitive().tensor();
    let mix = mix.into_primitive().tensor();
    let input = RecomputeInput::<B> {
        q: Tensor::from_primitive(TensorPrimitive::Float(q.primitive.clone())),
        k_t: Tensor::from_primitive(TensorPrimitive::Float(k_t.primitive.clone())),
        v: Tensor::from_primitive(TensorPrimitive::Float(v.primitive.clone())),
        mix: has_mix
            .then(|| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(mix.primitive.clone()))),
        mask: x
            .mask
            .map(|m| Tensor::<B, 4, Bool>::from_primitive(m.into_primitive())),
        scale: x.scale,
        mask_value: x.mask_value,
        chunk: x.chunk,
    };
    let out = chunked_forward(&input).into_primitive().tensor();
    let nodes = [
        q.node.clone(),
        k_t.node.clone(),
        v.node.clone(),
        mix.node.clone(),
    ];
    let result = match RecomputeBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(State { input }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}
