//! Image → input tensor, as torchvision's `Resize(shorter side) → CenterCrop → ToTensor →
//! Normalize`: the same code natively and in the browser (which only decodes).

use candle_core::{Device, Tensor};

/// How a model wants its input.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Preprocess {
    /// The shorter side is resized to this.
    pub resize: usize,
    /// Then a centred `crop`×`crop` square is cut out.
    pub crop: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// One grey channel (ITU-R 601 luma, as PIL's "L") instead of RGB.
    pub grey: bool,
}

/// Decoded pixels, row-major, interleaved: 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)
/// channels of 8 bits.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    #[error("empty image ({0}×{1})")]
    Empty(usize, usize),
    #[error("{0} channels per pixel: expected 1 to 4")]
    Channels(usize),
    #[error("pixel buffer holds {found} bytes, {width}×{height}×{channels} needs {needed}")]
    Size { width: usize, height: usize, channels: usize, needed: usize, found: usize },
}

/// A planar f32 RGB image (values 0..=255), `3 × h × w`.
#[derive(Clone, Debug, PartialEq)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Planar {
    fn from_image(img: &Image) -> Result<Self, PreprocessError> {
        let (w, h, c) = (img.width, img.height, img.channels);
        if w == 0 || h == 0 {
            return Err(PreprocessError::Empty(w, h));
        }
        if !(1..=4).contains(&c) {
            return Err(PreprocessError::Channels(c));
        }
        let needed = w * h * c;
        if img.data.len() != needed {
            return Err(PreprocessError::Size {
                width: w,
                height: h,
                channels: c,
                needed,
                found: img.data.len(),
            });
        }
        let mut data = vec![0f32; 3 * w * h];
        for (i, px) in img.data.chunks_exact(c).enumerate() {
            // Grey (and grey+alpha) fills all three; alpha is dropped, as PIL's convert("RGB").
            let rgb = if c >= 3 { [px[0], px[1], px[2]] } else { [px[0]; 3] };
            for (ch, v) in rgb.into_iter().enumerate() {
                data[ch * w * h + i] = v as f32;
            }
        }
        Ok(Planar { width: w, height: h, data })
    }

    /// Separable resize with a triangle filter widened when shrinking (antialiased bilinear,
    /// as PIL and torchvision's `antialias=True`).
    fn resize(&self, new_w: usize, new_h: usize) -> Planar {
        if (new_w, new_h) == (self.width, self.height) {
            return self.clone();
        }
        let wx = filter_weights(self.width, new_w);
        let wy = filter_weights(self.height, new_h);
        let (w, h) = (self.width, self.height);
        let mut tmp = vec![0f32; 3 * h * new_w];
        for ch in 0..3 {
            for y in 0..h {
                let row = &self.data[ch * w * h + y * w..][..w];
                for (x, (start, ws)) in wx.iter().enumerate() {
                    tmp[ch * h * new_w + y * new_w + x] =
                        ws.iter().enumerate().map(|(k, c)| row[start + k] * c).sum();
                }
            }
        }
        let mut out = vec![0f32; 3 * new_h * new_w];
        for ch in 0..3 {
            for (y, (start, ws)) in wy.iter().enumerate() {
                for x in 0..new_w {
                    out[ch * new_h * new_w + y * new_w + x] = ws
                        .iter()
                        .enumerate()
                        .map(|(k, c)| tmp[ch * h * new_w + (start + k) * new_w + x] * c)
                        .sum();
                }
            }
        }
        Planar { width: new_w, height: new_h, data: out }
    }

    fn crop(&self, left: usize, top: usize, cw: usize, chh: usize) -> Planar {
        let mut data = Vec::with_capacity(3 * cw * chh);
        for ch in 0..3 {
            for y in top..top + chh {
                let start = ch * self.width * self.height + y * self.width + left;
                data.extend_from_slice(&self.data[start..start + cw]);
            }
        }
        Planar { width: cw, height: chh, data }
    }
}

/// For each output pixel: first input index and normalised weights.
fn filter_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f32 / n_out as f32;
    let support = scale.max(1.0);
    (0..n_out)
        .map(|i| {
            let centre = (i as f32 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(n_in);
            let mut ws: Vec<f32> =
                (lo..hi).map(|j| (1.0 - ((j as f32 + 0.5 - centre) / support).abs()).max(0.0)).collect();
            let sum: f32 = ws.iter().sum();
            if sum > 0.0 {
                ws.iter_mut().for_each(|w| *w /= sum);
            } else {
                // Degenerate: nearest pixel.
                ws.iter_mut().for_each(|w| *w = 0.0);
                let k = (centre as usize).clamp(lo, hi - 1) - lo;
                ws[k] = 1.0;
            }
            (lo, ws)
        })
        .collect()
}

impl Preprocess {
    /// The crop the network sees, as RGB8 (`crop`×`crop`×3), before normalisation: what the
    /// explorer shows as "the input".
    pub fn view(&self, img: &Image) -> Result<Vec<u8>, PreprocessError> {
        let p = self.resized_crop(img)?;
        let n = p.width * p.height;
        let mut out = vec![0u8; n * 3];
        for i in 0..n {
            let rgb = [p.data[i], p.data[n + i], p.data[2 * n + i]];
            let rgb = if self.grey { [luma(rgb); 3] } else { rgb };
            for ch in 0..3 {
                out[i * 3 + ch] = rgb[ch].round().clamp(0.0, 255.0) as u8;
            }
        }
        Ok(out)
    }

    fn resized_crop(&self, img: &Image) -> Result<Planar, PreprocessError> {
        let p = Planar::from_image(img)?;
        let (w, h) = (p.width, p.height);
        let short = w.min(h);
        // torchvision: the longer side becomes int(resize * long / short).
        let (nw, nh) = if w <= h {
            (self.resize, (self.resize * h / short).max(self.resize))
        } else {
            ((self.resize * w / short).max(self.resize), self.resize)
        };
        let p = p.resize(nw, nh);
        let crop = self.crop.min(nw).min(nh);
        let left = ((nw - crop) as f32 / 2.0).round() as usize;
        let top = ((nh - crop) as f32 / 2.0).round() as usize;
        Ok(p.crop(left, top, crop, crop))
    }

    /// Normalised CHW values (1 or 3 channels × crop × crop).
    pub fn to_chw(&self, img: &Image) -> Result<Vec<f32>, PreprocessError> {
        let p = self.resized_crop(img)?;
        let n = p.width * p.height;
        if self.grey {
            return Ok((0..n)
                .map(|i| {
                    let y = luma([p.data[i], p.data[n + i], p.data[2 * n + i]]);
                    (y / 255.0 - self.mean[0]) / self.std[0]
                })
                .collect());
        }
        Ok(p.data
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ch = i / n;
                (v / 255.0 - self.mean[ch]) / self.std[ch]
            })
            .collect())
    }

    /// The input tensor, `1 × C × crop × crop`.
    pub fn to_tensor(&self, img: &Image, device: &Device) -> candle_core::Result<Tensor> {
        let chw = self.to_chw(img).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let c = if self.grey { 1 } else { 3 };
        let side = ((chw.len() / c) as f64).sqrt() as usize;
        Tensor::from_vec(chw, (1, c, side, side), device)
    }
}

fn luma(rgb: [f32; 3]) -> f32 {
    0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIFAR: Preprocess =
        Preprocess { resize: 32, crop: 32, mean: [0.5; 3], std: [0.25; 3], grey: false };

    #[test]
    fn same_size_is_not_resampled() {
        let data: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let img = Image { width: 32, height: 32, channels: 3, data: &data };
        assert_eq!(CIFAR.view(&img).unwrap(), data);
        let chw = CIFAR.to_chw(&img).unwrap();
        assert!((chw[0] - (data[0] as f32 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
        // Channel planes: the second plane starts with pixel 0's green.
        assert!((chw[32 * 32] - (data[1] as f32 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
    }

    #[test]
    fn resize_shorter_side_then_centre_crop() {
        // 64×128 grey: shorter side 64 → 32, longer 128 → 64, crop rows 16..48.
        let data: Vec<u8> = (0..128).flat_map(|y| std::iter::repeat_n((y * 2) as u8, 64)).collect();
        let img = Image { width: 64, height: 128, channels: 1, data: &data };
        let v = CIFAR.view(&img).unwrap();
        assert_eq!(v.len(), 32 * 32 * 3);
        // Row 0 of the crop is resized row 16, i.e. source rows 32..34 (values 64, 66).
        assert!((v[0] as i32 - 65).abs() <= 1, "{}", v[0]);
        let constant = vec![200u8; 50 * 70 * 4];
        let img = Image { width: 50, height: 70, channels: 4, data: &constant };
        assert!(CIFAR.view(&img).unwrap().iter().all(|&p| p == 200));
    }

    #[test]
    fn bad_buffers_are_errors() {
        let img = Image { width: 0, height: 3, channels: 3, data: &[] };
        assert_eq!(CIFAR.view(&img), Err(PreprocessError::Empty(0, 3)));
        let img = Image { width: 2, height: 2, channels: 3, data: &[0; 5] };
        assert!(matches!(CIFAR.view(&img), Err(PreprocessError::Size { .. })));
        let img = Image { width: 1, height: 1, channels: 5, data: &[0; 5] };
        assert_eq!(CIFAR.view(&img), Err(PreprocessError::Channels(5)));
    }
}
