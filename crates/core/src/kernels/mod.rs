//! Fast paths for inference on the CPU (native and wasm32). Each is tested against the plain
//! Candle forward (`Model::forward_reference`, max abs diff ≤ 1e-4).

pub mod conv;
pub mod direct;
pub mod gemm;
pub mod im2col;
pub mod plan;
pub mod pool;
pub mod simd;
pub(crate) mod team;
pub mod winograd;

use std::cell::RefCell;

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
        for (o, row) in out.chunks_exact_mut(plane).enumerate() {
            self.apply_part(o, row, o * plane);
        }
    }

    /// Applies it to `part`, the elements of channel `o` from `at` (an index into the whole
    /// image's output, where the residual is read).
    pub fn apply_part(&self, o: usize, part: &mut [f32], at: usize) {
        if self.bias.is_none() && self.residual.is_none() && !self.relu {
            return;
        }
        let b = self.bias.map_or(0.0, |b| b[o]);
        match self.residual {
            Some(r) => {
                let len = part.len();
                for (y, &s) in part.iter_mut().zip(&r[at..][..len]) {
                    *y += b + s;
                }
            }
            None => part.iter_mut().for_each(|y| *y += b),
        }
        if self.relu {
            part.iter_mut().for_each(|y| *y = y.max(0.0));
        }
    }
}

/// Below this many multiply-adds a conv runs on one thread: waking a second thread and joining
/// it costs more than the half it would save (ResNet-20's ~1M-MAC convs split at batch 1 made
/// 2 threads 1.4× slower than 1, even one parallel section per conv).
/// The same bound in the browser's threaded build: there, splitting ResNet-20's convs too (at
/// 1/8 of it) made its forward 2× slower on 2 threads (2.0 → 4.0 ms), although each conv timed
/// alone got faster: a parallel section called from outside the pool costs two Web Worker
/// wake-ups (the pool's thread, then the caller).
pub(crate) const PARALLEL_WORK: usize = 1 << 22;
/// The bound inside a team's pass ([`team`]): a section costs no wake-up there, only the
/// helpers' claims and the leader's wait for the slowest.
pub(crate) const TEAM_PARALLEL_WORK: usize = 1 << 18;

/// The bound for this thread now: [`TEAM_PARALLEL_WORK`] where it leads a team.
pub(crate) fn parallel_work() -> usize {
    match team::team_threads() {
        Some(_) => TEAM_PARALLEL_WORK,
        None => PARALLEL_WORK,
    }
}
/// Weights up to this many floats (1 MiB) fit in each core's L2, so threads that each take a
/// part of the output can all read them whole; bigger ones are better split among threads.
const SHARED_WEIGHT_FLOATS: usize = 1 << 18;

/// How a conv's work goes to the threads: the one place that decides it for every kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// Too little work to be worth a second thread.
    One,
    /// Each of these threads takes a part of the output and reads the weights whole.
    Parts(usize),
    /// The weights are too big to share: these threads are better spent inside the products.
    Products(usize),
}

impl Threads {
    /// For a conv of `macs` multiply-adds over `weight_floats` of weights, on `free` threads.
    pub(crate) fn for_conv(macs: usize, weight_floats: usize, free: usize) -> Threads {
        match (free, weight_floats) {
            _ if free < 2 || macs < parallel_work() => Threads::One,
            (n, w) if w <= SHARED_WEIGHT_FLOATS => Threads::Parts(n),
            (n, _) => Threads::Products(n),
        }
    }
}

/// `bands[b][o]`: band `b`'s piece of channel `o` of `out` (`[channels, plane]`), the bands
/// `band` elements each (the last one shorter). Pieces never overlap, so each band can go to
/// another thread.
pub(crate) fn bands_of(out: &mut [f32], plane: usize, band: usize) -> Vec<Vec<&mut [f32]>> {
    if plane == 0 || band == 0 {
        return vec![];
    }
    let channels = out.len() / plane;
    let mut bands: Vec<Vec<&mut [f32]>> =
        (0..plane.div_ceil(band)).map(|_| Vec::with_capacity(channels)).collect();
    for channel in out.chunks_exact_mut(plane) {
        for (b, piece) in channel.chunks_mut(band).enumerate() {
            bands[b].push(piece);
        }
    }
    bands
}

thread_local! {
    /// Scratch buffers kept between calls: a fresh multi-100-KiB allocation per conv costs
    /// page faults and zeroing that can exceed the arithmetic of a small layer.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer from [`take_scratch`]: its `len` floats, in a pooled buffer that may be
/// longer.
pub(crate) struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

/// A scratch buffer of `len` floats from this thread's pool. Its contents are arbitrary (zeros
/// or finite values left by an earlier use): zero what must start at zero. It comes from the
/// shortest pooled buffer that holds `len`, else the longest, grown: pooled buffers keep their
/// length, so a layer's big buffer is not cut down by a small request and zeroed again as it
/// grows back at the next layer.
fn take_scratch(len: usize) -> Scratch {
    let mut buf = SCRATCH
        .with(|p| {
            let mut pool = p.borrow_mut();
            let fits = pool.iter().enumerate().filter(|(_, b)| b.len() >= len).min_by_key(|(_, b)| b.len());
            let pick = fits.or_else(|| pool.iter().enumerate().max_by_key(|(_, b)| b.len()));
            pick.map(|(i, _)| i).map(|i| pool.swap_remove(i))
        })
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    Scratch { buf, len }
}

/// Returns a buffer from [`take_scratch`] to the pool.
fn give_scratch(s: Scratch) {
    SCRATCH.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < 8 {
            pool.push(s.buf);
        }
    });
}

/// Threads a kernel may use now: natively Candle's thread count, in the browser the Web Workers
/// of the thread pool (a wasm build with atomics; the team's, in a pass it leads), except inside
/// a parallel section (no nesting); one in a browser build without threads.
pub(crate) fn free_threads() -> usize {
    if team::inside_item() {
        return 1;
    }
    if let Some(n) = team::team_threads() {
        return n;
    }
    #[cfg(not(target_arch = "wasm32"))]
    if rayon::current_thread_index().is_none() {
        return candle_core::utils::get_num_threads();
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
    if rayon::current_thread_index().is_none() {
        return rayon::current_num_threads();
    }
    1
}

/// The threads a forward pass's kernels share when called from here (the page says how many).
pub fn threads() -> usize {
    free_threads()
}

/// The vector instructions the kernels run with, as the page names them: in wasm,
/// what the build was compiled for (the page loads a relaxed-SIMD build where the browser has
/// it); natively, the widest this CPU has.
pub fn instructions() -> &'static str {
    if cfg!(target_feature = "relaxed-simd") {
        "relaxed SIMD"
    } else if cfg!(target_arch = "wasm32") {
        if cfg!(target_feature = "simd128") {
            "SIMD128"
        } else {
            "scalar code"
        }
    } else if cfg!(target_arch = "x86_64") {
        match simd::Width::widest() {
            simd::Width::W16 => "AVX-512",
            simd::Width::W8 => "AVX2",
            simd::Width::W4 => "SSE2",
        }
    } else {
        "scalar code"
    }
}

/// `f(i, chunk)` for the `i`-th `chunk`-sized piece of `data`, on rayon's threads when `parallel`
/// (where there are threads: natively, or a wasm build with atomics).
pub(crate) fn for_chunks(
    data: &mut [f32],
    chunk: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let mut chunks: Vec<&mut [f32]> = data.chunks_mut(chunk).collect();
    for_each_mut(&mut chunks, parallel, |i, c| f(i, c));
}

/// `f(i, item)` for every item, on rayon's threads when `parallel` (on the team's, in a pass
/// this thread leads, a thread's share of the items per claim).
pub(crate) fn for_each_mut<T: Send>(
    items: &mut [T],
    parallel: bool,
    f: impl Fn(usize, &mut T) + Sync + Send,
) {
    for_each_claimed(items, parallel, team::Claims::Shares, f)
}

/// [`for_each_mut`] for a few big items, each claimed on its own in a team's pass
/// ([`team::Claims::Items`]): the threads share them as fast as each runs.
pub(crate) fn for_each_balanced<T: Send>(
    items: &mut [T],
    parallel: bool,
    f: impl Fn(usize, &mut T) + Sync + Send,
) {
    for_each_claimed(items, parallel, team::Claims::Items, f)
}

fn for_each_claimed<T: Send>(
    items: &mut [T],
    parallel: bool,
    claims: team::Claims,
    f: impl Fn(usize, &mut T) + Sync + Send,
) {
    if parallel && items.len() > 1 && team::for_each_mut(items, claims, &f) {
        return;
    }
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    if parallel {
        use rayon::prelude::*;
        items.par_iter_mut().enumerate().for_each(|(i, t)| f(i, t));
        return;
    }
    let _ = parallel;
    items.iter_mut().enumerate().for_each(|(i, t)| f(i, t));
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

/// `x·scale + shift` per channel (an eval-mode BatchNorm) in one pass, and with `relu_too` the
/// ReLU of that in the same pass; `x`: plain, `[n, c, h, w]`.
pub fn channel_affine(
    x: &Tensor,
    scale: &[f32],
    shift: &[f32],
    relu_too: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (n, c, h, w) = x.dims4()?;
    if scale.len() != c || shift.len() != c {
        candle_core::bail!("channel affine: {} / {} values for {c} channels", scale.len(), shift.len());
    }
    let plane = h * w;
    let mut out = vec![0f32; n * c * plane];
    let mut relu = vec![0f32; if relu_too { out.len() } else { 0 }];
    with_slice(x, |xs| {
        for (k, (dst, src)) in out.chunks_exact_mut(plane).zip(xs.chunks_exact(plane)).enumerate() {
            let (s, b) = (scale[k % c], shift[k % c]);
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * s + b;
            }
        }
        if relu_too {
            relu_of(&out, &mut relu);
        }
    })?;
    pair(out, relu_too.then_some(relu), (n, c, h, w), x.device())
}

/// `a + b` (same shape, plain), and with `relu_too` its ReLU, in one pass.
pub fn add(a: &Tensor, b: &Tensor, relu_too: bool) -> Result<(Tensor, Option<Tensor>)> {
    if a.dims() != b.dims() {
        candle_core::bail!("add: shapes {:?} and {:?}", a.dims(), b.dims());
    }
    let mut out = vec![0f32; a.elem_count()];
    let mut relu = vec![0f32; if relu_too { out.len() } else { 0 }];
    with_slice(a, |xa| {
        with_slice(b, |xb| {
            for ((d, &p), &q) in out.iter_mut().zip(xa).zip(xb) {
                *d = p + q;
            }
            if relu_too {
                relu_of(&out, &mut relu);
            }
        })
    })??;
    pair(out, relu_too.then_some(relu), a.dims(), a.device())
}

/// A CIFAR ResNet's option-A shortcut ([`crate::ops::shortcut_a`]): `x[:, :, ::s, ::s]` with
/// zero channels added equally on both sides, in one pass over the output (through Candle's
/// strided views and pad it took as long as a conv of ResNet-20's). `x`: plain, `[n, c, h, w]`,
/// `out_ch ≥ c`.
pub fn shortcut_a(x: &Tensor, out_ch: usize, stride: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if out_ch < c || stride == 0 {
        candle_core::bail!("shortcut A: {c} channels to {out_ch}, stride {stride}");
    }
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let before = (out_ch - c) / 2;
    let mut out = vec![0f32; n * out_ch * oh * ow];
    with_slice(x, |xs| {
        for (image, dst) in xs.chunks_exact(c * h * w).zip(out.chunks_exact_mut(out_ch * oh * ow)) {
            let kept = &mut dst[before * oh * ow..][..c * oh * ow];
            for (plane, dst) in image.chunks_exact(h * w).zip(kept.chunks_exact_mut(oh * ow)) {
                for (row, dst) in plane.chunks_exact(w).step_by(stride).zip(dst.chunks_exact_mut(ow)) {
                    for (d, &v) in dst.iter_mut().zip(row.iter().step_by(stride)) {
                        *d = v;
                    }
                }
            }
        }
    })?;
    Tensor::from_vec(out, (n, out_ch, oh, ow), x.device())
}

fn relu_of(x: &[f32], out: &mut [f32]) {
    for (r, &v) in out.iter_mut().zip(x) {
        *r = if v > 0.0 { v } else { 0.0 };
    }
}

fn pair(
    out: Vec<f32>,
    relu: Option<Vec<f32>>,
    shape: impl Into<candle_core::Shape> + Clone,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let relu = relu.map(|r| Tensor::from_vec(r, shape.clone(), device)).transpose()?;
    Ok((Tensor::from_vec(out, shape, device)?, relu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_go_where_the_work_and_weights_allow() {
        let big = PARALLEL_WORK;
        assert_eq!(Threads::for_conv(big - 1, 1, 2), Threads::One, "too little work");
        assert_eq!(Threads::for_conv(big, 1, 1), Threads::One, "one thread free");
        assert_eq!(Threads::for_conv(big, SHARED_WEIGHT_FLOATS, 2), Threads::Parts(2));
        assert_eq!(Threads::for_conv(big, SHARED_WEIGHT_FLOATS + 1, 4), Threads::Products(4));
    }

    #[test]
    fn shortcut_a_matches_the_reference() -> Result<()> {
        let dev = Device::Cpu;
        for (c, h, w, out_ch, stride) in
            [(16, 32, 32, 32, 2), (3, 7, 5, 8, 2), (4, 9, 10, 4, 3), (2, 3, 3, 5, 1)]
        {
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)?;
            let want = crate::ops::shortcut_a(&x, out_ch, stride)?;
            let got = shortcut_a(&x, out_ch, stride)?;
            assert_eq!(want.dims(), got.dims());
            let diff = (want - got)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{:?}", (c, h, w, out_ch, stride));
        }
        assert!(shortcut_a(&Tensor::zeros((1, 4, 2, 2), DType::F32, &dev)?, 2, 1).is_err());
        Ok(())
    }

    #[test]
    fn chunks_and_items_are_visited_once_in_order_either_way() {
        for parallel in [false, true] {
            let mut data: Vec<f32> = vec![0.0; 10];
            for_chunks(&mut data, 4, parallel, |i, c| c.iter_mut().for_each(|v| *v += i as f32 + 1.0));
            assert_eq!(data, [1., 1., 1., 1., 2., 2., 2., 2., 3., 3.]);
        }
    }
}
