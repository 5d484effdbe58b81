//! Runs a [`Graph`] on Candle tensors. One interpreter serves inference (BatchNorm folded into
//! the convs), exploration (every layer's output kept as a tap) and training (batch statistics).

use std::sync::OnceLock;

use candle_core::{DType, Device, Module, Tensor, D};

use crate::arch::ArchInfo;
use crate::kernels::{self, conv::PreparedConv};
use crate::ops;
use crate::spec::{Graph, NodeId, Op, Shape};
use crate::weights::Weights;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Running statistics, no dropout.
    #[default]
    Eval,
    /// Batch statistics (returned for the running-average update), dropout on.
    Train,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    pub mode: Mode,
    /// Keep every layer's output.
    pub taps: bool,
}

/// Batch statistics of one BatchNorm layer in training mode (biased variance, as used to
/// normalise; `count` = N·H·W elements per channel for the unbiased running update).
#[derive(Clone, Debug)]
pub struct BnStats {
    pub node: NodeId,
    pub mean: Tensor,
    pub var: Tensor,
    pub count: usize,
}

pub struct Output {
    pub logits: Tensor,
    /// With `taps`, every node's output (index = `NodeId`; `[0]` is the input).
    pub taps: Vec<Option<Tensor>>,
    pub bn_stats: Vec<BnStats>,
    /// With a clock ([`Model::forward_timed`]), ms per node, freeing its inputs included
    /// (index = `NodeId`; nodes a fused conv computes take ~0).
    pub node_ms: Vec<f64>,
}

/// A conv of the fast path, with what it absorbs: `relu?(conv(x) + bias + residual)`.
#[derive(Clone, Debug)]
pub struct FusedConv {
    pub conv: PreparedConv,
    /// The node whose output is added (a residual block's shortcut), already computed when
    /// the conv runs.
    pub residual: Option<NodeId>,
    pub relu: bool,
    /// The nodes after the conv that it computes (its BatchNorm, Add, ReLU): they take its value.
    pub absorbs: Vec<NodeId>,
}

impl FusedConv {
    /// A conv that absorbs nothing.
    fn alone(conv: PreparedConv) -> Self {
        FusedConv { conv, residual: None, relu: false, absorbs: vec![] }
    }
}

/// How the CPU fast path runs a graph: every conv prepared once ([`PreparedConv`]). A folded
/// plan (inference) also folds each conv's BatchNorm into its weights,
/// `bn(conv(x, W)) = conv(x, W·s) + (β − μ·s)` with `s = γ / sqrt(σ² + ε)`, and fuses the
/// residual add and ReLU that follow. An unfolded plan (taps) keeps every layer's own output.
#[derive(Clone, Debug)]
pub struct FastPlan {
    /// Index = conv node.
    pub convs: Vec<Option<FusedConv>>,
    /// Nodes whose value a fused conv sets.
    pub absorbed: Vec<bool>,
    /// BatchNorm nodes not folded into a conv, as `(scale, shift)` per channel. Index = node.
    pub affine: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// A BatchNorm or Add whose only consumer is a ReLU computes that ReLU's output in the same
    /// pass (index = the BatchNorm or Add; the ReLU is then `absorbed`).
    pub relu_after: Vec<Option<NodeId>>,
    pub folded: bool,
}

impl FastPlan {
    /// Inference: BatchNorm folded, add and ReLU fused where the graph allows.
    pub fn folded(graph: &Graph, weights: &Weights) -> candle_core::Result<Self> {
        let n = graph.nodes.len();
        let mut consumers = vec![vec![]; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            for &j in &node.inputs {
                consumers[j].push(i);
            }
        }
        let only = |i: NodeId| match consumers[i].as_slice() {
            [j] => Some(*j),
            _ => None,
        };
        let mut plan = FastPlan::empty(n, true);
        for (i, node) in graph.nodes.iter().enumerate() {
            let Op::Conv2d(c) = &node.op else { continue };
            let weight = weights.tensor(&format!("{}.weight", node.name))?;
            let bias = weights.get(&format!("{}.bias", node.name));
            let bn = only(i).filter(|&j| matches!(graph.nodes[j].op, Op::BatchNorm2d { .. }));
            let Some(bn) = bn else {
                plan.convs[i] = Some(FusedConv::alone(PreparedConv::new(weight, bias, c.padding, c.stride)?));
                continue;
            };
            let Op::BatchNorm2d { eps, .. } = graph.nodes[bn].op else { unreachable!("matched above") };
            let (scale, shift) = bn_affine(weights, &graph.nodes[bn].name, eps)?;
            let w = weight.broadcast_mul(&scale.reshape((c.out_ch, 1, 1, 1))?)?;
            let b = match bias {
                Some(b) => ((b * &scale)? + shift)?,
                None => shift,
            };
            let mut absorbs = vec![bn];
            let mut residual = None;
            let mut last = bn;
            if let Some(add) = only(last).filter(|&a| matches!(graph.nodes[a].op, Op::Add)) {
                // The other summand must exist when the conv runs (nodes run in index order).
                if let &[p, q] = graph.nodes[add].inputs.as_slice() {
                    let other = if p == last { q } else { p };
                    if other != last && other < i {
                        residual = Some(other);
                        absorbs.push(add);
                        last = add;
                    }
                }
            }
            let relu = only(last).filter(|&r| matches!(graph.nodes[r].op, Op::Relu));
            absorbs.extend(relu);
            for &j in &absorbs {
                plan.absorbed[j] = true;
            }
            let conv = PreparedConv::new(&w, Some(&b), c.padding, c.stride)?;
            plan.convs[i] = Some(FusedConv { conv, residual, relu: relu.is_some(), absorbs });
        }
        plan.add_affine(graph, weights)?;
        Ok(plan)
    }

    fn empty(n: usize, folded: bool) -> Self {
        FastPlan {
            convs: vec![None; n],
            absorbed: vec![false; n],
            affine: vec![None; n],
            relu_after: vec![None; n],
            folded,
        }
    }

    /// `(scale, shift)` of every BatchNorm that no conv absorbed, and the ReLUs that such a
    /// BatchNorm or an Add computes on the way.
    fn add_affine(&mut self, graph: &Graph, weights: &Weights) -> candle_core::Result<()> {
        let fan_out = graph.fan_out();
        let mut relu_of = vec![None; graph.nodes.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            if matches!(node.op, Op::Relu) && fan_out[node.inputs[0]] == 1 {
                relu_of[node.inputs[0]] = Some(i);
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            if self.absorbed[i] {
                continue;
            }
            match node.op {
                Op::BatchNorm2d { eps, .. } => {
                    let (scale, shift) = bn_affine(weights, &node.name, eps)?;
                    self.affine[i] = Some((scale.to_vec1()?, shift.to_vec1()?));
                }
                Op::Add if node.inputs.len() == 2 => {}
                _ => continue,
            }
            if let Some(r) = relu_of[i].filter(|&r| !self.absorbed[r]) {
                self.relu_after[i] = Some(r);
                self.absorbed[r] = true;
            }
        }
        Ok(())
    }

    /// Every conv prepared with its own weights (and bias); nothing folded or fused.
    pub fn unfolded(graph: &Graph, weights: &Weights) -> candle_core::Result<Self> {
        let n = graph.nodes.len();
        let mut plan = FastPlan::empty(n, false);
        for (i, node) in graph.nodes.iter().enumerate() {
            let Op::Conv2d(c) = &node.op else { continue };
            let weight = weights.tensor(&format!("{}.weight", node.name))?;
            let bias = weights.get(&format!("{}.bias", node.name));
            plan.convs[i] = Some(FusedConv::alone(PreparedConv::new(weight, bias, c.padding, c.stride)?));
        }
        plan.add_affine(graph, weights)?;
        Ok(plan)
    }
}

/// BatchNorm in eval mode as a per-channel affine map: `(scale, shift)`.
fn bn_affine(weights: &Weights, name: &str, eps: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let gamma = weights.tensor(&format!("{name}.weight"))?;
    let beta = weights.tensor(&format!("{name}.bias"))?;
    let mean = weights.tensor(&format!("{name}.running_mean"))?;
    let var = weights.tensor(&format!("{name}.running_var"))?;
    let scale = gamma.div(&(var + eps)?.sqrt()?)?;
    let shift = (beta - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

fn per_channel(t: &Tensor) -> candle_core::Result<Tensor> {
    t.reshape((1, t.elem_count(), 1, 1))
}

/// Runs `graph` on `x` (N×C×H×W). With a `plan` (see [`FastPlan`]), convs run on the CPU fast
/// path; a folded plan is used only in eval mode without taps, an unfolded one in eval mode.
/// Training, and an input that records gradients, always take Candle's differentiable ops.
pub fn run(
    graph: &Graph,
    weights: &Weights,
    plan: Option<&FastPlan>,
    x: &Tensor,
    opts: RunOptions,
) -> candle_core::Result<Output> {
    run_impl(graph, weights, plan, x, opts, true, None)
}

/// `fast_conv`: convs without a plan through [`kernels::conv`] rather than Candle's own.
fn run_impl(
    graph: &Graph,
    weights: &Weights,
    plan: Option<&FastPlan>,
    x: &Tensor,
    opts: RunOptions,
    fast_conv: bool,
    clock: Option<&dyn Fn() -> f64>,
) -> candle_core::Result<Output> {
    let conv = |x: &Tensor, w: &Tensor, padding: usize, stride: usize| match fast_conv {
        true => kernels::conv::conv2d(x, w, padding, stride),
        false => x.conv2d(w, padding, stride, 1, 1),
    };
    let (_, c, h, w) = x.dims4()?;
    graph.shapes(Some(Shape::new(c, h, w))).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let plan = plan.filter(|p| {
        opts.mode == Mode::Eval && !(p.folded && opts.taps) && kernels::is_plain(x) && x.dtype() == DType::F32
    });
    let mut uses = graph.fan_out();
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    let mut bn_stats = vec![];
    values[0] = Some(x.clone());
    let param = |node: &str, p: &str| weights.tensor(&format!("{node}.{p}"));
    let mut node_ms = vec![0.0; if clock.is_some() { graph.nodes.len() } else { 0 }];
    let mut last = clock.map(|now| now());
    for (i, node) in graph.nodes.iter().enumerate().skip(1) {
        let input = |k: usize| -> candle_core::Result<&Tensor> {
            values[node.inputs[k]]
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg(format!("{}: input already freed", node.name)))
        };
        if plan.is_some_and(|p| p.absorbed[i]) {
            // A fused conv already set this node's value.
        } else {
            let relu_after = plan.and_then(|p| p.relu_after[i]);
            let mut relu_value = None;
            let y = match &node.op {
                Op::Input => unreachable!("only node 0 is the input"),
                Op::Conv2d(cfg) => match plan.and_then(|p| p.convs[i].as_ref()) {
                    Some(f) => {
                        let residual =
                            f.residual.map(|r| values[r].as_ref().expect("computed before the conv"));
                        f.conv.forward(input(0)?, residual, f.relu)?
                    }
                    None => {
                        let y = conv(input(0)?, param(&node.name, "weight")?, cfg.padding, cfg.stride)?;
                        match cfg.bias {
                            true => y.broadcast_add(&per_channel(param(&node.name, "bias")?)?)?,
                            false => y,
                        }
                    }
                },
                Op::BatchNorm2d { eps, .. } => {
                    if opts.mode == Mode::Train {
                        let x = input(0)?;
                        let (n, _, h, w) = x.dims4()?;
                        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
                        let centred = x.broadcast_sub(&mean)?;
                        let var = centred.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
                        let xhat = centred.broadcast_div(&(&var + *eps)?.sqrt()?)?;
                        bn_stats.push(BnStats {
                            node: i,
                            mean: mean.flatten_all()?.detach(),
                            var: var.flatten_all()?.detach(),
                            count: n * h * w,
                        });
                        xhat.broadcast_mul(&per_channel(param(&node.name, "weight")?)?)?
                            .broadcast_add(&per_channel(param(&node.name, "bias")?)?)?
                    } else if let Some((scale, shift)) = plan.and_then(|p| p.affine[i].as_ref()) {
                        let (y, r) = kernels::channel_affine(input(0)?, scale, shift, relu_after.is_some())?;
                        relu_value = r;
                        y
                    } else {
                        let (scale, shift) = bn_affine(weights, &node.name, *eps)?;
                        input(0)?
                            .broadcast_mul(&per_channel(&scale)?)?
                            .broadcast_add(&per_channel(&shift)?)?
                    }
                }
                Op::Relu => input(0)?.relu()?,
                Op::Tanh => input(0)?.tanh()?,
                Op::MaxPool2d(p) if plan.is_some() => kernels::pool::max_pool2d(input(0)?, p)?,
                Op::MaxPool2d(p) => ops::max_pool2d(input(0)?, p, opts.mode == Mode::Train)?,
                Op::AvgPool2d(p) => ops::avg_pool2d(input(0)?, p)?,
                Op::AdaptiveAvgPool2d { h, w } => ops::adaptive_avg_pool2d(input(0)?, *h, *w)?,
                Op::LocalResponseNorm { size, alpha, beta, k } => {
                    ops::local_response_norm(input(0)?, *size, *alpha, *beta, *k)?
                }
                Op::Flatten => input(0)?.flatten_from(1)?,
                Op::Dropout { p } => match opts.mode {
                    Mode::Train => candle_nn::ops::dropout(input(0)?, *p)?,
                    Mode::Eval => input(0)?.clone(),
                },
                Op::Linear { bias, .. } => {
                    let w = param(&node.name, "weight")?;
                    let b = if *bias { Some(param(&node.name, "bias")?.clone()) } else { None };
                    candle_nn::Linear::new(w.clone(), b).forward(input(0)?)?
                }
                Op::Add if plan.is_some() => {
                    let (y, r) = kernels::add(input(0)?, input(1)?, relu_after.is_some())?;
                    relu_value = r;
                    y
                }
                Op::Add => (input(0)? + input(1)?)?,
                Op::Concat => {
                    let xs = (0..node.inputs.len()).map(input).collect::<candle_core::Result<Vec<_>>>()?;
                    Tensor::cat(&xs, 1)?
                }
                Op::ShortcutA { out_ch, stride } => ops::shortcut_a(input(0)?, *out_ch, *stride)?,
            };
            for &j in plan.and_then(|p| p.convs[i].as_ref()).map_or(&[][..], |f| &f.absorbs) {
                values[j] = Some(y.clone());
            }
            values[i] = Some(y);
            if let (Some(r), Some(v)) = (relu_after, relu_value) {
                values[r] = Some(v);
            }
        }
        if !opts.taps {
            for &j in &node.inputs {
                uses[j] -= 1;
                if uses[j] == 0 {
                    values[j] = None;
                }
            }
        }
        if let (Some(now), Some(t0)) = (clock, last.as_mut()) {
            let t = now();
            node_ms[i] = t - *t0;
            *t0 = t;
        }
    }
    let logits = values[graph.output()].clone().expect("the output was just computed");
    let taps = if opts.taps { values } else { vec![] };
    Ok(Output { logits, taps, bn_stats, node_ms })
}

/// A network with its weights, ready for inference.
pub struct Model {
    pub arch: &'static ArchInfo,
    pub graph: Graph,
    pub weights: Weights,
    /// Prepared on first use: inference (folded) and taps (unfolded).
    folded: OnceLock<FastPlan>,
    unfolded: OnceLock<FastPlan>,
}

impl Model {
    pub fn new(arch: &'static ArchInfo, graph: Graph, weights: Weights) -> Self {
        Model { arch, graph, weights, folded: OnceLock::new(), unfolded: OnceLock::new() }
    }

    /// The architecture with deterministic random weights ("untrained").
    pub fn random(arch: &'static ArchInfo, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let graph = arch.graph();
        let weights = Weights::random(&graph, seed, device)?;
        Ok(Self::new(arch, graph, weights))
    }

    pub fn device(&self) -> Device {
        self.weights.iter().next().map(|(_, t)| t.device().clone()).unwrap_or(Device::Cpu)
    }

    /// Logits, BatchNorm folded into the convs (folded once, on first use).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let plan = cached(&self.folded, || FastPlan::folded(&self.graph, &self.weights))?;
        Ok(run(&self.graph, &self.weights, Some(plan), x, RunOptions::default())?.logits)
    }

    /// [`Model::forward`], timed node by node with `now` (ms): where an inference spends its time.
    pub fn forward_timed(
        &self,
        x: &Tensor,
        now: &dyn Fn() -> f64,
    ) -> candle_core::Result<(Tensor, Vec<f64>)> {
        let plan = cached(&self.folded, || FastPlan::folded(&self.graph, &self.weights))?;
        let out =
            run_impl(&self.graph, &self.weights, Some(plan), x, RunOptions::default(), true, Some(now))?;
        Ok((out.logits, out.node_ms))
    }

    /// Logits layer by layer as described, with Candle's own ops (no folding, no fast kernels):
    /// the reference the fast paths are tested against.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(run_impl(&self.graph, &self.weights, None, x, RunOptions::default(), false, None)?.logits)
    }

    /// Logits and every layer's output (index = node id).
    pub fn forward_taps(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let plan = cached(&self.unfolded, || FastPlan::unfolded(&self.graph, &self.weights))?;
        let out =
            run(&self.graph, &self.weights, Some(plan), x, RunOptions { taps: true, ..Default::default() })?;
        let taps = out.taps.into_iter().map(|t| t.expect("taps keep every node")).collect();
        Ok((out.logits, taps))
    }
}

fn cached(
    cell: &OnceLock<FastPlan>,
    make: impl FnOnce() -> candle_core::Result<FastPlan>,
) -> candle_core::Result<&FastPlan> {
    match cell.get() {
        Some(p) => Ok(p),
        None => {
            let p = make()?;
            Ok(cell.get_or_init(|| p))
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)
}
