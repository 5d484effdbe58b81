//! 2-D convolution as im2col + one gemm per image, with an im2col that copies whole rows.
//!
//! Candle's CPU conv gathers the im2col matrix one element at a time through strided index
//! arithmetic; on ResNet-sized layers that gather, not the gemm, takes most of the conv's time
//! (bench/results.md, "where the time goes"). Here the column matrix
//! `[in_ch·k·k, out_h·out_w]` is built row by row: for stride 1 each output row is one slice
//! copy with the padding left as zeros, so the conv costs little more than its matmul.

use candle_core::{DType, Device, Result, Tensor};

/// Fills `cols` (`[c·k·k, oh·ow]`, zeroed) from one image `x` (`[c, h, w]`).
#[allow(clippy::too_many_arguments)]
fn im2col(x: &[f32], c: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize, cols: &mut [f32]) {
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (w + 2 * pad - k) / stride + 1;
    // Output columns `ox` whose input column `ox·s + kx − pad` lies inside [0, w).
    let valid = |kx: usize| {
        let lo = pad.saturating_sub(kx).div_ceil(stride);
        let hi = ((w + pad).saturating_sub(kx)).div_ceil(stride).min(ow);
        (lo, hi.max(lo))
    };
    for ci in 0..c {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = (ci * k + ky) * k + kx;
                let dst = &mut cols[row * oh * ow..(row + 1) * oh * ow];
                let (x0, x1) = valid(kx);
                for oy in 0..oh {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize || x0 >= x1 {
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    let out = &mut dst[oy * ow..(oy + 1) * ow];
                    let ix0 = x0 * stride + kx - pad;
                    if stride == 1 {
                        out[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                    } else {
                        for (o, i) in out[x0..x1].iter_mut().zip(src[ix0..].iter().step_by(stride)) {
                            *o = *i;
                        }
                    }
                }
            }
        }
    }
}

/// `conv2d(x, weight)` for square kernels, no dilation or groups, f32 on the CPU: the same
/// result as Candle's `Tensor::conv2d`. `x`: `[n, c, h, w]`, `weight`: `[oc, c, k, k]`.
/// Anything else — another device or dtype, or a tensor that records gradients (training,
/// saliency) — goes to Candle's conv, so backpropagation always sees Candle's ops.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oc, wc, k, k2) = weight.dims4()?;
    let plain = |t: &Tensor| t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu) && !t.track_op();
    if wc != c || k != k2 || !plain(x) || !plain(weight) {
        return crate::train::conv::conv2d(x, weight, padding, stride); // fast backward on the CPU
    }
    let oh = (h + 2 * padding - k) / stride + 1;
    let ow = (w + 2 * padding - k) / stride + 1;
    let wm = weight.reshape((oc, c * k * k))?;
    if k == 1 && stride == 1 && padding == 0 {
        // A 1×1 conv is already a matmul on the NCHW layout.
        return wm.broadcast_matmul(&x.reshape((n, c, h * w))?)?.reshape((n, oc, oh, ow));
    }
    // One image at a time: the column matrix of a whole batch would not stay in cache (ResNet-18's
    // first stage at batch 32 is 230 MB).
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let mut cols = vec![0f32; c * k * k * oh * ow];
    let mut outs = Vec::with_capacity(n);
    for img in data.chunks_exact(c * h * w) {
        if !outs.is_empty() {
            cols.fill(0.0);
        }
        im2col(img, c, h, w, k, stride, padding, &mut cols);
        let m = Tensor::from_slice(&cols, (c * k * k, oh * ow), x.device())?;
        outs.push(wm.matmul(&m)?);
    }
    Tensor::stack(&outs, 0)?.reshape((n, oc, oh, ow))
}

#[cfg(test)]
mod tests {
    use super::*;

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
