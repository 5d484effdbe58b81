//! 2-D convolution for inference: a [`PreparedConv`] chooses its kernel once ([`ConvPath`]) —
//! Winograd for 3×3 stride-1 padding-1 ([`super::winograd`]), one gemm for 1×1, a direct kernel
//! for strided convs and stems with few input channels ([`super::direct`]), im2col + gemm for
//! the rest ([`super::im2col`]) — lays its weights out for it, and applies bias, residual add
//! and ReLU while the output is in cache.
//!
//! Candle's CPU conv gathers the im2col matrix one element at a time through strided index
//! arithmetic; on ResNet-sized layers that gather, not the gemm, took most of the conv's time.
//! Here the column matrix is built a band of output rows at a time (so it is still in cache
//! when gemm reads it), each row segment one slice copy with the padding left as zeros.

use candle_core::{DType, Result, Tensor};

use super::direct::{split_pairs, DirectConv};
use super::gemm::{matmul, matmul_one_thread, Mat};
use super::im2col::{im2col, ConvGeometry};
use super::winograd::{Tile, Winograd3x3};
use super::{
    bands_of, for_chunks, for_each_balanced, for_each_mut, free_threads, give_scratch, take_scratch, team,
    with_slice, Epilogue, Threads,
};

/// The column matrix of a band of output rows is kept to about this many floats (256 KiB), so
/// that it is still in cache when gemm reads it.
const BAND_FLOATS: usize = 64 * 1024;

/// With several threads and weights too big to share, the column matrix of a whole image up to
/// this many floats (4 MiB) is built at once, for one product that gemm splits among threads.
const WHOLE_IMAGE_COLS_FLOATS: usize = 1 << 20;

/// Output channels of a 1×1 conv's blocks are a multiple of this: of every gemm micro-kernel's
/// rows (12 in wasm, 16 with AVX2, 48 of AVX-512's 64), so no block ends in a narrow kernel.
const POINTWISE_ROWS: usize = 48;
/// Blocks of a 1×1 conv's output channels per thread, where there are channels enough.
const POINTWISE_BLOCKS_PER_THREAD: usize = 4;

/// Output channels per block of a 1×1 conv on `threads` threads: several blocks a thread, each
/// claimed on its own, so that a thread that runs slower takes fewer; one block a thread where
/// the channels are too few for that. In profiles of ResNet-50 on 2 threads one thread's even
/// half took 20–25 % longer than the other's (natively the helper's, whose input the leader had
/// just written; in the browser the leader's), and the other waited for it.
fn pointwise_block(out_ch: usize, threads: usize) -> usize {
    let fine = out_ch.div_ceil(threads * POINTWISE_BLOCKS_PER_THREAD).next_multiple_of(POINTWISE_ROWS);
    match out_ch.div_ceil(fine) >= 2 * threads {
        true => fine,
        false => out_ch.div_ceil(threads),
    }
}

/// Input rows per parallel piece of [`with_phases`].
const PHASE_ROWS: usize = 16;

/// `f` of one image's input split into its stride phases ([`super::im2col::phases`]), built in a
/// reused scratch buffer (a fresh one costs page faults on every conv), on all threads when
/// `parallel`; stride 1 passes `x` itself.
fn with_phases<R>(x: &[f32], g: &ConvGeometry, parallel: bool, f: impl FnOnce(&[f32]) -> R) -> R {
    let (s, w) = (g.stride, g.w);
    if s == 1 || w == 0 {
        return f(x);
    }
    let pw = w.div_ceil(s);
    let mut ph = take_scratch(x.len() / w * s * pw);
    for_chunks(&mut ph, PHASE_ROWS * s * pw, parallel, |i, dst| {
        for (src, row) in x[i * PHASE_ROWS * w..].chunks_exact(w).zip(dst.chunks_exact_mut(s * pw)) {
            if w % s != 0 {
                row.fill(0.0); // the short phases' last element
            }
            if s == 2 {
                split_pairs(src, 0, row.split_at_mut(pw));
                continue;
            }
            for (j, &v) in src.iter().enumerate() {
                row[(j % s) * pw + j / s] = v;
            }
        }
    });
    let r = f(&ph);
    give_scratch(ph);
    r
}

/// Which kernel a conv runs on: decided here only, from its kernel size, stride and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// 3×3, stride 1, padding 1: Winograd, F(2×2, 3×3) or F(4×4, 3×3).
    Winograd,
    /// 1×1, stride 1, no padding: one gemm on the NCHW layout.
    Pointwise,
    /// Larger than 1×1 and strided with at most [`DIRECT_MAX_TAPS`] inputs per output
    /// (ResNet-20's stride-2 convs), or a stem of at most [`DIRECT_STEM_CHANNELS`] input
    /// channels (the 7×7 stem, a CIFAR net's 3×3 one): the direct kernel.
    Direct,
    /// Anything else: im2col + gemm.
    Im2col,
}

/// Inputs per output (`in_ch·k·k`) up to which a strided conv runs on the direct kernel: past
/// it, gemm's blocking of the long inner dimension wins (measured on an AVX2 core: ResNet-20's
/// 144 and 288 take 0.78× of im2col + gemm's time, ResNet-18's 576 1.4×).
pub const DIRECT_MAX_TAPS: usize = 512;
/// Input channels up to which a stride-1 conv runs on the direct kernel (an RGB stem): with so
/// few channels, Winograd's transforms cost more than they save.
pub const DIRECT_STEM_CHANNELS: usize = 4;

impl ConvPath {
    pub fn of(in_ch: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        let taps = in_ch * kernel * kernel;
        match (kernel, stride, padding) {
            (1, 1, 0) => ConvPath::Pointwise,
            // A strided 1×1 conv is a subsample and a product: gemm's.
            (1, _, _) => ConvPath::Im2col,
            _ if in_ch <= DIRECT_STEM_CHANNELS => ConvPath::Direct,
            (3, 1, 1) => ConvPath::Winograd,
            (_, s, _) if s > 1 && taps <= DIRECT_MAX_TAPS => ConvPath::Direct,
            _ => ConvPath::Im2col,
        }
    }
}

/// A kernel for one conv, with Winograd's tile: what the rule picks ([`ConvKernel::rule`]), or
/// what a benchmark asks for to check the rule ([`crate::profile::kernel_choices`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    Winograd(Tile),
    Pointwise,
    Direct,
    Im2col,
}

impl ConvKernel {
    /// The kernel a conv runs on: [`ConvPath::of`], with [`Tile::for_plane`] for Winograd
    /// (F(2×2) where the plane is unknown).
    pub fn rule(
        (out_ch, in_ch): (usize, usize),
        (kernel, stride, padding): (usize, usize, usize),
        plane: Option<(usize, usize)>,
    ) -> Self {
        ConvKernel::of_path(ConvPath::of(in_ch, kernel, stride, padding), (out_ch, in_ch), plane)
    }

    fn of_path(path: ConvPath, (out_ch, in_ch): (usize, usize), plane: Option<(usize, usize)>) -> Self {
        match path {
            ConvPath::Winograd => {
                ConvKernel::Winograd(plane.map_or(Tile::F2, |p| Tile::for_plane(out_ch, in_ch, p)))
            }
            ConvPath::Pointwise => ConvKernel::Pointwise,
            ConvPath::Direct => ConvKernel::Direct,
            ConvPath::Im2col => ConvKernel::Im2col,
        }
    }

    /// Every kernel that can run a conv of this kernel size, stride and padding.
    pub fn candidates((kernel, stride, padding): (usize, usize, usize)) -> Vec<Self> {
        let mut all = vec![];
        if (kernel, stride, padding) == (3, 1, 1) {
            all.extend([ConvKernel::Winograd(Tile::F2), ConvKernel::Winograd(Tile::F4)]);
        }
        if (kernel, stride, padding) == (1, 1, 0) {
            all.push(ConvKernel::Pointwise);
        }
        all.extend([ConvKernel::Direct, ConvKernel::Im2col]);
        all
    }

    fn path(self) -> ConvPath {
        match self {
            ConvKernel::Winograd(_) => ConvPath::Winograd,
            ConvKernel::Pointwise => ConvPath::Pointwise,
            ConvKernel::Direct => ConvPath::Direct,
            ConvKernel::Im2col => ConvPath::Im2col,
        }
    }

    /// As the benchmark's results name it.
    pub fn name(self) -> &'static str {
        match self {
            ConvKernel::Winograd(Tile::F2) => "winograd-f2",
            ConvKernel::Winograd(Tile::F4) => "winograd-f4",
            ConvKernel::Pointwise => "1x1-gemm",
            ConvKernel::Direct => "direct",
            ConvKernel::Im2col => "im2col",
        }
    }
}

/// A prepared conv's kernel, with the weights in the layout it reads.
#[derive(Clone, Debug)]
enum Kernel {
    /// Transformed weights `U = G g Gᵀ`.
    Winograd(Winograd3x3),
    /// `[out_ch, in_ch]`.
    Pointwise(Vec<f32>),
    Direct(DirectConv),
    /// `[out_ch, in_ch·k·k]`.
    Im2col(Vec<f32>),
}

/// A convolution ready to run: its kernel chosen once ([`ConvPath`]) and its weights laid out
/// for it, bias from a folded BatchNorm. Square kernels, no dilation or groups.
#[derive(Clone, Debug)]
pub struct PreparedConv {
    out_ch: usize,
    in_ch: usize,
    k: usize,
    stride: usize,
    padding: usize,
    kernel: Kernel,
    bias: Option<Vec<f32>>,
}

impl PreparedConv {
    /// `weight`: `[out_ch, in_ch, k, k]`; `bias`: `[out_ch]`. A Winograd conv takes F(2×2, 3×3).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, padding: usize, stride: usize) -> Result<Self> {
        Self::for_plane(weight, bias, padding, stride, None)
    }

    /// [`Self::new`] for a conv that will see `plane` (h, w) inputs: a Winograd conv takes the
    /// tile that suits that size ([`Tile::for_plane`]). Other sizes still run, just as exactly.
    pub fn for_plane(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        stride: usize,
        plane: Option<(usize, usize)>,
    ) -> Result<Self> {
        let (out_ch, in_ch, k, _) = weight.dims4()?;
        Self::with_kernel(
            weight,
            bias,
            padding,
            stride,
            ConvKernel::rule((out_ch, in_ch), (k, stride, padding), plane),
        )
    }

    /// [`Self::for_plane`] on a kernel chosen by the caller (the tests run every kernel that
    /// can take a conv): Winograd takes 3×3 stride-1 padding-1 convs only, Pointwise 1×1
    /// stride-1 unpadded ones; Direct and Im2col take any.
    pub fn with_path(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        stride: usize,
        plane: Option<(usize, usize)>,
        path: ConvPath,
    ) -> Result<Self> {
        let (out_ch, in_ch, _, _) = weight.dims4()?;
        Self::with_kernel(weight, bias, padding, stride, ConvKernel::of_path(path, (out_ch, in_ch), plane))
    }

    /// [`Self::with_path`] with Winograd's tile chosen by the caller too.
    pub fn with_kernel(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        stride: usize,
        choice: ConvKernel,
    ) -> Result<Self> {
        let path = choice.path();
        let (out_ch, in_ch, k, k2) = weight.dims4()?;
        if k != k2 || k == 0 {
            candle_core::bail!("fast conv: square non-empty kernels only, got {k}×{k2}");
        }
        let weight = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()).transpose()?;
        if bias.as_ref().is_some_and(|b| b.len() != out_ch) {
            candle_core::bail!(
                "fast conv: bias of {} values for {out_ch} channels",
                bias.map_or(0, |b| b.len())
            );
        }
        let fits = match path {
            ConvPath::Winograd => (k, stride, padding) == (3, 1, 1),
            ConvPath::Pointwise => (k, stride, padding) == (1, 1, 0),
            ConvPath::Direct | ConvPath::Im2col => true,
        };
        if !fits {
            candle_core::bail!("fast conv: the {path:?} kernel cannot run a {k}×{k} conv of stride {stride}, padding {padding}");
        }
        let kernel = match choice {
            ConvKernel::Winograd(tile) => {
                Kernel::Winograd(Winograd3x3::with_tile(&weight, out_ch, in_ch, tile))
            }
            ConvKernel::Pointwise => Kernel::Pointwise(weight),
            ConvKernel::Direct => Kernel::Direct(DirectConv::new(&weight, out_ch, in_ch, k)),
            ConvKernel::Im2col => Kernel::Im2col(weight),
        };
        Ok(PreparedConv { out_ch, in_ch, k, stride, padding, kernel, bias })
    }

    /// The kernel this conv runs on.
    pub fn kernel(&self) -> ConvKernel {
        match &self.kernel {
            Kernel::Winograd(w) => ConvKernel::Winograd(w.tile()),
            Kernel::Pointwise(_) => ConvKernel::Pointwise,
            Kernel::Direct(_) => ConvKernel::Direct,
            Kernel::Im2col(_) => ConvKernel::Im2col,
        }
    }

    /// `relu?(conv(x) + bias + residual)`; `x`: `[n, in_ch, h, w]`, `residual` shaped like the
    /// output. Both must be plain CPU f32 tensors ([`super::is_plain`]).
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.in_ch {
            candle_core::bail!("fast conv: input has {c} channels, the weights {}", self.in_ch);
        }
        let g = ConvGeometry::new(c, (h, w), self.k, self.stride, self.padding)
            .map_err(|e| candle_core::Error::Msg(format!("fast conv: {e}")))?;
        let (oh, ow) = (g.oh, g.ow);
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
        if in_len == 0 && out_len > 0 {
            // An empty image, all padding: every sum is zero, then the epilogue.
            let res = residual.map(|r| r.flatten_all()?.to_vec1::<f32>()).transpose()?;
            for (img, y) in out.chunks_exact_mut(out_len).enumerate() {
                let residual = res.as_deref().map(|r| &r[img * out_len..][..out_len]);
                Epilogue { bias: self.bias.as_deref(), residual, relu }.apply(y, oh * ow);
            }
        }
        if in_len == 0 || out_len == 0 {
            return Tensor::from_vec(out, (n, self.out_ch, oh, ow), x.device());
        }
        let run = |xs: &[f32], res: Option<&[f32]>, out: &mut [f32]| {
            if let (Kernel::Winograd(wino), true) = (&self.kernel, n > 1) {
                // A batch: a contiguous run of images per thread, several small images to a
                // block (wider products than one 8×8 image's 16 tiles).
                let runs = n.div_ceil(super::free_threads().clamp(1, n));
                let mut parts: Vec<(&mut [f32], &[f32])> =
                    out.chunks_mut(runs * out_len).zip(xs.chunks(runs * in_len)).collect();
                for_each_mut(&mut parts, true, |k, (y, x)| {
                    let images = x.len() / in_len;
                    let epi = Epilogue {
                        bias: self.bias.as_deref(),
                        residual: res.map(|r| &r[k * runs * out_len..][..images * out_len]),
                        relu,
                    };
                    wino.forward_images(x, images, (h, w), y, &epi);
                });
                return;
            }
            let one = |img: usize, x: &[f32], y: &mut [f32]| {
                let epi = Epilogue {
                    bias: self.bias.as_deref(),
                    residual: res.map(|r| &r[img * out_len..][..out_len]),
                    relu,
                };
                self.image(x, &g, y, &epi);
            };
            // The images of a batch on all the threads there are (evaluation, training's
            // validation): natively Candle's, in a threaded browser build the pool's.
            let mut images: Vec<(&mut [f32], &[f32])> =
                out.chunks_exact_mut(out_len).zip(xs.chunks_exact(in_len)).collect();
            for_each_mut(&mut images, n > 1 && super::free_threads() > 1, |img, (y, x)| one(img, x, y));
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

    /// One image: `x` `[in_ch, h, w]` → `out` `[out_ch, oh, ow]`, epilogue applied.
    fn image(&self, x: &[f32], g: &ConvGeometry, out: &mut [f32], epi: &Epilogue) {
        let plane = g.oh * g.ow;
        match &self.kernel {
            Kernel::Winograd(wino) => return wino.forward(x, g.h, g.w, out, epi),
            Kernel::Direct(direct) => {
                let work = self.out_ch * g.rows() * plane;
                let threads = Threads::for_conv(work, self.out_ch * g.rows(), free_threads());
                return direct.forward(x, g, out, epi, threads);
            }
            Kernel::Pointwise(weight) => {
                // A 1×1 conv is already a matmul on the NCHW layout.
                let b = Mat { data: x, rows: g.c, cols: plane, stride: plane };
                let work = self.out_ch * g.c * plane;
                match (team::team_threads(), Threads::for_conv(work, self.out_ch * g.c, free_threads())) {
                    // In a team's pass gemm does not split (its helpers serve the team's
                    // sections only): the threads take blocks of output channels, reading x
                    // whole, each block's epilogue applied while it is in cache.
                    (Some(_), Threads::Parts(n) | Threads::Products(n)) => {
                        let per = pointwise_block(self.out_ch, n);
                        let mut blocks: Vec<&mut [f32]> = out.chunks_mut(per * plane).collect();
                        for_each_balanced(&mut blocks, true, |k, rows| {
                            let (first, oc) = (k * per, rows.len() / plane);
                            let a = Mat { data: &weight[first * g.c..], rows: oc, cols: g.c, stride: g.c };
                            matmul_one_thread(a, b, rows, plane);
                            for (o, row) in rows.chunks_exact_mut(plane).enumerate() {
                                epi.apply_part(first + o, row, (first + o) * plane);
                            }
                        });
                        return;
                    }
                    _ => {
                        matmul(Mat { data: weight, rows: self.out_ch, cols: g.c, stride: g.c }, b, out, plane)
                    }
                }
            }
            Kernel::Im2col(weight) => {
                let kk = g.rows();
                let threads =
                    match Threads::for_conv(self.out_ch * kk * plane, self.out_ch * kk, free_threads()) {
                        // In a team's pass gemm does not split (its helpers serve the team's
                        // sections only), and in the browser gemm's own split of a product among
                        // the pool's threads was slower than one thread (ResNet-18's
                        // layer3.0.conv1: 4.4 → 5.1 ms on 2): bands, each thread reading the
                        // weights whole, gain there too.
                        Threads::Products(n)
                            if cfg!(target_arch = "wasm32") || team::team_threads().is_some() =>
                        {
                            Threads::Parts(n)
                        }
                        t => t,
                    };
                if let Threads::Parts(n) = threads {
                    return self.im2col_bands(weight, x, g, out, epi, n);
                }
                let a = Mat { data: weight, rows: self.out_ch, cols: kk, stride: kk };
                let mut band = (BAND_FLOATS / (kk * g.ow)).clamp(1, g.oh);
                if matches!(threads, Threads::Products(_)) && kk * plane <= WHOLE_IMAGE_COLS_FLOATS {
                    // Weights too big to share: one product over the whole image, which gemm
                    // splits among the threads once, rather than once per narrow band.
                    band = g.oh;
                }
                let mut cols = take_scratch(kk * band * g.ow);
                with_phases(x, g, false, |rows| {
                    for oy0 in (0..g.oh).step_by(band) {
                        let oy1 = (oy0 + band).min(g.oh);
                        let n = (oy1 - oy0) * g.ow;
                        let cols = &mut cols[..kk * n];
                        im2col(rows, g, (oy0, oy1), cols);
                        matmul(
                            a,
                            Mat { data: cols, rows: kk, cols: n, stride: n },
                            &mut out[oy0 * g.ow..],
                            plane,
                        );
                    }
                });
                give_scratch(cols);
            }
        }
        epi.apply(out, plane);
    }

    /// An im2col conv of one image in bands of output rows, at least one per thread, each band's
    /// gather, product and epilogue on one thread: one parallel section per conv.
    fn im2col_bands(
        &self,
        weight: &[f32],
        x: &[f32],
        g: &ConvGeometry,
        out: &mut [f32],
        epi: &Epilogue,
        threads: usize,
    ) {
        let (kk, plane) = (g.rows(), g.oh * g.ow);
        let a = Mat { data: weight, rows: self.out_ch, cols: kk, stride: kk };
        let mut band = (BAND_FLOATS / (kk * g.ow)).clamp(1, g.oh).min(g.oh.div_ceil(threads));
        // A band count that the threads share evenly, where a narrower band gives one.
        if let Some(even) = (band.div_ceil(2).max(1)..=band).rev().find(|&b| g.oh.div_ceil(b) % threads == 0)
        {
            band = even;
        }
        let mut bands = bands_of(out, plane, band * g.ow);
        with_phases(x, g, true, |rows| {
            for_each_mut(&mut bands, true, |b, parts| {
                let (oy0, oy1) = (b * band, ((b + 1) * band).min(g.oh));
                let n = (oy1 - oy0) * g.ow;
                let mut cols = take_scratch(kk * n);
                let mut y = take_scratch(self.out_ch * n);
                im2col(rows, g, (oy0, oy1), &mut cols);
                matmul_one_thread(a, Mat { data: &cols, rows: kk, cols: n, stride: n }, &mut y, n);
                for (o, part) in parts.iter_mut().enumerate() {
                    part.copy_from_slice(&y[o * n..][..n]);
                    epi.apply_part(o, part, o * plane + oy0 * g.ow);
                }
                give_scratch(cols);
                give_scratch(y);
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Prepares and runs in one go (a model keeps its [`PreparedConv`]s instead).
    fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
        PreparedConv::new(weight, None, padding, stride)?.forward(x, None, false)
    }

    #[test]
    fn pointwise_blocks() {
        for threads in 2..=4 {
            for out_ch in [1, 16, 64, 100, 128, 256, 512, 1000, 2048] {
                let per = pointwise_block(out_ch, threads);
                let blocks = out_ch.div_ceil(per);
                assert!(per >= 1 && blocks <= out_ch, "{out_ch} on {threads}: {per}");
                if blocks >= 2 * threads {
                    // Several blocks a thread, none ending in a narrow micro-kernel.
                    assert_eq!(per % POINTWISE_ROWS, 0, "{out_ch} on {threads}");
                } else {
                    assert_eq!(per, out_ch.div_ceil(threads), "{out_ch} on {threads}: one block a thread");
                }
            }
        }
        assert_eq!(pointwise_block(256, 2), 48);
        assert_eq!(pointwise_block(2048, 2), 288);
        assert_eq!(pointwise_block(64, 2), 32);
    }

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
            // The kernel the conv would get, then every other kernel that can take it.
            let chosen = conv2d(&x, &wt, p, s)?;
            let others = ALL_PATHS.into_iter().filter_map(|path| {
                PreparedConv::with_path(&wt, None, p, s, Some((h, w)), path).ok().map(|conv| (path, conv))
            });
            let mut got = vec![(ConvPath::of(c, k, s, p), chosen)];
            for (path, conv) in others {
                got.push((path, conv.forward(&x, None, false)?));
            }
            assert!(got.len() >= 3, "every conv runs on im2col and the direct kernel too");
            // Sums of up to 784 products reach ~100, where 1e-4 is a dozen f32 steps: bound the
            // rounding relative to the output's size (1 in 500,000), never looser than 1e-4.
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            let tol = (2e-6 * scale).max(1e-4);
            for (path, got) in got {
                assert_eq!(want.dims(), got.dims(), "{path:?} {c} {h} {w} {oc} {k} {s} {p}");
                let diff = (&want - got)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                let case = (c, h, w, oc, k, s, p);
                assert!(diff < tol, "{path:?}, case {case:?}: diff {diff} (outputs up to {scale})");
            }
        }
        Ok(())
    }

    const ALL_PATHS: [ConvPath; 4] =
        [ConvPath::Winograd, ConvPath::Pointwise, ConvPath::Direct, ConvPath::Im2col];

    /// The direct kernel at every vector width this CPU has, with the fused epilogue, on
    /// planes that end mid-vector and channel counts that end mid-tile.
    #[test]
    fn direct_kernel_at_every_width() -> Result<()> {
        use super::super::simd::{with_width_limit, Width};
        let dev = Device::Cpu;
        for (c, h, w, oc, k, s, p) in [
            (3, 19, 23, 5, 7, 2, 3),
            (5, 9, 13, 7, 3, 2, 1),
            (2, 11, 37, 9, 3, 1, 1),
            (4, 10, 10, 3, 1, 2, 0),
        ] {
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (oc, c, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, oc, &dev)?;
            let plain = x.conv2d(&wt, p, s, 1, 1)?.broadcast_add(&b.reshape((1, oc, 1, 1))?)?;
            let res = Tensor::randn(0f32, 1.0, plain.dims(), &dev)?;
            let want = (&plain + &res)?.relu()?;
            let conv = PreparedConv::with_path(&wt, Some(&b), p, s, None, ConvPath::Direct)?;
            for width in Width::available() {
                let got = with_width_limit(width, || conv.forward(&x, Some(&res), true))?;
                let diff = (&want - got)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{width:?}, case {:?}: diff {diff}", (c, h, w, oc, k, s, p));
            }
        }
        Ok(())
    }

    #[test]
    fn kernels_refuse_convs_they_cannot_run() -> Result<()> {
        let wt = Tensor::zeros((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
        assert!(PreparedConv::with_path(&wt, None, 1, 2, None, ConvPath::Winograd).is_err());
        assert!(PreparedConv::with_path(&wt, None, 1, 1, None, ConvPath::Pointwise).is_err());
        assert!(PreparedConv::with_path(&wt, None, 1, 2, None, ConvPath::Direct).is_ok());
        let empty = Tensor::zeros((4, 3, 0, 0), DType::F32, &Device::Cpu)?;
        assert!(PreparedConv::new(&empty, None, 1, 1).is_err(), "a 0×0 kernel");
        // An empty image with padding: the output is the bias alone, on every kernel.
        let b = Tensor::new(&[1f32, -2., 3., 4.], &Device::Cpu)?;
        for path in [ConvPath::Direct, ConvPath::Im2col] {
            let conv = PreparedConv::with_path(&wt, Some(&b), 2, 2, None, path)?;
            let y = conv.forward(&Tensor::zeros((2, 3, 0, 0), DType::F32, &Device::Cpu)?, None, true)?;
            assert_eq!(y.dims(), [2, 4, 1, 1]);
            assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1., 0., 3., 4., 1., 0., 3., 4.]);
        }
        Ok(())
    }

    #[test]
    fn paths_are_chosen_by_shape() {
        assert_eq!(ConvPath::of(3, 7, 2, 3), ConvPath::Direct, "ResNet's 7×7 stem");
        assert_eq!(ConvPath::of(3, 3, 1, 1), ConvPath::Direct, "a CIFAR ResNet's RGB stem");
        assert_eq!(ConvPath::of(16, 3, 2, 1), ConvPath::Direct, "ResNet-20's stride-2 convs");
        assert_eq!(ConvPath::of(16, 3, 1, 1), ConvPath::Winograd);
        assert_eq!(ConvPath::of(256, 3, 2, 1), ConvPath::Im2col, "many input channels");
        assert_eq!(ConvPath::of(64, 1, 2, 0), ConvPath::Im2col, "a strided 1×1 is a subsample and a gemm");
        assert_eq!(ConvPath::of(64, 1, 1, 0), ConvPath::Pointwise);
    }

    /// The bands-on-threads im2col path gives what one band at a time gives, epilogue included,
    /// whatever the thread count (rayon runs the bands on however many threads it has).
    #[test]
    fn im2col_bands_match_one_band_at_a_time() -> Result<()> {
        let dev = Device::Cpu;
        for (c, h, w, oc, k, s, p) in
            [(3, 23, 21, 8, 7, 2, 3), (16, 16, 16, 32, 3, 2, 1), (5, 3, 9, 4, 3, 2, 1)]
        {
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (oc, c, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, oc, &dev)?;
            let conv = PreparedConv::with_path(&wt, Some(&b), p, s, None, ConvPath::Im2col)?;
            let g = ConvGeometry::new(c, (h, w), k, s, p).expect("valid geometry");
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let res: Vec<f32> = Tensor::randn(0f32, 1.0, oc * g.oh * g.ow, &dev)?.to_vec1()?;
            let (bias, Kernel::Im2col(weight)) = (conv.bias.as_deref(), &conv.kernel) else {
                panic!("im2col")
            };
            let epi = Epilogue { bias, residual: Some(&res), relu: true };
            let mut want = vec![0f32; res.len()];
            conv.image(&xs, &g, &mut want, &epi);
            for threads in [2, 3, 64] {
                let mut got = vec![f32::NAN; res.len()];
                conv.im2col_bands(weight, &xs, &g, &mut got, &epi, threads);
                let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-4, "{threads} threads, case {:?}: off by {worst}", (c, h, w, oc, k, s, p));
            }
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
}
