//! Max-pooling for inference in one pass per plane: the max of `k` rows first (whole rows, so it
//! vectorises), then of `k` columns at stride `s`. PyTorch's padding and ceil mode, as
//! [`crate::ops::max_pool2d`], which builds the same from Candle ops for training.

use candle_core::{Result, Tensor};

use super::with_slice;
use crate::ops::pool_out;
use crate::spec::Pool;

/// `x`: a plain CPU f32 tensor `[n, c, h, w]` ([`super::is_plain`]).
pub fn max_pool2d(x: &Tensor, p: &Pool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if p.kernel == 0 || p.stride == 0 || h + 2 * p.padding < p.kernel || w + 2 * p.padding < p.kernel {
        candle_core::bail!("max-pool {}×{} / {} does not fit a {h}×{w} input", p.kernel, p.kernel, p.stride);
    }
    let (oh, ow) = (pool_out(h, p), pool_out(w, p));
    let mut out = vec![0f32; n * c * oh * ow];
    let mut rowmax = vec![0f32; w];
    with_slice(x, |xs| {
        for (plane, dst) in xs.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for oy in 0..oh {
                // Rows of the window inside the plane; a window always overlaps the plane.
                let y0 = (oy * p.stride).saturating_sub(p.padding);
                let y1 = (oy * p.stride + p.kernel - p.padding).min(h);
                rowmax.copy_from_slice(&plane[y0 * w..][..w]);
                for y in y0 + 1..y1 {
                    for (m, &v) in rowmax.iter_mut().zip(&plane[y * w..][..w]) {
                        *m = m.max(v);
                    }
                }
                for (ox, o) in dst[oy * ow..][..ow].iter_mut().enumerate() {
                    let x0 = (ox * p.stride).saturating_sub(p.padding);
                    let x1 = (ox * p.stride + p.kernel - p.padding).min(w);
                    *o = rowmax[x0..x1].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                }
            }
        }
    })?;
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s, pad, ceil, h, w) in [
            (3, 2, 1, false, 112, 112),
            (3, 2, 0, true, 13, 13),
            (2, 2, 0, false, 7, 9),
            (3, 1, 1, false, 5, 4),
            (3, 2, 0, true, 6, 6),
        ] {
            let p = Pool { kernel: k, stride: s, padding: pad, ceil_mode: ceil };
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let want = crate::ops::max_pool2d(&x, &p, false)?;
            let got = max_pool2d(&x, &p)?;
            assert_eq!(want.dims(), got.dims(), "{p:?} on {h}×{w}");
            let diff = (want - got)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{p:?} on {h}×{w}");
        }
        Ok(())
    }
}
