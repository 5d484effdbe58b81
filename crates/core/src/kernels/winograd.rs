//! 3×3, stride 1, padding 1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, 2016): each 2×2 output tile costs 16 multiplies per channel pair instead of 36, so the
//! 3×3 convs that make up most of a ResNet's arithmetic need 2.25× fewer multiply-adds.
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per tile; summed over input channels, the element-wise
//! product becomes 16 independent matrix products `M[ξ] = U[ξ]·V[ξ]` (`U`: out × in channels,
//! `V`: in channels × tiles), done by gemm. Tiles go in blocks, so that `V` and `M` of a block
//! stay in cache between the transforms and the products. F(2×2, 3×3)'s transforms only add,
//! subtract and halve: its results stay within ~1e-6 (relative) of direct convolution.

use super::gemm::{matmul, Mat};
use super::simd::F32x4;
use super::{for_chunks, give_scratch, take_scratch, worth_parallel, Epilogue};

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

    /// One image: `x` `[in_ch, h, w]` → `out` `[out_ch, h, w]`, with the epilogue applied.
    /// Tiles go in blocks of whole tile rows; both transforms handle four tiles of a row at once.
    pub fn forward(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], epi: &Epilogue) {
        let (oc, ic) = (self.out_ch, self.in_ch);
        assert_eq!(x.len(), ic * h * w, "input shape");
        assert_eq!(out.len(), oc * h * w, "output shape");
        assert!(epi.bias.is_none_or(|b| b.len() == oc) && epi.residual.is_none_or(|r| r.len() == out.len()));
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let tw4 = tw.next_multiple_of(4);
        let rows_per_block = ((BLOCK_FLOATS / (16 * ic.max(oc))).max(MIN_BLOCK_TILES) / tw).clamp(1, th);
        // Row stride of V and M: a block's tiles, plus room for the spare lanes of its last group.
        let bs = rows_per_block * tw + 4;
        // V: `[in_ch][16][bs]`, M: `[16][out_ch][bs]`. Every element of V that gemm reads is
        // written first; M's spare columns feed only spare lanes, which are never stored:
        // neither needs zeroing.
        let mut v = take_scratch(16 * ic * bs);
        let mut m = take_scratch(16 * oc * bs);
        // Natively with several threads: channels, products and output planes split among them.
        let par = worth_parallel(16 * ic * oc * bs);
        // Bᵀ d of one tile row, 4 rows of padded width: column 0 is the left padding, and
        // everything right of the plane stays zero (the right padding and spare lanes).
        let pw = 2 * tw4 + 4;
        for ty0 in (0..th).step_by(rows_per_block) {
            let rows = rows_per_block.min(th - ty0);
            let nt = rows * tw;
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
            let v = &v;
            for_chunks(&mut m, oc * bs, par, |xi, mc| {
                matmul(
                    Mat { data: &self.u[xi * oc * ic..][..oc * ic], rows: oc, cols: ic, stride: ic },
                    Mat { data: &v[xi * bs..], rows: ic, cols: nt, stride: 16 * bs },
                    mc,
                    bs,
                );
            });
            let m = &m;
            for_chunks(out, h * w, par, |o, dst| {
                let bias = F32x4::splat(epi.bias.map_or(0.0, |b| b[o]));
                let res = epi.residual.map(|r| &r[o * h * w..][..h * w]);
                for r in 0..rows {
                    let ty = ty0 + r;
                    for tx in (0..tw).step_by(4) {
                        let q: [F32x4; 16] =
                            std::array::from_fn(|xi| F32x4::load(&m[(xi * oc + o) * bs + r * tw + tx..]));
                        // Aᵀ q A with Aᵀ = [[1,1,1,0], [0,1,−1,−1]]: rows first, then columns.
                        let s: [F32x4; 8] = std::array::from_fn(|k| match k {
                            0..4 => q[k] + q[4 + k] + q[8 + k],
                            _ => q[k] - q[4 + k] - q[8 + k],
                        });
                        let y = [
                            (s[0] + s[1] + s[2], s[1] - s[2] - s[3]),
                            (s[4] + s[5] + s[6], s[5] - s[6] - s[7]),
                        ];
                        for (dy, (left, right)) in y.into_iter().enumerate() {
                            let oy = 2 * ty + dy;
                            if oy >= h {
                                break;
                            }
                            // Output columns 2tx..2tx+8 of row oy.
                            let halves =
                                [F32x4::zip_lo(left, right) + bias, F32x4::zip_hi(left, right) + bias];
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
        }
        give_scratch(v);
        give_scratch(m);
    }
}
