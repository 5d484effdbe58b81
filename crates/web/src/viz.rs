//! The pixel maths behind every picture on the page, kept free of the DOM so it is tested
//! natively: filter tiles, colour maps and their scales, and the layer table's formula. Number
//! formats and top-k are core's (`resnet_core::format`, shared with the CLI), re-exported here.

use resnet_core::spec::{Node, Op};
use resnet_core::LayerRow;

/// Viridis at 9 stops (matplotlib's), interpolated: perceptually uniform, readable for
/// colour-blind users, for maps that are never negative (after a ReLU).
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// Blue – white – red for signed maps (before a ReLU, residual branches): zero is white.
const DIVERGING: [[u8; 3]; 5] =
    [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];

fn lerp_table(table: &[[u8; 3]], t: f32) -> [u8; 3] {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (table.len() - 1) as f32;
    let i = (x.floor() as usize).min(table.len() - 2);
    let f = x - i as f32;
    let (a, b) = (table[i], table[i + 1]);
    [0, 1, 2].map(|c| (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8)
}

/// How values map to colours: `[0, hi]` on viridis, or `[-hi, hi]` on the diverging map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub signed: bool,
    pub hi: f32,
}

impl Scale {
    /// Fits all of `values`: signed as soon as one is negative, symmetric around zero.
    pub fn fit(values: &[f32]) -> Scale {
        let (mut lo, mut hi) = (0f32, 0f32);
        for &v in values.iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let signed = lo < 0.0;
        let hi = if signed { hi.max(-lo) } else { hi };
        Scale { signed, hi: if hi > 0.0 { hi } else { 1.0 } }
    }

    pub fn lo(&self) -> f32 {
        if self.signed {
            -self.hi
        } else {
            0.0
        }
    }

    pub fn colour(&self, v: f32) -> [u8; 3] {
        if self.signed {
            lerp_table(&DIVERGING, 0.5 + v / (2.0 * self.hi))
        } else {
            lerp_table(&VIRIDIS, v / self.hi)
        }
    }

    /// 256 RGBA colours from `lo` to `hi`: a layer has millions of values, and interpolating
    /// each one would hold the page's main thread.
    pub fn table(&self) -> [[u8; 4]; 256] {
        let (lo, span) = (self.lo(), self.hi - self.lo());
        std::array::from_fn(|i| {
            let [r, g, b] = self.colour(lo + span * i as f32 / 255.0);
            [r, g, b, 255]
        })
    }

    /// `v`'s entry in `table`; NaN and ±inf get the first colour, as `colour` gives for them.
    pub fn index(&self, v: f32) -> usize {
        let t = (v - self.lo()) / (self.hi - self.lo());
        if t.is_finite() {
            (t * 255.0).round().clamp(0.0, 255.0) as usize
        } else {
            0
        }
    }

    /// The colour bar: `n` RGBA pixels from `lo` to `hi`.
    pub fn bar(&self, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let v = self.lo() + (self.hi - self.lo()) * i as f32 / (n.max(2) - 1) as f32;
                let [r, g, b] = self.colour(v);
                [r, g, b, 255]
            })
            .collect()
    }
}

/// One channel as RGBA pixels, through the scale's 256-colour table.
pub fn map_rgba(values: &[f32], scale: Scale) -> Vec<u8> {
    let lut = scale.table();
    let mut out = Vec::with_capacity(values.len() * 4);
    for &v in values {
        out.extend_from_slice(&lut[scale.index(v)]);
    }
    out
}

/// Every channel of a `C × H × W` map as one picture: tiles in a grid of `cols` (about √C)
/// columns, row-major in channel order, on one scale. A tile is the map itself, or for a map at
/// least twice the tile on screen, every k-th pixel of it (nearest neighbour, as the screen
/// shows it): VGG's 64 maps of 224×224 coloured in full held the page ~80 ms for the 6 % of the
/// pixels a 56-px tile shows.
/// The page scales each tile into one canvas: a canvas per channel made Chromium's compositor
/// take 100–600 ms per frame on 1,024-channel layers.
#[derive(Clone, Debug, PartialEq)]
pub struct TileAtlas {
    pub channels: usize,
    pub tile_h: usize,
    pub tile_w: usize,
    pub cols: usize,
    pub rows: usize,
    pub rgba: Vec<u8>,
}

impl TileAtlas {
    /// The atlas of `data`; a map over `2 × side` pixels a side keeps every k-th pixel, k the
    /// largest that leaves at least `side`.
    pub fn new(data: &[f32], [c, h, w]: [usize; 3], scale: Scale, side: usize) -> TileAtlas {
        let cols = ((c as f64).sqrt().ceil() as usize).max(1);
        let rows = c.div_ceil(cols).max(1);
        let k = (h.max(w) / side.max(1)).max(1);
        let (th, tw) = (h.div_ceil(k), w.div_ceil(k));
        let lut = scale.table();
        let stride = cols * tw * 4;
        let mut rgba = vec![0u8; rows * th * stride];
        for (ch, values) in data.chunks_exact(h * w).take(c).enumerate() {
            let (ty, tx) = (ch / cols, ch % cols);
            for y in 0..th {
                let row = &values[(y * k) * w..(y * k + 1) * w];
                let start = (ty * th + y) * stride + tx * tw * 4;
                for (px, &v) in rgba[start..start + tw * 4].chunks_exact_mut(4).zip(row.iter().step_by(k)) {
                    px.copy_from_slice(&lut[scale.index(v)]);
                }
            }
        }
        TileAtlas { channels: c, tile_h: th, tile_w: tw, cols, rows, rgba }
    }

    /// Where channel `c`'s tile starts, in pixels (x, y).
    pub fn origin(&self, c: usize) -> (usize, usize) {
        ((c % self.cols) * self.tile_w, (c / self.cols) * self.tile_h)
    }
}

/// A vector layer's values laid out as one picture: `cols × rows` RGBA pixels, row-major in the
/// values' order; the cells past the last value are light grey.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorStrip {
    pub cols: usize,
    pub rows: usize,
    pub rgba: Vec<u8>,
    pub values: Vec<f32>,
    pub min: f32,
    pub max: f32,
}

/// Up to 64 values in one row; longer vectors wrap into rows of a power of two about twice as
/// long as the strip is tall (1,000 logits: 64 × 16; 25,088: 256 × 98).
pub fn vector_layout(n: usize) -> (usize, usize) {
    if n <= 64 {
        return (n.max(1), 1);
    }
    let cols = ((2.0 * n as f64).sqrt().ceil() as usize).next_power_of_two();
    (cols, n.div_ceil(cols))
}

pub fn vector_strip(values: &[f32], scale: Scale) -> VectorStrip {
    let (cols, rows) = vector_layout(values.len());
    let mut rgba = map_rgba(values, scale);
    rgba.resize(cols * rows * 4, 0);
    for px in rgba[values.len() * 4..].chunks_exact_mut(4) {
        px.copy_from_slice(&[238, 238, 238, 255]);
    }
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    VectorStrip {
        cols,
        rows,
        rgba,
        values: values.to_vec(),
        min: finite().fold(f32::INFINITY, f32::min),
        max: finite().fold(f32::NEG_INFINITY, f32::max),
    }
}

/// One filter (`in_ch × k × k`) as a `k × k` RGBA tile, min–max normalised over the filter:
/// RGB when it reads three channels, grey otherwise (the channel mean). Returns the tile and the
/// weights' range.
pub fn filter_tile(weights: &[f32], in_ch: usize, k: usize) -> (Vec<u8>, f32, f32) {
    let lo = weights.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let norm = |v: f32| ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8;
    let plane = k * k;
    let mut out = Vec::with_capacity(plane * 4);
    for p in 0..plane {
        let [r, g, b] = if in_ch == 3 {
            [0, 1, 2].map(|c| norm(weights[c * plane + p]))
        } else {
            let mean = (0..in_ch).map(|c| weights[c * plane + p]).sum::<f32>() / in_ch as f32;
            [norm(mean); 3]
        };
        out.extend_from_slice(&[r, g, b, 255]);
    }
    (out, lo, hi)
}

/// The error axis of a chart whose worst value is `worst` (%): its top (a multiple of 10, at
/// most 100) and its ticks every 10 % (every 20 % above 50).
pub fn error_axis(worst: f64) -> (f64, Vec<f64>) {
    let top = ((worst / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
    let step = if top > 50.0 { 20.0 } else { 10.0 };
    let ticks = (0..).map(|i| i as f64 * step).take_while(|&t| t <= top + 1e-9).collect();
    (top, ticks)
}

/// SVG polyline points of `(x, y)` data in the plot area `((x0, y0), (x1, y1), (x_max, y_max))`:
/// x from 0 to `x_max` left to right, y from 0 (bottom) to `y_max` (top, clipped there).
pub fn polyline(
    points: &[(f64, f64)],
    ((x0, y0), (x1, y1), (x_max, y_max)): ((f64, f64), (f64, f64), (f64, f64)),
) -> String {
    points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| {
            let px = x0 + (x1 - x0) * x / x_max;
            let py = y1 - (y1 - y0) * (y / y_max).clamp(0.0, 1.0);
            format!("{px:.1},{py:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A snapshot's map (bytes over its own `[lo, hi]`) as RGBA on the colour map its values need:
/// viridis when they are never negative, the diverging map around zero otherwise.
pub fn snapshot_map_rgba(bytes: &[u8], [lo, hi]: [f32; 2]) -> Vec<u8> {
    let scale = Scale::fit(&[lo, hi]);
    let lut = scale.table();
    let step = (hi - lo) / 255.0;
    let colours: Vec<[u8; 4]> = (0..256).map(|q| lut[scale.index(lo + step * q as f32)]).collect();
    bytes.iter().flat_map(|&q| colours[q as usize]).collect()
}

/// RGB8 → RGBA8.
pub fn rgb_to_rgba(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

/// The output-size formula with the layer's numbers filled in, e.g.
/// `(32 − 3 + 2·1)/1 + 1 = 32`. Height only when the map is square.
pub fn formula(node: &Node, row: &LayerRow) -> Option<String> {
    let ceil = matches!(&node.op, Op::MaxPool2d(p) | Op::AvgPool2d(p) if p.ceil_mode);
    let one = |n: usize, out: usize| {
        let (k, s, p) = (row.kernel?, row.stride?, row.padding?);
        let (open, close) = if ceil { ("⌈", "⌉") } else { ("⌊", "⌋") };
        // With stride 1 the division is exact: no floor to show.
        let div = if s == 1 {
            format!("({n} − {k} + 2·{p})/1")
        } else {
            format!("{open}({n} − {k} + 2·{p})/{s}{close}")
        };
        Some(format!("{div} + 1 = {out}"))
    };
    let (h, w) = (row.in_shape[1], row.in_shape[2]);
    let (oh, ow) = (row.out_shape[1], row.out_shape[2]);
    match &node.op {
        Op::ShortcutA { stride, out_ch } => Some(format!(
            "x[:, :, ::{stride}, ::{stride}] + {} zero channels → {oh}×{ow}",
            out_ch - row.in_shape[0]
        )),
        Op::AdaptiveAvgPool2d { .. } => Some(format!("adaptive: {h}×{w} → {oh}×{ow}")),
        _ if h == w => one(h, oh),
        _ => Some(format!("H: {}; W: {}", one(h, oh)?, one(w, ow)?)),
    }
}

pub use resnet_core::format::{si, thousands, top_k};

#[cfg(test)]
mod tests {
    use super::*;
    use resnet_core::find_arch;

    #[test]
    fn the_error_axis_and_curves_fit_the_plot() {
        assert_eq!(error_axis(37.2), (40.0, vec![0.0, 10.0, 20.0, 30.0, 40.0]));
        assert_eq!(error_axis(0.0).0, 10.0);
        assert_eq!(error_axis(91.0), (100.0, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]));
        let area = ((10.0, 0.0), (110.0, 50.0), (10.0, 40.0));
        // Epoch 0 at the left edge, the last at the right; 0 % at the bottom, the top clipped.
        assert_eq!(
            polyline(&[(0.0, 0.0), (5.0, 20.0), (10.0, 80.0), (3.0, f64::NAN)], area),
            "10.0,50.0 60.0,25.0 110.0,0.0"
        );
    }

    #[test]
    fn snapshot_maps_use_their_own_range() {
        // Never negative: viridis from its first colour to its last.
        let px = snapshot_map_rgba(&[0, 255], [0.0, 2.0]);
        assert_eq!((&px[..3], &px[4..7]), (&VIRIDIS[0][..], &VIRIDIS[8][..]));
        // Signed: the byte that stands for zero is white.
        let px = snapshot_map_rgba(&[0, 128, 255], [-1.0, 1.0]);
        assert_eq!(&px[..3], &DIVERGING[0][..]);
        assert!(px[4..7].iter().all(|&c| c > 240), "{:?}", &px[4..7]);
    }

    #[test]
    fn scales_fit_the_data() {
        let s = Scale::fit(&[0.0, 2.0, 1.0]);
        assert_eq!(s, Scale { signed: false, hi: 2.0 });
        assert_eq!(s.colour(0.0), VIRIDIS[0]);
        assert_eq!(s.colour(2.0), VIRIDIS[8]);
        let s = Scale::fit(&[-3.0, 1.0]);
        assert_eq!(s, Scale { signed: true, hi: 3.0 });
        assert_eq!(s.colour(0.0), DIVERGING[2]);
        assert_eq!(s.colour(-3.0), DIVERGING[0]);
        // An all-zero map (a dead channel) still gets a usable scale.
        assert_eq!(Scale::fit(&[0.0; 4]).hi, 1.0);
        assert_eq!(map_rgba(&[0.0, f32::NAN], Scale::fit(&[1.0])).len(), 8);
        // The table gives the scale's own colours at its ends and in the middle.
        let s = Scale::fit(&[-3.0, 1.0]);
        assert_eq!(
            &map_rgba(&[-3.0, 3.0, 7.0], s)[..12],
            &[33, 102, 172, 255, 178, 24, 43, 255, 178, 24, 43, 255]
        );
        let s = Scale::fit(&[2.0]);
        assert_eq!(&map_rgba(&[0.0, 1.0, 2.0, f32::NAN], s)[..4], &[68, 1, 84, 255]);
        assert_eq!(&map_rgba(&[2.0], s)[..3], &VIRIDIS[8]);
        let mid = map_rgba(&[1.0], s);
        let exact = s.colour(1.0);
        assert!((0..3).all(|c| (mid[c] as i32 - exact[c] as i32).abs() <= 2), "{mid:?} vs {exact:?}");
        assert_eq!(Scale::fit(&[1.0]).bar(10).len(), 40);
    }

    #[test]
    fn the_atlas_puts_every_channel_in_its_tile() {
        // 5 channels of 2×3: a 3 × 2 grid of tiles, the last cell empty (transparent).
        let data: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let s = Scale::fit(&data);
        let a = TileAtlas::new(&data, [5, 2, 3], s, 56);
        assert_eq!((a.cols, a.rows, a.rgba.len()), (3, 2, 3 * 3 * 2 * 2 * 4));
        assert_eq!(a.origin(4), (3, 2));
        for c in 0..5 {
            let tile = map_rgba(&data[c * 6..c * 6 + 6], s);
            let (x0, y0) = a.origin(c);
            for y in 0..2 {
                let at = ((y0 + y) * 9 + x0) * 4;
                assert_eq!(&a.rgba[at..at + 12], &tile[y * 12..y * 12 + 12], "channel {c} row {y}");
            }
        }
        for y in 2..4 {
            assert!(a.rgba[(y * 9 + 6) * 4..(y * 9 + 9) * 4].iter().all(|&b| b == 0));
        }
        assert_eq!(TileAtlas::new(&[1.0], [1, 1, 1], s, 56).cols, 1);
    }

    #[test]
    fn maps_twice_a_tile_keep_every_kth_pixel() {
        // 2 channels of 5×4 for tiles of 2 px: every 2nd pixel, 3×2 tiles.
        let data: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let s = Scale::fit(&data);
        let a = TileAtlas::new(&data, [2, 5, 4], s, 2);
        assert_eq!((a.tile_h, a.tile_w, a.cols, a.rows), (3, 2, 2, 1));
        let px = |x: usize, y: usize| &a.rgba[(y * 4 + x) * 4..(y * 4 + x) * 4 + 4];
        for (c, base) in [(0usize, 0usize), (1, 20)] {
            for y in 0..3 {
                for x in 0..2 {
                    let v = data[base + (2 * y) * 4 + 2 * x];
                    assert_eq!(px(2 * c + x, y), &s.table()[s.index(v)], "channel {c} ({y}, {x})");
                }
            }
        }
        // For a 56-px tile: 224 px keeps every 4th pixel, 112 every 2nd; under 112 px, all.
        let side = |n: usize| TileAtlas::new(&vec![0.0; n * n], [1, n, n], s, 56).tile_w;
        assert_eq!([side(224), side(112), side(111), side(56), side(7)], [56, 56, 111, 56, 7]);
    }

    #[test]
    fn vectors_are_one_picture_in_order() {
        assert_eq!(vector_layout(10), (10, 1));
        assert_eq!(vector_layout(1000), (64, 16));
        assert_eq!(vector_layout(2048), (64, 32));
        assert_eq!(vector_layout(25_088), (256, 98));
        let s = vector_strip(&[0.0, 1.0, 2.0], Scale::fit(&[2.0]));
        assert_eq!((s.cols, s.rows, s.rgba.len(), s.min, s.max), (3, 1, 12, 0.0, 2.0));
        assert_eq!(&s.rgba[8..11], &VIRIDIS[8]);
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let s = vector_strip(&v, Scale::fit(&v));
        assert_eq!((s.cols, s.rows), (16, 7));
        assert_eq!(s.rgba.len(), 16 * 7 * 4);
        assert_eq!(&s.rgba[100 * 4..100 * 4 + 4], &[238, 238, 238, 255]);
    }

    #[test]
    fn filter_tiles_are_min_max_normalised_per_filter() {
        // 3 channels × 1×1: red holds the min, blue the max.
        let (tile, lo, hi) = filter_tile(&[-1.0, 0.0, 1.0], 3, 1);
        assert_eq!((lo, hi), (-1.0, 1.0));
        assert_eq!(tile, vec![0, 128, 255, 255]);
        let (tile, ..) = filter_tile(&[2.0, 4.0, 4.0, 2.0], 1, 2);
        assert_eq!(tile, vec![0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 255]);
    }

    #[test]
    fn formulas_fill_in_the_numbers() {
        let check = |arch: &str, layer: &str, expected: &str| {
            let g = find_arch(arch).unwrap().graph();
            let s = g.summary(None).unwrap();
            let row = s.layers.iter().find(|r| r.name == layer).unwrap();
            let node = &g.nodes[g.node(layer).unwrap()];
            assert_eq!(formula(node, row).as_deref(), Some(expected), "{arch} {layer}");
        };
        check("cifar-resnet20", "conv1", "(32 − 3 + 2·1)/1 + 1 = 32");
        check("cifar-resnet20", "layer2.0.conv1", "⌊(32 − 3 + 2·1)/2⌋ + 1 = 16");
        check("cifar-resnet20", "layer2.0.shortcut", "x[:, :, ::2, ::2] + 16 zero channels → 16×16");
        check("alexnet", "conv1", "⌊(227 − 11 + 2·0)/4⌋ + 1 = 55");
        check("resnet50", "maxpool", "⌊(112 − 3 + 2·1)/2⌋ + 1 = 56");
        check("resnet50", "avgpool", "adaptive: 7×7 → 1×1");
    }
}
