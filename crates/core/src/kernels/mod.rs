//! Fast paths for inference on the CPU (native and wasm32). Each is tested against the plain
//! Candle forward (`Model::forward_reference`, max abs diff ≤ 1e-4).

pub mod conv;
pub mod gemm;
pub mod pool;
pub mod simd;
pub mod winograd;

use candle_core::{DType, Device, Result, Storage, Tensor};

/// What follows a conv, applied while its output is still in cache:
/// `out = relu?(conv(x) + bias + residual)`.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per output channel.
    pub bias: Option<&'a [f32]>,
    /// The shortcut of a residual block, shaped like the output (one image).
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Applies the epilogue in place to `out` (`[channels, plane]`, one image).
    pub fn apply(&self, out: &mut [f32], plane: usize) {
        if self.bias.is_none() && self.residual.is_none() && !self.relu {
            return;
        }
        for (o, row) in out.chunks_exact_mut(plane).enumerate() {
            let b = self.bias.map_or(0.0, |b| b[o]);
            match self.residual {
                Some(r) => {
                    for (y, &s) in row.iter_mut().zip(&r[o * plane..][..plane]) {
                        *y += b + s;
                    }
                }
                None => row.iter_mut().for_each(|y| *y += b),
            }
            if self.relu {
                row.iter_mut().for_each(|y| *y = y.max(0.0));
            }
        }
    }
}

/// Whether the fast kernels can read `t` directly: f32, on the CPU, outside autograd.
pub fn is_plain(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu) && !t.track_op()
}

/// Calls `f` with the elements of a CPU f32 tensor in row-major order, without copying when
/// the tensor is contiguous.
pub fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("fast kernels run on the CPU only") };
    let all = cpu.as_slice::<f32>()?;
    let (start, end) = layout.contiguous_offsets().expect("made contiguous above");
    Ok(f(&all[start..end]))
}

/// `x·scale + shift` per channel (an eval-mode BatchNorm) in one pass; `x`: plain, `[n, c, h, w]`.
pub fn channel_affine(x: &Tensor, scale: &[f32], shift: &[f32]) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if scale.len() != c || shift.len() != c {
        candle_core::bail!("channel affine: {} / {} values for {c} channels", scale.len(), shift.len());
    }
    let plane = h * w;
    let mut out = vec![0f32; n * c * plane];
    with_slice(x, |xs| {
        for (k, (dst, src)) in out.chunks_exact_mut(plane).zip(xs.chunks_exact(plane)).enumerate() {
            let (s, b) = (scale[k % c], shift[k % c]);
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * s + b;
            }
        }
    })?;
    Tensor::from_vec(out, (n, c, h, w), x.device())
}
