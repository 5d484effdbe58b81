//! The fast training plan's kernels, forward and backward, on NCHW f32 slices. The batch is cut
//! into one contiguous shard of images per thread ([`Shards`]); each kernel works shard by
//! shard, and what sums over the batch (weight gradients, BatchNorm statistics) is summed per
//! shard into that shard's [`Scratch`] and reduced after, in shard order: no locks, and the
//! same bits on every run with the same thread count.

use std::ops::Range;

use crate::kernels::gemm::{gemm_view, View};
use crate::kernels::im2col::{col2im_band, im2col, phases_into, ConvGeometry};
use crate::kernels::winograd::{weights_from_transformed, Winograd3x3};
use crate::kernels::Epilogue;
use crate::spec::Pool;

/// One thread's buffers, sized once for the largest layer and kept between steps.
#[derive(Default)]
pub struct Scratch {
    /// The phases of a strided conv's input image.
    pub phases: Vec<f32>,
    /// A band of the column matrix, and its gradient.
    pub cols: Vec<f32>,
    pub dcols: Vec<f32>,
    /// This shard's share of a weight gradient (a conv's kept transposed, `k × out`, or a
    /// Winograd conv's `∂L/∂U`), then of a bias gradient.
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
    /// Per-channel sums (BatchNorm statistics and their gradients).
    pub sums: Vec<f64>,
}

/// The batch cut into contiguous ranges of images, one per thread.
#[derive(Clone, Debug, PartialEq)]
pub struct Shards(pub Vec<Range<usize>>);

impl Shards {
    pub fn new(images: usize, threads: usize) -> Self {
        let t = threads.clamp(1, images.max(1));
        Shards((0..t).map(|i| i * images / t..(i + 1) * images / t).collect())
    }

    /// `f(images, chunk, scratch)` for every shard, `chunk` being those images' part of `out`
    /// (`per` floats an image; empty when `per` is 0), in parallel where there are threads.
    pub fn run<F>(&self, out: &mut [f32], per: usize, scratch: &mut [Scratch], f: F)
    where
        F: Fn(Range<usize>, &mut [f32], &mut Scratch) + Sync + Send,
    {
        let mut rest = out;
        let mut jobs = Vec::with_capacity(self.0.len());
        for (r, s) in self.0.iter().zip(scratch.iter_mut()) {
            let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * per);
            rest = tail;
            jobs.push((r.clone(), chunk, s));
        }
        crate::kernels::for_each_mut(&mut jobs, true, |_, (r, c, s)| f(r.clone(), c, s));
    }
}

/// Sums the first `len` of each shard's `pick` into `dst`, overwriting it.
pub fn reduce_f32(
    scratch: &[Scratch],
    shards: usize,
    len: usize,
    pick: fn(&Scratch) -> &[f32],
    dst: &mut [f32],
) {
    dst[..len].copy_from_slice(&pick(&scratch[0])[..len]);
    for s in &scratch[1..shards] {
        for (d, v) in dst[..len].iter_mut().zip(&pick(s)[..len]) {
            *d += v;
        }
    }
}

/// Sums each shard's weight gradient, kept as `k × out` (so its gemm packs the small `dy`, not
/// the columns), into `dst` as `out × k`.
fn reduce_transposed(scratch: &[Scratch], shards: usize, (k, out): (usize, usize), dst: &mut [f32]) {
    for (o, row) in dst[..out * k].chunks_exact_mut(k).enumerate() {
        for (j, d) in row.iter_mut().enumerate() {
            *d = scratch[..shards].iter().map(|s| s.dw[j * out + o]).sum();
        }
    }
}

/// Sums the first `len` per-channel sums of each shard.
pub fn reduce_sums(scratch: &[Scratch], shards: usize, len: usize) -> Vec<f64> {
    let mut out = scratch[0].sums[..len].to_vec();
    for s in &scratch[1..shards] {
        for (d, v) in out.iter_mut().zip(&s.sums[..len]) {
            *d += v;
        }
    }
    out
}

/// Where a layer's backward writes: its weight's gradient and its bias's (overwritten), and
/// its input's (added to; `None` for the image).
pub struct LayerGrads<'a> {
    pub dw: &'a mut [f32],
    pub db: Option<&'a mut [f32]>,
    pub dx: Option<&'a mut [f32]>,
    /// `dx` holds no gradient yet (arbitrary contents): overwritten, not added to.
    pub dx_unset: bool,
}

/// A conv's sizes and how many output rows one band of its column matrix holds (a band stays
/// within ~512 KiB, so gemm reads it from cache).
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub g: ConvGeometry,
    pub out_ch: usize,
    pub band: usize,
    /// Stride 1, not Winograd: the input's gradient is itself a stride-1 conv, of `dy` with the
    /// weights flipped and transposed and padding `k − 1 − pad`, so it runs as im2col + gemm like
    /// the forward pass (`[c] × [out_ch·k·k]` by band) instead of a scatter through col2im.
    pub dx_conv: Option<(ConvGeometry, usize)>,
    /// 3×3, stride 1, padding 1: forward and backward by Winograd's F(2×2, 3×3), 2.25× fewer
    /// multiply-adds than im2col; no column matrix, no flipped weights.
    pub winograd: bool,
}

/// Output rows per band: the column band within ~512 KiB, the bands of equal height.
fn band_rows(g: &ConvGeometry) -> usize {
    let most = ((128 << 10) / (g.rows() * g.ow).max(1)).clamp(1, g.oh.max(1));
    g.oh.max(1).div_ceil(g.oh.max(1).div_ceil(most))
}

impl ConvShape {
    pub fn new(g: ConvGeometry, out_ch: usize) -> Self {
        let pointwise = g.k == 1 && g.stride == 1 && g.pad == 0;
        let winograd = g.k == 3 && g.stride == 1 && g.pad == 1;
        // A Winograd conv takes its input gradient in the Winograd domain.
        let dx_conv = (g.stride == 1 && g.pad < g.k && !pointwise && !winograd)
            .then(|| ConvGeometry::new(out_ch, (g.oh, g.ow), g.k, 1, g.k - 1 - g.pad).ok())
            .flatten()
            .filter(|t| (t.oh, t.ow) == (g.h, g.w))
            .map(|t| (t, band_rows(&t)));
        ConvShape { g, out_ch, band: band_rows(&g), dx_conv, winograd }
    }

    /// 1×1, stride 1, no padding: the image is its own column matrix.
    fn pointwise(&self) -> bool {
        self.g.k == 1 && self.g.stride == 1 && self.g.pad == 0
    }

    pub fn cols_len(&self) -> usize {
        if self.pointwise() || self.winograd {
            return 0;
        }
        let dx = self.dx_conv.map_or(0, |(t, band)| t.rows() * band * t.ow);
        (self.g.rows() * self.band * self.g.ow).max(dx)
    }

    /// Floats of the flipped weights [`conv_backward`] keeps for `dx_conv`.
    pub fn flipped_len(&self) -> usize {
        self.dx_conv.map_or(0, |_| self.out_ch * self.g.rows())
    }

    fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        bands(self.g.oh, self.band)
    }
}

fn bands(rows: usize, band: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).step_by(band).map(move |y| (y, (y + band).min(rows)))
}

/// `w` (`[o][c][k][k]`) as the weights of its transposed conv: `[c][o][k][k]`, each kernel
/// turned by 180°.
fn flip_transposed(w: &[f32], (o, c, k): (usize, usize, usize), dst: &mut [f32]) {
    let kk = k * k;
    for oi in 0..o {
        for ci in 0..c {
            let src = &w[(oi * c + ci) * kk..][..kk];
            let out = &mut dst[(ci * o + oi) * kk..][..kk];
            for (d, v) in out.iter_mut().zip(src.iter().rev()) {
                *d = *v;
            }
        }
    }
}

/// The image's phases (stride > 1) or the image itself.
fn phased<'a>(x: &'a [f32], g: &ConvGeometry, buf: &'a mut Vec<f32>) -> &'a [f32] {
    if g.stride == 1 {
        return x;
    }
    phases_into(x, g.w, g.stride, buf);
    buf
}

/// `y = conv(x, w) + b`, image by image and band by band; `wino` holds `w` transformed where
/// [`ConvShape::winograd`].
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
    c: &ConvShape,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    wino: Option<&Winograd3x3>,
    y: &mut [f32],
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let g = &c.g;
    let (k, plane, inp) = (g.rows(), g.cols(), g.c * g.h * g.w);
    let wv = View::rows(w, c.out_ch, k, k);
    let wino = wino.filter(|_| c.winograd);
    shards.run(y, c.out_ch * plane, scratch, |images, out, s| {
        if let Some(wino) = wino {
            let xs = &x[images.start * inp..images.end * inp];
            let epi = Epilogue { bias: b, residual: None, relu: false };
            wino.forward_images(xs, images.len(), (g.h, g.w), out, &epi);
            return;
        }
        for (i, img) in images.enumerate() {
            let x = &x[img * inp..][..inp];
            let out = &mut out[i * c.out_ch * plane..][..c.out_ch * plane];
            if c.pointwise() {
                gemm_view(wv, View::rows(x, k, plane, plane), out, plane, false, false);
            } else {
                let Scratch { phases, cols, .. } = s;
                let ph = phased(x, g, phases);
                for (oy0, oy1) in c.bands() {
                    let n = (oy1 - oy0) * g.ow;
                    let cols = &mut cols[..k * n];
                    im2col(ph, g, (oy0, oy1), cols);
                    gemm_view(wv, View::rows(cols, k, n, n), &mut out[oy0 * g.ow..], plane, false, false);
                }
            }
            if let Some(b) = b {
                for (row, &bias) in out.chunks_exact_mut(plane).zip(b) {
                    row.iter_mut().for_each(|v| *v += bias);
                }
            }
        }
    });
}

/// The conv's backward: `dw` (and `db`) overwritten with the batch's gradients; `dx`, when
/// given, gets the input's gradient added (written where `dx_unset`). `flipped` holds
/// [`ConvShape::flipped_len`] floats; `wino` is where a [`ConvShape::winograd`] conv's weights
/// are transformed.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    c: &ConvShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    grads: LayerGrads,
    (flipped, wino): (&mut [f32], &mut Winograd3x3),
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let LayerGrads { dw, db, dx, dx_unset } = grads;
    let g = &c.g;
    let (k, plane, inp) = (g.rows(), g.cols(), g.c * g.h * g.w);
    let wt = View::rows(w, c.out_ch, k, k).t();
    let dx_conv = c.dx_conv.filter(|_| dx.is_some());
    if c.winograd {
        // Backward in the Winograd domain needs this conv's own transformed weights.
        wino.set_weights(w, c.out_ch, g.c);
    }
    if let Some((t, _)) = dx_conv {
        flip_transposed(w, (c.out_ch, g.c, g.k), &mut flipped[..c.out_ch * k]);
        debug_assert_eq!(t.rows(), k / g.c * c.out_ch);
    }
    let wino = &*wino;
    let wflip = View::rows(flipped, g.c, c.out_ch * g.k * g.k, c.out_ch * g.k * g.k);
    let with_bias = db.is_some();
    let (mut none, per) = (vec![], if dx.is_some() { inp } else { 0 });
    let dx = dx.unwrap_or(&mut none);
    let winograd = c.winograd.then_some(16 * c.out_ch * g.c);
    shards.run(dx, per, scratch, |images, dx_chunk, s| {
        let Scratch { phases, cols, dcols, dw, db, .. } = s;
        db[..c.out_ch].fill(0.0);
        if with_bias {
            for dy in dy[images.start * c.out_ch * plane..images.end * c.out_ch * plane]
                .chunks_exact(plane * c.out_ch)
            {
                for (d, row) in db.iter_mut().zip(dy.chunks_exact(plane)) {
                    *d += sum(row);
                }
            }
        }
        if let Some(du) = winograd {
            // dW in the Winograd domain (the shard's sum of ∂L/∂U, turned into dW after the
            // shards are summed) and dx, both from one transform of dy.
            let xs = &x[images.start * inp..images.end * inp];
            let dys = &dy[images.start * c.out_ch * plane..images.end * c.out_ch * plane];
            dw[..du].fill(0.0);
            let dx = (per > 0).then_some((dx_chunk, !dx_unset));
            wino.backward_images(xs, dys, images.len(), (g.h, g.w), dw, dx);
            return;
        }
        if dx_unset {
            dx_chunk.fill(0.0);
        }
        dw[..c.out_ch * k].fill(0.0);
        for (i, img) in images.enumerate() {
            let x = &x[img * inp..][..inp];
            let dy = &dy[img * c.out_ch * plane..][..c.out_ch * plane];
            let mut dx = (per > 0).then(|| &mut dx_chunk[i * inp..][..inp]);
            if c.pointwise() {
                // dWᵀ += x · dyᵀ (kept transposed, as in the bands below); dx += Wᵀ · dy.
                let dyv = View::rows(dy, c.out_ch, plane, plane);
                gemm_view(View::rows(x, k, plane, plane), dyv.t(), dw, c.out_ch, true, false);
                if let Some(dx) = dx {
                    gemm_view(wt, dyv, dx, plane, true, false);
                }
                continue;
            }
            let ph = phased(x, g, phases);
            // With `dx_conv`, the bands here compute dW alone; dx follows as a conv of dy.
            let scatter = dx_conv.is_none();
            for (oy0, oy1) in c.bands() {
                let n = (oy1 - oy0) * g.ow;
                let cols = &mut cols[..k * n];
                im2col(ph, g, (oy0, oy1), cols);
                let dyv = View { data: &dy[oy0 * g.ow..], rows: c.out_ch, cols: n, rs: plane, cs: 1 };
                gemm_view(View::rows(cols, k, n, n), dyv.t(), dw, c.out_ch, true, false);
                if let Some(dx) = dx.as_deref_mut().filter(|_| scatter) {
                    let dcols = &mut dcols[..k * n];
                    gemm_view(wt, dyv, dcols, n, false, false);
                    col2im_band(dcols, g, (oy0, oy1), dx);
                }
            }
            if let (Some((t, band)), Some(dx)) = (dx_conv, dx) {
                let (tk, tplane) = (t.rows(), t.cols());
                for (y0, y1) in bands(t.oh, band) {
                    let n = (y1 - y0) * t.ow;
                    let cols = &mut cols[..tk * n];
                    im2col(dy, &t, (y0, y1), cols);
                    gemm_view(wflip, View::rows(cols, tk, n, n), &mut dx[y0 * t.ow..], tplane, true, false);
                }
            }
        }
    });
    let t = shards.0.len();
    match winograd {
        Some(du) => {
            let (first, rest) = scratch.split_first_mut().expect("one shard at least");
            for s in &rest[..t - 1] {
                first.dw[..du].iter_mut().zip(&s.dw[..du]).for_each(|(d, v)| *d += v);
            }
            weights_from_transformed(&first.dw[..du], c.out_ch, g.c, dw);
        }
        None => reduce_transposed(scratch, t, (k, c.out_ch), dw),
    }
    if let Some(db) = db {
        reduce_f32(scratch, t, c.out_ch, |s| &s.db, db);
    }
}

/// Lanes of the sums below: independent accumulators, so the compiler can vectorise a sum
/// (one f32 accumulator would be a chain of dependent adds).
const LANES: usize = 16;

/// `(Σ f(a[i], b[i], c[i]), Σ g(a[i], b[i], c[i]))` in one pass, [`LANES`] accumulators each.
#[inline(always)]
fn lane_sum3_pair(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> f32,
    g: impl Fn(f32, f32, f32) -> f32,
) -> (f32, f32) {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let (mut p, mut q) = ([0f32; LANES], [0f32; LANES]);
    let full = n - n % LANES;
    for ((a, b), c) in a[..full].chunks_exact(LANES).zip(b.chunks_exact(LANES)).zip(c.chunks_exact(LANES)) {
        for l in 0..LANES {
            p[l] += f(a[l], b[l], c[l]);
            q[l] += g(a[l], b[l], c[l]);
        }
    }
    for (l, i) in (full..n).enumerate() {
        p[l] += f(a[i], b[i], c[i]);
        q[l] += g(a[i], b[i], c[i]);
    }
    (p.iter().sum(), q.iter().sum())
}

/// `Σ f(a[i], b[i], c[i])` in [`LANES`] accumulators (`b`, `c` at least as long as `a`).
#[inline(always)]
fn lane_sum3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    lane_sum3_pair(a, b, c, f, |_, _, _| 0.0).0
}

/// The sum of a slice, vectorised.
pub fn sum(v: &[f32]) -> f32 {
    lane_sum3(v, v, v, |a, _, _| a)
}

/// Per channel: the sum and the sum of squared deviations of one plane (f32 lanes about the
/// plane's mean, which keeps them accurate), combined into the running `(count, mean, m2)`
/// (Chan et al.) in f64.
fn welford(plane: &[f32], acc: &mut [f64]) {
    let n = plane.len() as f64;
    let mf = sum(plane) / plane.len() as f32;
    let m = mf as f64;
    let m2 = lane_sum3(plane, plane, plane, |v, _, _| (v - mf) * (v - mf)) as f64;
    let (na, ma, m2a) = (acc[0], acc[1], acc[2]);
    let total = na + n;
    let delta = m - ma;
    acc[0] = total;
    acc[1] = ma + delta * n / total;
    acc[2] = m2a + m2 + delta * delta * na * n / total;
}

/// What a BatchNorm's backward needs from its forward, per channel.
#[derive(Clone, Debug, Default)]
pub struct BnSaved {
    pub mean: Vec<f32>,
    /// Biased batch variance (what normalises).
    pub var: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// `γ/σ` and `β − μγ/σ`: the forward's affine map, kept so that backward recomputes the
    /// ReLU's mask bit for bit from `x` instead of reading the output.
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// BatchNorm with batch statistics, `y = relu?(γ·(x − μ)/σ + β)`.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward(
    (channels, plane): (usize, usize),
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
    y: &mut [f32],
    saved: &mut BnSaved,
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let per = channels * plane;
    shards.run(&mut [], 0, scratch, |images, _, s| {
        let acc = &mut s.sums[..3 * channels];
        acc.fill(0.0);
        for img in images {
            for (c, p) in x[img * per..][..per].chunks_exact(plane).enumerate() {
                welford(p, &mut acc[3 * c..3 * c + 3]);
            }
        }
    });
    // Chan's combination of the shards, in shard order.
    let t = shards.0.len();
    saved.mean.resize(channels, 0.0);
    saved.var.resize(channels, 0.0);
    saved.inv_std.resize(channels, 0.0);
    for c in 0..channels {
        let mut acc = [0f64; 3];
        for s in &scratch[..t] {
            let (n, m, m2) = (s.sums[3 * c], s.sums[3 * c + 1], s.sums[3 * c + 2]);
            if n == 0.0 {
                continue;
            }
            let total = acc[0] + n;
            let delta = m - acc[1];
            acc[2] += m2 + delta * delta * acc[0] * n / total;
            acc[1] += delta * n / total;
            acc[0] = total;
        }
        let var = acc[2] / acc[0].max(1.0);
        saved.mean[c] = acc[1] as f32;
        saved.var[c] = var as f32;
        saved.inv_std[c] = (1.0 / (var + eps).sqrt()) as f32;
    }
    saved.scale = (0..channels).map(|c| gamma[c] * saved.inv_std[c]).collect();
    saved.shift = (0..channels).map(|c| beta[c] - saved.mean[c] * saved.scale[c]).collect();
    let (scale, shift) = (&saved.scale, &saved.shift);
    shards.run(y, per, scratch, |images, out, _| {
        for (i, img) in images.enumerate() {
            let src = &x[img * per..][..per];
            let dst = &mut out[i * per..][..per];
            for (c, (o, p)) in dst.chunks_exact_mut(plane).zip(src.chunks_exact(plane)).enumerate() {
                let (a, b) = (scale[c], shift[c]);
                match relu {
                    true => o.iter_mut().zip(p).for_each(|(o, &v)| *o = (v * a + b).max(0.0)),
                    false => o.iter_mut().zip(p).for_each(|(o, &v)| *o = v * a + b),
                }
            }
        }
    });
}

/// BatchNorm's backward (through its ReLU when fused): `dgamma`, `dbeta` overwritten; the input
/// gradient added to `dx`, or, without one (no other consumer has written it yet), written over
/// `dy` in its buffer. The ReLU's mask comes from `x` through the forward's own affine map, so
/// neither the output nor a fresh buffer is read: two passes over `dy` and `x`, one write.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    (channels, plane): (usize, usize),
    x: &[f32],
    dy: &mut [f32],
    gamma: &[f32],
    relu: bool,
    saved: &BnSaved,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dx: Option<&mut [f32]>,
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let per = channels * plane;
    // `y = max(x·a + b, 0)` was 0 exactly where `x·a + b > 0` fails (NaN included).
    let grad = |g: f32, x: f32, (a, b): (f32, f32)| {
        let live = x * a + b > 0.0;
        if relu && !live {
            0.0
        } else {
            g
        }
    };
    let affine = |c: usize| (saved.scale[c], saved.shift[c]);
    let dy_in: &[f32] = dy;
    shards.run(&mut [], 0, scratch, |images, _, s| {
        let acc = &mut s.sums[..2 * channels];
        acc.fill(0.0);
        for img in images {
            let at = img * per;
            for c in 0..channels {
                let r = at + c * plane..at + (c + 1) * plane;
                let (m, is, ab) = (saved.mean[c], saved.inv_std[c], affine(c));
                let (dy, x) = (&dy_in[r.clone()], &x[r]);
                let (sg, sgx) =
                    lane_sum3_pair(dy, x, x, |g, x, _| grad(g, x, ab), |g, x, _| grad(g, x, ab) * (x - m));
                acc[2 * c] += sg as f64;
                acc[2 * c + 1] += (sgx * is) as f64;
            }
        }
    });
    let sums = reduce_sums(scratch, shards.0.len(), 2 * channels);
    let count = (x.len() / channels) as f64;
    for c in 0..channels {
        dbeta[c] = sums[2 * c] as f32;
        dgamma[c] = sums[2 * c + 1] as f32;
    }
    let mg: Vec<f32> = (0..channels).map(|c| (sums[2 * c] / count) as f32).collect();
    let mgx: Vec<f32> = (0..channels).map(|c| (sums[2 * c + 1] / count) as f32).collect();
    // Per channel: the input gradient of one element from its `dy` and `x`.
    let dx_of = |c: usize| {
        let (m, is, k, ab) = (saved.mean[c], saved.inv_std[c], gamma[c] * saved.inv_std[c], affine(c));
        let (mg, mgx) = (mg[c], mgx[c]);
        move |g: f32, x: f32| k * (grad(g, x, ab) - mg - (x - m) * is * mgx)
    };
    match dx {
        None => shards.run(dy, per, scratch, |images, out, _| {
            let planes = out.chunks_exact_mut(plane).zip(x[images.start * per..].chunks_exact(plane));
            for (i, (d, x)) in planes.enumerate() {
                let f = dx_of(i % channels);
                d.iter_mut().zip(x).for_each(|(d, &x)| *d = f(*d, x));
            }
        }),
        Some(dx) => shards.run(dx, per, scratch, |images, out, _| {
            let (dy, x) = (&dy_in[images.start * per..], &x[images.start * per..]);
            let planes = out.chunks_exact_mut(plane).zip(dy.chunks_exact(plane).zip(x.chunks_exact(plane)));
            for (i, (d, (g, x))) in planes.enumerate() {
                let f = dx_of(i % channels);
                d.iter_mut().zip(g).zip(x).for_each(|((d, &g), &x)| *d += f(g, x));
            }
        }),
    }
}

/// Elementwise over the batch in parallel: `f(index range, out chunk)`.
pub fn elementwise(
    out: &mut [f32],
    shards: &Shards,
    per: usize,
    scratch: &mut [Scratch],
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    shards.run(out, per, scratch, |images, chunk, _| f(images.start * per, chunk));
}

/// `d += times · g`, where `mask` (a ReLU's output) is positive when given: a ReLU's (or a
/// residual add's) backward. A select, not a branch, so it vectorises.
pub fn add_masked(d: &mut [f32], g: &[f32], mask: Option<&[f32]>, times: f32) {
    let g = &g[..d.len()];
    match mask {
        Some(y) => {
            for ((d, &g), &y) in d.iter_mut().zip(g).zip(&y[..g.len()]) {
                *d += if y > 0.0 { times * g } else { 0.0 };
            }
        }
        None => d.iter_mut().zip(g).for_each(|(d, &g)| *d += times * g),
    }
}

/// Option A's shortcut, `(c, h, w)` in, `(oc, stride)`: every `stride`-th pixel, zero channels
/// padded around. Forward `dst = shortcut(src)`; with `backward`, `dst += shortcutᵀ(src)`.
pub fn shortcut_a(
    (c, h, w): (usize, usize, usize),
    (oc, stride): (usize, usize),
    backward: bool,
    src: &[f32],
    dst: &mut [f32],
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let (oh, ow, lo) = (h.div_ceil(stride), w.div_ceil(stride), (oc - c) / 2);
    let (ip, op) = (h * w, oh * ow);
    let per = if backward { c * ip } else { oc * op };
    shards.run(dst, per, scratch, |images, out, _| {
        if !backward {
            out.fill(0.0);
        }
        for (i, img) in images.enumerate() {
            for ci in 0..c {
                let (xi, yi) = ((img * c + ci) * ip, (img * oc + ci + lo) * op);
                let (xl, yl) = ((i * c + ci) * ip, (i * oc + ci + lo) * op);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (a, b) = (oy * stride * w + ox * stride, oy * ow + ox);
                        match backward {
                            false => out[yl + b] = src[xi + a],
                            true => out[xl + a] += src[yi + b],
                        }
                    }
                }
            }
        }
    });
}

/// The input rows/columns a pooling window covers, clipped to the image.
fn window(o: usize, p: &Pool, n: usize) -> Range<usize> {
    let start = (o * p.stride) as isize - p.padding as isize;
    let end = (start + p.kernel as isize).min(n as isize);
    start.max(0) as usize..end.max(0) as usize
}

/// A pooling layer's sizes: `planes` channels an image, `h×w` in, `oh×ow` out.
#[derive(Clone, Copy)]
pub struct PoolShape {
    pub planes: usize,
    pub input: (usize, usize),
    pub output: (usize, usize),
    pub pool: Pool,
}

impl PoolShape {
    /// `f(plane, i, o, rows, cols)` for every window of the shard's planes: `plane` counts
    /// over the batch, `i` within the shard, `o` is the window's index in its output plane.
    fn each(&self, images: Range<usize>, mut f: impl FnMut(usize, usize, usize, Range<usize>, Range<usize>)) {
        let ((h, w), (oh, ow)) = (self.input, self.output);
        for (i, plane) in (images.start * self.planes..images.end * self.planes).enumerate() {
            for oy in 0..oh {
                let rows = window(oy, &self.pool, h);
                for ox in 0..ow {
                    f(plane, i, oy * ow + ox, rows.clone(), window(ox, &self.pool, w));
                }
            }
        }
    }

    fn in_plane(&self) -> usize {
        self.input.0 * self.input.1
    }

    fn out_plane(&self) -> usize {
        self.output.0 * self.output.1
    }
}

/// Max pooling (PyTorch's padding and ceil mode: padding never wins).
pub fn max_pool_forward(ps: &PoolShape, x: &[f32], y: &mut [f32], shards: &Shards, scratch: &mut [Scratch]) {
    let (ip, op, w) = (ps.in_plane(), ps.out_plane(), ps.input.1);
    shards.run(y, ps.planes * op, scratch, |images, out, _| {
        ps.each(images, |plane, i, o, rows, cols| {
            let src = &x[plane * ip..][..ip];
            let m = rows
                .flat_map(|iy| &src[iy * w + cols.start..iy * w + cols.end])
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            out[i * op + o] = m;
        })
    });
}

/// Max pooling's backward: each window's gradient goes to its first maximum.
pub fn max_pool_backward(
    ps: &PoolShape,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let (ip, op, w) = (ps.in_plane(), ps.out_plane(), ps.input.1);
    shards.run(dx, ps.planes * ip, scratch, |images, out, _| {
        ps.each(images, |plane, i, o, rows, cols| {
            let src = &x[plane * ip..][..ip];
            let at = plane * op + o;
            let first =
                rows.flat_map(|iy| cols.clone().map(move |ix| iy * w + ix)).find(|&j| src[j] == y[at]);
            if let Some(j) = first {
                out[i * ip + j] += dy[at];
            }
        })
    });
}

/// Average pooling without padding (what the zoo's LeNet uses): the window's mean.
pub fn avg_pool_forward(ps: &PoolShape, x: &[f32], y: &mut [f32], shards: &Shards, scratch: &mut [Scratch]) {
    let (ip, op, w) = (ps.in_plane(), ps.out_plane(), ps.input.1);
    let area = (ps.pool.kernel * ps.pool.kernel) as f32;
    shards.run(y, ps.planes * op, scratch, |images, out, _| {
        ps.each(images, |plane, i, o, rows, cols| {
            let src = &x[plane * ip..][..ip];
            out[i * op + o] =
                rows.map(|iy| src[iy * w + cols.start..iy * w + cols.end].iter().sum::<f32>()).sum::<f32>()
                    / area;
        })
    });
}

pub fn avg_pool_backward(
    ps: &PoolShape,
    dy: &[f32],
    dx: &mut [f32],
    shards: &Shards,
    scratch: &mut [Scratch],
) {
    let (ip, op, w) = (ps.in_plane(), ps.out_plane(), ps.input.1);
    let area = (ps.pool.kernel * ps.pool.kernel) as f32;
    shards.run(dx, ps.planes * ip, scratch, |images, out, _| {
        ps.each(images, |plane, i, o, rows, cols| {
            let g = dy[plane * op + o] / area;
            for iy in rows {
                out[i * ip + iy * w + cols.start..i * ip + iy * w + cols.end]
                    .iter_mut()
                    .for_each(|d| *d += g);
            }
        })
    });
}

/// `y[n × out] = x[n × in] · Wᵀ + b`.
pub fn linear_forward(
    (n, inf, outf): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    let wt = View::rows(w, outf, inf, inf).t();
    gemm_view(View::rows(x, n, inf, inf), wt, y, outf, false, true);
    if let Some(b) = b {
        for row in y.chunks_exact_mut(outf) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}

/// Linear's backward: `dw = dyᵀ·x`, `db = Σ dy` (overwritten), `dx += dy·W`.
pub fn linear_backward(
    (n, inf, outf): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    grads: LayerGrads,
) {
    let LayerGrads { dw, db, dx, dx_unset } = grads;
    let dyv = View::rows(dy, n, outf, outf);
    gemm_view(dyv.t(), View::rows(x, n, inf, inf), dw, inf, false, true);
    if let Some(db) = db {
        db.fill(0.0);
        for row in dy.chunks_exact(outf) {
            db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
    }
    if let Some(dx) = dx {
        gemm_view(dyv, View::rows(w, outf, inf, inf), dx, inf, !dx_unset, true);
    }
}

/// Mean cross-entropy of `logits` (`n × k`) against `labels`: the loss, the number of rows
/// whose first maximum is the label, and `dlogits = (softmax − onehot)/n`.
pub fn cross_entropy(logits: &[f32], labels: &[u32], k: usize, dlogits: &mut [f32]) -> (f32, usize) {
    let n = labels.len();
    let (mut loss, mut correct) = (0f64, 0);
    for ((row, d), &label) in logits.chunks_exact(k).zip(dlogits.chunks_exact_mut(k)).zip(labels) {
        let (mut best, mut arg) = (f32::NEG_INFINITY, 0);
        for (j, &v) in row.iter().enumerate() {
            if v > best {
                (best, arg) = (v, j);
            }
        }
        correct += (arg == label as usize) as usize;
        let sum: f64 = row.iter().map(|&v| ((v - best) as f64).exp()).sum();
        loss += sum.ln() + best as f64 - row[label as usize] as f64;
        for (j, (d, &v)) in d.iter_mut().zip(row).enumerate() {
            let p = ((v - best) as f64).exp() / sum;
            *d = ((p - (j == label as usize) as u32 as f64) / n as f64) as f32;
        }
    }
    ((loss / n.max(1) as f64) as f32, correct)
}
