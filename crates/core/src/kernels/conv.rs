//! 2-D convolution for inference: a [`PreparedConv`] holds a conv's weights laid out once, runs
//! 3×3 stride-1 padding-1 kernels by Winograd ([`super::winograd`]) and everything else as
//! im2col + gemm, and applies bias, residual add and ReLU while the output is in cache.
//!
//! Candle's CPU conv gathers the im2col matrix one element at a time through strided index
//! arithmetic; on ResNet-sized layers that gather, not the gemm, took most of the conv's time.
//! Here the column matrix `[in_ch·k·k, out_h·out_w]` is built a band of output rows at a time
//! (so it is still in cache when gemm reads it), each row segment one slice copy with the
//! padding left as zeros.

use std::borrow::Cow;

use candle_core::{DType, Result, Tensor};

use super::gemm::{matmul, Mat};
use super::winograd::Winograd3x3;
use super::{give_scratch, is_plain, take_scratch, with_slice, Epilogue};

/// The column matrix of a band of output rows is kept to about this many floats (256 KiB), so
/// that it is still in cache when gemm reads it.
const BAND_FLOATS: usize = 64 * 1024;

/// For stride `s > 1`, each input row split into its `s` phases (columns `r, r+s, r+2s, …`, each
/// `ceil(w/s)` long): then every im2col row segment is one contiguous copy. For stride 1, `x`.
fn phases(x: &[f32], w: usize, stride: usize) -> Cow<'_, [f32]> {
    if stride == 1 {
        return Cow::Borrowed(x);
    }
    let pw = w.div_ceil(stride);
    let mut ph = vec![0f32; x.len() / w * stride * pw];
    for (src, dst) in x.chunks_exact(w).zip(ph.chunks_exact_mut(stride * pw)) {
        for (j, v) in src.iter().enumerate() {
            dst[(j % stride) * pw + j / stride] = *v;
        }
    }
    Cow::Owned(ph)
}

/// Fills `cols` (`[c·k·k, (oy1 − oy0)·ow]`, zeroed) with output rows `oy0..oy1` of the column
/// matrix of one image, from its [`phases`] `rows` (`[c, h, w]` split by stride).
///
/// Every output row of every kernel offset is one contiguous slice copy, the padding left as
/// zeros: output column `ox` of offset `kx` reads input column `ox·s + kx − pad`, which is
/// element `ox + d` of phase `r`, where `kx − pad = d·s + r`.
fn im2col(
    rows: &[f32],
    (c, h, w): (usize, usize, usize),
    (k, stride, pad): (usize, usize, usize),
    (oy0, oy1): (usize, usize),
    cols: &mut [f32],
) {
    let ow = (w + 2 * pad - k) / stride + 1;
    let n = (oy1 - oy0) * ow;
    let pw = w.div_ceil(stride);
    // Output columns `ox` whose input column `ox·s + kx − pad` lies inside [0, w).
    let valid = |kx: usize| {
        let lo = pad.saturating_sub(kx).div_ceil(stride);
        let hi = ((w + pad).saturating_sub(kx)).div_ceil(stride).min(ow);
        (lo, hi.max(lo))
    };
    for ci in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                let row = (ci * k + ky) * k + kx;
                let dst = &mut cols[row * n..(row + 1) * n];
                let (x0, x1) = valid(kx);
                if x0 >= x1 {
                    continue;
                }
                let q = kx as isize - pad as isize;
                let (d, r) = (q.div_euclid(stride as isize), q.rem_euclid(stride as isize) as usize);
                let from = (x0 as isize + d) as usize; // ≥ 0: x0 is the first valid column
                for oy in oy0..oy1 {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src = &rows[((ci * h + iy as usize) * stride + r) * pw..][..pw];
                    let at = (oy - oy0) * ow;
                    dst[at + x0..at + x1].copy_from_slice(&src[from..from + (x1 - x0)]);
                }
            }
        }
    }
}

/// Which kernel a conv runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// 3×3, stride 1, padding 1: Winograd F(2×2, 3×3).
    Winograd,
    /// 1×1, stride 1, no padding: one gemm on the NCHW layout.
    Pointwise,
    /// Anything else: im2col + gemm.
    Im2col,
}

impl ConvPath {
    pub fn of(kernel: usize, stride: usize, padding: usize) -> Self {
        match (kernel, stride, padding) {
            (3, 1, 1) => ConvPath::Winograd,
            (1, 1, 0) => ConvPath::Pointwise,
            _ => ConvPath::Im2col,
        }
    }
}

/// A convolution ready to run: weights laid out once (Winograd-transformed for 3×3 stride-1
/// padding-1 kernels), bias from a folded BatchNorm. Square kernels, no dilation or groups.
#[derive(Clone, Debug)]
pub struct PreparedConv {
    out_ch: usize,
    in_ch: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// `[out_ch, in_ch·k·k]`, row-major.
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    winograd: Option<Winograd3x3>,
}

impl PreparedConv {
    /// `weight`: `[out_ch, in_ch, k, k]`; `bias`: `[out_ch]`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, padding: usize, stride: usize) -> Result<Self> {
        let (out_ch, in_ch, kernel, k2) = weight.dims4()?;
        if kernel != k2 {
            candle_core::bail!("fast conv: square kernels only, got {kernel}×{k2}");
        }
        let weight = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()).transpose()?;
        if bias.as_ref().is_some_and(|b| b.len() != out_ch) {
            candle_core::bail!(
                "fast conv: bias of {} values for {out_ch} channels",
                bias.map_or(0, |b| b.len())
            );
        }
        let winograd = (ConvPath::of(kernel, stride, padding) == ConvPath::Winograd)
            .then(|| Winograd3x3::new(&weight, out_ch, in_ch));
        Ok(PreparedConv { out_ch, in_ch, kernel, stride, padding, weight, bias, winograd })
    }

    /// `relu?(conv(x) + bias + residual)`; `x`: `[n, in_ch, h, w]`, `residual` shaped like the
    /// output. Both must be plain CPU f32 tensors ([`super::is_plain`]).
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.in_ch {
            candle_core::bail!("fast conv: input has {c} channels, the weights {}", self.in_ch);
        }
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("fast conv: {h}×{w} input is smaller than the {k}×{k} kernel");
        }
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let (in_len, out_len) = (c * h * w, self.out_ch * oh * ow);
        if let Some(r) = residual {
            if r.dims() != [n, self.out_ch, oh, ow] {
                candle_core::bail!(
                    "fast conv: residual {:?}, output [{n}, {}, {oh}, {ow}]",
                    r.dims(),
                    self.out_ch
                );
            }
        }
        let mut out = vec![0f32; n * out_len];
        let run = |xs: &[f32], res: Option<&[f32]>, out: &mut [f32]| {
            let one = |img: usize, x: &[f32], y: &mut [f32]| {
                let epi = Epilogue {
                    bias: self.bias.as_deref(),
                    residual: res.map(|r| &r[img * out_len..][..out_len]),
                    relu,
                };
                self.image(x, h, w, oh, ow, y, &epi);
            };
            // Natively, the images of a batch on all of Candle's threads (evaluation, training's
            // validation); in the browser, one thread.
            #[cfg(not(target_arch = "wasm32"))]
            if n > 1 && candle_core::utils::get_num_threads() > 1 {
                use rayon::prelude::*;
                out.par_chunks_exact_mut(out_len)
                    .zip(xs.par_chunks_exact(in_len))
                    .enumerate()
                    .for_each(|(img, (y, x))| one(img, x, y));
                return;
            }
            for (img, (x, y)) in xs.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)).enumerate() {
                one(img, x, y);
            }
        };
        with_slice(x, |xs| match residual {
            Some(r) => with_slice(r, |rs| run(xs, Some(rs), &mut out)),
            None => {
                run(xs, None, &mut out);
                Ok(())
            }
        })??;
        Tensor::from_vec(out, (n, self.out_ch, oh, ow), x.device())
    }

    /// One image; `cols` is scratch space for the column matrix, reused across images.
    #[allow(clippy::too_many_arguments)]
    fn image(&self, x: &[f32], h: usize, w: usize, oh: usize, ow: usize, out: &mut [f32], epi: &Epilogue) {
        if let Some(wino) = &self.winograd {
            return wino.forward(x, h, w, out, epi);
        }
        let (c, k) = (self.in_ch, self.kernel);
        let kk = c * k * k;
        let weight = Mat { data: &self.weight, rows: self.out_ch, cols: kk, stride: kk };
        if ConvPath::of(k, self.stride, self.padding) == ConvPath::Pointwise {
            // A 1×1 conv is already a matmul on the NCHW layout.
            matmul(weight, Mat { data: x, rows: c, cols: h * w, stride: h * w }, out, oh * ow);
        } else {
            let rows = phases(x, w, self.stride);
            let band = (BAND_FLOATS / (kk * ow)).clamp(1, oh);
            let mut cols = take_scratch(kk * band * ow);
            for oy0 in (0..oh).step_by(band) {
                let oy1 = (oy0 + band).min(oh);
                let n = (oy1 - oy0) * ow;
                let cols = &mut cols[..kk * n];
                cols.fill(0.0); // the padding
                im2col(&rows, (c, h, w), (k, self.stride, self.padding), (oy0, oy1), cols);
                let b = Mat { data: cols, rows: kk, cols: n, stride: n };
                matmul(weight, b, &mut out[oy0 * ow..], oh * ow);
            }
            give_scratch(cols);
        }
        epi.apply(out, oh * ow);
    }
}

/// `conv2d(x, weight)` for square kernels, no dilation or groups: the same result as Candle's
/// `Tensor::conv2d`. `x`: `[n, c, h, w]`, `weight`: `[oc, c, k, k]`. Prepares the weights on
/// every call: a model keeps a [`PreparedConv`] instead. Anything else — another device or
/// dtype, or a tensor that records gradients (training, saliency) — goes to the training conv,
/// so backpropagation always sees a differentiable op.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (_, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 || !is_plain(x) || !is_plain(weight) {
        return crate::train::conv::conv2d(x, weight, padding, stride); // fast backward on the CPU
    }
    PreparedConv::new(weight, None, padding, stride)?.forward(x, None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_conv() -> Result<()> {
        let dev = Device::Cpu;
        // (c, h, w, oc, k, stride, pad): ResNet's 3×3 and 7×7 stems, strides, odd sizes, 1×1.
        let cases = [
            (3, 9, 7, 4, 3, 1, 1),
            (5, 8, 8, 6, 3, 2, 1),
            (3, 15, 13, 8, 7, 2, 3),
            (4, 6, 6, 5, 1, 1, 0),
            (4, 7, 7, 5, 1, 2, 0),
            (2, 5, 5, 3, 3, 1, 0),
            (2, 6, 5, 3, 5, 3, 2),
            // Several bands of output rows (BAND_FLOATS).
            (16, 40, 37, 8, 7, 2, 3),
            (64, 30, 30, 8, 3, 2, 1),
            // Winograd (3×3, stride 1, padding 1): odd and tiny planes, edge tiles, many channels.
            (16, 7, 7, 16, 3, 1, 1),
            (3, 5, 3, 4, 3, 1, 1),
            (2, 1, 1, 3, 3, 1, 1),
            (2, 2, 9, 3, 3, 1, 1),
            (40, 12, 11, 24, 3, 1, 1),
        ];
        for (c, h, w, oc, k, s, p) in cases {
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (oc, c, k, k), &dev)?;
            let want = x.conv2d(&wt, p, s, 1, 1)?;
            let got = conv2d(&x, &wt, p, s)?;
            assert_eq!(want.dims(), got.dims(), "{c} {h} {w} {oc} {k} {s} {p}");
            let diff = (want - got)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "case {:?}: diff {diff}", (c, h, w, oc, k, s, p));
        }
        Ok(())
    }

    /// bias + residual + ReLU fused into the conv equal the same ops done one by one.
    #[test]
    fn fused_epilogue() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s, p) in [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)] {
            let x = Tensor::randn(0f32, 1.0, (3, 6, 9, 8), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (5, 6, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, 5, &dev)?;
            let plain = x.conv2d(&wt, p, s, 1, 1)?.broadcast_add(&b.reshape((1, 5, 1, 1))?)?;
            let res = Tensor::randn(0f32, 1.0, plain.dims(), &dev)?;
            let conv = PreparedConv::new(&wt, Some(&b), p, s)?;
            let cases = [
                (None, false, plain.clone()),
                (Some(&res), true, (&plain + &res)?.relu()?),
                (None, true, plain.relu()?),
            ];
            for (r, relu, want) in cases {
                let got = conv.forward(&x, r, relu)?;
                let diff = (want - got)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "k{k} s{s} residual {} relu {relu}: diff {diff}", r.is_some());
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let conv = PreparedConv::new(&Tensor::zeros((4, 3, 3, 3), DType::F32, &dev)?, None, 1, 1)?;
        assert!(conv.forward(&Tensor::zeros((1, 2, 5, 5), DType::F32, &dev)?, None, false).is_err());
        let x = Tensor::zeros((1, 3, 5, 5), DType::F32, &dev)?;
        assert!(conv.forward(&x, Some(&Tensor::zeros((1, 4, 4, 4), DType::F32, &dev)?), false).is_err());
        let b = Tensor::zeros(3, DType::F32, &dev)?;
        assert!(PreparedConv::new(&Tensor::zeros((4, 3, 3, 3), DType::F32, &dev)?, Some(&b), 1, 1).is_err());
        Ok(())
    }

    #[test]
    fn gradients_still_flow() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (1, 2, 5, 5), &dev)?;
        let wt = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev)?;
        let y = conv2d(x.as_tensor(), &wt, 1, 1)?;
        let grads = y.sum_all()?.backward()?;
        assert!(grads.get(x.as_tensor()).is_some(), "the fast path must not cut the graph");
        Ok(())
    }
}
