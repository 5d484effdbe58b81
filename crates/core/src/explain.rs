//! Where the net looks: class activation maps of any layer with a spatial output, as
//! pytorch-grad-cam defines them.
//!
//! - Grad-CAM: `relu(Σ_k α_k A_k)`, `α_k` the spatial mean of `∂score/∂A_k`;
//! - Grad-CAM++: `α_k = Σ_ij relu(g) · g² / (2g² + Σ_ij A_k · g³ + ε)` (zero where `g = 0`);
//! - EigenCAM: the activations' first principal component (positions × channels, centred per
//!   channel), no gradient.
//!
//! The score is the class's logit. The gradient comes from the reference interpreter
//! ([`crate::model::run_from`]) continued from the layer's output, so only what depends on it
//! is differentiated; everything before it comes from one fast forward with taps.

use candle_core::{IndexOp, Result, Tensor, Var};
use serde::Serialize;

use crate::model::{run_from, run_to, Model};
use crate::rng::Rng;
use crate::spec::{Graph, NodeId, Op, RfBox, Shape};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum CamMethod {
    #[serde(rename = "gradcam")]
    GradCam,
    #[serde(rename = "gradcam++")]
    GradCamPlusPlus,
    #[serde(rename = "eigencam")]
    EigenCam,
}

impl CamMethod {
    pub const ALL: [CamMethod; 3] = [CamMethod::GradCam, CamMethod::GradCamPlusPlus, CamMethod::EigenCam];

    pub fn name(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::GradCamPlusPlus => "gradcam++",
            CamMethod::EigenCam => "eigencam",
        }
    }
}

impl std::str::FromStr for CamMethod {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        CamMethod::ALL.into_iter().find(|m| m.name() == s.to_ascii_lowercase()).ok_or_else(|| {
            format!("unknown method '{s}' (expected {})", CamMethod::ALL.map(CamMethod::name).join(", "))
        })
    }
}

/// A class activation map at the layer's own resolution: `height` rows of `width` values, all
/// non-negative.
#[derive(Clone, Debug, PartialEq)]
pub struct Cam {
    pub method: CamMethod,
    pub layer: NodeId,
    pub class: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Cam {
    /// Rows of values.
    pub fn rows(&self) -> Vec<Vec<f32>> {
        self.values.chunks(self.width).map(<[f32]>::to_vec).collect()
    }

    /// Scaled to `[0, 1]` and resized to `w`×`h`: see [`heat_map`].
    pub fn heat_map(&self, w: usize, h: usize) -> Vec<f32> {
        heat_map(&self.values, (self.width, self.height), (w, h))
    }
}

/// A map of `values` (`width`×`height`) scaled to `[0, 1]` (minus the minimum, over the
/// maximum, as pytorch-grad-cam's `scale_cam_image`) and resized bilinearly to `w`×`h` with
/// pixel centres aligned (as OpenCV's `INTER_LINEAR`): the heat map to lay over the input crop.
pub fn heat_map(values: &[f32], (width, height): (usize, usize), (w, h): (usize, usize)) -> Vec<f32> {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) - lo;
    let at = |y: usize, x: usize| (values[y * width + x] - lo) / (hi + 1e-7);
    // Source coordinate and the two neighbours' weights of output index `i`.
    let axis = |i: usize, n_out: usize, n_in: usize| {
        let c = ((i as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).clamp(0.0, (n_in - 1) as f32);
        let i0 = c.floor() as usize;
        (i0, (i0 + 1).min(n_in - 1), c - i0 as f32)
    };
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let (y0, y1, fy) = axis(y, h, height);
        for x in 0..w {
            let (x0, x1, fx) = axis(x, w, width);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The colour of `t` ∈ [0, 1] on the "jet" map (blue → cyan → yellow → red), as
/// pytorch-grad-cam's `show_cam_on_image` draws heat maps.
pub fn jet(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let ch = |centre: f32| ((1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ch(3.0), ch(2.0), ch(1.0)]
}

/// `heat` (values in [0, 1], one per pixel) in jet colours laid over an RGB8 image with the
/// given opacity (pytorch-grad-cam's default is 0.5).
pub fn overlay(rgb: &[u8], heat: &[f32], opacity: f32) -> Vec<u8> {
    let o = opacity.clamp(0.0, 1.0);
    rgb.chunks_exact(3)
        .zip(heat)
        .flat_map(|(px, &t)| {
            let c = jet(t);
            [0, 1, 2].map(|i| (o * c[i] as f32 + (1.0 - o) * px[i] as f32).round() as u8)
        })
        .collect()
}

/// A CAM (`values`, `w`×`h` at its layer's resolution) as a heat map over an RGBA crop
/// (`side`×`side`): scaled, upsampled and blended as [`heat_map`] and [`overlay`] do.
/// Returns RGBA.
pub fn heat_map_overlay(
    rgba: &[u8],
    side: usize,
    values: &[f32],
    (w, h): (usize, usize),
    opacity: f32,
) -> Vec<u8> {
    let rgb: Vec<u8> = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    overlay(&rgb, &heat_map(values, (w, h), (side, side)), opacity)
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

impl Graph {
    /// The layer a CAM looks at by default: the last block's output (the usual choice for
    /// ResNets), else the last layer that still has a spatial map larger than 1×1.
    pub fn default_cam_layer(&self) -> Option<NodeId> {
        if let Some(b) = self.blocks.last() {
            return Some(b.output);
        }
        let shapes = self.shapes(None).ok()?;
        (1..self.nodes.len()).rev().find(|&i| shapes[i].h * shapes[i].w > 1)
    }
}

impl Model {
    /// The class activation map of `layer` for `class` (default: the top class) on one image
    /// `x` (1×C×H×W).
    pub fn cam(&self, x: &Tensor, layer: NodeId, class: Option<usize>, method: CamMethod) -> Result<Cam> {
        if x.dim(0)? != 1 {
            candle_core::bail!("a class activation map is of one image, not a batch of {}", x.dim(0)?);
        }
        let (_, taps) = self.forward_taps(x)?;
        self.cam_from_taps(&taps, layer, class, method)
    }

    /// [`Model::cam`] from the taps of a pass already made ([`Model::forward_taps`] on one
    /// image): only the gradient's part is computed.
    pub fn cam_from_taps(
        &self,
        taps: &[Tensor],
        layer: NodeId,
        class: Option<usize>,
        method: CamMethod,
    ) -> Result<Cam> {
        let g = &self.graph;
        if layer == 0 || layer >= g.nodes.len() {
            candle_core::bail!("no layer {layer} (the net has {} layers)", g.nodes.len() - 1);
        }
        if taps.len() != g.nodes.len() {
            candle_core::bail!("{} taps for a net of {} nodes", taps.len(), g.nodes.len());
        }
        let logits = &taps[g.output()];
        let name = &g.nodes[layer].name;
        let a = &taps[layer];
        let (c, h, w) = match a.dims() {
            &[1, c, h, w] => (c, h, w),
            d => candle_core::bail!(
                "layer {name} has no spatial map (its output is {d:?}): pick a conv, ReLU or block"
            ),
        };
        let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let class = match class {
            Some(k) if k >= logits.len() => {
                candle_core::bail!("class {k}: the net has {} classes", logits.len())
            }
            Some(k) => k,
            None => crate::format::top_k(&logits, 1)[0].0,
        };
        let acts: Vec<f32> = a.flatten_all()?.to_vec1()?;
        let plane = h * w;
        let weights = match method {
            CamMethod::EigenCam => {
                let values = first_component(&acts, c, plane);
                return Ok(Cam { method, layer, class, height: h, width: w, values: relu(values) });
            }
            CamMethod::GradCam | CamMethod::GradCamPlusPlus => {
                let var = Var::from_tensor(&a.detach())?;
                let logits = run_from(g, &self.weights, taps, layer, var.as_tensor().clone())?;
                let grads = logits.i((0, class))?.backward()?;
                let grad: Vec<f32> = match grads.get(var.as_tensor()) {
                    Some(t) => t.flatten_all()?.to_vec1()?,
                    None => vec![0.0; acts.len()],
                };
                channel_weights(method, &acts, &grad, plane)
            }
        };
        let mut values = vec![0f32; plane];
        for (k, wk) in weights.iter().enumerate() {
            for (v, &a) in values.iter_mut().zip(&acts[k * plane..(k + 1) * plane]) {
                *v += wk * a;
            }
        }
        Ok(Cam { method, layer, class, height: h, width: w, values: relu(values) })
    }
}

/// The effective receptive field of one unit (`layer`, `channel`, `y`, `x`) on one image:
/// |∂unit/∂input| summed over the input's channels, at the input's resolution (`height` rows
/// of `width`). Most of it lies in a small part of the theoretical receptive field `rf`
/// (Luo et al., 2016).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Erf {
    pub layer: NodeId,
    pub channel: usize,
    pub y: usize,
    pub x: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
    pub rf: RfBox,
}

impl Erf {
    /// The side of the smallest square centred on the unit's receptive field that holds
    /// `fraction` of the gradient's mass (Σ|∂unit/∂input|); 0 when the gradient is zero.
    pub fn mass_side(&self, fraction: f64) -> usize {
        let total: f64 = self.values.iter().map(|&v| v as f64).sum();
        if total <= 0.0 {
            return 0;
        }
        // Mass by Chebyshev distance from the centre pixel: a square of radius r has side 2r + 1.
        let (cy, cx) = (self.rf.centre_y.round(), self.rf.centre_x.round());
        let radii = self.height.max(self.width) * 2 + 1;
        let mut by_radius = vec![0f64; radii];
        for (i, &v) in self.values.iter().enumerate() {
            let (py, px) = ((i / self.width) as f64, (i % self.width) as f64);
            let r = (py - cy).abs().max((px - cx).abs()) as usize;
            by_radius[r.min(radii - 1)] += v as f64;
        }
        let mut acc = 0.0;
        for (r, m) in by_radius.iter().enumerate() {
            acc += m;
            if acc >= fraction * total * (1.0 - 1e-9) {
                return 2 * r + 1;
            }
        }
        2 * radii - 1
    }
}

impl Model {
    /// The effective receptive field of unit (`channel`, `y`, `x`) of `layer` on one image `x`
    /// (1×C×H×W): the reference interpreter runs up to `layer` with the input as a variable.
    /// A vector layer's unit is (`channel`, 0, 0).
    pub fn effective_rf(
        &self,
        x: &Tensor,
        layer: NodeId,
        channel: usize,
        y: usize,
        xx: usize,
    ) -> Result<Erf> {
        let g = &self.graph;
        let (n, c, h, w) = x.dims4()?;
        if n != 1 {
            candle_core::bail!("an effective receptive field is of one image, not a batch of {n}");
        }
        let input = x.detach();
        let var = Var::from_tensor(&input)?;
        let out = run_to(g, &self.weights, var.as_tensor(), layer)?;
        let name = &g.nodes[layer].name;
        let unit = match out.dims() {
            &[1, oc, oh, ow] if channel < oc && y < oh && xx < ow => out.i((0, channel, y, xx))?,
            &[1, oc] if channel < oc && y == 0 && xx == 0 => out.i((0, channel))?,
            d => candle_core::bail!("layer {name} has no unit ({channel}, {y}, {xx}): its output is {d:?}"),
        };
        let grads = unit.backward()?;
        let values = match grads.get(var.as_tensor()) {
            Some(t) => t.abs()?.sum(1)?.flatten_all()?.to_vec1()?,
            None => vec![0.0; h * w],
        };
        let rf = g.rf_box(Some(Shape::new(c, h, w)), layer, y, xx).ok_or_else(|| {
            candle_core::Error::Msg(format!("layer {name}: no receptive field at ({y}, {xx})"))
        })?;
        Ok(Erf { layer, channel, y, x: xx, height: h, width: w, values, rf })
    }
}

/// The standard deviation of one 3×3 layer's response (its BatchNorm's output, before the
/// ReLU or the residual add): one point of the paper's Fig. 7.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct LayerResponse {
    /// The BatchNorm (`layer1.0.bn2`).
    pub layer: String,
    pub std: f32,
}

/// [`LayerResponse`] of every BatchNorm that follows a 3×3 conv, in order, from one pass's
/// `taps`: He et al.'s Fig. 7 (residual nets' responses are smaller than plain nets').
pub fn layer_responses(graph: &Graph, taps: &[Tensor]) -> Result<Vec<LayerResponse>> {
    let mut out = vec![];
    for (i, node) in graph.nodes.iter().enumerate() {
        let after_3x3 = matches!(node.op, Op::BatchNorm2d { .. })
            && node
                .inputs
                .first()
                .is_some_and(|&j| matches!(&graph.nodes[j].op, Op::Conv2d(c) if c.kernel == 3));
        if after_3x3 {
            let v: Vec<f32> = taps[i].flatten_all()?.to_vec1()?;
            out.push(LayerResponse { layer: node.name.clone(), std: std_dev(&v) });
        }
    }
    Ok(out)
}

fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

/// What one block does to the signal on one image: the residual stream, measured.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct BlockResponse {
    /// The block's name (`layer2.0`).
    pub block: String,
    /// Residual blocks: ‖F(x)‖ / ‖shortcut(x)‖, the size of what the block adds to what passes
    /// through; near 0, the block is near the identity. Plain blocks: ‖H(x) − x‖ / ‖x‖ where
    /// the shapes allow it.
    pub ratio: Option<f32>,
    /// Residual blocks: cos(F(x), shortcut(x)).
    pub cosine: Option<f32>,
    /// The standard deviation of F(x) (its last BatchNorm's output, before the add): the
    /// paper's Fig. 7 "layer responses".
    pub response_std: f32,
}

/// [`BlockResponse`] of every block with a residual branch, in order, from one pass's `taps`.
pub fn residual_stream(graph: &Graph, taps: &[Tensor]) -> Result<Vec<BlockResponse>> {
    let flat = |i: NodeId| -> Result<Vec<f32>> { taps[i].flatten_all()?.to_vec1() };
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let mut out = vec![];
    for b in &graph.blocks {
        let Some(r) = b.residual else { continue };
        let f = flat(r)?;
        let (ratio, cosine) = match b.add {
            Some(add) => {
                let other = graph.nodes[add].inputs.iter().copied().find(|&i| i != r).unwrap_or(r);
                let s = flat(other)?;
                let (nf, ns) = (norm(&f), norm(&s));
                let dot: f64 = f.iter().zip(&s).map(|(&a, &b)| a as f64 * b as f64).sum();
                (Some((nf / ns.max(1e-12)) as f32), Some((dot / (nf * ns).max(1e-12)) as f32))
            }
            None => {
                let (x, y) = (flat(b.input)?, flat(b.output)?);
                let ratio = (x.len() == y.len()).then(|| {
                    let diff: Vec<f32> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
                    (norm(&diff) / norm(&x).max(1e-12)) as f32
                });
                (ratio, None)
            }
        };
        out.push(BlockResponse { block: b.name.clone(), ratio, cosine, response_std: std_dev(&f) });
    }
    Ok(out)
}

fn relu(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| if x > 0.0 { x } else { 0.0 }).collect()
}

/// Grad-CAM's and Grad-CAM++'s weight of each channel.
fn channel_weights(method: CamMethod, acts: &[f32], grad: &[f32], plane: usize) -> Vec<f32> {
    let channels = acts.chunks_exact(plane).zip(grad.chunks_exact(plane));
    match method {
        CamMethod::GradCam => channels.map(|(_, g)| g.iter().sum::<f32>() / plane as f32).collect(),
        // In f64: the g³ terms amplify rounding.
        _ => channels
            .map(|(a, g)| {
                let sum_a: f64 = a.iter().map(|&v| v as f64).sum();
                let w: f64 = g
                    .iter()
                    .filter(|&&g| g != 0.0)
                    .map(|&g| {
                        let g = g as f64;
                        g.max(0.0) * g * g / (2.0 * g * g + sum_a * g * g * g + 1e-6)
                    })
                    .sum();
                w as f32
            })
            .collect(),
    }
}

/// EigenCAM: the projection of every position on the first principal direction of the
/// activations (positions × channels, each channel centred), through the smaller of the two
/// Gram matrices. Its sign is chosen so that the largest value is positive (a singular
/// vector's sign is arbitrary).
fn first_component(acts: &[f32], c: usize, plane: usize) -> Vec<f32> {
    // m[p][k]: position p, channel k, centred over positions.
    let mut m = vec![0f64; plane * c];
    for k in 0..c {
        let ch = &acts[k * plane..(k + 1) * plane];
        let mean = ch.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
        for (p, &v) in ch.iter().enumerate() {
            m[p * c + k] = v as f64 - mean;
        }
    }
    let proj: Vec<f64> = if c <= plane {
        // v: top eigenvector of MᵀM (c × c); the projection is M v.
        let mut gram = vec![0f64; c * c];
        for row in m.chunks_exact(c) {
            for i in 0..c {
                for j in 0..c {
                    gram[i * c + j] += row[i] * row[j];
                }
            }
        }
        let v = top_eigenvector(&gram, c);
        m.chunks_exact(c).map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum()).collect()
    } else {
        // u: top eigenvector of M Mᵀ (plane × plane); the projection is σ u.
        let mut gram = vec![0f64; plane * plane];
        for p in 0..plane {
            for q in 0..plane {
                gram[p * plane + q] = (0..c).map(|k| m[p * c + k] * m[q * c + k]).sum();
            }
        }
        let u = top_eigenvector(&gram, plane);
        let lambda: f64 =
            (0..plane).map(|p| u[p] * (0..plane).map(|q| gram[p * plane + q] * u[q]).sum::<f64>()).sum();
        u.iter().map(|x| x * lambda.max(0.0).sqrt()).collect()
    };
    let peak = proj.iter().copied().fold(0f64, |a, b| if b.abs() > a.abs() { b } else { a });
    let sign = if peak < 0.0 { -1.0 } else { 1.0 };
    proj.into_iter().map(|x| (x * sign) as f32).collect()
}

/// The unit eigenvector of the largest eigenvalue of a symmetric positive semi-definite
/// `n`×`n` matrix, by power iteration from a fixed pseudo-random start.
fn top_eigenvector(a: &[f64], n: usize) -> Vec<f64> {
    let mut rng = Rng::new(0xE16E_0CA3);
    let mut v: Vec<f64> = (0..n).map(|_| rng.normal() as f64).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let n0 = norm(&v).max(1e-300);
    v.iter_mut().for_each(|x| *x /= n0);
    for _ in 0..2000 {
        let mut next: Vec<f64> =
            (0..n).map(|i| a[i * n..(i + 1) * n].iter().zip(&v).map(|(x, y)| x * y).sum()).collect();
        let len = norm(&next);
        if len == 0.0 {
            return v; // a zero matrix: any direction
        }
        next.iter_mut().for_each(|x| *x /= len);
        let change: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        v = next;
        if change < 1e-10 {
            break;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_by_name() {
        assert_eq!("gradcam++".parse::<CamMethod>(), Ok(CamMethod::GradCamPlusPlus));
        assert_eq!("EigenCAM".parse::<CamMethod>(), Ok(CamMethod::EigenCam));
        assert!("saliency".parse::<CamMethod>().unwrap_err().contains("gradcam, gradcam++, eigencam"));
    }

    #[test]
    fn the_first_component_is_the_dominant_pattern() {
        // Three channels, four positions: every channel is a multiple of one pattern (+ a
        // little noise), so the projection follows that pattern, its largest value positive
        // (the centred pattern's largest is −2.625: the sign flips).
        let pattern = [1.0f32, -2.0, 3.0, 0.5];
        let mut acts = vec![];
        for (k, s) in [2.0f32, -1.0, 0.5].iter().enumerate() {
            acts.extend(pattern.iter().enumerate().map(|(p, &v)| s * v + 0.01 * ((k * 4 + p) % 3) as f32));
        }
        let p = first_component(&acts, 3, 4);
        let mean = pattern.iter().sum::<f32>() / 4.0;
        let centred: Vec<f32> = pattern.iter().map(|v| mean - v).collect();
        let dot: f32 = p.iter().zip(&centred).map(|(a, b)| a * b).sum();
        let norms =
            p.iter().map(|x| x * x).sum::<f32>().sqrt() * centred.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(dot / norms > 0.999, "{p:?}");
        // More channels than positions takes the other Gram matrix, with the same result.
        let wide: Vec<f32> = (0..6).flat_map(|k| pattern.map(|v| v * (k as f32 - 2.5))).collect();
        let p = first_component(&wide, 6, 4);
        let mean = pattern.iter().sum::<f32>() / 4.0;
        let ratio: Vec<f32> = p.iter().zip(&pattern).map(|(a, v)| a / (v - mean)).collect();
        assert!(ratio.iter().all(|r| (r - ratio[0]).abs() < 1e-3 * ratio[0].abs()), "{ratio:?}");
    }

    #[test]
    fn jet_runs_blue_to_red_and_overlays_blend() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(overlay(&[100, 100, 100], &[1.0], 0.5), vec![114, 50, 50]);
        assert_eq!(overlay(&[100, 100, 100], &[1.0], 0.0), vec![100, 100, 100]);
    }

    #[test]
    fn heat_maps_span_zero_to_one() {
        let cam = Cam {
            method: CamMethod::GradCam,
            layer: 1,
            class: 0,
            height: 2,
            width: 2,
            values: vec![0.0, 1.0, 2.0, 3.0],
        };
        let m = cam.heat_map(4, 4);
        assert_eq!(m.len(), 16);
        assert!(m[0].abs() < 1e-6 && (m[15] - 1.0).abs() < 1e-6, "{m:?}");
        assert!(m.windows(2).take(3).all(|w| w[0] <= w[1]), "rows increase: {m:?}");
    }
}
