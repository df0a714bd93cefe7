//! Checks and conversions shared by the text models' inputs.

use burn::tensor::{backend::Backend, Bool, ElementConversion, Int, Tensor};

use crate::error::{Result, VlError};

/// Error unless every id of `ids: [batch, len]` is in `0..vocab` and `len` is in
/// `1..=max_len`. Reads the ids' extremes back from the device (two scalars).
pub fn check_ids<B: Backend>(
    ids: &Tensor<B, 2, Int>,
    name: &str,
    vocab: usize,
    max_len: usize,
) -> Result<[usize; 2]> {
    let [batch, len] = ids.dims();
    if batch == 0 || len == 0 {
        return Err(VlError::Input(format!(
            "`{name}` has shape {:?}: empty",
            ids.dims()
        )));
    }
    if len > max_len {
        return Err(VlError::Input(format!(
            "`{name}` has {len} tokens per row, more than the model's {max_len} positions"
        )));
    }
    let lo: i64 = ids.clone().min().into_scalar().elem();
    let hi: i64 = ids.clone().max().into_scalar().elem();
    if lo < 0 || hi >= vocab as i64 {
        let bad = if lo < 0 { lo } else { hi };
        return Err(VlError::Input(format!(
            "`{name}` holds id {bad}, outside the vocabulary 0..{vocab}"
        )));
    }
    Ok([batch, len])
}

/// `attention_mask: [batch, len]` (1 = token, 0 = padding, as transformers) -> the boolean
/// padding mask of the core attention (true = padding), after checking its shape.
pub fn padding_mask<B: Backend>(
    mask: Option<&Tensor<B, 2, Int>>,
    name: &str,
    dims: [usize; 2],
) -> Result<Option<Tensor<B, 2, Bool>>> {
    let Some(mask) = mask else { return Ok(None) };
    if mask.dims() != dims {
        return Err(VlError::Input(format!(
            "`{name}` has shape {:?}, the ids {dims:?}",
            mask.dims()
        )));
    }
    Ok(Some(mask.clone().equal_elem(0)))
}

/// `[batch, n, n]`, true above the diagonal (key after query): the causal mask.
pub fn causal_mask<B: Backend>(batch: usize, n: usize, device: &B::Device) -> Tensor<B, 3, Bool> {
    let rows = Tensor::<B, 1, Int>::arange(0..n as i64, device).reshape([n, 1]);
    let cols = Tensor::<B, 1, Int>::arange(0..n as i64, device).reshape([1, n]);
    cols.greater(rows).unsqueeze::<3>().expand([batch, n, n])
}

/// Positions `offset..offset + len` for every row, `[batch, len]`.
pub fn positions<B: Backend>(
    batch: usize,
    len: usize,
    offset: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(offset as i64..(offset + len) as i64, device)
        .unsqueeze::<2>()
        .expand([batch, len])
}

/// Mean of `hidden: [batch, len, D]` over the tokens where `attention_mask` is 1 (all tokens
/// when absent) -> `[batch, D]`: sentence-transformers' mean pooling.
pub fn mean_pool<B: Backend>(
    hidden: Tensor<B, 3>,
    attention_mask: Option<&Tensor<B, 2, Int>>,
) -> Tensor<B, 2> {
    let [batch, len, d] = hidden.dims();
    match attention_mask {
        None => hidden.mean_dim(1).reshape([batch, d]),
        Some(mask) => {
            let m = mask.clone().float().reshape([batch, len, 1]);
            let sum = (hidden * m.clone()).sum_dim(1).reshape([batch, d]);
            let count = m.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
            sum / count
        }
    }
}

/// Rows scaled to unit L2 norm (`torch.nn.functional.normalize`, eps 1e-12).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}
