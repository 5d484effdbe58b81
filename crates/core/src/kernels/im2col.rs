//! The column matrix of a convolution and its adjoint: `conv(x, W) = W · im2col(x)`. One
//! implementation serves inference (a band of output rows at a time, still in cache when gemm
//! reads it) and training (whole images, f32 or f64, with col2im as the backward).

use std::borrow::Cow;
use std::ops::AddAssign;

use candle_core::Result;

use crate::spec::out_size;

/// A square convolution's sizes on one image: `c×h×w` in, `k×k` kernel, stride, padding, and
/// the output plane `oh×ow` they give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeometry {
    /// Fails when the kernel does not fit the padded input or the stride is 0.
    pub fn new(c: usize, (h, w): (usize, usize), k: usize, stride: usize, pad: usize) -> Result<Self> {
        let side = |n| out_size(n, k, stride, pad, false).map_err(candle_core::Error::Msg);
        Ok(ConvGeometry { c, h, w, k, stride, pad, oh: side(h)?, ow: side(w)? })
    }

    /// Rows of the column matrix: `c·k·k`.
    pub fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Columns of the column matrix of the whole image: `oh·ow`.
    pub fn cols(&self) -> usize {
        self.oh * self.ow
    }

    /// Output columns `ox` whose input column `ox·s + kx − pad` lies inside `[0, w)`.
    fn valid(&self, kx: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(kx).div_ceil(self.stride);
        let hi = (self.w + self.pad).saturating_sub(kx).div_ceil(self.stride).min(self.ow);
        (lo, hi.max(lo))
    }

    /// The input row of output row `oy` at kernel row `ky`, if inside the image.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky).checked_sub(self.pad).filter(|&iy| iy < self.h)
    }
}

/// For stride `s > 1`, each input row split into its `s` phases (columns `r, r+s, r+2s, …`, each
/// `ceil(w/s)` long): then every im2col row segment is one contiguous copy. For stride 1, `x`.
pub fn phases<T: Copy + Default>(x: &[T], w: usize, stride: usize) -> Cow<'_, [T]> {
    if stride == 1 {
        return Cow::Borrowed(x);
    }
    let mut ph = vec![];
    phases_into(x, w, stride, &mut ph);
    Cow::Owned(ph)
}

/// [`phases`] into a buffer kept between calls (stride > 1; `buf` is resized, not reallocated
/// once large enough).
pub fn phases_into<T: Copy + Default>(x: &[T], w: usize, stride: usize, buf: &mut Vec<T>) {
    let pw = w.div_ceil(stride);
    buf.clear();
    buf.resize(x.len() / w * stride * pw, T::default());
    for (src, dst) in x.chunks_exact(w).zip(buf.chunks_exact_mut(stride * pw)) {
        for (j, v) in src.iter().enumerate() {
            dst[(j % stride) * pw + j / stride] = *v;
        }
    }
}

/// Writes every element of `cols` (`[c·k·k, (oy1 − oy0)·ow]`): output rows `oy0..oy1` of the column
/// matrix of one image, from its [`phases`] `rows` (`[c, h, w]` split by stride).
///
/// Every output row of every kernel offset is one contiguous slice copy between the zeros of
/// the padding (written here, so a reused buffer needs no clearing first): output column `ox` of offset `kx` reads input column `ox·s + kx − pad`, which is
/// element `ox + d` of phase `r`, where `kx − pad = d·s + r`.
pub fn im2col<T: Copy + Default>(rows: &[T], g: &ConvGeometry, (oy0, oy1): (usize, usize), cols: &mut [T]) {
    let zero = T::default();
    let (k, stride) = (g.k, g.stride);
    let n = (oy1 - oy0) * g.ow;
    let pw = g.w.div_ceil(stride);
    for ci in 0..g.c {
        for ky in 0..k {
            for kx in 0..k {
                let row = (ci * k + ky) * k + kx;
                let dst = &mut cols[row * n..(row + 1) * n];
                let (x0, x1) = g.valid(kx);
                if x0 >= x1 {
                    dst.fill(zero);
                    continue;
                }
                let q = kx as isize - g.pad as isize;
                let (d, r) = (q.div_euclid(stride as isize), q.rem_euclid(stride as isize) as usize);
                let from = (x0 as isize + d) as usize; // ≥ 0: x0 is the first valid column
                for (oy, out) in (oy0..oy1).zip(dst.chunks_exact_mut(g.ow.max(1))) {
                    let Some(iy) = g.input_row(oy, ky) else {
                        out.fill(zero);
                        continue;
                    };
                    let src = &rows[((ci * g.h + iy) * stride + r) * pw..][..pw];
                    out[..x0].fill(zero);
                    out[x0..x1].copy_from_slice(&src[from..from + (x1 - x0)]);
                    out[x1..].fill(zero);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`] over the whole image: adds every entry of `cols`
/// (`[c·k·k, oh·ow]`) into the input pixel it was read from (`img`: `[c, h, w]`, not cleared).
pub fn col2im<T: Copy + AddAssign>(cols: &[T], g: &ConvGeometry, img: &mut [T]) {
    col2im_band(cols, g, (0, g.oh), img)
}

/// [`col2im`] of a band of output rows `oy0..oy1` (`cols`: `[c·k·k, (oy1 − oy0)·ow]`, what
/// [`im2col`] gives for the band).
pub fn col2im_band<T: Copy + AddAssign>(
    cols: &[T],
    g: &ConvGeometry,
    (oy0, oy1): (usize, usize),
    img: &mut [T],
) {
    let (k, n) = (g.k, (oy1 - oy0) * g.ow);
    for ci in 0..g.c {
        for ky in 0..k {
            for kx in 0..k {
                let row = (ci * k + ky) * k + kx;
                let src = &cols[row * n..(row + 1) * n];
                let (x0, x1) = g.valid(kx);
                if x0 >= x1 {
                    continue;
                }
                let ix0 = x0 * g.stride + kx - g.pad; // the input column of output column x0
                for oy in oy0..oy1 {
                    let Some(iy) = g.input_row(oy, ky) else { continue };
                    let dst = &mut img[(ci * g.h + iy) * g.w..][..g.w];
                    let at = (oy - oy0) * g.ow;
                    let src = &src[at + x0..at + x1];
                    for (j, &v) in src.iter().enumerate() {
                        dst[ix0 + j * g.stride] += v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column matrix by its definition, one element at a time.
    fn naive(x: &[f64], g: &ConvGeometry) -> Vec<f64> {
        let mut cols = vec![0.0; g.rows() * g.cols()];
        for ci in 0..g.c {
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = (ci * g.k + ky) * g.k + kx;
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix) {
                                cols[row * g.cols() + oy * g.ow + ox] =
                                    x[(ci * g.h + iy as usize) * g.w + ix as usize];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn columns_and_their_adjoint() -> Result<()> {
        // (c, h, w, k, stride, pad): 3×3 and 7×7 stems, strides 2 and 3, 1×1, odd planes.
        for (c, h, w, k, s, p) in [
            (2, 5, 7, 3, 1, 1),
            (3, 9, 8, 3, 2, 1),
            (2, 15, 13, 7, 2, 3),
            (2, 6, 5, 5, 3, 2),
            (3, 4, 4, 1, 2, 0),
        ] {
            let g = ConvGeometry::new(c, (h, w), k, s, p)?;
            let x: Vec<f64> = (0..c * h * w).map(|i| (i as f64 * 0.37).sin()).collect();
            let want = naive(&x, &g);
            // Stale values in a reused buffer: im2col writes every element, padding included.
            let mut got = vec![f64::NAN; want.len()];
            im2col(&phases(&x, w, s), &g, (0, g.oh), &mut got);
            assert_eq!(got, want, "im2col {:?}", (c, h, w, k, s, p));
            // Bands of rows give the same matrix, band by band.
            let mut band = vec![0.0; g.rows() * g.ow];
            for oy in 0..g.oh {
                band.fill(f64::NAN);
                im2col(&phases(&x, w, s), &g, (oy, oy + 1), &mut band);
                for r in 0..g.rows() {
                    assert_eq!(band[r * g.ow..][..g.ow], want[r * g.cols() + oy * g.ow..][..g.ow]);
                }
            }
            // col2im of the bands adds up to col2im of the whole.
            let y: Vec<f64> = (0..want.len()).map(|i| (i as f64 * 0.11).cos()).collect();
            let (mut whole, mut banded) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            col2im(&y, &g, &mut whole);
            for oy in 0..g.oh {
                let band: Vec<f64> =
                    (0..g.rows()).flat_map(|r| y[r * g.cols() + oy * g.ow..][..g.ow].to_vec()).collect();
                col2im_band(&band, &g, (oy, oy + 1), &mut banded);
            }
            assert!(whole.iter().zip(&banded).all(|(a, b)| (a - b).abs() < 1e-12), "col2im bands");
            // <im2col(x), y> = <x, col2im(y)> for any y: col2im is the adjoint.
            let mut back = vec![0.0; x.len()];
            col2im(&y, &g, &mut back);
            let lhs: f64 = want.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-9, "col2im {:?}: {lhs} vs {rhs}", (c, h, w, k, s, p));
        }
        assert!(ConvGeometry::new(1, (2, 2), 5, 1, 1).is_err());
        assert!(ConvGeometry::new(1, (4, 4), 3, 0, 1).is_err());
        Ok(())
    }
}
