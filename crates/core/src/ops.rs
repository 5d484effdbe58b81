//! Layers Candle lacks in the form the zoo needs: padded / ceil-mode pooling, adaptive pooling,
//! local response normalisation and the option-A shortcut. All are built from differentiable
//! Candle ops.

use candle_core::{Result, Tensor, D};

use crate::spec::{out_size, Pool};

/// Pads `dim` with `value` (`-inf` for max-pooling).
fn pad_with(x: &Tensor, dim: usize, left: usize, right: usize, value: f32) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let mut parts = vec![];
    let mut dims = x.dims().to_vec();
    if left > 0 {
        dims[dim] = left;
        parts.push(Tensor::full(value, dims.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    parts.push(x.clone());
    if right > 0 {
        dims[dim] = right;
        parts.push(Tensor::full(value, dims.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    Tensor::cat(&parts, dim)
}

/// Output length of a pooling along a side of `n` (the graph's shapes already checked it fits).
pub(crate) fn pool_out(n: usize, p: &Pool) -> Result<usize> {
    out_size(n, p.kernel, p.stride, p.padding, p.ceil_mode).map_err(candle_core::Error::Msg)
}

/// Extra padding on the right/bottom so that ceil-mode windows exist.
fn trailing_pad(n: usize, p: &Pool) -> Result<usize> {
    let padded = n + 2 * p.padding;
    let needed = (pool_out(n, p)? - 1) * p.stride + p.kernel;
    Ok(p.padding + needed.saturating_sub(padded))
}

fn pad_for_pool(x: &Tensor, p: &Pool, value: f32) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = pad_with(x, 2, p.padding, trailing_pad(h, p)?, value)?;
    pad_with(&x, 3, p.padding, trailing_pad(w, p)?, value)
}

/// Max-pooling with PyTorch's padding and ceil mode. `training` selects a path whose backward
/// is right: Candle's own has none for overlapping windows (kernel > stride), and for
/// kernel = stride it scales a unique maximum's gradient by 1/k².
pub fn max_pool2d(x: &Tensor, p: &Pool, training: bool) -> Result<Tensor> {
    let x = pad_for_pool(x, p, f32::NEG_INFINITY)?;
    if training {
        return max_pool2d_overlapping(&x, p.kernel, p.stride);
    }
    x.max_pool2d_with_stride(p.kernel, p.stride)
}

/// Max over the k×k shifted strided views: each is a plain slice, so the gradient of the max
/// flows to the right input element whatever the overlap.
fn max_pool2d_overlapping(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let side = |n| out_size(n, k, s, 0, false).map_err(candle_core::Error::Msg);
    let (oh, ow) = (side(h)?, side(w)?);
    let mut out: Option<Tensor> = None;
    for dy in 0..k {
        for dx in 0..k {
            let v = strided(x, 2, dy, s, oh)?;
            let v = strided(&v, 3, dx, s, ow)?;
            out = Some(match out {
                None => v,
                Some(m) => m.maximum(&v)?,
            });
        }
    }
    Ok(out.expect("kernel is at least 1"))
}

/// Elements `start, start+s, …` (`n` of them) along `dim`.
fn strided(x: &Tensor, dim: usize, start: usize, s: usize, n: usize) -> Result<Tensor> {
    let idx: Vec<u32> = (0..n).map(|i| (start + i * s) as u32).collect();
    x.index_select(&Tensor::new(idx.as_slice(), x.device())?, dim)
}

/// Average pooling; padding counts as zeros (PyTorch's `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, p: &Pool) -> Result<Tensor> {
    let x = pad_for_pool(x, p, 0.0)?;
    x.avg_pool2d_with_stride(p.kernel, p.stride)
}

/// `AdaptiveAvgPool2d((oh, ow))` with PyTorch's bins: `[floor(i·H/oh), ceil((i+1)·H/oh))`.
pub fn adaptive_avg_pool2d(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (oh, ow) == (1, 1) {
        return x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2);
    }
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    if h % oh == 0 && w % ow == 0 {
        return x.avg_pool2d((h / oh, w / ow));
    }
    let bins = |n: usize, o: usize| (0..o).map(move |i| (i * n / o, ((i + 1) * n).div_ceil(o)));
    let mut rows = vec![];
    for (h0, h1) in bins(h, oh) {
        let band = x.narrow(2, h0, h1 - h0)?;
        let cells = bins(w, ow)
            .map(|(w0, w1)| band.narrow(3, w0, w1 - w0)?.mean_keepdim(3)?.mean_keepdim(2))
            .collect::<Result<Vec<_>>>()?;
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

/// PyTorch's `LocalResponseNorm`: `x / (k + α/n · Σ_{window} x²)^β` across channels.
pub fn local_response_norm(x: &Tensor, size: usize, alpha: f64, beta: f64, k: f64) -> Result<Tensor> {
    let c = x.dim(1)?;
    let sq = x.sqr()?.pad_with_zeros(1, size / 2, (size - 1) / 2)?;
    let mut sum = sq.narrow(1, 0, c)?;
    for j in 1..size {
        sum = (sum + sq.narrow(1, j, c)?)?;
    }
    let div = ((sum * (alpha / size as f64))? + k)?.powf(beta)?;
    x.div(&div)
}

/// Option A (paper §3.3): `x[:, :, ::s, ::s]` with zero channels added equally on both sides.
pub fn shortcut_a(x: &Tensor, out_ch: usize, stride: usize) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let x = if stride > 1 {
        let y = strided(x, 2, 0, stride, h.div_ceil(stride))?;
        strided(&y, 3, 0, stride, w.div_ceil(stride))?
    } else {
        x.clone()
    };
    let extra = out_ch.saturating_sub(c);
    x.pad_with_zeros(1, extra / 2, extra - extra / 2)
}
