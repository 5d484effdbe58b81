//! A convolution whose backward is fast on the CPU: `conv(x, W) = W · im2col(x)`, with im2col
//! as a custom op whose gradient is col2im (a scatter-add), both from [`crate::kernels::im2col`].
//! Candle's own CPU conv backward goes through `conv_transpose2d`, ~10× slower than the forward;
//! here both directions cost about one gemm plus a copy. Other devices keep Candle's conv
//! (cuDNN-class kernels there).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

use crate::kernels::im2col::{col2im, im2col, phases, ConvGeometry};

/// `[n, c, h, w]` → `[n, c·k·k, oh·ow]`.
struct Im2Col(ConvGeometry);
/// `[n, c·k·k, oh·ow]` → `[n, c, h, w]`, summing overlaps: the adjoint of [`Im2Col`].
struct Col2Im(ConvGeometry);

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
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, n) = (&self.0, l.dims()[0]);
        let storage = on_floats(s, l, "im2col", |x| columns(x, g, n), |x| columns(x, g, n))?;
        Ok((storage, Shape::from((n, g.rows(), g.cols()))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, n) = (&self.0, l.dims()[0]);
        let storage = on_floats(s, l, "col2im", |x| images(x, g, n), |x| images(x, g, n))?;
        Ok((storage, Shape::from((n, g.c, g.h, g.w))))
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
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    weight.reshape((oc, c * k * k))?.broadcast_matmul(&cols)?.reshape((n, oc, g.oh, g.ow))
}
