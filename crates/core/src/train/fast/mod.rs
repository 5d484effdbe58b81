//! The fast CPU training plan: compiled once from the same graph the interpreter runs, it keeps
//! every parameter and activation in plain `Vec<f32>`s sized once per batch size, runs forward
//! and backward with kernels of its own ([`ops`]: conv by im2col/gemm in cache-sized bands,
//! BatchNorm with batch statistics fused with the ReLU that follows, the residual add with its
//! ReLU, option-A shortcuts, pooling, linear, cross-entropy), splits the batch among threads,
//! and updates each parameter with SGD in one pass.
//!
//! The Candle-op path ([`super::Trainer`] on other devices, or where an op is missing here) is
//! the reference: tests hold the two to the same loss, gradients and parameters.

pub mod ops;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor};

use self::ops::{BnSaved, ConvShape, Scratch, Shards};
use super::{SgdConfig, StepStats};
use crate::kernels::im2col::ConvGeometry;
use crate::kernels::winograd::Winograd3x3;
use crate::spec::{Graph, NodeId, Op, Pool, Shape};
use crate::weights::Weights;

/// What the plan does at a node.
#[derive(Clone, Debug)]
enum Kind {
    Input,
    Conv {
        weight: usize,
        bias: Option<usize>,
    },
    /// With `relu`, the ReLU after it is computed here (that ReLU is an [`Kind::Alias`]).
    Bn {
        weight: usize,
        bias: usize,
        eps: f64,
        relu: bool,
        slot: usize,
    },
    Relu,
    Tanh,
    Add {
        relu: bool,
    },
    ShortcutA {
        stride: usize,
    },
    GlobalAvg,
    MaxPool(Pool),
    AvgPool(Pool),
    Linear {
        weight: usize,
        bias: Option<usize>,
    },
    /// Same values as another node's (Flatten, p = 0 dropout, a fused ReLU).
    Alias,
}

/// Why the plan cannot train `graph`: its first op without a kernel here.
pub fn unsupported(graph: &Graph) -> Option<String> {
    graph.nodes.iter().find_map(|n| {
        let ok = match &n.op {
            Op::Input | Op::Conv2d(_) | Op::BatchNorm2d { .. } | Op::Relu | Op::Tanh | Op::Add => true,
            Op::ShortcutA { out_ch, .. } => *out_ch >= graph.nodes[n.inputs[0]].channels,
            Op::MaxPool2d(_) | Op::Flatten | Op::Linear { .. } => true,
            Op::AvgPool2d(p) => p.padding == 0 && !p.ceil_mode,
            Op::AdaptiveAvgPool2d { h, w } => (*h, *w) == (1, 1),
            Op::Dropout { p } => *p == 0.0,
            Op::LocalResponseNorm { .. } | Op::Concat => false,
        };
        (!ok).then(|| format!("{} ({})", n.op.kind(), n.name))
    })
}

fn pool_shape(si: Shape, so: Shape, pool: &Pool) -> ops::PoolShape {
    ops::PoolShape { planes: si.c, input: (si.h, si.w), output: (so.h, so.w), pool: *pool }
}

struct Param {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
    grad: Vec<f32>,
    /// SGD's momentum buffer, from the first update on.
    momentum: Option<Vec<f32>>,
}

/// Sizes for one batch shape.
struct Layout {
    n: usize,
    input: Shape,
    shapes: Vec<Shape>,
    convs: Vec<Option<ConvShape>>,
    shards: Shards,
}

/// A network being trained on the fast plan.
pub struct FastTrainer {
    graph: Graph,
    kinds: Vec<Kind>,
    /// The node whose buffer holds each node's value (itself unless an alias).
    owner: Vec<NodeId>,
    params: Vec<Param>,
    /// Running statistics and batch counters, as loaded.
    buffers: BTreeMap<String, Tensor>,
    sgd: SgdConfig,
    bn_nodes: Vec<NodeId>,
    bn_saved: Vec<BnSaved>,
    layout: Option<Layout>,
    values: Vec<Vec<f32>>,
    /// Each node's gradient while it is live: taken from `spare` when a consumer first writes
    /// it, given back once its own backward has read it, so a step holds a few at a time.
    grads: Vec<Vec<f32>>,
    spare: GradPool,
    scratch: Vec<Scratch>,
    /// The flipped weights of the im2col conv whose backward runs (one conv at a time).
    flipped: Vec<f32>,
    /// The Winograd transform of the weights of the conv that runs, forward or backward.
    wino: Winograd3x3,
}

impl FastTrainer {
    /// Takes `params` (trainable, f32) and `buffers` (running statistics) by name.
    pub fn new(
        graph: Graph,
        params: &BTreeMap<String, Tensor>,
        buffers: BTreeMap<String, Tensor>,
        sgd: SgdConfig,
    ) -> Result<Self> {
        if let Some(op) = unsupported(&graph) {
            candle_core::bail!("the fast training plan has no kernel for {op}");
        }
        let mut list = vec![];
        let mut index = BTreeMap::new();
        for (name, t) in params {
            index.insert(name.clone(), list.len());
            let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            list.push(Param {
                name: name.clone(),
                shape: t.dims().to_vec(),
                grad: vec![0.0; data.len()],
                data,
                momentum: None,
            });
        }
        let param = |name: String| {
            index.get(&name).copied().ok_or_else(|| candle_core::Error::Msg(format!("no parameter {name}")))
        };
        let n = graph.nodes.len();
        let sole = graph.sole_consumers();
        let relu_only = |i: NodeId| sole[i].is_some_and(|j| matches!(graph.nodes[j].op, Op::Relu));
        let mut kinds = vec![Kind::Input; n];
        let mut owner: Vec<NodeId> = (0..n).collect();
        let mut bn_nodes = vec![];
        for (i, node) in graph.nodes.iter().enumerate() {
            let name = &node.name;
            kinds[i] = match &node.op {
                Op::Input => Kind::Input,
                Op::Conv2d(c) => Kind::Conv {
                    weight: param(format!("{name}.weight"))?,
                    bias: if c.bias { Some(param(format!("{name}.bias"))?) } else { None },
                },
                Op::BatchNorm2d { eps, .. } => {
                    bn_nodes.push(i);
                    Kind::Bn {
                        weight: param(format!("{name}.weight"))?,
                        bias: param(format!("{name}.bias"))?,
                        eps: *eps,
                        relu: relu_only(i),
                        slot: bn_nodes.len() - 1,
                    }
                }
                Op::Add => Kind::Add { relu: relu_only(i) },
                Op::Relu => match &kinds[node.inputs[0]] {
                    Kind::Bn { relu: true, .. } | Kind::Add { relu: true } => {
                        owner[i] = owner[node.inputs[0]];
                        Kind::Alias
                    }
                    _ => Kind::Relu,
                },
                Op::Tanh => Kind::Tanh,
                Op::ShortcutA { stride, .. } => Kind::ShortcutA { stride: *stride },
                Op::AdaptiveAvgPool2d { .. } => Kind::GlobalAvg,
                Op::MaxPool2d(p) => Kind::MaxPool(*p),
                Op::AvgPool2d(p) => Kind::AvgPool(*p),
                Op::Flatten | Op::Dropout { .. } => {
                    owner[i] = owner[node.inputs[0]];
                    Kind::Alias
                }
                Op::Linear { bias, .. } => Kind::Linear {
                    weight: param(format!("{name}.weight"))?,
                    bias: if *bias { Some(param(format!("{name}.bias"))?) } else { None },
                },
                Op::LocalResponseNorm { .. } | Op::Concat => unreachable!("refused by `unsupported`"),
            };
        }
        Ok(FastTrainer {
            kinds,
            owner,
            params: list,
            buffers,
            sgd,
            bn_saved: vec![BnSaved::default(); bn_nodes.len()],
            bn_nodes,
            layout: None,
            values: vec![vec![]; n],
            grads: vec![vec![]; n],
            spare: GradPool::default(),
            scratch: vec![],
            flipped: vec![],
            wino: Winograd3x3::new(&[], 0, 0),
            graph,
        })
    }

    /// Sizes every buffer for a batch of `n` images of `input` (kept while the shape stays).
    fn prepare(&mut self, n: usize, input: Shape) -> Result<()> {
        if self.layout.as_ref().is_some_and(|l| l.n == n && l.input == input) {
            return Ok(());
        }
        let shapes = self.graph.shapes(Some(input)).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut convs = vec![None; shapes.len()];
        let (mut cols, mut dw, mut ch, mut flipped) = (0, 0, 0, 0);
        for (i, node) in self.graph.nodes.iter().enumerate() {
            ch = ch.max(shapes[i].c);
            if let Op::Conv2d(c) = &node.op {
                let s = shapes[node.inputs[0]];
                let g = ConvGeometry::new(s.c, (s.h, s.w), c.kernel, c.stride, c.padding)?;
                let conv = ConvShape::new(g, c.out_ch);
                cols = cols.max(conv.cols_len());
                flipped = flipped.max(conv.flipped_len());
                // A Winograd conv's shard sums ∂L/∂U: 16 floats a channel pair, not 9.
                dw = dw.max(if conv.winograd { 16 * c.out_ch * s.c } else { c.out_ch * g.rows() });
                convs[i] = Some(conv);
            }
        }
        self.flipped.resize(flipped, 0.0);
        let threads = crate::kernels::free_threads();
        let shards = Shards::new(n, threads);
        self.scratch.resize_with(shards.0.len(), Scratch::default);
        for s in &mut self.scratch {
            s.cols.resize(cols, 0.0);
            s.dcols.resize(cols, 0.0);
            s.dw.resize(dw, 0.0);
            s.db.resize(ch, 0.0);
            s.sums.resize(3 * ch, 0.0);
        }
        for (i, s) in shapes.iter().enumerate() {
            let len = if self.owner[i] == i { n * s.elements() } else { 0 };
            // Within the capacity already there after the first batch of this size or larger.
            self.values[i].resize(len, 0.0);
        }
        self.layout = Some(Layout { n, input, shapes, convs, shards });
        Ok(())
    }

    /// Forward with batch statistics on `x` (N×C×H×W); returns the loss, the hits and leaves
    /// `dlogits` in the output's gradient buffer.
    fn forward(&mut self, x: &Tensor, labels: &Tensor) -> Result<(f32, usize)> {
        let (n, c, h, w) = x.dims4()?;
        self.prepare(n, Shape::new(c, h, w))?;
        let x = x.to_dtype(DType::F32)?;
        crate::kernels::with_slice(&x, |s| self.values[0].copy_from_slice(s))?;
        let layout = self.layout.as_ref().expect("prepared");
        let sh = &layout.shards;
        for (i, node) in self.graph.nodes.iter().enumerate().skip(1) {
            let kind = &self.kinds[i];
            if matches!(kind, Kind::Alias) {
                continue;
            }
            let mut out = std::mem::take(&mut self.values[i]);
            let src = self.owner[node.inputs[0]];
            let x = &self.values[src];
            let (si, so) = (layout.shapes[node.inputs[0]], layout.shapes[i]);
            let scratch = &mut self.scratch;
            let p = &self.params;
            match kind {
                Kind::Conv { weight, bias } => {
                    let conv = layout.convs[i].as_ref().expect("conv geometry");
                    if conv.winograd {
                        self.wino.set_weights(&p[*weight].data, conv.out_ch, conv.g.c);
                    }
                    ops::conv_forward(
                        conv,
                        x,
                        &p[*weight].data,
                        bias.map(|b| p[b].data.as_slice()),
                        Some(&self.wino),
                        &mut out,
                        sh,
                        scratch,
                    )
                }
                Kind::Bn { weight, bias, eps, relu, slot } => ops::bn_forward(
                    (so.c, so.h * so.w),
                    x,
                    &p[*weight].data,
                    &p[*bias].data,
                    *eps,
                    *relu,
                    &mut out,
                    &mut self.bn_saved[*slot],
                    sh,
                    scratch,
                ),
                Kind::Relu => ops::elementwise(&mut out, sh, so.elements(), scratch, |at, o| {
                    o.iter_mut().zip(&x[at..]).for_each(|(o, &v)| *o = v.max(0.0))
                }),
                Kind::Tanh => ops::elementwise(&mut out, sh, so.elements(), scratch, |at, o| {
                    o.iter_mut().zip(&x[at..]).for_each(|(o, &v)| *o = v.tanh())
                }),
                Kind::Add { relu } => {
                    let b = &self.values[self.owner[node.inputs[1]]];
                    ops::elementwise(&mut out, sh, so.elements(), scratch, |at, o| {
                        for ((o, &u), &v) in o.iter_mut().zip(&x[at..]).zip(&b[at..]) {
                            *o = if *relu { (u + v).max(0.0) } else { u + v };
                        }
                    })
                }
                Kind::ShortcutA { stride } => {
                    ops::shortcut_a((si.c, si.h, si.w), (so.c, *stride), false, x, &mut out, sh, scratch)
                }
                Kind::GlobalAvg => {
                    let plane = si.h * si.w;
                    ops::elementwise(&mut out, sh, so.elements(), scratch, |at, o| {
                        for (j, o) in o.iter_mut().enumerate() {
                            *o = ops::sum(&x[(at + j) * plane..][..plane]) / plane as f32;
                        }
                    })
                }
                Kind::MaxPool(pool) => {
                    ops::max_pool_forward(&pool_shape(si, so, pool), x, &mut out, sh, scratch)
                }
                Kind::AvgPool(pool) => {
                    ops::avg_pool_forward(&pool_shape(si, so, pool), x, &mut out, sh, scratch)
                }
                Kind::Linear { weight, bias } => ops::linear_forward(
                    (n, si.elements(), so.c),
                    x,
                    &p[*weight].data,
                    bias.map(|b| p[b].data.as_slice()),
                    &mut out,
                ),
                Kind::Input | Kind::Alias => unreachable!("skipped"),
            }
            self.values[i] = out;
        }
        let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let out = self.owner[self.graph.output()];
        let k = layout.shapes[self.graph.output()].elements();
        if labels.len() != n {
            candle_core::bail!("{} labels for {n} images", labels.len());
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= k) {
            candle_core::bail!("label {l} is not one of the net's {k} classes");
        }
        for g in &mut self.grads {
            self.spare.give(std::mem::take(g));
        }
        let mut d = self.spare.take(self.values[out].len());
        let (loss, correct) = ops::cross_entropy(&self.values[out], &labels, k, &mut d);
        self.grads[out] = d;
        Ok((loss, correct))
    }

    /// Backward from the output's gradient: every parameter's `grad`.
    fn backward(&mut self) {
        // Taken out while backward runs, so that helpers can borrow the rest of `self`.
        let layout = self.layout.take().expect("forward ran");
        self.backward_with(&layout);
        self.layout = Some(layout);
    }

    fn backward_with(&mut self, layout: &Layout) {
        let sh = &layout.shards;
        let n = layout.n;
        for i in (1..self.graph.nodes.len()).rev() {
            let (kind, inputs) = (&self.kinds[i], &self.graph.nodes[i].inputs);
            if matches!(kind, Kind::Alias) {
                continue;
            }
            let src = self.owner[inputs[0]];
            // Nothing flows into the image, so an op reading it only has parameter gradients.
            if src == 0 && !matches!(kind, Kind::Conv { .. } | Kind::Linear { .. }) {
                continue;
            }
            let mut dy = Self::live(&mut self.grads, &mut self.spare, &self.values, i);
            if let Kind::Add { relu } = *kind {
                let other = self.owner[inputs[1]];
                self.add_backward(layout, i, dy, relu, [src, other]);
                continue;
            }
            let (x, y) = (&self.values[src], &self.values[i]);
            let (si, so) = (layout.shapes[inputs[0]], layout.shapes[i]);
            let scratch = &mut self.scratch;
            // The input's gradient, unless the input is the image. While no other consumer has
            // written it (`unset`), its contents are arbitrary: a conv or BatchNorm writes it
            // without reading it, and the other kinds add to it once zeroed.
            let wants_dx = src != 0;
            let (mut dx, unset) = match wants_dx {
                true => Self::live_unset(&mut self.grads, &mut self.spare, &self.values, src),
                false => (vec![], false),
            };
            if unset && !matches!(kind, Kind::Conv { .. } | Kind::Linear { .. } | Kind::Bn { .. }) {
                dx.fill(0.0);
            }
            match kind {
                Kind::Conv { weight, bias } | Kind::Linear { weight, bias } => {
                    let mut dw = std::mem::take(&mut self.params[*weight].grad);
                    let mut db = bias.map(|b| std::mem::take(&mut self.params[b].grad));
                    let grads = ops::LayerGrads {
                        dw: &mut dw,
                        db: db.as_deref_mut(),
                        dx: wants_dx.then_some(dx.as_mut_slice()),
                        dx_unset: unset,
                    };
                    let w = &self.params[*weight].data;
                    match layout.convs[i].as_ref() {
                        Some(conv) => {
                            let bufs = (self.flipped.as_mut_slice(), &mut self.wino);
                            ops::conv_backward(conv, x, w, &dy, grads, bufs, sh, scratch)
                        }
                        None => ops::linear_backward((n, si.elements(), so.c), x, w, &dy, grads),
                    }
                    self.params[*weight].grad = dw;
                    if let (Some(b), Some(db)) = (bias, db) {
                        self.params[*b].grad = db;
                    }
                }
                Kind::Bn { weight, bias, relu, slot, .. } => {
                    let mut dg = std::mem::take(&mut self.params[*weight].grad);
                    let mut db = std::mem::take(&mut self.params[*bias].grad);
                    ops::bn_backward(
                        (so.c, so.h * so.w),
                        x,
                        &mut dy,
                        &self.params[*weight].data,
                        *relu,
                        &self.bn_saved[*slot],
                        &mut dg,
                        &mut db,
                        (!unset).then_some(dx.as_mut_slice()),
                        sh,
                        scratch,
                    );
                    self.params[*weight].grad = dg;
                    self.params[*bias].grad = db;
                    if unset {
                        // The input gradient was written over `dy`: that buffer is `dx` now.
                        std::mem::swap(&mut dx, &mut dy);
                    }
                }
                Kind::Relu => ops::elementwise(&mut dx, sh, si.elements(), scratch, |at, d| {
                    ops::add_masked(d, &dy[at..], Some(&y[at..]), 1.0)
                }),
                Kind::Tanh => ops::elementwise(&mut dx, sh, si.elements(), scratch, |at, d| {
                    for ((d, &g), &y) in d.iter_mut().zip(&dy[at..]).zip(&y[at..]) {
                        *d += g * (1.0 - y * y);
                    }
                }),
                Kind::ShortcutA { stride } => {
                    ops::shortcut_a((si.c, si.h, si.w), (so.c, *stride), true, &dy, &mut dx, sh, scratch)
                }
                Kind::GlobalAvg => {
                    let plane = si.h * si.w;
                    ops::elementwise(&mut dx, sh, si.elements(), scratch, |at, d| {
                        for (j, d) in d.chunks_exact_mut(plane).enumerate() {
                            let g = dy[at / plane + j] / plane as f32;
                            d.iter_mut().for_each(|d| *d += g);
                        }
                    })
                }
                Kind::MaxPool(pool) => {
                    ops::max_pool_backward(&pool_shape(si, so, pool), x, y, &dy, &mut dx, sh, scratch)
                }
                Kind::AvgPool(pool) => {
                    ops::avg_pool_backward(&pool_shape(si, so, pool), &dy, &mut dx, sh, scratch)
                }
                Kind::Input | Kind::Alias | Kind::Add { .. } => unreachable!("skipped or done above"),
            }
            self.grads[src] = dx;
            self.spare.give(dy);
        }
    }

    /// The residual add's backward (through its ReLU): `dy`, masked in place by the output,
    /// goes to both inputs. Both are usually written first here (the add comes last in its
    /// block), so one input's gradient becomes a copy of it and the other's *is* it: no zeroing
    /// and no read of a zero buffer.
    fn add_backward(
        &mut self,
        layout: &Layout,
        i: NodeId,
        mut dy: Vec<f32>,
        relu: bool,
        [a, b]: [NodeId; 2],
    ) {
        let (sh, per) = (&layout.shards, layout.shapes[i].elements());
        let scratch = &mut self.scratch;
        if relu {
            let y = &self.values[i];
            ops::elementwise(&mut dy, sh, per, scratch, |at, d| {
                d.iter_mut().zip(&y[at..]).for_each(|(d, &y)| *d = if y > 0.0 { *d } else { 0.0 })
            });
        }
        // x + x (a graph may say it; the zoo never does) counts twice. The image needs nothing.
        let targets = if a == b { vec![(a, 2.0)] } else { vec![(a, 1.0), (b, 1.0)] };
        let targets: Vec<(NodeId, f32)> = targets.into_iter().filter(|&(t, _)| t != 0).collect();
        for (k, &(t, times)) in targets.iter().enumerate() {
            let (mut d, unset) = Self::live_unset(&mut self.grads, &mut self.spare, &self.values, t);
            if unset && times == 1.0 && k + 1 == targets.len() {
                self.spare.give(d);
                self.grads[t] = std::mem::take(&mut dy);
                break;
            }
            ops::elementwise(&mut d, sh, per, scratch, |at, d| match unset {
                true => d.iter_mut().zip(&dy[at..]).for_each(|(d, &g)| *d = times * g),
                false => ops::add_masked(d, &dy[at..], None, times),
            });
            self.grads[t] = d;
        }
        self.spare.give(dy);
    }

    /// Node `j`'s gradient buffer, taken out, and whether no consumer has written it yet: then
    /// it comes from the pool as it is (arbitrary contents), for a kernel that overwrites it.
    fn live_unset(
        grads: &mut [Vec<f32>],
        spare: &mut GradPool,
        values: &[Vec<f32>],
        j: NodeId,
    ) -> (Vec<f32>, bool) {
        let g = std::mem::take(&mut grads[j]);
        match g.is_empty() {
            true => (spare.take(values[j].len()), true),
            false => (g, false),
        }
    }

    /// Node `j`'s gradient buffer, taken out: the one its consumers have summed into so far, or
    /// a zeroed one from the pool for the first.
    fn live(grads: &mut [Vec<f32>], spare: &mut GradPool, values: &[Vec<f32>], j: NodeId) -> Vec<f32> {
        let (mut g, unset) = Self::live_unset(grads, spare, values, j);
        if unset {
            g.fill(0.0);
        }
        g
    }

    /// Loss and every parameter's gradient on one batch, changing nothing (tests compare them
    /// with the Candle path's).
    pub fn gradients(&mut self, x: &Tensor, labels: &Tensor) -> Result<(f32, BTreeMap<String, Tensor>)> {
        let (loss, _) = self.forward(x, labels)?;
        self.backward();
        let grads = self
            .params
            .iter()
            .map(|p| Ok((p.name.clone(), Tensor::from_slice(&p.grad, p.shape.as_slice(), &Device::Cpu)?)))
            .collect::<Result<_>>()?;
        Ok((loss, grads))
    }

    /// One SGD step (see [`super::Trainer::step`]).
    pub fn step(&mut self, x: &Tensor, labels: &Tensor, lr: f64) -> Result<StepStats> {
        let samples = x.dim(0)?;
        let (loss, correct) = self.forward(x, labels)?;
        if !loss.is_finite() {
            return Ok(StepStats { loss, correct, samples });
        }
        self.backward();
        let SgdConfig { momentum, weight_decay } = self.sgd;
        let (mu, wd, lr) = (momentum as f32, weight_decay as f32, lr as f32);
        for p in &mut self.params {
            // PyTorch's rule in one pass: d = g + λw; v = μv + d (v = d at first); w −= lr·v.
            match (&mut p.momentum, momentum != 0.0) {
                (Some(v), true) => {
                    for ((w, &g), v) in p.data.iter_mut().zip(&p.grad).zip(v.iter_mut()) {
                        *v = mu * *v + (g + wd * *w);
                        *w -= lr * *v;
                    }
                }
                (None, true) => {
                    let mut v = p.grad.clone();
                    for (w, v) in p.data.iter_mut().zip(v.iter_mut()) {
                        *v += wd * *w;
                        *w -= lr * *v;
                    }
                    p.momentum = Some(v);
                }
                (_, false) => {
                    for (w, &g) in p.data.iter_mut().zip(&p.grad) {
                        *w -= lr * (g + wd * *w);
                    }
                }
            }
        }
        let layout = self.layout.as_ref().expect("forward ran");
        for (slot, &node) in self.bn_nodes.iter().enumerate() {
            let s = layout.shapes[node];
            let saved = &self.bn_saved[slot];
            let mean = Tensor::from_slice(&saved.mean, s.c, &Device::Cpu)?;
            let var = Tensor::from_slice(&saved.var, s.c, &Device::Cpu)?;
            super::update_running(
                &mut self.buffers,
                &self.graph.nodes[node].name,
                &mean,
                &var,
                layout.n * s.h * s.w,
            )?;
        }
        Ok(StepStats { loss, correct, samples })
    }

    /// Parameters and running statistics as tensors.
    pub fn state_dict(&self) -> Result<Weights> {
        let mut map = self.buffers.clone();
        for p in &self.params {
            map.insert(p.name.clone(), Tensor::from_slice(&p.data, p.shape.as_slice(), &Device::Cpu)?);
        }
        Ok(Weights::from_map(map))
    }

    /// The momentum buffers by parameter name (those updated at least once).
    pub fn optimizer_state(&self) -> Result<BTreeMap<String, Tensor>> {
        self.params
            .iter()
            .filter_map(|p| p.momentum.as_ref().map(|m| (p, m)))
            .map(|(p, m)| Ok((p.name.clone(), Tensor::from_slice(m, p.shape.as_slice(), &Device::Cpu)?)))
            .collect()
    }

    /// Restores [`Self::optimizer_state`]; a buffer of another shape is an error.
    pub fn set_optimizer_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        for p in &mut self.params {
            p.momentum = match state.get(&p.name) {
                Some(t) if t.dims() == p.shape.as_slice() => {
                    Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
                }
                Some(t) => candle_core::bail!(
                    "momentum of {} is {:?}, the parameter {:?}",
                    p.name,
                    t.dims(),
                    p.shape
                ),
                None => None,
            };
        }
        Ok(())
    }
}

/// Spare gradient buffers, reused across nodes and steps.
#[derive(Default)]
struct GradPool(Vec<Vec<f32>>);

impl GradPool {
    /// A buffer of `len` with whatever it held (zero where it grew): the smallest spare that holds it,
    /// else the largest grown.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let fits = (0..self.0.len()).filter(|&k| self.0[k].capacity() >= len);
        let pick = fits
            .min_by_key(|&k| self.0[k].capacity())
            .or_else(|| (0..self.0.len()).max_by_key(|&k| self.0[k].capacity()));
        let mut g = pick.map(|k| self.0.swap_remove(k)).unwrap_or_default();
        g.truncate(len);
        g.resize(len, 0.0);
        g
    }

    fn give(&mut self, g: Vec<f32>) {
        if g.capacity() > 0 {
            self.0.push(g);
        }
    }
}
