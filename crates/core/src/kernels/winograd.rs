//! 3×3, stride 1, padding 1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, 2016): each 2×2 output tile costs 16 multiplies per channel pair instead of 36, so the
//! 3×3 convs that make up most of a ResNet's arithmetic need 2.25× fewer multiply-adds.
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per tile; summed over input channels, the element-wise
//! product becomes 16 independent matrix products `M[ξ] = U[ξ]·V[ξ]` (`U`: out × in channels,
//! `V`: in channels × tiles), done by gemm. Tiles go in blocks, so that `V` and `M` of a block
//! stay in cache between the transforms and the products. F(2×2, 3×3)'s transforms only add,
//! subtract and halve: its results stay within ~1e-6 (relative) of direct convolution.

use super::gemm::{matmul_one_thread, Mat};
use super::simd::F32x4;
use super::{
    bands_of, for_chunks, for_each_mut, free_threads, give_scratch, take_scratch, Epilogue, Threads,
};

/// A 3×3 kernel's weights, transformed once: `u[ξ][out][in]`, ξ = 4·row + col of the 4×4 tile.
#[derive(Clone, Debug)]
pub struct Winograd3x3 {
    out_ch: usize,
    in_ch: usize,
    u: Vec<f32>,
}

/// `V` and `M` of one block in about this many floats (2 × 256 KiB): L2-sized.
const BLOCK_FLOATS: usize = 64 * 1024;
/// ...but at least this many tiles, so that each product is wide enough for gemm to run well.
const MIN_BLOCK_TILES: usize = 64;

impl Winograd3x3 {
    /// `weight`: `[out_ch, in_ch, 3, 3]`, row-major.
    pub fn new(weight: &[f32], out_ch: usize, in_ch: usize) -> Self {
        let mut w = Winograd3x3 { out_ch: 0, in_ch: 0, u: vec![] };
        w.set_weights(weight, out_ch, in_ch);
        w
    }

    /// Transforms other weights (another shape too) in place, keeping the allocation: the
    /// training plan refreshes one of these after every update.
    pub fn set_weights(&mut self, weight: &[f32], out_ch: usize, in_ch: usize) {
        assert_eq!(weight.len(), out_ch * in_ch * 9, "weight shape");
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
        (self.out_ch, self.in_ch) = (out_ch, in_ch);
    }

    /// One image: `x` `[in_ch, h, w]` → `out` `[out_ch, h, w]`, with the epilogue applied, on
    /// as many threads as pay for this layer's size ([`Split::for_layer`]).
    pub fn forward(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], epi: &Epilogue) {
        let split = Split::for_layer(self.out_ch, self.in_ch, h, w, free_threads());
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
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let mut rows_per_block = ((BLOCK_FLOATS / (16 * ic.max(oc))).max(MIN_BLOCK_TILES) / tw).clamp(1, th);
        if let Split::Blocks(threads) = split {
            // At least one block per thread.
            rows_per_block = rows_per_block.min(th.div_ceil(threads));
        }
        let mut pieces = bands_of(out, h * w, 2 * rows_per_block * w);
        let inner = split == Split::Within;
        for_each_mut(&mut pieces, matches!(split, Split::Blocks(_)), |b, planes| {
            let ty0 = b * rows_per_block;
            self.block(x, (h, w), (ty0, rows_per_block.min(th - ty0)), planes, epi, inner);
        });
    }

    /// Tile rows `ty0..ty0 + rows` of one image: the input transform, the 16 products, the
    /// output transform into `planes` (each output plane's rows from `2·ty0`). `par` splits each
    /// of the three among threads: channels, products and output planes.
    fn block(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        (ty0, rows): (usize, usize),
        planes: &mut [&mut [f32]],
        epi: &Epilogue,
        par: bool,
    ) {
        let (oc, ic) = (self.out_ch, self.in_ch);
        let tw = w.div_ceil(2);
        let tw4 = tw.next_multiple_of(4);
        let nt = rows * tw;
        // Row stride of V and M: the block's tiles, plus room for the spare lanes of its last group.
        let bs = nt + 4;
        // V: `[in_ch][16][bs]`, M: `[16][out_ch][bs]`. Every element of V that gemm reads is
        // written first; M's spare columns feed only spare lanes, which are never stored:
        // neither needs zeroing.
        let mut v = take_scratch(16 * ic * bs);
        let mut m = take_scratch(16 * oc * bs);
        // Bᵀ d of one tile row, 4 rows of padded width: column 0 is the left padding, and
        // everything right of the plane stays zero (the right padding and spare lanes).
        let pw = 2 * tw4 + 4;
        for_chunks(&mut v, 16 * bs, par, |ci, vc| {
            let mut scratch = take_scratch(4 * pw + w);
            scratch.fill(0.0);
            let (t, zeros) = scratch.split_at_mut(4 * pw);
            let zeros = &*zeros;
            let plane = &x[ci * h * w..][..h * w];
            for r in 0..rows {
                let row = |k: usize| match (2 * (ty0 + r) + k).checked_sub(1) {
                    Some(y) if y < h => &plane[y * w..][..w],
                    _ => zeros,
                };
                let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
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
                for (i, ti) in t.chunks_exact(pw).enumerate() {
                    for tx in (0..tw).step_by(4) {
                        let (a, b) = (F32x4::load(&ti[2 * tx..]), F32x4::load(&ti[2 * tx + 4..]));
                        let (c, d) = (F32x4::load(&ti[2 * tx + 2..]), F32x4::load(&ti[2 * tx + 6..]));
                        let (e0, e1) = (F32x4::evens(a, b), F32x4::odds(a, b));
                        let (e2, e3) = (F32x4::evens(c, d), F32x4::odds(c, d));
                        let at = |s: usize| (i * 4 + s) * bs + r * tw + tx;
                        (e0 - e2).store(&mut vc[at(0)..]);
                        (e1 + e2).store(&mut vc[at(1)..]);
                        (e2 - e1).store(&mut vc[at(2)..]);
                        (e1 - e3).store(&mut vc[at(3)..]);
                    }
                }
            }
            give_scratch(scratch);
        });
        let vs = &v;
        for_chunks(&mut m, oc * bs, par, |xi, mc| {
            matmul_one_thread(
                Mat { data: &self.u[xi * oc * ic..][..oc * ic], rows: oc, cols: ic, stride: ic },
                Mat { data: &vs[xi * bs..], rows: ic, cols: nt, stride: 16 * bs },
                mc,
                bs,
            );
        });
        let ms = &m;
        for_each_mut(planes, par, |o, dst| {
            let bias = F32x4::splat(epi.bias.map_or(0.0, |b| b[o]));
            let res = epi.residual.map(|r| &r[o * h * w + 2 * ty0 * w..][..dst.len()]);
            // Output rows of this block (the last block of an odd-height plane has one fewer).
            let out_rows = dst.len() / w;
            for r in 0..rows {
                for tx in (0..tw).step_by(4) {
                    let q: [F32x4; 16] =
                        std::array::from_fn(|xi| F32x4::load(&ms[(xi * oc + o) * bs + r * tw + tx..]));
                    // Aᵀ q A with Aᵀ = [[1,1,1,0], [0,1,−1,−1]]: rows first, then columns.
                    let s: [F32x4; 8] = std::array::from_fn(|k| match k {
                        0..4 => q[k] + q[4 + k] + q[8 + k],
                        _ => q[k] - q[4 + k] - q[8 + k],
                    });
                    let y =
                        [(s[0] + s[1] + s[2], s[1] - s[2] - s[3]), (s[4] + s[5] + s[6], s[5] - s[6] - s[7])];
                    for (dy, (left, right)) in y.into_iter().enumerate() {
                        let oy = 2 * r + dy;
                        if oy >= out_rows {
                            break;
                        }
                        // Output columns 2tx..2tx+8 of row oy.
                        let halves = [F32x4::zip_lo(left, right) + bias, F32x4::zip_hi(left, right) + bias];
                        let (ox, p) = (2 * tx, oy * w + 2 * tx);
                        if ox + 8 <= w {
                            for (k, mut val) in halves.into_iter().enumerate() {
                                if let Some(res) = res {
                                    val = val + F32x4::load(&res[p + 4 * k..]);
                                }
                                if epi.relu {
                                    val = val.relu();
                                }
                                val.store(&mut dst[p + 4 * k..]);
                            }
                        } else {
                            let vals = halves.map(F32x4::to_array);
                            for k in 0..(w - ox).min(8) {
                                let mut val = vals[k / 4][k % 4] + res.map_or(0.0, |r| r[p + k]);
                                if epi.relu {
                                    val = val.max(0.0);
                                }
                                dst[p + k] = val;
                            }
                        }
                    }
                }
            }
        });
        give_scratch(v);
        give_scratch(m);
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
    pub(crate) fn for_layer(out_ch: usize, in_ch: usize, h: usize, w: usize, threads: usize) -> Split {
        let (th, tiles) = (h.div_ceil(2), h.div_ceil(2) * w.div_ceil(2));
        let u = 16 * out_ch * in_ch;
        match Threads::for_conv(u * tiles, u, threads) {
            Threads::One => Split::Serial,
            Threads::Parts(n) if th >= n => Split::Blocks(n),
            // Blocks big enough that reading U once per block costs little beside them.
            Threads::Products(n) if th >= n && tiles / n >= MIN_BLOCK_TILES => Split::Blocks(n),
            _ => Split::Within,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Every split gives the direct result, on planes with edge tiles, odd heights, a block per
    /// tile row, and more threads than tile rows.
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
            let wino = Winograd3x3::new(&wt, oc, ic);
            for split in [Split::Serial, Split::Within, Split::Blocks(2), Split::Blocks(3), Split::Blocks(64)]
            {
                let mut got = vec![f32::NAN; oc * h * w];
                wino.forward_split(&x, h, w, &mut got, &epi, split);
                let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-4, "{split:?} on {oc}×{ic}×{h}×{w}: off by {worst}");
            }
        }
    }

    #[test]
    fn small_layers_stay_on_one_thread() {
        // ResNet-20's widest layer: 16 products of 64×64 over 16 tiles, ~1M multiply-adds.
        assert_eq!(Split::for_layer(16, 16, 8, 8, 2), Split::Serial);
        assert_eq!(Split::for_layer(64, 64, 8, 8, 1), Split::Serial);
        assert_eq!(Split::for_layer(64, 64, 56, 56, 2), Split::Blocks(2));
        // ResNet-18's last stage: 16 MiB of transformed weights over 16 tiles.
        assert_eq!(Split::for_layer(512, 512, 7, 7, 2), Split::Within);
    }
}
