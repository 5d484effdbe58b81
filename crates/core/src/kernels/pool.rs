//! Max-pooling for inference in one pass per plane: the max of `k` rows first (whole rows, so it
//! vectorises), then of `k` columns at stride `s`. PyTorch's padding and ceil mode, as
//! [`crate::ops::max_pool2d`], which builds the same from Candle ops for training.

use candle_core::{Result, Tensor};

use super::simd::F32x4;
use super::with_slice;
use crate::ops::pool_out;
use crate::spec::Pool;

/// `x`: a plain CPU f32 tensor `[n, c, h, w]` ([`super::is_plain`]).
pub fn max_pool2d(x: &Tensor, p: &Pool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if p.kernel == 0 || p.stride == 0 || h + 2 * p.padding < p.kernel || w + 2 * p.padding < p.kernel {
        candle_core::bail!("max-pool {}×{} / {} does not fit a {h}×{w} input", p.kernel, p.kernel, p.stride);
    }
    let (oh, ow) = (pool_out(h, p)?, pool_out(w, p)?);
    let (k, st, pad) = (p.kernel, p.stride, p.padding);
    let mut out = vec![0f32; n * c * oh * ow];
    // The max of a window's rows, padded with −∞: window `ox` is `rowmax[ox·s .. ox·s + k]`. The
    // tail leaves room for the last group of four outputs.
    let mut rowmax = vec![f32::NEG_INFINITY; (ow + 4) * st + k + 8];
    with_slice(x, |xs| {
        for (plane, dst) in xs.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for oy in 0..oh {
                // Rows of the window inside the plane; a window always overlaps the plane.
                let y0 = (oy * st).saturating_sub(pad);
                let y1 = (oy * st + k - pad).min(h);
                let acc = &mut rowmax[pad..pad + w];
                acc.copy_from_slice(&plane[y0 * w..][..w]);
                for y in y0 + 1..y1 {
                    let row = &plane[y * w..][..w];
                    let mut c = 0;
                    while c + 4 <= w {
                        F32x4::load(&acc[c..]).max(F32x4::load(&row[c..])).store(&mut acc[c..]);
                        c += 4;
                    }
                    for c in c..w {
                        acc[c] = greater(acc[c], row[c]);
                    }
                }
                let dst = &mut dst[oy * ow..][..ow];
                let mut ox = 0;
                if st == 2 {
                    // Four windows at once: offset j of windows ox..ox+4 is every other element
                    // from ox·2 + j on.
                    while ox + 4 <= ow {
                        let at = |j: usize| {
                            let (a, b) =
                                (F32x4::load(&rowmax[2 * ox + j..]), F32x4::load(&rowmax[2 * ox + j + 4..]));
                            F32x4::evens(a, b)
                        };
                        (1..k).fold(at(0), |m, j| m.max(at(j))).store(&mut dst[ox..]);
                        ox += 4;
                    }
                }
                for (ox, o) in dst.iter_mut().enumerate().skip(ox) {
                    *o = rowmax[ox * st + 1..ox * st + k].iter().fold(rowmax[ox * st], |a, &b| greater(a, b));
                }
            }
        }
    })?;
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

/// The larger of two values as a compare and select: `f32::max` is IEEE `maxNum`, several
/// instructions in wasm.
#[inline(always)]
fn greater(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
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
