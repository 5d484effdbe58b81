//! Where an inference spends its time: [`Model::forward`] timed node by node
//! ([`Model::forward_timed`]), grouped by the kernel each node runs on. Both benches use it (the
//! native `resnet-bench`, and `resnet-bench-wasm` in the browser) and serialise it as the
//! `profile` of `bench/results.json`.

use candle_core::{Device, Tensor};
use serde::{Serialize, Serializer};

use crate::kernels::conv::{ConvKernel, ConvPath};
use crate::kernels::plan::{FastPlan, FusedConv};
use crate::spec::{Conv, NodeId, Op};
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
    #[serde(serialize_with = "ms_map")]
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

/// `(key, ms)` pairs as a map, each time to 0.1 µs (a profile's kinds, a kernel check's kernels).
fn ms_map<K: Serialize, S: Serializer>(v: &[(K, f64)], s: S) -> Result<S::Ok, S::Error> {
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

/// The convs of one shape in a net (kernel size, stride, padding, channels, input plane): the
/// kernel the rule gives them, and what each kernel that can run them takes in the network.
#[derive(Clone, Debug, Serialize)]
pub struct KernelChoice {
    /// `in→out k×k /stride pad, h×w`, e.g. `64→64 3×3 /1 p1, 56×56`.
    pub shape: String,
    pub layers: Vec<String>,
    /// The rule's kernel ([`ConvKernel::rule`]).
    pub rule: &'static str,
    /// Each kernel's time: the median over rounds of its layers' summed time in the forward, ms.
    #[serde(serialize_with = "ms_map")]
    pub times: Vec<(&'static str, f64)>,
    pub fastest: &'static str,
    /// The rule's time over the fastest kernel's (1 where the rule picks the fastest).
    #[serde(serialize_with = "round2")]
    pub rule_vs_fastest: f64,
}

/// A kernel whose median over the first [`HOPELESS_AFTER`] rounds is more than this many times
/// the fastest one's is timed no further (the direct kernel on a 512-channel 3×3 conv): the
/// median of those rounds is reported. (A single round could not tell: one forward that met a
/// slow phase of the machine would have ruled its kernel out.)
const HOPELESS: f64 = 3.0;
const HOPELESS_AFTER: usize = 3;

/// Checks the rule that picks each conv's kernel ([`ConvKernel::rule`]) on this machine: for each
/// shape of conv in `model`, the fast forward (batch 1, a random N(0, 1) input) runs with those
/// convs on each kernel that can take them in turn, the rest as the rule says, in rounds (one
/// forward per kernel each, interleaved, so the machine's drift is shared) for at least `min_ms`
/// per shape (one round where `min_ms` is 0). A conv is timed in the network, where its input is
/// still in cache and its weights are not, as in an inference.
pub fn kernel_choices(
    model: &Model,
    min_ms: f64,
    now: &dyn Fn() -> f64,
) -> candle_core::Result<Vec<KernelChoice>> {
    let g = &model.graph;
    let shapes = g.shapes(None).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let x = Tensor::randn(0f32, 1f32, (1, g.input.c, g.input.h, g.input.w), &Device::Cpu)?;
    // Conv nodes grouped by shape, in the order the shapes first occur.
    let mut groups: Vec<(Conv, (usize, usize), Vec<NodeId>)> = vec![];
    for (i, node) in g.nodes.iter().enumerate() {
        let Op::Conv2d(c) = &node.op else { continue };
        let input = &shapes[node.inputs[0]];
        let plane = (input.h, input.w);
        match groups.iter_mut().find(|(gc, gp, _)| gc == c && *gp == plane) {
            Some((_, _, nodes)) => nodes.push(i),
            None => groups.push((*c, plane, vec![i])),
        }
    }
    // One plan runs every variant: a variant's convs are swapped in for its forward and out
    // again, so memory holds one plan and each variant's convs of one shape, not a plan a kernel.
    let mut plan = FastPlan::folded(g, &model.weights)?;
    let mut out = vec![];
    for (c, (h, w), nodes) in groups {
        let geometry = (c.kernel, c.stride, c.padding);
        let rule = ConvKernel::rule((c.out_ch, c.in_ch), geometry, Some((h, w)));
        // (kernel, its convs of this shape, its times, still timed)
        let mut kernels = vec![];
        for k in ConvKernel::candidates(geometry) {
            let mut variant = FastPlan::folded_with(g, &model.weights, &|i| nodes.contains(&i).then_some(k))?;
            let convs: Vec<_> = nodes.iter().map(|&i| variant.convs[i].take()).collect();
            kernels.push((k, convs, vec![], true));
        }
        let mut timed = |convs: &mut [Option<FusedConv>]| -> candle_core::Result<f64> {
            swap_convs(&mut plan, &nodes, convs);
            let run = plan.run(g, &model.weights, &x, false, Some(now));
            swap_convs(&mut plan, &nodes, convs); // the rule's convs back
            let ms = run?.node_ms;
            Ok(nodes.iter().map(|&i| ms[i]).sum())
        };
        for (_, convs, _, _) in kernels.iter_mut() {
            timed(convs)?; // warm-up: first-touch page faults, scratch buffers
        }
        let t0 = now();
        for round in 0.. {
            for (_, convs, times, _) in kernels.iter_mut().filter(|k| k.3) {
                times.push(timed(convs)?);
            }
            if round + 1 == HOPELESS_AFTER {
                let med = |t: &[f64]| median(&mut t.to_vec());
                let best = kernels.iter().map(|k| med(&k.2)).fold(f64::INFINITY, f64::min);
                for (k, _, times, live) in kernels.iter_mut() {
                    *live = *k == rule || med(times) <= HOPELESS * best;
                }
            }
            if min_ms <= 0.0 || now() - t0 >= min_ms {
                break;
            }
        }
        let times: Vec<(&'static str, f64)> =
            kernels.into_iter().map(|(k, _, mut t, _)| (k.name(), median(&mut t))).collect();
        let (fastest, best) =
            times.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).expect("a kernel or more");
        let rule_ms = times.iter().find(|(k, _)| *k == rule.name()).map_or(f64::NAN, |t| t.1);
        out.push(KernelChoice {
            shape: format!(
                "{}→{} {k}×{k} /{} p{}, {h}×{w}",
                c.in_ch,
                c.out_ch,
                c.stride,
                c.padding,
                k = c.kernel
            ),
            layers: nodes.iter().map(|&i| g.nodes[i].name.clone()).collect(),
            rule: rule.name(),
            times,
            fastest,
            rule_vs_fastest: rule_ms / best.max(1e-9),
        });
    }
    Ok(out)
}

/// Exchanges `plan`'s convs of `nodes` with `convs` (one each, in order).
fn swap_convs(plan: &mut FastPlan, nodes: &[NodeId], convs: &mut [Option<FusedConv>]) {
    for (&i, conv) in nodes.iter().zip(convs) {
        std::mem::swap(&mut plan.convs[i], conv);
    }
}

/// The upper median (the middle one of an odd count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{find_arch, WeightsSource};
    use std::time::Instant;

    fn resnet20() -> Model {
        Model::load(find_arch("cifar-resnet20").unwrap(), WeightsSource::Random(3), &Device::Cpu).unwrap()
    }

    /// Every conv is in one shape's row, each row times every kernel that can run it, the rule's
    /// among them, and the fastest is the one with the least time.
    #[test]
    fn kernel_choices_cover_every_conv_on_every_kernel() {
        let model = resnet20();
        let t0 = Instant::now();
        let now = || t0.elapsed().as_secs_f64() * 1e3;
        let choices = kernel_choices(&model, 0.0, &now).unwrap();
        let mut convs: Vec<&str> = model
            .graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Conv2d(_)))
            .map(|n| n.name.as_str())
            .collect();
        let mut listed: Vec<&str> =
            choices.iter().flat_map(|c| c.layers.iter().map(|l| l.as_str())).collect();
        convs.sort();
        listed.sort();
        assert_eq!(convs, listed);
        // ResNet-20: the 3-channel stem, three stride-1 3×3 shapes, two stride-2 ones.
        assert_eq!(choices.len(), 6, "{choices:?}");
        for c in &choices {
            let geometry = if c.shape.contains("3×3 /1 p1") { (3, 1, 1) } else { (3, 2, 1) };
            let names: Vec<&str> = ConvKernel::candidates(geometry).into_iter().map(|k| k.name()).collect();
            assert_eq!(c.times.iter().map(|t| t.0).collect::<Vec<_>>(), names, "{}", c.shape);
            assert!(names.contains(&c.rule), "{}", c.shape);
            assert!(c.times.iter().all(|t| t.1 > 0.0), "{c:?}");
            let least = c.times.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
            assert_eq!(c.times.iter().find(|t| t.0 == c.fastest).unwrap().1, least);
            assert!(c.rule_vs_fastest >= 1.0, "{c:?}");
        }
    }

    /// A plan told to run some convs on another kernel runs them there, and computes the same.
    #[test]
    fn a_plan_runs_the_kernels_it_is_told() {
        let model = resnet20();
        let g = &model.graph;
        let x = Tensor::randn(0f32, 1f32, (1, 3, 32, 32), &Device::Cpu).unwrap();
        let want = model.forward(&x).unwrap();
        let stride1 = |i: NodeId| matches!(&g.nodes[i].op, Op::Conv2d(c) if c.stride == 1 && c.in_ch > 3);
        let rule = FastPlan::folded(g, &model.weights).unwrap();
        for k in
            [ConvKernel::Im2col, ConvKernel::Direct, ConvKernel::Winograd(crate::kernels::winograd::Tile::F2)]
        {
            let plan = FastPlan::folded_with(g, &model.weights, &|i| stride1(i).then_some(k)).unwrap();
            for (i, (conv, by_rule)) in plan.convs.iter().zip(&rule.convs).enumerate() {
                let (Some(f), Some(r)) = (conv, by_rule) else { continue };
                let want = if stride1(i) { k } else { r.conv.kernel() };
                assert_eq!(f.conv.kernel(), want, "{}", g.nodes[i].name);
            }
            let got = plan.run(g, &model.weights, &x, false, None).unwrap().logits;
            let diff = (&want - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-3, "{k:?}: logits off by {diff}");
        }
    }
}
