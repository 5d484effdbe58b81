//! How the CPU fast path runs a graph: a [`FastPlan`] is compiled once from the same graph
//! description the table and the diagram come from, then executed for every input.
//!
//! Every conv is prepared once ([`PreparedConv`]). A folded plan (inference) also folds each
//! conv's BatchNorm into its weights, `bn(conv(x, W)) = conv(x, W·s) + (β − μ·s)` with
//! `s = γ / sqrt(σ² + ε)`, and fuses the residual add and ReLU that follow into the conv's
//! epilogue. An unfolded plan (taps) keeps every layer's own output. Ops without a fast kernel
//! run as the reference interpreter runs them ([`crate::model::eval_node`]).

use candle_core::{Result, Tensor};

use super::conv::{ConvKernel, PreparedConv};
use crate::model::{bn_affine, eval_node, Output, Values};
use crate::spec::{Graph, NodeId, Op};
use crate::weights::Weights;

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

/// Each node's input plane (h, w) at the graph's own input size, for choosing kernels; `None`
/// where the shapes do not follow.
fn input_planes(graph: &Graph) -> impl Fn(NodeId) -> Option<(usize, usize)> + '_ {
    let shapes = graph.shapes(None).ok();
    move |i| {
        let s = shapes.as_ref()?.get(*graph.nodes[i].inputs.first()?)?;
        Some((s.h, s.w))
    }
}

/// A graph compiled for the CPU fast path (see the module doc).
#[derive(Clone, Debug)]
pub struct FastPlan {
    /// Index = conv node.
    pub convs: Vec<Option<FusedConv>>,
    /// Nodes whose value a fused conv (or a BatchNorm/Add computing its ReLU) sets.
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
    pub fn folded(graph: &Graph, weights: &Weights) -> Result<Self> {
        Self::folded_with(graph, weights, &|_| None)
    }

    /// [`Self::folded`], conv node `i` on kernel `kernel(i)` where that is `Some` (the rule's
    /// otherwise): how the benchmark times the alternatives to the rule's choice in the network.
    pub fn folded_with(
        graph: &Graph,
        weights: &Weights,
        kernel: &dyn Fn(NodeId) -> Option<ConvKernel>,
    ) -> Result<Self> {
        let n = graph.nodes.len();
        let plane = input_planes(graph);
        let prepare = |i: NodeId, w: &Tensor, b: Option<&Tensor>, c: &crate::spec::Conv| match kernel(i) {
            Some(k) => PreparedConv::with_kernel(w, b, c.padding, c.stride, k),
            None => PreparedConv::for_plane(w, b, c.padding, c.stride, plane(i)),
        };
        let sole = graph.sole_consumers();
        let only = |i: NodeId| sole[i];
        let mut plan = FastPlan::empty(n, true);
        for (i, node) in graph.nodes.iter().enumerate() {
            let Op::Conv2d(c) = &node.op else { continue };
            let weight = weights.tensor(&format!("{}.weight", node.name))?;
            let bias = weights.get(&format!("{}.bias", node.name));
            let bn = only(i).filter(|&j| matches!(graph.nodes[j].op, Op::BatchNorm2d { .. }));
            let Some(bn) = bn else {
                plan.convs[i] = Some(FusedConv::alone(prepare(i, weight, bias, c)?));
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
            let conv = prepare(i, &w, Some(&b), c)?;
            plan.convs[i] = Some(FusedConv { conv, residual, relu: relu.is_some(), absorbs });
        }
        plan.add_affine(graph, weights)?;
        Ok(plan)
    }

    /// Every conv prepared with its own weights (and bias); nothing folded or fused.
    pub fn unfolded(graph: &Graph, weights: &Weights) -> Result<Self> {
        let n = graph.nodes.len();
        let plane = input_planes(graph);
        let mut plan = FastPlan::empty(n, false);
        for (i, node) in graph.nodes.iter().enumerate() {
            let Op::Conv2d(c) = &node.op else { continue };
            let weight = weights.tensor(&format!("{}.weight", node.name))?;
            let bias = weights.get(&format!("{}.bias", node.name));
            plan.convs[i] =
                Some(FusedConv::alone(PreparedConv::for_plane(weight, bias, c.padding, c.stride, plane(i))?));
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
    fn add_affine(&mut self, graph: &Graph, weights: &Weights) -> Result<()> {
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

    /// Runs the plan on `x` (N×C×H×W, a plain CPU f32 tensor: [`super::is_plain`]). With `taps`
    /// (unfolded plans only) every node's output is kept; with a `clock` (ms), each node's time,
    /// freeing its inputs included (nodes a fused conv computes take ~0).
    pub fn run(
        &self,
        graph: &Graph,
        weights: &Weights,
        x: &Tensor,
        taps: bool,
        clock: Option<&dyn Fn() -> f64>,
    ) -> Result<Output> {
        if taps && self.folded {
            candle_core::bail!("a folded plan keeps no taps: its fused nodes share one output");
        }
        if !super::is_plain(x) {
            candle_core::bail!("the fast path takes plain CPU f32 tensors");
        }
        if x.dim(0)? > 1 && !taps && clock.is_none() {
            return self.run_images(graph, weights, x);
        }
        let mut values = Values::new(graph, x, taps)?;
        let mut node_ms = vec![0.0; if clock.is_some() { graph.nodes.len() } else { 0 }];
        let mut last = clock.map(|now| now());
        // The whole pass as one team's (a threaded browser build): its parallel sections then
        // cost no thread wake-up.
        super::team::run(|| -> Result<()> {
            for (i, node) in graph.nodes.iter().enumerate().skip(1) {
                if !self.absorbed[i] {
                    self.node(graph, weights, i, &mut values)?;
                }
                values.release_inputs(node);
                if let (Some(now), Some(t0)) = (clock, last.as_mut()) {
                    let t = now();
                    node_ms[i] = t - *t0;
                    *t0 = t;
                }
            }
            Ok(())
        })?;
        let logits = values.output(graph)?;
        Ok(Output { logits, taps: values.into_taps(), bn_stats: vec![], node_ms })
    }

    /// A batch image by image (nothing in an inference crosses images): one image's activations
    /// stay in a core's caches through the whole net, where layer by layer over the batch each
    /// layer's outputs left them (ResNet-20 at batch 32 took 1.2 ms an image that way, 1.0 alone).
    /// With at least as many images as threads, each thread takes whole images and nothing
    /// waits on another thread within one; with fewer, each image's layers are split.
    fn run_images(&self, graph: &Graph, weights: &Weights, x: &Tensor) -> Result<Output> {
        let n = x.dim(0)?;
        let one = |i: usize| -> Result<Tensor> {
            Ok(self.run(graph, weights, &x.narrow(0, i, 1)?, false, None)?.logits)
        };
        let mut logits: Vec<Option<Result<Tensor>>> = (0..n).map(|_| None).collect();
        super::team::run(|| {
            let threads = super::free_threads();
            super::for_each_mut(&mut logits, threads > 1 && n >= threads, |i, l| *l = Some(one(i)));
        });
        let logits = logits.into_iter().map(|l| l.expect("every image ran")).collect::<Result<Vec<_>>>()?;
        Ok(Output { logits: Tensor::cat(&logits, 0)?, taps: vec![], bn_stats: vec![], node_ms: vec![] })
    }

    /// Computes node `i`, and the nodes it absorbs.
    fn node(&self, graph: &Graph, weights: &Weights, i: NodeId, values: &mut Values) -> Result<()> {
        let node = &graph.nodes[i];
        let xs = values.inputs(node)?;
        let mut relu = None;
        let y = match &node.op {
            Op::Conv2d(_) => {
                let f = self.convs[i].as_ref().expect("every conv is prepared");
                let residual = f.residual.map(|r| values.get(r)).transpose()?;
                f.conv.forward(xs[0], residual, f.relu)?
            }
            Op::BatchNorm2d { .. } if self.affine[i].is_some() => {
                let (scale, shift) = self.affine[i].as_ref().expect("matched above");
                let (y, r) = super::channel_affine(xs[0], scale, shift, self.relu_after[i].is_some())?;
                relu = r;
                y
            }
            Op::Add => {
                let (y, r) = super::add(xs[0], xs[1], self.relu_after[i].is_some())?;
                relu = r;
                y
            }
            Op::MaxPool2d(p) => super::pool::max_pool2d(xs[0], p)?,
            &Op::ShortcutA { out_ch, stride } if out_ch >= xs[0].dim(1)? => {
                super::shortcut_a(xs[0], out_ch, stride)?
            }
            _ => eval_node(node, &xs, weights)?,
        };
        if let Some(f) = &self.convs[i] {
            for &j in &f.absorbs {
                values.set(j, y.clone());
            }
        }
        values.set(i, y);
        if let (Some(r), Some(v)) = (self.relu_after[i], relu) {
            values.set(r, v);
        }
        Ok(())
    }
}
