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
struct Planar {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Image<'_> {
    fn check(&self) -> Result<(), PreprocessError> {
        let (w, h, c) = (self.width, self.height, self.channels);
        if w == 0 || h == 0 {
            return Err(PreprocessError::Empty(w, h));
        }
        if !(1..=4).contains(&c) {
            return Err(PreprocessError::Channels(c));
        }
        let needed = w.checked_mul(h).and_then(|n| n.checked_mul(c)).unwrap_or(usize::MAX);
        if self.data.len() != needed {
            return Err(PreprocessError::Size {
                width: w,
                height: h,
                channels: c,
                needed,
                found: self.data.len(),
            });
        }
        Ok(())
    }

    /// Channel `ch` (0..3, RGB) of pixel `(x, y)`: grey (and grey+alpha) fills all three, alpha
    /// is dropped, as PIL's `convert("RGB")`.
    fn rgb(&self, x: usize, y: usize, ch: usize) -> f32 {
        let c = self.channels;
        self.data[(y * self.width + x) * c + if c >= 3 { ch } else { 0 }] as f32
    }
}

/// For output pixels `range` of a resize from `n_in` to `n_out`: the first input index and the
/// normalised weights of each (a triangle filter widened when shrinking: antialiased bilinear,
/// as PIL and torchvision's `antialias=True`).
fn filter_weights(n_in: usize, n_out: usize, range: std::ops::Range<usize>) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f32 / n_out as f32;
    let support = scale.max(1.0);
    range
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

/// The crop of a network's input before normalisation, from one resize: RGB8 for people
/// (`view`, `side`×`side`×3) and the normalised values the network takes (`chw`, `channels` ×
/// `side` × `side`).
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub view: Vec<u8>,
    pub chw: Vec<f32>,
    pub channels: usize,
    pub side: usize,
}

impl Prepared {
    /// The input tensor, `1 × C × side × side`.
    pub fn tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.chw, (1, self.channels, self.side, self.side), device)
    }
}

impl Preprocess {
    /// The crop as the page shows it and as the network takes it, from one resize.
    pub fn prepare(&self, img: &Image) -> Result<Prepared, PreprocessError> {
        let p = self.resized_crop(img)?;
        let (channels, side) = (if self.grey { 1 } else { 3 }, p.width);
        Ok(Prepared { view: self.view_of(&p), chw: self.chw_of(&p), channels, side })
    }

    /// The crop the network sees, as RGB8 (`crop`×`crop`×3), before normalisation: what the
    /// explorer shows as "the input".
    pub fn view(&self, img: &Image) -> Result<Vec<u8>, PreprocessError> {
        Ok(self.view_of(&self.resized_crop(img)?))
    }

    /// Normalised CHW values (1 or 3 channels × crop × crop).
    pub fn to_chw(&self, img: &Image) -> Result<Vec<f32>, PreprocessError> {
        Ok(self.chw_of(&self.resized_crop(img)?))
    }

    /// The input tensor, `1 × C × crop × crop`.
    pub fn to_tensor(&self, img: &Image, device: &Device) -> candle_core::Result<Tensor> {
        self.prepare(img).map_err(|e| candle_core::Error::Msg(e.to_string()))?.tensor(device)
    }

    /// A batch of crops as kept by datasets (N × side × side × 3 RGB8, grey models' luma in all
    /// three) → the normalised N×C×side×side input on `device`, value for value as
    /// [`Preprocess::to_chw`] normalises.
    pub fn batch_tensor(&self, pixels: &[u8], side: usize, device: &Device) -> candle_core::Result<Tensor> {
        let plane = side * side;
        if side == 0 || !pixels.len().is_multiple_of(plane * 3) {
            candle_core::bail!("{} bytes are not a whole number of {side}×{side}×3 images", pixels.len());
        }
        let n = pixels.len() / (plane * 3);
        let c = if self.grey { 1 } else { 3 };
        let mut out = vec![0f32; n * c * plane];
        for (img, o) in pixels.chunks_exact(plane * 3).zip(out.chunks_exact_mut(c * plane)) {
            for ch in 0..c {
                for (i, v) in o[ch * plane..(ch + 1) * plane].iter_mut().enumerate() {
                    *v = self.normalised(ch, img[i * 3 + ch] as f32);
                }
            }
        }
        Tensor::from_vec(out, (n, c, side, side), device)
    }

    /// The one normalisation: `(v / 255 − mean) / std` of channel `ch`.
    fn normalised(&self, ch: usize, v: f32) -> f32 {
        (v / 255.0 - self.mean[ch]) / self.std[ch]
    }

    fn view_of(&self, p: &Planar) -> Vec<u8> {
        let n = p.width * p.height;
        let mut out = vec![0u8; n * 3];
        for i in 0..n {
            let rgb = [p.data[i], p.data[n + i], p.data[2 * n + i]];
            let rgb = if self.grey { [luma(rgb); 3] } else { rgb };
            for ch in 0..3 {
                out[i * 3 + ch] = rgb[ch].round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }

    fn chw_of(&self, p: &Planar) -> Vec<f32> {
        let n = p.width * p.height;
        if self.grey {
            return (0..n)
                .map(|i| self.normalised(0, luma([p.data[i], p.data[n + i], p.data[2 * n + i]])))
                .collect();
        }
        p.data.iter().enumerate().map(|(i, &v)| self.normalised(i / n, v)).collect()
    }

    /// The size `w`×`h` is resized to: the shorter side becomes `resize` and the longer
    /// `int(resize · long / short)`, as torchvision's.
    fn resized_size(&self, w: usize, h: usize) -> (usize, usize) {
        let short = w.min(h);
        match w <= h {
            true => (self.resize, (self.resize * h / short).max(self.resize)),
            false => ((self.resize * w / short).max(self.resize), self.resize),
        }
    }

    /// Resize (shorter side to `resize`) and centre crop, computing only the pixels inside the
    /// crop: memory and time follow the crop, not the image (an 8192×2 strip would otherwise be
    /// resized to 1,048,576×256 first).
    fn resized_crop(&self, img: &Image) -> Result<Planar, PreprocessError> {
        img.check()?;
        let (w, h) = (img.width, img.height);
        let (nw, nh) = self.resized_size(w, h);
        let crop = self.crop.min(nw).min(nh);
        let left = ((nw - crop) as f32 / 2.0).round() as usize;
        let top = ((nh - crop) as f32 / 2.0).round() as usize;
        let mut data = vec![0f32; 3 * crop * crop];
        if (nw, nh) == (w, h) {
            for (i, v) in data.iter_mut().enumerate() {
                let (ch, y, x) = (i / (crop * crop), i / crop % crop, i % crop);
                *v = img.rgb(left + x, top + y, ch);
            }
            return Ok(Planar { width: crop, height: crop, data });
        }
        // Separable: the crop's columns of every source row its rows read, then its rows.
        let wx = filter_weights(w, nw, left..left + crop);
        let wy = filter_weights(h, nh, top..top + crop);
        let y0 = wy.iter().map(|(lo, _)| *lo).min().unwrap_or(0);
        let y1 = wy.iter().map(|(lo, ws)| lo + ws.len()).max().unwrap_or(0);
        let rows = y1 - y0;
        let mut tmp = vec![0f32; 3 * rows * crop];
        for ch in 0..3 {
            for y in y0..y1 {
                for (x, (start, ws)) in wx.iter().enumerate() {
                    tmp[(ch * rows + y - y0) * crop + x] =
                        ws.iter().enumerate().map(|(k, c)| img.rgb(start + k, y, ch) * c).sum();
                }
            }
        }
        for ch in 0..3 {
            for (y, (start, ws)) in wy.iter().enumerate() {
                for x in 0..crop {
                    data[(ch * crop + y) * crop + x] = ws
                        .iter()
                        .enumerate()
                        .map(|(k, c)| tmp[(ch * rows + start + k - y0) * crop + x] * c)
                        .sum();
                }
            }
        }
        Ok(Planar { width: crop, height: crop, data })
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

    /// Resizing the whole image, then cropping (the textbook order) gives the same values as
    /// resizing only the crop window.
    #[test]
    fn crop_window_resize_equals_full_resize() {
        fn full(p: &Preprocess, img: &Image) -> Vec<f32> {
            let (w, h) = (img.width, img.height);
            let (nw, nh) = p.resized_size(w, h);
            let (wx, wy) = (filter_weights(w, nw, 0..nw), filter_weights(h, nh, 0..nh));
            let mut tmp = vec![0f32; 3 * h * nw];
            for ch in 0..3 {
                for y in 0..h {
                    for (x, (s, ws)) in wx.iter().enumerate() {
                        tmp[(ch * h + y) * nw + x] =
                            ws.iter().enumerate().map(|(k, c)| img.rgb(s + k, y, ch) * c).sum();
                    }
                }
            }
            let crop = p.crop.min(nw).min(nh);
            let left = ((nw - crop) as f32 / 2.0).round() as usize;
            let top = ((nh - crop) as f32 / 2.0).round() as usize;
            let mut out = vec![];
            for ch in 0..3 {
                for (s, ws) in &wy[top..top + crop] {
                    for x in left..left + crop {
                        out.push(
                            ws.iter()
                                .enumerate()
                                .map(|(k, c)| tmp[(ch * h + s + k) * nw + x] * c)
                                .sum::<f32>(),
                        );
                    }
                }
            }
            out
        }
        let p = Preprocess { resize: 36, crop: 32, ..CIFAR };
        for (w, h, c) in [(50, 70, 3), (70, 50, 4), (33, 200, 1), (400, 41, 2), (9, 5, 3), (36, 36, 3)] {
            let data: Vec<u8> = (0..w * h * c).map(|i| (i * 37 % 251) as u8).collect();
            let img = Image { width: w, height: h, channels: c, data: &data };
            let want = full(&p, &img);
            assert_eq!(p.resized_crop(&img).unwrap().data, want, "{w}×{h}×{c}");
        }
    }

    #[test]
    fn one_resize_gives_the_view_and_the_tensor() {
        let data: Vec<u8> = (0..40 * 30 * 3).map(|i| (i * 13 % 256) as u8).collect();
        let img = Image { width: 40, height: 30, channels: 3, data: &data };
        let prepared = CIFAR.prepare(&img).unwrap();
        assert_eq!(prepared.view, CIFAR.view(&img).unwrap());
        assert_eq!(prepared.chw, CIFAR.to_chw(&img).unwrap());
        let t = prepared.tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 3, 32, 32]);
        // The batch normaliser gives the same values from the view's bytes, up to its rounding.
        let batch = CIFAR.batch_tensor(&prepared.view, 32, &Device::Cpu).unwrap();
        let diff = (batch - t).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 0.5 / 255.0 / 0.25 + 1e-6, "{diff}");
        let grey = Preprocess { grey: true, mean: [0.5; 3], std: [0.5; 3], ..CIFAR };
        let t = grey.batch_tensor(&[255u8; 32 * 32 * 3], 32, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 1, 32, 32]);
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 1.0);
        assert!(CIFAR.batch_tensor(&[0u8; 100], 32, &Device::Cpu).is_err());
    }
}
