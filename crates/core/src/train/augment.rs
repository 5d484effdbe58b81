//! The paper's CIFAR augmentation on compact u8 batches: zero padding + random crop, random
//! horizontal flip. Seeded per batch, so a resumed run sees the same crops as an unbroken one.

pub use crate::rng::Rng;

/// Geometry of stored images (`H×W×C` u8 each, interleaved, as decoded) and of the crops cut
/// from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// Output size (the model's input).
    pub crop_h: usize,
    pub crop_w: usize,
    /// Zero padding on every side before cropping (4 for CIFAR, as in the paper).
    pub pad: usize,
    pub flip: bool,
}

impl Augment {
    /// The paper's CIFAR-10 recipe (4-pixel zero padding, random crop, random horizontal flip)
    /// for stored `size×size×channels` images that are already the model's input size.
    pub fn paper(size: usize, channels: usize) -> Self {
        Augment { height: size, width: size, channels, crop_h: size, crop_w: size, pad: 4, flip: true }
    }

    pub fn in_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn out_len(&self) -> usize {
        self.crop_h * self.crop_w * self.channels
    }

    /// Augments `src` (one image) into `dst`, drawing the offsets and the flip from `rng`.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], rng: &mut Rng) {
        assert_eq!(src.len(), self.in_len(), "source image size");
        assert_eq!(dst.len(), self.out_len(), "destination image size");
        let span_y = self.height + 2 * self.pad - self.crop_h + 1;
        let span_x = self.width + 2 * self.pad - self.crop_w + 1;
        // Offsets in padded coordinates; the source pixel of output (y, x) is (oy + y, ox + x).
        let oy = rng.below(span_y) as isize - self.pad as isize;
        let ox = rng.below(span_x) as isize - self.pad as isize;
        let flip = self.flip && rng.next_u64() & 1 == 1;
        let (h, w, c) = (self.height as isize, self.width as isize, self.channels);
        for y in 0..self.crop_h {
            let row = &mut dst[y * self.crop_w * c..][..self.crop_w * c];
            let sy = oy + y as isize;
            if !(0..h).contains(&sy) {
                row.fill(0);
                continue;
            }
            for (x, px) in row.chunks_exact_mut(c).enumerate() {
                let xx = if flip { self.crop_w - 1 - x } else { x };
                let sx = ox + xx as isize;
                if (0..w).contains(&sx) {
                    px.copy_from_slice(&src[((sy * w + sx) as usize) * c..][..c]);
                } else {
                    px.fill(0);
                }
            }
        }
    }

    /// Augments a batch of images (concatenated) with one generator per image, derived from
    /// `(seed, stream, first + i)`: the same image position always gets the same crop.
    pub fn apply_batch(&self, src: &[u8], seed: u64, stream: u64, first: u64) -> Vec<u8> {
        let n = src.len() / self.in_len();
        let mut out = vec![0u8; n * self.out_len()];
        for (i, (s, d)) in
            src.chunks_exact(self.in_len()).zip(out.chunks_exact_mut(self.out_len())).enumerate()
        {
            self.apply(s, d, &mut Rng::derived(seed, stream, first + i as u64));
        }
        out
    }
}
