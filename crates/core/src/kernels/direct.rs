//! Direct convolution, for convs whose column matrix would be short and wide: RGB stems
//! (ResNet's 7×7, a CIFAR net's 3×3) and strided convs with few inputs per output (ResNet-20's
//! stride-2 3×3s); [`super::conv::ConvPath::of`] decides.
//! Each tile of `OCB` output channels × [`NV`] vectors of output pixels accumulates in
//! registers, reading the input where it lies: no column matrix is written and read back, and
//! no gemm packs its operands (on ResNet-20's stride-2 convs im2col + gemm took 2–3× the time
//! of onnxruntime's direct kernel).
//!
//! The input is first padded and split into its stride phases ([`Padded`]): row `r` of channel
//! `c` becomes `s` rows, phase `j` holding padded columns `j, j+s, j+2s, …`. Output column `ox`
//! at kernel column `kx` reads padded column `ox·s + kx`, which is element `ox + kx/s` of phase
//! `kx mod s`: consecutive outputs read consecutive elements, so every (channel, ky, kx) step is
//! one vector load per output vector and one broadcast weight per output channel.

use super::im2col::ConvGeometry;
use super::simd::{F32x4, Kernel, Lanes, Width};
use super::{for_chunks, give_scratch, take_scratch, Epilogue, Scratch, Threads};

/// Output channels per tile.
const OCB: usize = 4;
/// Output vectors per tile: `OCB × NV` accumulators beside `NV` input vectors and a broadcast
/// weight stay in registers (x86 and V8's wasm both have 16; 4 × 3 tiles spilled an
/// accumulator to the stack and ran at half speed).
const NV: usize = 2;
/// The input of one band of output rows is kept to about this many floats (256 KiB): every
/// output-channel tile of the band reads it again.
const BAND_INPUT_FLOATS: usize = 64 * 1024;
/// Widest vector any build runs (AVX-512): padded rows are this much longer than the widest
/// output row, so a tile's last vector may read past the row's end without leaving it.
const MAX_LANES: usize = 16;

/// A conv's weights laid out for the direct kernel: `[out_ch / OCB][in_ch][k][k][OCB]`, the
/// output channels past `out_ch` zero.
#[derive(Clone, Debug)]
pub struct DirectConv {
    out_ch: usize,
    in_ch: usize,
    k: usize,
    packed: Vec<f32>,
}

impl DirectConv {
    /// `weight`: `[out_ch, in_ch, k, k]`, row-major.
    pub fn new(weight: &[f32], out_ch: usize, in_ch: usize, k: usize) -> Self {
        let taps = in_ch * k * k;
        assert_eq!(weight.len(), out_ch * taps, "weights of a {out_ch}×{in_ch}×{k}×{k} conv");
        let blocks = out_ch.div_ceil(OCB);
        let mut packed = vec![0f32; blocks * taps * OCB];
        for (o, filter) in weight.chunks_exact(taps).enumerate() {
            let block = &mut packed[o / OCB * taps * OCB..][..taps * OCB];
            for (t, &v) in filter.iter().enumerate() {
                block[t * OCB + o % OCB] = v;
            }
        }
        DirectConv { out_ch, in_ch, k, packed }
    }

    /// One image: `x` `[in_ch, h, w]` (not empty: [`super::conv::PreparedConv::forward`] answers
    /// an empty image itself) → `out` `[out_ch, oh, ow]`, the epilogue applied, on `threads`
    /// threads (each takes some output channels and reads the input whole).
    pub(crate) fn forward(
        &self,
        x: &[f32],
        g: &ConvGeometry,
        out: &mut [f32],
        epi: &Epilogue,
        threads: Threads,
    ) {
        debug_assert_eq!((g.c, g.k), (self.in_ch, self.k));
        let plane = g.oh * g.ow;
        if plane == 0 || self.out_ch == 0 {
            return;
        }
        let width = Width::for_items(g.ow);
        let padded = Padded::new(x, g);
        let blocks = self.out_ch.div_ceil(OCB);
        let parts = match threads {
            Threads::One => 1,
            Threads::Parts(n) | Threads::Products(n) => n.min(blocks),
        };
        let per = blocks.div_ceil(parts);
        for_chunks(out, per * OCB * plane, parts > 1, |part, out| {
            let first = part * per;
            let blocks = first..(first + per).min(blocks);
            width.run(Tiles { conv: self, g, input: &padded, blocks, out, epi });
        });
        padded.give_back();
    }
}

/// The input of one image, padded and split into stride phases: `[c][h + 2·pad][s][pw]`,
/// zeros around the image.
struct Padded {
    data: Scratch,
    /// Elements of one phase row: enough for every padded column and for the widest vector
    /// at the end of an output row.
    pw: usize,
    /// Padded rows per channel.
    hp: usize,
}

impl Padded {
    fn new(x: &[f32], g: &ConvGeometry) -> Self {
        let (s, p) = (g.stride, g.pad);
        let hp = g.h + 2 * p;
        let pw = (g.w + 2 * p).div_ceil(s).max(g.ow.next_multiple_of(MAX_LANES) + (g.k - 1) / s);
        let mut data = take_scratch(g.c * hp * s * pw);
        data.fill(0.0);
        for (c, channel) in x.chunks_exact(g.h * g.w).enumerate().take(g.c) {
            for (iy, row) in channel.chunks_exact(g.w).enumerate() {
                let dst = &mut data[(c * hp + iy + p) * s * pw..][..s * pw];
                if s == 1 {
                    dst[p..p + g.w].copy_from_slice(row);
                    continue;
                }
                if s == 2 {
                    split_pairs(row, p, dst.split_at_mut(pw));
                    continue;
                }
                // Phase `ph` holds padded columns `ph + s·i`, i.e. image columns `ph + s·i − p`.
                for (ph, phase) in dst.chunks_exact_mut(pw).enumerate() {
                    let i0 = p.saturating_sub(ph).div_ceil(s);
                    let Some(row) = row.get(i0 * s + ph - p..) else { continue };
                    for (d, &v) in phase[i0..].iter_mut().zip(row.iter().step_by(s)) {
                        *d = v;
                    }
                }
            }
        }
        Padded { data, pw, hp }
    }

    fn give_back(self) {
        give_scratch(self.data);
    }
}

/// Stride 2: image column `j = 2m + r` (of `row`, padded by `p` columns on the left) is padded column `j + p`, element `m + (r + p)/2` of
/// phase `(r + p) mod 2`. Four pairs at a time, split by one shuffle each way.
pub(crate) fn split_pairs(row: &[f32], p: usize, (first, second): (&mut [f32], &mut [f32])) {
    let (evens, odds) = if p.is_multiple_of(2) { (first, second) } else { (second, first) };
    let (evens, odds) = (&mut evens[p / 2..], &mut odds[p.div_ceil(2)..]);
    let mut m = 0;
    for pairs in row.chunks_exact(8) {
        let (a, b) = (F32x4::load(pairs), F32x4::load(&pairs[4..]));
        F32x4::evens(a, b).store(&mut evens[m..]);
        F32x4::odds(a, b).store(&mut odds[m..]);
        m += 4;
    }
    for (j, &v) in row.iter().enumerate().skip(2 * m) {
        match j % 2 {
            0 => evens[j / 2] = v,
            _ => odds[j / 2] = v,
        }
    }
}

/// The tiles of some output-channel blocks over the whole output plane.
struct Tiles<'a> {
    conv: &'a DirectConv,
    g: &'a ConvGeometry,
    input: &'a Padded,
    blocks: std::ops::Range<usize>,
    /// The output channels of `blocks`, `[channels, plane]`.
    out: &'a mut [f32],
    epi: &'a Epilogue<'a>,
}

impl Kernel for Tiles<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Lanes>(self) {
        let Tiles { conv, g, input, blocks, out, epi } = self;
        let (s, k, pw) = (g.stride, g.k, input.pw);
        let plane = g.oh * g.ow;
        // Where each output vector's inputs start (channel 0, ky = kx = 0), and where it goes.
        let per_row = g.ow.div_ceil(S::N);
        let vectors: Vec<(usize, usize)> = (0..g.oh)
            .flat_map(|oy| (0..per_row).map(move |v| (oy, v * S::N)))
            .map(|(oy, ox)| (oy * s * s * pw + ox, oy * g.ow + ox))
            .collect();
        // Offsets of the k·k taps within a channel, and of the channels.
        let taps: Vec<usize> =
            (0..k).flat_map(|ky| (0..k).map(move |kx| ky * s * pw + (kx % s) * pw + kx / s)).collect();
        let channel = input.hp * s * pw;
        let band_rows = (BAND_INPUT_FLOATS / (g.c * s * s * pw).max(1)).clamp(1, g.oh);
        let taps_len = g.c * k * k;
        for band in vectors.chunks(band_rows * per_row) {
            for block in blocks.clone() {
                let weights = &conv.packed[block * taps_len * OCB..][..taps_len * OCB];
                let o0 = block * OCB;
                let local = o0 - blocks.start * OCB;
                let channels = OCB.min(conv.out_ch - o0);
                let mut group = band.chunks_exact(NV);
                for tile in &mut group {
                    let acc = tile_sums::<S, NV>(
                        &input.data,
                        weights,
                        std::array::from_fn(|v| tile[v].0),
                        &taps,
                        channel,
                        g.c,
                    );
                    store(&acc, tile, out, local, o0, channels, plane, g.ow, epi);
                }
                for one in group.remainder().chunks(1) {
                    let acc = tile_sums::<S, 1>(&input.data, weights, [one[0].0], &taps, channel, g.c);
                    store(&acc, one, out, local, o0, channels, plane, g.ow, epi);
                }
            }
        }
    }
}

/// The sums of one tile: `acc[q][v]` = output channel `q` of the block at output vector `v`
/// (whose inputs start at `starts[v]`), before the epilogue.
#[inline(always)]
fn tile_sums<S: Lanes, const V: usize>(
    input: &[f32],
    weights: &[f32],
    starts: [usize; V],
    taps: &[usize],
    channel: usize,
    channels: usize,
) -> [[S; V]; OCB] {
    // Every load below lies in `input` (checked here once rather than in the innermost loop,
    // where the checks cost as much as the arithmetic).
    let last_tap = taps.iter().max().copied().unwrap_or(0);
    let last_start = starts.iter().max().copied().unwrap_or(0);
    assert!(channels == 0 || (channels - 1) * channel + last_tap + last_start + S::N <= input.len());
    assert!(weights.len() >= channels * taps.len() * OCB);
    let mut acc = [[S::splat(0.0); V]; OCB];
    let mut w = 0;
    for c in 0..channels {
        let base = c * channel;
        for &t in taps {
            // SAFETY: within `input` (the assertion above bounds every index taken here).
            let xs: [S; V] = std::array::from_fn(|v| {
                let at = base + t + starts[v];
                S::load(unsafe { input.get_unchecked(at..at + S::N) })
            });
            // SAFETY: `w + OCB <= channels · taps · OCB <= weights.len()`.
            let ws: &[f32] = unsafe { weights.get_unchecked(w..w + OCB) };
            for q in 0..OCB {
                let wq = S::splat(ws[q]);
                for v in 0..V {
                    acc[q][v] = xs[v].mul_add(wq, acc[q][v]);
                }
            }
            w += OCB;
        }
    }
    acc
}

/// Writes a tile's sums to `out` (output channels from `local`, global index `o0` for the
/// bias and the residual) through the epilogue; a vector past the row's end writes its first
/// lanes only.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn store<S: Lanes, const V: usize>(
    acc: &[[S; V]; OCB],
    tile: &[(usize, usize)],
    out: &mut [f32],
    local: usize,
    o0: usize,
    channels: usize,
    plane: usize,
    ow: usize,
    epi: &Epilogue,
) {
    let mut lanes = [0f32; MAX_LANES];
    for (q, sums) in acc.iter().enumerate().take(channels) {
        let row = &mut out[(local + q) * plane..][..plane];
        let bias = S::splat(epi.bias.map_or(0.0, |b| b[o0 + q]));
        for (&sum, &(_, at)) in sums.iter().zip(tile) {
            let n = S::N.min(ow - at % ow);
            let mut y = sum + bias;
            if let Some(r) = epi.residual {
                let r = &r[(o0 + q) * plane + at..][..n];
                y = y + if n == S::N {
                    S::load(r)
                } else {
                    lanes[..n].copy_from_slice(r);
                    S::load(&lanes)
                };
            }
            if epi.relu {
                y = y.relu();
            }
            if n == S::N {
                y.store(&mut row[at..]);
            } else {
                y.store(&mut lanes);
                row[at..at + n].copy_from_slice(&lanes[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output channels split among threads give what one thread gives, whatever the split
    /// (rayon runs the parts on however many threads it has).
    #[test]
    fn parts_on_threads_match_one_thread() {
        let (c, h, w, oc, k, s, p) = (3, 17, 15, 11, 5, 2, 2);
        let g = ConvGeometry::new(c, (h, w), k, s, p).expect("valid geometry");
        let weight: Vec<f32> = (0..oc * c * k * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let bias: Vec<f32> = (0..oc).map(|o| o as f32 / 10.0).collect();
        let epi = Epilogue { bias: Some(&bias), residual: None, relu: true };
        let conv = DirectConv::new(&weight, oc, c, k);
        let plane = g.oh * g.ow;
        let mut want = vec![f32::NAN; oc * plane];
        conv.forward(&x, &g, &mut want, &epi, Threads::One);
        assert!(want.iter().all(|v| v.is_finite()), "every output written");
        for n in [2, 3, 5] {
            let mut got = vec![f32::NAN; oc * plane];
            conv.forward(&x, &g, &mut got, &epi, Threads::Parts(n));
            assert_eq!(got, want, "{n} parts");
        }
    }
}
