//! A convolution whose backward is fast on the CPU: `conv(x, W) = W · im2col(x)`, with im2col
//! as a custom op whose gradient is col2im (a scatter-add), both from [`crate::kernels::im2col`].
//! Candle's own CPU conv backward goes through `conv_transpose2d`, ~10× slower than the forward;
//! here both directions cost about one gemm plus a copy. Other devices keep Candle's conv
//! (cuDNN-class kernels there).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

use crate::kernels::im2col::{col2im, im2col, phases, ConvGeometry};

/// `[n, c, h, w]` → `[n, c·k·k, oh·ow]`; its adjoint (`adjoint: true`, the backward) maps
/// `[n, c·k·k, oh·ow]` → `[n, c, h, w]`, summing overlaps.
struct Im2Col {
    g: ConvGeometry,
    adjoint: bool,
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("im2col/col2im need contiguous input"),
    }
}

/// `f32` or `f64` applied to the contiguous data of `s`, whichever dtype it holds.
fn on_floats(
    s: &CpuStorage,
    l: &Layout,
    op: &str,
    f32: impl FnOnce(&[f32]) -> Vec<f32>,
    f64: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    match s {
        CpuStorage::F32(v) => Ok(CpuStorage::F32(f32(contiguous(v, l)?))),
        CpuStorage::F64(v) => Ok(CpuStorage::F64(f64(contiguous(v, l)?))),
        _ => candle_core::bail!("{op}: f32 or f64 only"),
    }
}

fn columns<T: Copy + Default>(x: &[T], g: &ConvGeometry, n: usize) -> Vec<T> {
    let (isz, osz) = (g.c * g.h * g.w, g.rows() * g.cols());
    let mut out = vec![T::default(); n * osz];
    for (img, dst) in x.chunks_exact(isz).zip(out.chunks_exact_mut(osz)) {
        im2col(&phases(img, g.w, g.stride), g, (0, g.oh), dst);
    }
    out
}

fn images<T: Copy + Default + std::ops::AddAssign>(cols: &[T], g: &ConvGeometry, n: usize) -> Vec<T> {
    let (isz, osz) = (g.c * g.h * g.w, g.rows() * g.cols());
    let mut out = vec![T::default(); n * isz];
    for (src, img) in cols.chunks_exact(osz).zip(out.chunks_exact_mut(isz)) {
        col2im(src, g, img);
    }
    out
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        if self.adjoint {
            "col2im"
        } else {
            "im2col"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, n) = (&self.g, l.dims()[0]);
        Ok(match self.adjoint {
            false => (
                on_floats(s, l, "im2col", |x| columns(x, g, n), |x| columns(x, g, n))?,
                (n, g.rows(), g.cols()).into(),
            ),
            true => (
                on_floats(s, l, "col2im", |x| images(x, g, n), |x| images(x, g, n))?,
                (n, g.c, g.h, g.w).into(),
            ),
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        match self.adjoint {
            false => Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Im2Col { g: self.g, adjoint: true })?)),
            true => candle_core::bail!("col2im is only the backward of im2col"),
        }
    }
}

/// `x.conv2d(weight, padding, stride, 1, 1)` with a fast backward on the CPU (f32 and f64);
/// elsewhere exactly Candle's conv.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oc, wc, k, k2) = weight.dims4()?;
    let cpu = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    let geometry = ConvGeometry::new(c, (h, w), k, stride, padding);
    let (Ok(g), true, true, true) = (geometry, cpu, wc == c, k == k2) else {
        return x.conv2d(weight, padding, stride, 1, 1);
    };
    let cols = x.contiguous()?.apply_op1(Im2Col { g, adjoint: false })?;
    weight.reshape((oc, c * k * k))?.broadcast_matmul(&cols)?.reshape((n, oc, g.oh, g.ow))
}
