//! 3×3, stride 1, padding 1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, 2016): each 2×2 output tile costs 16 multiplies per channel pair instead of 36, so the
//! 3×3 convs that make up most of a ResNet's arithmetic need 2.25× fewer multiply-adds.
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per tile; summed over input channels, the element-wise
//! product becomes 16 independent matrix products `M[ξ] = U[ξ]·V[ξ]` (`U`: out × in channels,
//! `V`: in channels × tiles), done by gemm. Tiles go in blocks, so that `V` and `M` of a block
//! stay in cache between the transforms and the products. F(2×2, 3×3)'s transforms only add,
//! subtract and halve: its results stay within ~1e-6 (relative) of direct convolution.
//!
//! Inference also has F(4×4, 3×3) ([`Tile::F4`]): 36 products per 4×4 output tile, 2.25
//! multiplies per output pixel and channel pair instead of F(2×2)'s 4, and 6×6 input tiles
//! (2.25× the input) instead of 4×4 ones (4×). Its transforms multiply by up to 8 and its weight
//! transform by sixths, so it is ~10× less exact (~1e-5 relative); [`Tile::for_plane`] takes it
//! for large planes whose transformed weights stay small. Training keeps F(2×2).

use super::gemm::{gemm_view, matmul_one_thread, Mat, View};
use super::simd::{Kernel, Lanes, Width};
use super::{
    bands_of, for_chunks, for_each_mut, free_threads, give_scratch, take_scratch, Epilogue, Threads,
};

/// Winograd's tile: F(2×2, 3×3) or F(4×4, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Output pixels a tile has per side.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Products per tile and channel pair (the input tile's pixels, `(m + 2)²`).
    pub fn xis(self) -> usize {
        (self.m() + 2).pow(2)
    }

    /// F(4×4) for planes of [`F4_MIN_SIDE`] pixels a side or more whose transformed weights
    /// stay within 1M floats (4 MiB: ResNet-18's 56×56 and 28×28 stages, the CIFAR nets'
    /// 32×32 and 16×16 ones); F(2×2) otherwise, whose weights take 16/36 of the memory and whose
    /// rounding is ~10× smaller.
    pub fn for_plane(out_ch: usize, in_ch: usize, (h, w): (usize, usize)) -> Tile {
        match h >= F4_MIN_SIDE && w >= F4_MIN_SIDE && Tile::F4.xis() * out_ch * in_ch <= 1 << 20 {
            true => Tile::F4,
            false => Tile::F2,
        }
    }
}

/// The smallest plane side [`Tile::for_plane`] gives F(4×4): 16 (4 tiles a row). There its
/// 2.25× fewer multiplies outweigh the narrow rows: ResNet-20's 16×16 convs took 39–40 µs
/// against 44 natively (AVX2, one thread), and in Chromium its forward 0.52× of
/// onnxruntime-web's time against 0.55×. 8×8 planes stay F(2×2): 4 tiles are too few columns
/// for the products.
pub const F4_MIN_SIDE: usize = 16;

/// A 3×3 kernel's weights, transformed once: `u[ξ][out][in]`, ξ = row·(m + 2) + col of the
/// input tile.
#[derive(Clone, Debug)]
pub struct Winograd3x3 {
    out_ch: usize,
    in_ch: usize,
    tile: Tile,
    u: Vec<f32>,
}

/// `V` and `M` of one block in about this many floats (2 × 256 KiB): L2-sized.
const BLOCK_FLOATS: usize = 64 * 1024;
/// ...but at least this many tiles, so that each product is wide enough for gemm to run well.
const MIN_BLOCK_TILES: usize = 64;
/// Blocks split among threads take at least this many tiles each; below it the products are
/// too narrow (ResNet-20's 8×8 planes, 16 tiles: 8 a block took 46–50 µs on 2 threads, splitting
/// each block's steps 36–38, one thread 51).
const MIN_SHARE_TILES: usize = 16;
/// Columns of `V` and `M` past a block's last tile: the widest vector's spare lanes.
const SPARE: usize = 16;
/// Floats (a cache line) between `M`'s 16 or 36 matrices beyond their `out_ch · bs`, and
/// between `V`'s channels beyond their `ξ · bs`: the output transform reads a row of each
/// matrix at once, gemm a row of each channel, and at strides of a multiple of 4 KiB
/// (ResNet-20's 8×8 layers: 64 × 32 floats) those rows all fell in one set of the L1 cache,
/// which holds 8 (the 8×8 layers' output transform took 8.5 µs, 5.0 with the pad).
const SLAB_PAD: usize = 16;

impl Winograd3x3 {
    /// `weight`: `[out_ch, in_ch, 3, 3]`, row-major; F(2×2, 3×3).
    pub fn new(weight: &[f32], out_ch: usize, in_ch: usize) -> Self {
        Self::with_tile(weight, out_ch, in_ch, Tile::F2)
    }

    /// [`Self::new`] with the given tile.
    pub fn with_tile(weight: &[f32], out_ch: usize, in_ch: usize, tile: Tile) -> Self {
        let mut w = Winograd3x3 { out_ch: 0, in_ch: 0, tile, u: vec![] };
        w.set_weights(weight, out_ch, in_ch);
        w
    }

    pub fn tile(&self) -> Tile {
        self.tile
    }

    /// Transforms other weights (another shape too) in place, keeping the allocation: the
    /// training plan refreshes one of these after every update.
    pub fn set_weights(&mut self, weight: &[f32], out_ch: usize, in_ch: usize) {
        assert_eq!(weight.len(), out_ch * in_ch * 9, "weight shape");
        (self.out_ch, self.in_ch) = (out_ch, in_ch);
        if self.tile == Tile::F4 {
            return self.set_weights_f4(weight);
        }
        let u = &mut self.u;
        u.resize(16 * out_ch * in_ch, 0.0);
        for o in 0..out_ch {
            for i in 0..in_ch {
                let g = &weight[(o * in_ch + i) * 9..][..9];
                // G g (4×3), column by column; then (G g) Gᵀ (4×4), row by row.
                let mut t = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    t[0][j] = g0;
                    t[1][j] = 0.5 * (g0 + g1 + g2);
                    t[2][j] = 0.5 * (g0 - g1 + g2);
                    t[3][j] = g2;
                }
                for (r, [a, b, c]) in t.into_iter().enumerate() {
                    let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                    for (s, v) in row.into_iter().enumerate() {
                        u[((r * 4 + s) * out_ch + o) * in_ch + i] = v;
                    }
                }
            }
        }
    }

    /// `U = G g Gᵀ` of F(4×4, 3×3), `G` = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙],
    /// [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1]] (Lavin & Gray's points 0, ±1, ±2).
    fn set_weights_f4(&mut self, weight: &[f32]) {
        let (out_ch, in_ch) = (self.out_ch, self.in_ch);
        let u = &mut self.u;
        u.resize(36 * out_ch * in_ch, 0.0);
        let g6 = |a: f32, b: f32, c: f32| {
            [
                a / 4.0,
                -(a + b + c) / 6.0,
                -(a - b + c) / 6.0,
                a / 24.0 + b / 12.0 + c / 6.0,
                a / 24.0 - b / 12.0 + c / 6.0,
                c,
            ]
        };
        for o in 0..out_ch {
            for i in 0..in_ch {
                let g = &weight[(o * in_ch + i) * 9..][..9];
                // G g (6×3), column by column; then (G g) Gᵀ (6×6), row by row.
                let cols: [[f32; 6]; 3] = std::array::from_fn(|j| g6(g[j], g[3 + j], g[6 + j]));
                for r in 0..6 {
                    let row = g6(cols[0][r], cols[1][r], cols[2][r]);
                    for (s, v) in row.into_iter().enumerate() {
                        u[((r * 6 + s) * out_ch + o) * in_ch + i] = v;
                    }
                }
            }
        }
    }

    /// One image: `x` `[in_ch, h, w]` → `out` `[out_ch, h, w]`, with the epilogue applied, on
    /// as many threads as pay for this layer's size ([`Split::for_layer`]).
    pub fn forward(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], epi: &Epilogue) {
        let split = Split::for_layer(self.out_ch, self.in_ch, (h, w), self.tile, free_threads());
        self.forward_split(x, h, w, out, epi, split);
    }

    /// [`Self::forward`] with the work divided as `split` says. Tiles go in blocks of whole tile
    /// rows; each block owns its rows of every output plane.
    pub(crate) fn forward_split(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        epi: &Epilogue,
        split: Split,
    ) {
        let (oc, ic) = (self.out_ch, self.in_ch);
        assert_eq!(x.len(), ic * h * w, "input shape");
        assert_eq!(out.len(), oc * h * w, "output shape");
        assert!(epi.bias.is_none_or(|b| b.len() == oc) && epi.residual.is_none_or(|r| r.len() == out.len()));
        if out.is_empty() {
            return;
        }
        let m = self.tile.m();
        let (th, tw) = (h.div_ceil(m), w.div_ceil(m));
        let mut rows_per_block = (block_tiles(ic.max(oc), self.tile) / tw).clamp(1, th);
        if let Split::Blocks(threads) = split {
            // At least one block per thread.
            rows_per_block = rows_per_block.min(th.div_ceil(threads));
        }
        let mut pieces = bands_of(out, h * w, m * rows_per_block * w);
        let inner = split == Split::Within;
        for_each_mut(&mut pieces, matches!(split, Split::Blocks(_)), |b, planes| {
            let ty0 = b * rows_per_block;
            let rows = [Rows { image: 0, ty0, rows: rows_per_block.min(th - ty0) }];
            self.block(x, (h, w), &rows, planes, epi, inner);
        });
    }

    /// `n` images on this thread (the training plan's shards): `x` `[n, in_ch, h, w]` → `out`
    /// `[n, out_ch, h, w]` with the epilogue (its residual shaped like `out`). Small planes go several whole images to a block, so the 16 products
    /// are as wide as a block allows, not one 8×8 image's 16 tiles.
    pub fn forward_images(
        &self,
        x: &[f32],
        n: usize,
        (h, w): (usize, usize),
        out: &mut [f32],
        epi: &Epilogue,
    ) {
        let (oc, ic, hw) = (self.out_ch, self.in_ch, h * w);
        assert_eq!(x.len(), n * ic * hw, "input shape");
        assert_eq!(out.len(), n * oc * hw, "output shape");
        assert!(epi.bias.is_none_or(|b| b.len() == oc) && epi.residual.is_none_or(|r| r.len() == out.len()));
        for rows in batch_blocks(n, (h, w), ic.max(oc), self.tile) {
            let mut planes = block_planes(out, &rows, oc, (h, w), self.tile.m());
            self.block(x, (h, w), &rows, &mut planes, epi, false);
        }
    }

    /// The tiles of `rows` (whole tile rows of images of `x`, `[n, in_ch, h, w]`): the input
    /// transform, the 16 products, the output transform into `planes` (`planes[k·out_ch + o]`:
    /// channel `o` of `rows[k]`'s image, from output row `2·ty0`). `par` splits each of the
    /// three among threads: channels, products and output planes.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        rows: &[Rows],
        planes: &mut [&mut [f32]],
        epi: &Epilogue,
        par: bool,
    ) {
        let (oc, ic, tile) = (self.out_ch, self.in_ch, self.tile);
        let (mt, xis) = (tile.m(), tile.xis());
        let tw = w.div_ceil(mt);
        let nt = rows.iter().map(|r| r.rows).sum::<usize>() * tw;
        let bs = nt + SPARE;
        // V: `[in_ch][ξ][bs]`, its channels `vstride` apart; M: `[ξ][out_ch][bs]`, its matrices
        // `slab` apart ([`SLAB_PAD`]). Every element of V that gemm reads is written first; M's
        // spare columns feed only spare lanes, which are never stored: neither needs zeroing.
        let (vstride, slab) = (xis * bs + SLAB_PAD, oc * bs + SLAB_PAD);
        let mut v = take_scratch(ic * vstride);
        let mut m = take_scratch(xis * slab);
        input_transform(x, ic, (h, w), rows, (&mut v, bs, vstride), tile, par);
        let vs = &v;
        for_chunks(&mut m, slab, par, |xi, mc| {
            matmul_one_thread(
                Mat { data: &self.u[xi * oc * ic..][..oc * ic], rows: oc, cols: ic, stride: ic },
                Mat { data: &vs[xi * bs..], rows: ic, cols: nt, stride: vstride },
                mc,
                bs,
            );
        });
        let (ms, width) = (&m, Width::for_items(tw));
        let first_tile = first_tiles(rows, tw);
        let group = group_size(planes.len(), par);
        let mut groups: Vec<&mut [&mut [f32]]> = planes.chunks_mut(group).collect();
        for_each_mut(&mut groups, par, |g, pieces| {
            let (first_tile, first_piece) = (&first_tile, g * group);
            width.run(OutputPlanes {
                m: ms,
                slab,
                out_ch: oc,
                bs,
                rows,
                first_tile,
                h,
                w,
                epi,
                tile,
                pieces,
                first_piece,
            });
        });
        give_scratch(v);
        give_scratch(m);
    }
}

/// Whole tile rows `ty0..ty0 + rows` of one image of a batch: a block's tiles are one or more
/// of these, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rows {
    image: usize,
    ty0: usize,
    rows: usize,
}

/// Tiles a block of this many channels (the larger of in and out) takes: `V` and `M` in about
/// [`BLOCK_FLOATS`] each, at least [`MIN_BLOCK_TILES`].
fn block_tiles(channels: usize, tile: Tile) -> usize {
    (BLOCK_FLOATS / (tile.xis() * channels.max(1))).max(MIN_BLOCK_TILES)
}

/// The blocks of `n` images: several whole images a block while one image has fewer tiles than
/// a block takes (CIFAR's 8×8 planes: 16 tiles each), blocks of tile rows of one image otherwise.
fn batch_blocks(n: usize, (h, w): (usize, usize), channels: usize, tile: Tile) -> Vec<Vec<Rows>> {
    let (th, tw) = (h.div_ceil(tile.m()), w.div_ceil(tile.m()));
    if th * tw == 0 {
        return vec![];
    }
    let want = block_tiles(channels, tile);
    if th * tw >= want {
        let per = (want / tw).clamp(1, th);
        return (0..n)
            .flat_map(|image| {
                (0..th).step_by(per).map(move |ty0| vec![Rows { image, ty0, rows: per.min(th - ty0) }])
            })
            .collect();
    }
    let per = want / (th * tw);
    (0..n)
        .step_by(per)
        .map(|i0| (i0..(i0 + per).min(n)).map(|image| Rows { image, ty0: 0, rows: th }).collect())
        .collect()
}

/// The first column (tile) of each of `rows` in a block's `V` and `M`.
fn first_tiles(rows: &[Rows], tw: usize) -> Vec<usize> {
    rows.iter()
        .scan(0, |at, r| {
            let first = *at;
            *at += r.rows * tw;
            Some(first)
        })
        .collect()
}

/// The pieces of `out` (`[n, channels, h, w]`) that a block of [`batch_blocks`] writes: for each
/// of its images (one `Rows` each, consecutive), each channel's rows from `m·ty0` (`m`: the
/// tile's output rows).
fn block_planes<'a>(
    out: &'a mut [f32],
    rows: &[Rows],
    channels: usize,
    (h, w): (usize, usize),
    m: usize,
) -> Vec<&'a mut [f32]> {
    let (hw, first) = (h * w, rows[0].image);
    let images = &mut out[first * channels * hw..(first + rows.len()) * channels * hw];
    let mut planes = Vec::with_capacity(rows.len() * channels);
    for (seg, image) in rows.iter().zip(images.chunks_exact_mut(channels * hw)) {
        debug_assert_eq!(seg.image, first + planes.len() / channels, "one Rows per image, in order");
        for plane in image.chunks_exact_mut(hw) {
            planes.push(&mut plane[m * seg.ty0 * w..(m * (seg.ty0 + seg.rows)).min(h) * w]);
        }
    }
    planes
}

/// `V = Bᵀ d B` of every input tile (4×4 at stride 2 for F(2×2), 6×6 at stride 4 for F(4×4);
/// padding 1) of `rows` of `x` (`[n, channels, h, w]`) into `v` (`[channels][ξ][bs]`, the block's
/// tiles in order along each row).
fn input_transform(
    x: &[f32],
    channels: usize,
    (h, w): (usize, usize),
    rows: &[Rows],
    (v, bs, stride): (&mut [f32], usize, usize),
    tile: Tile,
    par: bool,
) {
    let tw = w.div_ceil(tile.m());
    let (first_tile, width) = (first_tiles(rows, tw), Width::for_items(tw));
    let group = group_size(channels, par);
    for_chunks(&mut v[..channels * stride], group * stride, par, |g, v| {
        let (first, first_tile) = (g * group, &first_tile);
        width.run(InputChannels { x, channels, first, rows, first_tile, h, w, v, bs, stride, tile });
    });
}

/// Items (channels, output planes) a transform's call takes: all of them on one thread, a
/// thread's share where `par` splits them among threads (a team's section hands out one share a
/// thread, whoever claims it first). A call picks its instructions and takes its scratch once
/// for all its items (per item, that cost ResNet-20's 8×8 layers about as much as their
/// arithmetic).
fn group_size(items: usize, par: bool) -> usize {
    match par {
        true => items.div_ceil(free_threads().max(1)).max(1),
        false => items.max(1),
    }
}

/// The input transform of channels `first..` of `x` (`[n, channels, h, w]`) under `rows`, one
/// after another: `v` holds their `[ξ][bs]` each, `stride` apart.
struct InputChannels<'a> {
    x: &'a [f32],
    channels: usize,
    first: usize,
    rows: &'a [Rows],
    first_tile: &'a [usize],
    h: usize,
    w: usize,
    v: &'a mut [f32],
    bs: usize,
    stride: usize,
    tile: Tile,
}

impl Kernel for InputChannels<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let InputChannels { x, channels, first, rows, first_tile, h, w, v, bs, stride, tile } = self;
        let (n, tw) = (S::N, w.div_ceil(tile.m()));
        // Bᵀ d of one tile row, m + 2 rows of padded width: column 0 is the left padding, and
        // everything right of the plane stays zero (the right padding and the lanes a group's
        // loads reach past the last tile). Each channel writes the same columns: one zeroing
        // serves them all.
        let pw = match tile {
            Tile::F2 => 2 * tw.next_multiple_of(n) + n,
            Tile::F4 => 4 * tw.next_multiple_of(n) + 8,
        };
        with_row_scratch((tile.m() + 2) * pw, w, |t, zeros| {
            for (k, v) in v.chunks_exact_mut(stride).enumerate() {
                let v = &mut v[..tile.xis() * bs];
                let ci = first + k;
                let planes = rows.iter().map(|seg| &x[(seg.image * channels + ci) * h * w..][..h * w]);
                let channel = InputChannel { planes, rows, first_tile, h, w, v, bs, pw, t, zeros };
                match tile {
                    Tile::F2 => channel.run::<S>(),
                    Tile::F4 => InputChannel4(channel).run::<S>(),
                }
            }
        });
    }
}

/// [`input_transform`] of one channel (F(2×2)): `v` is its `[16][bs]`; `t`: the row pass's
/// 4 rows, `pw` each, zeros where no row is written; `zeros`: a padding row.
struct InputChannel<'a, 'b, P> {
    /// The channel's plane in each of `rows`' images.
    planes: P,
    rows: &'a [Rows],
    first_tile: &'a [usize],
    h: usize,
    w: usize,
    v: &'b mut [f32],
    bs: usize,
    pw: usize,
    t: &'b mut [f32],
    zeros: &'b [f32],
}

impl<'a, P: Iterator<Item = &'a [f32]>> InputChannel<'a, '_, P> {
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let InputChannel { planes, rows, first_tile, h, w, v, bs, pw, t, zeros } = self;
        let tw = w.div_ceil(2);
        // V's 16 rows, each `bs` long: the bounds checks of a tile group's 16 stores are one.
        let mut rows_of_v = v.chunks_exact_mut(bs);
        let mut out: [&mut [f32]; 16] = std::array::from_fn(|_| rows_of_v.next().expect("16 rows"));
        for ((seg, &first), plane) in rows.iter().zip(first_tile).zip(planes) {
            for r in 0..seg.rows {
                let row = |k: usize| plane_row(plane, (h, w), 2 * (seg.ty0 + r) + k, zeros);
                let (d0, d1, d2, d3) = (&row(0)[..w], &row(1)[..w], &row(2)[..w], &row(3)[..w]);
                let (t0, rest) = t.split_at_mut(pw);
                let (t1, rest) = rest.split_at_mut(pw);
                let (t2, t3) = rest.split_at_mut(pw);
                let (t0, t1, t2, t3) = (&mut t0[1..=w], &mut t1[1..=w], &mut t2[1..=w], &mut t3[1..=w]);
                for c in 0..w {
                    let (a, b, c2, d) = (d0[c], d1[c], d2[c], d3[c]);
                    t0[c] = a - c2;
                    t1[c] = b + c2;
                    t2[c] = c2 - b;
                    t3[c] = b - d;
                }
                // A group of N tiles may write up to N − 1 lanes past the row's last tile: into
                // the next row's first tiles, written after, or the spare columns of the last row.
                for (ti, quad) in t.chunks_exact(pw).zip(out.chunks_exact_mut(4)) {
                    for tx in (0..tw).step_by(S::N) {
                        let (a, b) = (S::load(&ti[2 * tx..]), S::load(&ti[2 * tx + S::N..]));
                        let (c, d) = (S::load(&ti[2 * tx + 2..]), S::load(&ti[2 * tx + S::N + 2..]));
                        let (e0, e1) = (S::evens(a, b), S::odds(a, b));
                        let (e2, e3) = (S::evens(c, d), S::odds(c, d));
                        let col = first + r * tw + tx;
                        for (o, val) in quad.iter_mut().zip([e0 - e2, e1 + e2, e2 - e1, e1 - e3]) {
                            val.store(&mut o[col..]);
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f(t, zeros)` on a zeroed scratch: `t` (`len` floats) for a row pass's padded rows,
/// `zeros` (`w`) for the plane's padding rows.
#[inline(always)]
fn with_row_scratch(len: usize, w: usize, f: impl FnOnce(&mut [f32], &[f32])) {
    let mut scratch = take_scratch(len + w);
    scratch.fill(0.0);
    let (t, zeros) = scratch.split_at_mut(len);
    f(t, zeros);
    give_scratch(scratch);
}

/// Row `y1 − 1` of an `h × w` plane (`y1`: the row below it, so that row −1 can be asked for),
/// or `zeros` where it lies in the padding.
#[inline(always)]
fn plane_row<'a>(plane: &'a [f32], (h, w): (usize, usize), y1: usize, zeros: &'a [f32]) -> &'a [f32] {
    match y1.checked_sub(1) {
        Some(y) if y < h => &plane[y * w..][..w],
        _ => zeros,
    }
}

/// The output transform of a block's `pieces` from `first_piece` on (piece `k·out_ch + o`:
/// channel `o`'s rows under `rows[k]`), one after another.
struct OutputPlanes<'a, 'b, 'd> {
    /// `M`: `[ξ][out_ch][bs]`, its matrices `slab` apart.
    m: &'a [f32],
    slab: usize,
    out_ch: usize,
    bs: usize,
    rows: &'a [Rows],
    first_tile: &'a [usize],
    h: usize,
    w: usize,
    epi: &'a Epilogue<'a>,
    tile: Tile,
    pieces: &'b mut [&'d mut [f32]],
    first_piece: usize,
}

impl Kernel for OutputPlanes<'_, '_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let OutputPlanes { m, slab, out_ch, bs, rows, first_tile, h, w, epi, tile, pieces, first_piece } =
            self;
        for (k, dst) in pieces.iter_mut().enumerate() {
            let piece = first_piece + k;
            let (seg, o) = (rows[piece / out_ch], piece % out_ch);
            let at = (seg.image * out_ch + o) * h * w + tile.m() * seg.ty0 * w;
            let plane = OutputPlane {
                m,
                slab,
                bs,
                o,
                first: first_tile[piece / out_ch],
                rows: seg.rows,
                w,
                bias: epi.bias.map_or(0.0, |b| b[o]),
                residual: epi.residual.map(|r| &r[at..][..dst.len()]),
                relu: epi.relu,
                dst,
            };
            match tile {
                Tile::F2 => plane.run::<S>(),
                Tile::F4 => OutputPlane4(plane).run::<S>(),
            }
        }
    }
}

/// The output transform of one output plane's piece: `Aᵀ M A` of each tile, with the epilogue.
struct OutputPlane<'a> {
    /// `M`: `[16][out_ch][bs]`, its matrices `slab` apart.
    m: &'a [f32],
    slab: usize,
    bs: usize,
    o: usize,
    /// The piece's first tile in `M`, and its tile rows.
    first: usize,
    rows: usize,
    w: usize,
    bias: f32,
    residual: Option<&'a [f32]>,
    relu: bool,
    dst: &'a mut [f32],
}

impl OutputPlane<'_> {
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let OutputPlane { m, slab, bs, o, first, rows, w, bias, residual, relu, dst } = self;
        let (n, tw, bias) = (S::N, w.div_ceil(2), S::splat(bias));
        // Output rows of this piece (the last tile row of an odd-height plane has one).
        let out_rows = dst.len() / w;
        // M's 16 rows for channel `o`, each `bs` long: one bounds check for a group's 16 loads.
        let rows_of_m: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi * slab + o * bs..][..bs]);
        for r in 0..rows {
            for tx in (0..tw).step_by(n) {
                let col = first + r * tw + tx;
                let q: [S; 16] = std::array::from_fn(|xi| S::load(&rows_of_m[xi][col..]));
                // Aᵀ q A with Aᵀ = [[1,1,1,0], [0,1,−1,−1]]: rows first, then columns.
                let s: [S; 8] = std::array::from_fn(|k| match k {
                    0..4 => q[k] + q[4 + k] + q[8 + k],
                    _ => q[k] - q[4 + k] - q[8 + k],
                });
                let y = [(s[0] + s[1] + s[2], s[1] - s[2] - s[3]), (s[4] + s[5] + s[6], s[5] - s[6] - s[7])];
                for (dy, (left, right)) in y.into_iter().enumerate() {
                    let oy = 2 * r + dy;
                    if oy >= out_rows {
                        break;
                    }
                    // Output columns 2tx..2tx + 2N of row oy.
                    let halves = [S::zip_lo(left, right) + bias, S::zip_hi(left, right) + bias];
                    store_outputs(halves, dst, (oy, 2 * tx), w, (residual, relu));
                }
            }
        }
    }
}

/// Output row `oy`'s columns from `ox`, `K` vectors of them (bias added), into `dst` (rows `w`
/// long) with the epilogue's residual and ReLU; past the row's end, nothing.
#[inline(always)]
fn store_outputs<S: Lanes, const K: usize>(
    vals: [S; K],
    dst: &mut [f32],
    (oy, ox): (usize, usize),
    w: usize,
    (residual, relu): (Option<&[f32]>, bool),
) {
    let (n, p) = (S::N, oy * w + ox);
    if ox + K * n <= w {
        for (k, mut val) in vals.into_iter().enumerate() {
            if let Some(res) = residual {
                val = val + S::load(&res[p + n * k..]);
            }
            if relu {
                val = val.relu();
            }
            val.store(&mut dst[p + n * k..]);
        }
        return;
    }
    let mut tmp = [0f32; 4 * SPARE];
    for (k, val) in vals.into_iter().enumerate() {
        val.store(&mut tmp[n * k..]);
    }
    for (k, &v) in tmp[..(w - ox).min(K * n)].iter().enumerate() {
        let mut val = v + residual.map_or(0.0, |r| r[p + k]);
        if relu {
            val = val.max(0.0);
        }
        dst[p + k] = val;
    }
}

/// [`InputChannel`] for F(4×4, 3×3): 6×6 input tiles at stride 4, `V = Bᵀ d B` with
/// `Bᵀ` = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0], [0, −2, −1, 2, 1, 0],
/// [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]]; `v` is the channel's `[36][bs]`.
struct InputChannel4<'a, 'b, P>(InputChannel<'a, 'b, P>);

/// What the F(4×4) transforms compute with: a vector, or one f32 (the input's row pass).
trait Arith:
    Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
{
    fn k(v: f32) -> Self;
    /// `self · b + c`, fused where the vector type can.
    fn mul_add(self, b: Self, c: Self) -> Self;
}

impl Arith for f32 {
    #[inline(always)]
    fn k(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn mul_add(self, b: f32, c: f32) -> f32 {
        self * b + c
    }
}

impl<S: Lanes> Arith for S {
    #[inline(always)]
    fn k(v: f32) -> S {
        S::splat(v)
    }
    #[inline(always)]
    fn mul_add(self, b: S, c: S) -> S {
        Lanes::mul_add(self, b, c)
    }
}

/// `Bᵀ` of F(4×4, 3×3) applied to six values (rows, then columns).
#[inline(always)]
fn bt6<T: Arith>(d: [T; 6]) -> [T; 6] {
    let (four, minus_four, minus_five) = (T::k(4.0), T::k(-4.0), T::k(-5.0));
    let (two, minus_two) = (T::k(2.0), T::k(-2.0));
    let (s, t) = (d[4] - d[2], d[3] - d[1]);
    [
        four.mul_add(d[0], minus_five.mul_add(d[2], d[4])),
        minus_four.mul_add(d[1] + d[2], d[3] + d[4]),
        four.mul_add(d[1] - d[2], d[4] - d[3]),
        two.mul_add(t, s),
        minus_two.mul_add(t, s),
        four.mul_add(d[1], minus_five.mul_add(d[3], d[5])),
    ]
}

impl<'a, P: Iterator<Item = &'a [f32]>> InputChannel4<'a, '_, P> {
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let InputChannel { planes, rows, first_tile, h, w, v, bs, pw, t, zeros } = self.0;
        let (n, tw) = (S::N, w.div_ceil(4));
        let mut rows_of_v = v.chunks_exact_mut(bs);
        let mut out: [&mut [f32]; 36] = std::array::from_fn(|_| rows_of_v.next().expect("36 rows"));
        for ((seg, &first), plane) in rows.iter().zip(first_tile).zip(planes) {
            for r in 0..seg.rows {
                let row = |k: usize| plane_row(plane, (h, w), 4 * (seg.ty0 + r) + k, zeros);
                let (d0, d1, d2) = (&row(0)[..w], &row(1)[..w], &row(2)[..w]);
                let (d3, d4, d5) = (&row(3)[..w], &row(4)[..w], &row(5)[..w]);
                let (t0, rest) = t.split_at_mut(pw);
                let (t1, rest) = rest.split_at_mut(pw);
                let (t2, rest) = rest.split_at_mut(pw);
                let (t3, rest) = rest.split_at_mut(pw);
                let (t4, t5) = rest.split_at_mut(pw);
                let (t0, t1, t2) = (&mut t0[1..=w], &mut t1[1..=w], &mut t2[1..=w]);
                let (t3, t4, t5) = (&mut t3[1..=w], &mut t4[1..=w], &mut t5[1..=w]);
                for c in 0..w {
                    let col = bt6([d0[c], d1[c], d2[c], d3[c], d4[c], d5[c]]);
                    (t0[c], t1[c], t2[c], t3[c], t4[c], t5[c]) =
                        (col[0], col[1], col[2], col[3], col[4], col[5]);
                }
                // A group of N tiles may write up to N − 1 lanes past the row's last tile: into
                // the next row's first tiles, written after, or the spare columns of the last row.
                for (ti, six) in t.chunks_exact(pw).zip(out.chunks_exact_mut(6)) {
                    for tx in (0..tw).step_by(n) {
                        let at = 4 * tx;
                        let ld = |o: usize| S::load(&ti[at + o..]);
                        // Columns 4j + s of the group's 4N (+ 4) values, s = 0..5.
                        let (a, b) = ((ld(0), ld(n)), (ld(2 * n), ld(3 * n)));
                        let (ev, od) = (
                            (S::evens(a.0, a.1), S::evens(b.0, b.1)),
                            (S::odds(a.0, a.1), S::odds(b.0, b.1)),
                        );
                        let (c, d) = ((ld(4), ld(n + 4)), (ld(2 * n + 4), ld(3 * n + 4)));
                        let e = [
                            S::evens(ev.0, ev.1),
                            S::evens(od.0, od.1),
                            S::odds(ev.0, ev.1),
                            S::odds(od.0, od.1),
                            S::evens(S::evens(c.0, c.1), S::evens(d.0, d.1)),
                            S::evens(S::odds(c.0, c.1), S::odds(d.0, d.1)),
                        ];
                        let col = first + r * tw + tx;
                        for (o, val) in six.iter_mut().zip(bt6(e)) {
                            val.store(&mut o[col..]);
                        }
                    }
                }
            }
        }
    }
}

/// [`OutputPlane`] for F(4×4, 3×3): `Aᵀ M A` of each 6×6 `M` tile, `Aᵀ` = [[1, 1, 1, 1, 1, 0],
/// [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]], with the epilogue.
struct OutputPlane4<'a>(OutputPlane<'a>);

/// `Aᵀ` of F(4×4, 3×3) applied to six values.
#[inline(always)]
fn at6<S: Lanes>(m: [S; 6]) -> [S; 4] {
    let (a, b, c, d) = (m[1] + m[2], m[1] - m[2], m[3] + m[4], m[3] - m[4]);
    [
        m[0] + a + c,
        S::splat(2.0).mul_add(d, b),
        S::splat(4.0).mul_add(c, a),
        S::splat(8.0).mul_add(d, b + m[5]),
    ]
}

impl OutputPlane4<'_> {
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let OutputPlane { m, slab, bs, o, first, rows, w, bias, residual, relu, dst } = self.0;
        let (n, tw, bias) = (S::N, w.div_ceil(4), S::splat(bias));
        let out_rows = dst.len() / w;
        // M's 36 rows for channel `o`, `slab` apart.
        let (m, step) = (&m[o * bs..][..35 * slab + bs], slab);
        for r in 0..rows {
            for tx in (0..tw).step_by(n) {
                let col = first + r * tw + tx;
                // Loaded where used, not gathered into an array first (which went through the stack).
                let q = |xi: usize| S::load(&m[xi * step + col..]);
                // Aᵀ on each column of the tile, then on each of the 4 resulting rows.
                let by_col: [[S; 4]; 6] = std::array::from_fn(|c| {
                    at6([q(c), q(6 + c), q(12 + c), q(18 + c), q(24 + c), q(30 + c)])
                });
                let tile_rows: [[S; 4]; 4] =
                    std::array::from_fn(|dy| at6(std::array::from_fn(|c| by_col[c][dy])));
                for (dy, y) in tile_rows.into_iter().enumerate() {
                    let oy = 4 * r + dy;
                    if oy >= out_rows {
                        break;
                    }
                    // Tile j's 4 columns side by side: 4N output columns from 4tx.
                    let (a, b) = (S::zip_lo(y[0], y[2]), S::zip_lo(y[1], y[3]));
                    let (c, d) = (S::zip_hi(y[0], y[2]), S::zip_hi(y[1], y[3]));
                    let quads = [S::zip_lo(a, b), S::zip_hi(a, b), S::zip_lo(c, d), S::zip_hi(c, d)];
                    store_outputs(quads.map(|q| q + bias), dst, (oy, 4 * tx), w, (residual, relu));
                }
            }
        }
    }
}

/// `∂L/∂M = A dY Aᵀ` of every 2×2 output tile of `rows` of `dy` (`[n, channels, h, w]`; the
/// gradient of the output transform, `A` being 4×2) into `dm` (`[channels][16][bs]`), zeros
/// where a tile reaches past the plane.
struct GradientTransform<'a> {
    dy: &'a [f32],
    channels: usize,
    h: usize,
    w: usize,
    rows: &'a [Rows],
    dm: &'a mut [f32],
    bs: usize,
}

impl Kernel for GradientTransform<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let GradientTransform { dy, channels, h, w, rows, dm, bs } = self;
        let tw = w.div_ceil(2);
        let first_tile = first_tiles(rows, tw);
        // Two output rows of padded width (zeros past the plane).
        let pw = 2 * tw.next_multiple_of(S::N);
        let mut scratch = take_scratch(2 * pw);
        scratch.fill(0.0);
        let zero = S::splat(0.0);
        for (ci, mc) in dm[..channels * 16 * bs].chunks_exact_mut(16 * bs).enumerate() {
            let mut out: Vec<&mut [f32]> = mc.chunks_exact_mut(bs).collect();
            for (seg, &first) in rows.iter().zip(&first_tile) {
                let plane = &dy[(seg.image * channels + ci) * h * w..][..h * w];
                for r in 0..seg.rows {
                    let (p0, p1) = scratch.split_at_mut(pw);
                    for (k, p) in [p0, p1].into_iter().enumerate() {
                        match 2 * (seg.ty0 + r) + k {
                            y if y < h => p[..w].copy_from_slice(&plane[y * w..][..w]),
                            _ => p[..w].fill(0.0),
                        }
                    }
                    let (p0, p1) = scratch.split_at(pw);
                    for tx in (0..tw).step_by(S::N) {
                        let (a0, b0) = (S::load(&p0[2 * tx..]), S::load(&p0[2 * tx + S::N..]));
                        let (a1, b1) = (S::load(&p1[2 * tx..]), S::load(&p1[2 * tx + S::N..]));
                        // Each tile's dY: [[e0, o0], [e1, o1]]. A's rows: [1,0], [1,1], [1,−1], [0,−1].
                        let (e0, o0) = (S::evens(a0, b0), S::odds(a0, b0));
                        let (e1, o1) = (S::evens(a1, b1), S::odds(a1, b1));
                        let left = [e0, e0 + e1, e0 - e1, zero - e1];
                        let right = [o0, o0 + o1, o0 - o1, zero - o1];
                        let col = first + r * tw + tx;
                        for ((l, rt), quad) in left.into_iter().zip(right).zip(out.chunks_exact_mut(4)) {
                            for (o, val) in quad.iter_mut().zip([l, l + rt, l - rt, zero - rt]) {
                                val.store(&mut o[col..]);
                            }
                        }
                    }
                }
            }
        }
        give_scratch(scratch);
    }
}

impl Winograd3x3 {
    /// This conv's backward over `n` images on this thread (the training plan's shards), from one
    /// gradient transform `∂L/∂M = A dY Aᵀ` of `dy` per block:
    /// - the weight gradient in the Winograd domain: `du` (`[16][out_ch][in_ch]`) gets
    ///   `Σ ∂L/∂M[ξ] · V[ξ]ᵀ` added, 16 products of `out × tiles × in` (4 multiply-adds per output
    ///   pixel and channel pair, against im2col's 9); [`weights_from_transformed`] turns the sum
    ///   into the gradient of the weights;
    /// - with `dx`, the input gradient: `∂L/∂V[ξ] = U[ξ]ᵀ · ∂L/∂M[ξ]`, taken back to the input by
    ///   the input transform's adjoint ([`InputAdjoint`]), added to `dx` (`[n, in_ch, h, w]`) or,
    ///   when `accumulate` is false, written over whatever it held. The same multiply-adds as a
    ///   conv of `dy` with the flipped weights, one transform fewer, no flipped weights.
    pub fn backward_images(
        &self,
        x: &[f32],
        dy: &[f32],
        n: usize,
        (h, w): (usize, usize),
        du: &mut [f32],
        mut dx: Option<(&mut [f32], bool)>,
    ) {
        let (oc, ic, hw) = (self.out_ch, self.in_ch, h * w);
        assert_eq!(self.tile, Tile::F2, "training runs F(2×2, 3×3)");
        assert_eq!(x.len(), n * ic * hw, "input shape");
        assert_eq!(dy.len(), n * oc * hw, "output gradient shape");
        assert!(du.len() >= 16 * oc * ic, "gradient buffer");
        assert!(dx.as_ref().is_none_or(|(dx, _)| dx.len() == x.len()), "input gradient shape");
        let tw = w.div_ceil(2);
        let width = Width::for_items(tw);
        for rows in batch_blocks(n, (h, w), ic.max(oc), Tile::F2) {
            let nt = rows.iter().map(|r| r.rows).sum::<usize>() * tw;
            let bs = nt + SPARE;
            let mut v = take_scratch(16 * ic * bs);
            let mut dm = take_scratch(16 * oc * bs);
            input_transform(x, ic, (h, w), &rows, (&mut v, bs, 16 * bs), Tile::F2, false);
            width.run(GradientTransform { dy, channels: oc, h, w, rows: &rows, dm: &mut dm, bs });
            for (xi, dst) in du[..16 * oc * ic].chunks_exact_mut(oc * ic).enumerate() {
                let dmv = View { data: &dm[xi * bs..], rows: oc, cols: nt, rs: 16 * bs, cs: 1 };
                let vt = View { data: &v[xi * bs..], rows: nt, cols: ic, rs: 1, cs: 16 * bs };
                gemm_view(dmv, vt, dst, ic, true, false);
            }
            if let Some((dx, accumulate)) = dx.as_mut() {
                // V is spent: ∂L/∂V takes its place, `[in_ch][16][bs]` as V was.
                for xi in 0..16 {
                    let ut = View { data: &self.u[xi * oc * ic..], rows: ic, cols: oc, rs: 1, cs: ic };
                    let dmv = View { data: &dm[xi * bs..], rows: oc, cols: nt, rs: 16 * bs, cs: 1 };
                    gemm_view(ut, dmv, &mut v[xi * bs..], 16 * bs, false, false);
                }
                let adjoint =
                    InputAdjoint { dv: &v, channels: ic, h, w, rows: &rows, bs, dx, accumulate: *accumulate };
                width.run(adjoint);
            }
            give_scratch(v);
            give_scratch(dm);
        }
    }
}

/// The input transform's adjoint: each tile's `∂L/∂V` (`dv`: `[channels][16][bs]`) taken back to
/// its 4×4 input patch, `B ∂L/∂V Bᵀ`, the patches' overlaps summed, into the rows of `dx`
/// (`[n, channels, h, w]`) under `rows`. A tile row's lower two patch rows are written (added to
/// with `accumulate`), its upper two added to the rows the tile row above wrote — in the block
/// before for a block's first tile row, so the blocks of an image must run in order on one
/// thread, as [`batch_blocks`]' do here.
struct InputAdjoint<'a> {
    dv: &'a [f32],
    channels: usize,
    h: usize,
    w: usize,
    rows: &'a [Rows],
    bs: usize,
    dx: &'a mut [f32],
    accumulate: bool,
}

impl Kernel for InputAdjoint<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self) {
        let InputAdjoint { dv, channels, h, w, rows, bs, dx, accumulate } = self;
        let (n, tw) = (S::N, w.div_ceil(2));
        let first_tile = first_tiles(rows, tw);
        // Per patch row and column, the tiles' values at index tile + 1 (index 0: the tile left
        // of the plane, zero).
        let sl = tw.next_multiple_of(n) + 2;
        let mut cols = take_scratch(16 * sl);
        cols.fill(0.0);
        let zero = S::splat(0.0);
        for ci in 0..channels {
            let dv_rows: [&[f32]; 16] = std::array::from_fn(|xi| &dv[(ci * 16 + xi) * bs..][..bs]);
            for (seg, &first) in rows.iter().zip(&first_tile) {
                let plane = &mut dx[(seg.image * channels + ci) * h * w..][..h * w];
                for r in 0..seg.rows {
                    let ty = seg.ty0 + r;
                    for tx in (0..tw).step_by(n) {
                        let col = first + r * tw + tx;
                        let q: [S; 16] = std::array::from_fn(|xi| S::load(&dv_rows[xi][col..]));
                        // B q Bᵀ: Bᵀ's columns give the patch rows (and then columns) as
                        // [q0, q1 − q2 + q3, q1 + q2 − q0, −q3].
                        let bt = |a: S, b: S, c: S, d: S| [a, b - c + d, b + c - a, zero - d];
                        let by_col: [[S; 4]; 4] =
                            std::array::from_fn(|s| bt(q[s], q[4 + s], q[8 + s], q[12 + s]));
                        for k in 0..4 {
                            let patch_row = bt(by_col[0][k], by_col[1][k], by_col[2][k], by_col[3][k]);
                            for (s, val) in patch_row.into_iter().enumerate() {
                                val.store(&mut cols[(4 * k + s) * sl + tx + 1..]);
                            }
                        }
                    }
                    // Patch row k lands on plane row 2ty − 1 + k; rows 2ty − 1 and 2ty were
                    // written by the tile row above (or the block before): added to. Patch column
                    // s of tile t lands on column 2t − 1 + s: even column 2t sums s = 1 of tile t
                    // and s = 3 of tile t − 1, odd column 2t + 1 sums s = 2 of tile t and s = 0 of
                    // tile t + 1.
                    for k in 0..4 {
                        let Some(y) = (2 * ty + k).checked_sub(1).filter(|&y| y < h) else { continue };
                        let add = accumulate || (k < 2 && ty > 0);
                        // `s = 0` of the tile right of the plane (read for column 2tw − 1) holds
                        // a spare lane of ∂L/∂V: zero.
                        cols[4 * k * sl + tw + 1] = 0.0;
                        let c = |s: usize| &cols[(4 * k + s) * sl..][..sl];
                        let row = &mut plane[y * w..][..w];
                        for tx in (0..tw).step_by(n) {
                            let even = S::load(&c(1)[tx + 1..]) + S::load(&c(3)[tx..]);
                            let odd = S::load(&c(2)[tx + 1..]) + S::load(&c(0)[tx + 2..]);
                            let halves = [S::zip_lo(even, odd), S::zip_hi(even, odd)];
                            let ox = 2 * tx;
                            if ox + 2 * n <= w {
                                for (j, mut val) in halves.into_iter().enumerate() {
                                    if add {
                                        val = val + S::load(&row[ox + j * n..]);
                                    }
                                    val.store(&mut row[ox + j * n..]);
                                }
                            } else {
                                let mut vals = [0f32; 2 * SPARE];
                                halves[0].store(&mut vals);
                                halves[1].store(&mut vals[n..]);
                                for (d, &v) in row[ox..].iter_mut().zip(&vals[..(w - ox).min(2 * n)]) {
                                    match add {
                                        true => *d += v,
                                        false => *d = v,
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        give_scratch(cols);
    }
}

/// `∂L/∂g = Gᵀ (∂L/∂U) G` for every kernel: `du` `[16][out_ch][in_ch]` (from
/// [`Winograd3x3::backward_images`]) → `dw` `[out_ch][in_ch][3][3]`, overwritten.
pub fn weights_from_transformed(du: &[f32], out_ch: usize, in_ch: usize, dw: &mut [f32]) {
    let (oc, ic) = (out_ch, in_ch);
    assert!(du.len() >= 16 * oc * ic && dw.len() >= 9 * oc * ic, "gradient buffers");
    // Gᵀ applied to a column (a0..a3) of a 4×4, G = [[1,0,0], [½,½,½], [½,−½,½], [0,0,1]].
    let gt = |a: [f32; 4]| [a[0] + 0.5 * (a[1] + a[2]), 0.5 * (a[1] - a[2]), 0.5 * (a[1] + a[2]) + a[3]];
    for o in 0..oc {
        for i in 0..ic {
            let d = |a: usize, b: usize| du[((4 * a + b) * oc + o) * ic + i];
            // Gᵀ dU (3×4), then (Gᵀ dU) G (3×3) row by row.
            let cols: [[f32; 3]; 4] = std::array::from_fn(|b| gt([d(0, b), d(1, b), d(2, b), d(3, b)]));
            let out = &mut dw[(o * ic + i) * 9..][..9];
            for j in 0..3 {
                out[3 * j..3 * j + 3].copy_from_slice(&gt([cols[0][j], cols[1][j], cols[2][j], cols[3][j]]));
            }
        }
    }
}

/// How one image's Winograd conv is divided among threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// One thread.
    Serial,
    /// Blocks of tile rows on this many threads, each block whole on one thread: one parallel
    /// section per conv.
    Blocks(usize),
    /// Each block's channels, products and output planes among the threads: three parallel
    /// sections per block, but the transformed weights are read once per block, not per thread.
    Within,
}

impl Split {
    /// The division for a conv of this size on `threads` free threads.
    pub(crate) fn for_layer(
        out_ch: usize,
        in_ch: usize,
        (h, w): (usize, usize),
        tile: Tile,
        threads: usize,
    ) -> Split {
        let m = tile.m();
        let (th, tiles) = (h.div_ceil(m), h.div_ceil(m) * w.div_ceil(m));
        let u = tile.xis() * out_ch * in_ch;
        // Blocks even when narrow, in a team's pass too: splitting each block's three steps
        // among the threads instead moved its V and M between the cores at every step
        // (ResNet-20 in the browser on 2 threads: 2.12 ms that way, 1.58 in narrow blocks; 2.32
        // on 1).
        match Threads::for_conv(u * tiles, u, threads) {
            Threads::One => Split::Serial,
            Threads::Parts(n) if th >= n && tiles / n >= MIN_SHARE_TILES => Split::Blocks(n),
            // Blocks big enough that reading U once per block costs little beside them.
            Threads::Products(n) if th >= n && tiles / n >= MIN_BLOCK_TILES => Split::Blocks(n),
            _ => Split::Within,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::with_width_limit;

    /// Direct 3×3 convolution, padding 1, with the epilogue: the reference every split must match.
    fn direct(
        x: &[f32],
        wt: &[f32],
        (oc, ic, h, w): (usize, usize, usize, usize),
        epi: &Epilogue,
    ) -> Vec<f32> {
        let mut out = vec![0f32; oc * h * w];
        for o in 0..oc {
            for y in 0..h {
                for xx in 0..w {
                    let mut s = epi.bias.map_or(0.0, |b| b[o]) as f64;
                    for i in 0..ic {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (sy, sx) = ((y + ky).wrapping_sub(1), (xx + kx).wrapping_sub(1));
                                if sy < h && sx < w {
                                    s += (x[(i * h + sy) * w + sx] * wt[((o * ic + i) * 3 + ky) * 3 + kx])
                                        as f64;
                                }
                            }
                        }
                    }
                    let p = (o * h + y) * w + xx;
                    let mut v = s as f32 + epi.residual.map_or(0.0, |r| r[p]);
                    if epi.relu {
                        v = v.max(0.0);
                    }
                    out[p] = v;
                }
            }
        }
        out
    }

    /// The largest difference from `want`, relative to its largest magnitude (at least 1).
    fn off(want: &[f32], got: &[f32]) -> f32 {
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
    }

    /// How close each tile stays to direct convolution (relative to the output's scale):
    /// F(4×4)'s transforms multiply by up to 8 and its weights by sixths.
    fn tolerance(tile: Tile) -> f32 {
        match tile {
            Tile::F2 => 2e-6,
            Tile::F4 => 2e-5,
        }
    }

    /// Every split gives the direct result, with either tile, on planes with edge tiles, odd
    /// heights, a block per tile row, and more threads than tile rows.
    #[test]
    fn every_split_matches_direct() {
        let mut rng = crate::rng::Rng::new(7);
        for (oc, ic, h, w) in [(8, 5, 9, 7), (16, 16, 32, 32), (4, 3, 1, 1), (6, 4, 5, 13), (40, 24, 12, 11)]
        {
            let x: Vec<f32> = (0..ic * h * w).map(|_| rng.normal()).collect();
            let wt: Vec<f32> = (0..oc * ic * 9).map(|_| rng.normal()).collect();
            let bias: Vec<f32> = (0..oc).map(|_| rng.normal()).collect();
            let res: Vec<f32> = (0..oc * h * w).map(|_| rng.normal()).collect();
            let epi = Epilogue { bias: Some(&bias), residual: Some(&res), relu: true };
            let want = direct(&x, &wt, (oc, ic, h, w), &epi);
            let splits =
                [Split::Serial, Split::Within, Split::Blocks(2), Split::Blocks(3), Split::Blocks(64)];
            for (tile, split) in [Tile::F2, Tile::F4].into_iter().flat_map(|t| splits.map(|s| (t, s))) {
                let wino = Winograd3x3::with_tile(&wt, oc, ic, tile);
                // Splits on other threads run at the widest width; on this one, at each.
                for width in Width::available() {
                    let mut got = vec![f32::NAN; oc * h * w];
                    with_width_limit(width, || wino.forward_split(&x, h, w, &mut got, &epi, split));
                    let worst = off(&want, &got);
                    assert!(
                        worst < tolerance(tile),
                        "{tile:?} {split:?} {width:?} on {oc}×{ic}×{h}×{w}: off by {worst}"
                    );
                }
            }
        }
    }

    /// Several images at once, blocks of whole images (small planes) or of tile rows (large
    /// ones), odd sizes, with the epilogue (with and without its ReLU).
    #[test]
    fn images_match_direct_image_by_image() {
        let mut rng = crate::rng::Rng::new(11);
        for (n, oc, ic, h, w) in [
            (5, 64, 64, 8, 8),
            (3, 8, 5, 9, 7),
            (2, 6, 4, 40, 38),
            (2, 4, 3, 13, 14),
            (7, 16, 3, 2, 2),
            (1, 4, 4, 1, 1),
        ] {
            let (per_x, per_y) = (ic * h * w, oc * h * w);
            let x: Vec<f32> = (0..n * per_x).map(|_| rng.normal()).collect();
            let wt: Vec<f32> = (0..oc * ic * 9).map(|_| rng.normal()).collect();
            let bias: Vec<f32> = (0..oc).map(|_| rng.normal()).collect();
            let res: Vec<f32> = (0..n * per_y).map(|_| rng.normal()).collect();
            for tile in [Tile::F2, Tile::F4] {
                let wino = Winograd3x3::with_tile(&wt, oc, ic, tile);
                for (relu, width) in Width::available().into_iter().flat_map(|w| [(false, w), (true, w)]) {
                    let epi = Epilogue { bias: Some(&bias), residual: Some(&res), relu };
                    let mut got = vec![f32::NAN; n * per_y];
                    with_width_limit(width, || wino.forward_images(&x, n, (h, w), &mut got, &epi));
                    for i in 0..n {
                        let one = Epilogue { residual: Some(&res[i * per_y..][..per_y]), ..epi };
                        let want = direct(&x[i * per_x..][..per_x], &wt, (oc, ic, h, w), &one);
                        let worst = off(&want, &got[i * per_y..][..per_y]);
                        assert!(
                            worst < tolerance(tile),
                            "{tile:?} {width:?} {n}×{oc}×{ic}×{h}×{w}, image {i}: off by {worst}"
                        );
                    }
                }
            }
        }
    }

    /// The weight gradient through the Winograd domain is the direct one,
    /// `Σ dy[n, o, y, x] · x[n, i, y + ky − 1, x + kx − 1]`, summed into what `du` held.
    #[test]
    fn backward_matches_direct() {
        let mut rng = crate::rng::Rng::new(5);
        // Several small images per block, whole images, and row blocks (64 channels: 64 tiles a
        // block) with odd sizes, so that blocks share plane rows.
        for (n, oc, ic, h, w) in [
            (6, 64, 32, 8, 8),
            (3, 8, 5, 9, 7),
            (2, 5, 3, 11, 15),
            (2, 4, 6, 40, 36),
            (4, 3, 2, 1, 3),
            (2, 64, 48, 19, 22),
            (3, 40, 64, 13, 2),
        ] {
            let x: Vec<f32> = (0..n * ic * h * w).map(|_| rng.normal()).collect();
            let dy: Vec<f32> = (0..n * oc * h * w).map(|_| rng.normal()).collect();
            let wt: Vec<f32> = (0..oc * ic * 9).map(|_| rng.normal()).collect();
            let before: Vec<f32> = (0..x.len()).map(|_| rng.normal()).collect();
            let (mut want_dw, mut want_dx) = (vec![0f64; oc * ic * 9], vec![0f64; x.len()]);
            for b in 0..n {
                for o in 0..oc {
                    for i in 0..ic {
                        for k in 0..9 {
                            let (ky, kx) = (k / 3, k % 3);
                            for y in 0..h {
                                for xx in 0..w {
                                    let (sy, sx) = ((y + ky).wrapping_sub(1), (xx + kx).wrapping_sub(1));
                                    if sy < h && sx < w {
                                        let g = dy[((b * oc + o) * h + y) * w + xx] as f64;
                                        let at = ((b * ic + i) * h + sy) * w + sx;
                                        want_dw[(o * ic + i) * 9 + k] += g * x[at] as f64;
                                        want_dx[at] += g * wt[(o * ic + i) * 9 + k] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let wino = Winograd3x3::new(&wt, oc, ic);
            let close = |what: &str, want: &[f64], got: &[f32], base: Option<&[f32]>| {
                let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                for (j, (a, b)) in want.iter().zip(got).enumerate() {
                    let a = a + base.map_or(0.0, |s| s[j] as f64);
                    let off = ((a - *b as f64) / scale).abs();
                    assert!(off < 1e-5, "{what} {n}×{oc}×{ic}×{h}×{w}, {j}: {a} vs {b}");
                }
            };
            for width in Width::available() {
                for accumulate in [false, true] {
                    // Two halves of the batch summed into one buffer, as the training plan's
                    // shards are; dx holds garbage (NaN) where it is written, not added to.
                    let mut du = vec![0f32; 16 * oc * ic];
                    let mut dx = match accumulate {
                        true => before.clone(),
                        false => vec![f32::NAN; x.len()],
                    };
                    let half = n / 2;
                    let (px, py) = (ic * h * w, oc * h * w);
                    with_width_limit(width, || {
                        let (dx0, dx1) = dx.split_at_mut(half * px);
                        let (x, dy) =
                            ((&x[..half * px], &x[half * px..]), (&dy[..half * py], &dy[half * py..]));
                        wino.backward_images(x.0, dy.0, half, (h, w), &mut du, Some((dx0, accumulate)));
                        wino.backward_images(x.1, dy.1, n - half, (h, w), &mut du, Some((dx1, accumulate)));
                    });
                    let mut got = vec![f32::NAN; oc * ic * 9];
                    weights_from_transformed(&du, oc, ic, &mut got);
                    close(&format!("{width:?} dw"), &want_dw, &got, None);
                    close(
                        &format!("{width:?} dx {accumulate}"),
                        &want_dx,
                        &dx,
                        accumulate.then_some(&before),
                    );
                }
            }
            // Without dx: the weight gradient alone.
            let mut du = vec![0f32; 16 * oc * ic];
            wino.backward_images(&x, &dy, n, (h, w), &mut du, None);
            let mut got = vec![f32::NAN; oc * ic * 9];
            weights_from_transformed(&du, oc, ic, &mut got);
            close("dw alone", &want_dw, &got, None);
        }
    }

    #[test]
    fn small_layers_stay_on_one_thread() {
        // ResNet-20's widest layer: 16 products of 64×64 over 16 tiles, ~1M multiply-adds.
        assert_eq!(Split::for_layer(16, 16, (8, 8), Tile::F2, 2), Split::Serial);
        assert_eq!(Split::for_layer(64, 64, (8, 8), Tile::F2, 1), Split::Serial);
        assert_eq!(Split::for_layer(64, 64, (56, 56), Tile::F2, 2), Split::Blocks(2));
        assert_eq!(Split::for_layer(64, 64, (56, 56), Tile::F4, 2), Split::Blocks(2));
        // ResNet-18's last stage: 16 MiB of transformed weights over 16 tiles.
        assert_eq!(Split::for_layer(512, 512, (7, 7), Tile::F2, 2), Split::Within);
    }

    /// ResNet-20's 32×32 and 16×16 stages take F(4×4), its 8×8 one and ResNet-18's 14×14 one
    /// F(2×2); a 28×28 plane's 512-channel weights would outgrow 4 MiB.
    #[test]
    fn tiles_by_plane() {
        assert_eq!(Tile::for_plane(16, 16, (32, 32)), Tile::F4);
        assert_eq!(Tile::for_plane(32, 32, (16, 16)), Tile::F4);
        assert_eq!(Tile::for_plane(32, 32, (16, 15)), Tile::F2);
        assert_eq!(Tile::for_plane(64, 64, (8, 8)), Tile::F2);
        assert_eq!(Tile::for_plane(256, 256, (14, 14)), Tile::F2);
        assert_eq!(Tile::for_plane(512, 512, (28, 28)), Tile::F2);
    }

    /// In a team's pass (no wake-up to repay) every ResNet-20 conv splits: in blocks where each
    /// thread's holds 16 tiles or more, else each block's steps among the threads.
    #[test]
    fn a_team_splits_resnet20s_convs() {
        use crate::kernels::team::run_team;
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
            run_team(|| {
                assert_eq!(Split::for_layer(16, 16, (32, 32), Tile::F4, 2), Split::Blocks(2));
                assert_eq!(Split::for_layer(32, 32, (16, 16), Tile::F2, 2), Split::Blocks(2));
                assert_eq!(Split::for_layer(64, 64, (8, 8), Tile::F2, 2), Split::Within);
            })
        });
    }
}
