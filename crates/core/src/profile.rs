//! Where an inference spends its time: [`Model::forward`] timed node by node
//! ([`Model::forward_timed`]), grouped by the kernel each node runs on. Both benches use it (the
//! native `resnet-bench`, and `resnet-bench-wasm` in the browser) and serialise it as the
//! `profile` of `bench/results.json`.

use candle_core::{Device, Tensor};
use serde::{Serialize, Serializer};

use crate::kernels::conv::ConvPath;
use crate::spec::Op;
use crate::Model;

/// The part of the fast path a node runs on: the profile's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 3×3 stride-1 convs (Winograd).
    ConvWinograd,
    /// Strided convs and RGB stems (the direct kernel).
    ConvDirect,
    /// Other convs (im2col + gemm).
    ConvIm2col,
    /// 1×1 stride-1 convs (one gemm).
    #[serde(rename = "conv_1x1")]
    Conv1x1,
    Pooling,
    /// BatchNorm, ReLU, add and shortcuts not fused into a conv.
    BnReluAdd,
    Linear,
    Other,
}

impl Kind {
    pub fn of(op: &Op) -> Kind {
        match op {
            Op::Conv2d(c) => match ConvPath::of(c.in_ch, c.kernel, c.stride, c.padding) {
                ConvPath::Winograd => Kind::ConvWinograd,
                ConvPath::Direct => Kind::ConvDirect,
                ConvPath::Pointwise => Kind::Conv1x1,
                ConvPath::Im2col => Kind::ConvIm2col,
            },
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d { .. } => Kind::Pooling,
            Op::BatchNorm2d { .. } | Op::Relu | Op::Add | Op::ShortcutA { .. } => Kind::BnReluAdd,
            Op::Linear { .. } => Kind::Linear,
            _ => Kind::Other,
        }
    }
}

/// One node's median time.
#[derive(Clone, Debug, Serialize)]
pub struct LayerTime {
    pub layer: String,
    pub kind: Kind,
    #[serde(serialize_with = "ms4")]
    pub ms: f64,
}

/// A profile of the fast forward, batch 1. Times in ms, the median of the passes per node (and
/// of the whole forward). A conv's time includes the BatchNorm, residual add and ReLU fused into
/// it. `conv_gflops` counts a conv's direct multiply-adds (2·MACs), so Winograd's saving shows
/// as a higher rate.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    #[serde(serialize_with = "ms4")]
    pub forward_ms: f64,
    /// Total per kind, in the order the kinds first occur in the net.
    #[serde(serialize_with = "by_kind")]
    pub by_kind: Vec<(Kind, f64)>,
    #[serde(serialize_with = "ms4")]
    pub conv_ms: f64,
    #[serde(serialize_with = "round2")]
    pub conv_gflops: f64,
    pub layers: Vec<LayerTime>,
}

// Times to 0.1 µs and rates to 0.01 GFLOP/s: finer digits are noise and would only bloat
// results.json's per-layer lists.
fn rounded<S: Serializer>(v: f64, digits: i32, s: S) -> Result<S::Ok, S::Error> {
    let scale = 10f64.powi(digits);
    s.serialize_f64((v * scale).round() / scale)
}

fn ms4<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    rounded(*v, 4, s)
}

fn round2<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    rounded(*v, 2, s)
}

fn by_kind<S: Serializer>(v: &[(Kind, f64)], s: S) -> Result<S::Ok, S::Error> {
    struct Ms(f64);
    impl Serialize for Ms {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            rounded(self.0, 4, s)
        }
    }
    s.collect_map(v.iter().map(|(k, t)| (k, Ms(*t))))
}

/// Times `reps` (at least 1) forward passes of a random N(0, 1) input, node by node, after one
/// untimed pass. `now()` is a millisecond clock (`performance.now` in the browser, an `Instant`
/// natively).
pub fn profile_forward(model: &Model, reps: usize, now: &dyn Fn() -> f64) -> candle_core::Result<Profile> {
    let g = &model.graph;
    let x = Tensor::randn(0f32, 1f32, (1, g.input.c, g.input.h, g.input.w), &Device::Cpu)?;
    model.forward(&x)?;
    let mut per_node = vec![vec![]; g.nodes.len()];
    let mut totals = vec![];
    for _ in 0..reps.max(1) {
        let t0 = now();
        let (_, ms) = model.forward_timed(&x, now)?;
        totals.push(now() - t0);
        for (v, t) in per_node.iter_mut().zip(ms) {
            v.push(t);
        }
    }
    let summary = g.summary(None).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut by_kind: Vec<(Kind, f64)> = vec![];
    let (mut conv_ms, mut conv_macs) = (0.0, 0u64);
    let mut layers = vec![];
    for (node, times) in g.nodes.iter().zip(&mut per_node).skip(1) {
        let ms = median(times);
        let kind = Kind::of(&node.op);
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, t)) => *t += ms,
            None => by_kind.push((kind, ms)),
        }
        if let Op::Conv2d(_) = node.op {
            conv_ms += ms;
            conv_macs += summary.layers.iter().find(|r| r.name == node.name).map_or(0, |r| r.macs);
        }
        layers.push(LayerTime { layer: node.name.clone(), kind, ms });
    }
    Ok(Profile {
        forward_ms: median(&mut totals),
        by_kind,
        conv_ms,
        conv_gflops: 2.0 * conv_macs as f64 / (conv_ms.max(1e-9) * 1e6),
        layers,
    })
}

/// The upper median (the middle one of an odd count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
