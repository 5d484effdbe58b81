//! What a network computes. [`Model`] is an architecture with its weights, loaded through one
//! entry point ([`Model::load`]); [`run`] is the reference interpreter of its [`Graph`], built
//! from Candle's differentiable ops: the definition every fast path is tested against, and the
//! forward pass of training (batch statistics, dropout). How inference runs fast on the CPU is
//! [`crate::kernels::plan`]; the model only picks it where it applies.

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{DType, Device, Module, Result, Tensor, D};

use crate::arch::ArchInfo;
use crate::kernels::{self, plan::FastPlan};
use crate::ops;
use crate::spec::{Graph, Node, NodeId, Op, Shape};
use crate::tensors::{Format, TensorFile};
use crate::weights::{Weights, WeightsError};

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
    /// With `taps`, every node's output (index = `NodeId`; `[0]` is the input); else empty.
    pub taps: Vec<Tensor>,
    /// Training mode: every BatchNorm's batch statistics, in graph order.
    pub bn_stats: Vec<BnStats>,
    /// With a clock (the fast path's [`FastPlan::run`]), ms per node (index = `NodeId`).
    pub node_ms: Vec<f64>,
}

/// Node outputs during one pass, in graph order. Each is freed after its last consumer unless
/// every output is kept (taps).
pub(crate) struct Values {
    values: Vec<Option<Tensor>>,
    uses: Vec<usize>,
    keep: bool,
}

impl Values {
    /// Checks that `x` fits the graph, then holds it as node 0.
    pub(crate) fn new(graph: &Graph, x: &Tensor, keep: bool) -> Result<Self> {
        let (_, c, h, w) = x.dims4()?;
        graph.shapes(Some(Shape::new(c, h, w))).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut values = vec![None; graph.nodes.len()];
        values[0] = Some(x.clone());
        Ok(Values { values, uses: graph.fan_out(), keep })
    }

    pub(crate) fn get(&self, id: NodeId) -> Result<&Tensor> {
        self.values[id]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg(format!("node {id}: not computed or already freed")))
    }

    pub(crate) fn inputs(&self, node: &Node) -> Result<Vec<&Tensor>> {
        node.inputs.iter().map(|&j| self.get(j)).collect()
    }

    pub(crate) fn set(&mut self, id: NodeId, t: Tensor) {
        self.values[id] = Some(t);
    }

    /// Called once `node` has run: frees the inputs it was the last consumer of.
    pub(crate) fn release_inputs(&mut self, node: &Node) {
        if self.keep {
            return;
        }
        for &j in &node.inputs {
            self.uses[j] -= 1;
            if self.uses[j] == 0 {
                self.values[j] = None;
            }
        }
    }

    pub(crate) fn output(&self, graph: &Graph) -> Result<Tensor> {
        self.get(graph.output()).cloned()
    }

    /// Every node's output when kept, else nothing.
    pub(crate) fn into_taps(self) -> Vec<Tensor> {
        match self.keep {
            true => self.values.into_iter().map(|t| t.expect("taps keep every node")).collect(),
            false => vec![],
        }
    }
}

/// BatchNorm in eval mode as a per-channel affine map: `(scale, shift)`.
pub(crate) fn bn_affine(weights: &Weights, name: &str, eps: f64) -> Result<(Tensor, Tensor)> {
    let gamma = weights.tensor(&format!("{name}.weight"))?;
    let beta = weights.tensor(&format!("{name}.bias"))?;
    let mean = weights.tensor(&format!("{name}.running_mean"))?;
    let var = weights.tensor(&format!("{name}.running_var"))?;
    let scale = gamma.div(&(var + eps)?.sqrt()?)?;
    let shift = (beta - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

fn per_channel(t: &Tensor) -> Result<Tensor> {
    t.reshape((1, t.elem_count(), 1, 1))
}

/// What `node` computes in eval mode from its inputs, with Candle's ops: the one definition of
/// every op (the fast path runs it too for the ops it has no kernel of its own for).
pub(crate) fn eval_node(node: &Node, xs: &[&Tensor], weights: &Weights) -> Result<Tensor> {
    let param = |p: &str| weights.tensor(&format!("{}.{p}", node.name));
    Ok(match &node.op {
        Op::Input => candle_core::bail!("only node 0 is the input"),
        Op::Conv2d(cfg) => {
            let (x, w) = (xs[0], param("weight")?);
            // Anything that records gradients (training, saliency) takes the conv whose backward
            // is fast on the CPU; plain inference takes Candle's own, the reference.
            let y = match x.track_op() || w.track_op() {
                true => crate::train::conv::conv2d(x, w, cfg.padding, cfg.stride)?,
                false => x.conv2d(w, cfg.padding, cfg.stride, 1, 1)?,
            };
            match cfg.bias {
                true => y.broadcast_add(&per_channel(param("bias")?)?)?,
                false => y,
            }
        }
        Op::BatchNorm2d { eps, .. } => {
            let (scale, shift) = bn_affine(weights, &node.name, *eps)?;
            xs[0].broadcast_mul(&per_channel(&scale)?)?.broadcast_add(&per_channel(&shift)?)?
        }
        Op::Relu => xs[0].relu()?,
        Op::Tanh => xs[0].tanh()?,
        Op::MaxPool2d(p) => ops::max_pool2d(xs[0], p, xs[0].track_op())?,
        Op::AvgPool2d(p) => ops::avg_pool2d(xs[0], p)?,
        Op::AdaptiveAvgPool2d { h, w } => ops::adaptive_avg_pool2d(xs[0], *h, *w)?,
        Op::LocalResponseNorm { size, alpha, beta, k } => {
            ops::local_response_norm(xs[0], *size, *alpha, *beta, *k)?
        }
        Op::Flatten => xs[0].flatten_from(1)?,
        Op::Dropout { .. } => xs[0].clone(),
        Op::Linear { bias, .. } => {
            let b = if *bias { Some(param("bias")?.clone()) } else { None };
            candle_nn::Linear::new(param("weight")?.clone(), b).forward(xs[0])?
        }
        Op::Add => (xs[0] + xs[1])?,
        Op::Concat => Tensor::cat(xs, 1)?,
        Op::ShortcutA { out_ch, stride } => ops::shortcut_a(xs[0], *out_ch, *stride)?,
    })
}

/// BatchNorm in training mode: normalised by the batch's own statistics, which are returned
/// for the running-average update.
fn bn_train(node: &Node, id: NodeId, x: &Tensor, weights: &Weights, eps: f64) -> Result<(Tensor, BnStats)> {
    let (n, _, h, w) = x.dims4()?;
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let xhat = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let stats = BnStats {
        node: id,
        mean: mean.flatten_all()?.detach(),
        var: var.flatten_all()?.detach(),
        count: n * h * w,
    };
    let param = |p: &str| weights.tensor(&format!("{}.{p}", node.name));
    let y =
        xhat.broadcast_mul(&per_channel(param("weight")?)?)?.broadcast_add(&per_channel(param("bias")?)?)?;
    Ok((y, stats))
}

/// Runs `graph` on `x` (N×C×H×W) layer by layer as described, with Candle's differentiable ops
/// on any device and dtype. Training mode uses batch statistics and dropout.
pub fn run(graph: &Graph, weights: &Weights, x: &Tensor, opts: RunOptions) -> Result<Output> {
    let values = Values::new(graph, x, opts.taps)?;
    run_nodes(graph, weights, values, 1, graph.output(), opts)
}

/// The output of node `last` in an eval-mode pass on `x`: only the nodes up to it run (what
/// a gradient with respect to the input of one unit needs).
pub fn run_to(graph: &Graph, weights: &Weights, x: &Tensor, last: NodeId) -> Result<Tensor> {
    if last == 0 || last >= graph.nodes.len() {
        candle_core::bail!("no layer {last} (the net has {} layers)", graph.nodes.len() - 1);
    }
    let values = Values::new(graph, x, false)?;
    Ok(run_nodes(graph, weights, values, 1, last, RunOptions::default())?.logits)
}

/// Continues an eval-mode pass after node `from`: `taps` are every node's outputs of a pass
/// on the same input, and `start` stands in for node `from`'s (say a `Var` whose gradient is
/// wanted: only what depends on it is recomputed, everything before is taken from `taps`).
/// Returns the logits.
pub fn run_from(
    graph: &Graph,
    weights: &Weights,
    taps: &[Tensor],
    from: NodeId,
    start: Tensor,
) -> Result<Tensor> {
    if taps.len() != graph.nodes.len() || from == 0 || from >= taps.len() {
        candle_core::bail!(
            "run_from: {} taps and node {from} for a graph of {} nodes",
            taps.len(),
            graph.nodes.len()
        );
    }
    if start.dims() != taps[from].dims() {
        candle_core::bail!(
            "run_from: a {:?} output for node {from}, whose output is {:?}",
            start.dims(),
            taps[from].dims()
        );
    }
    let mut values = Values { values: vec![None; taps.len()], uses: graph.fan_out(), keep: false };
    for (i, t) in taps.iter().enumerate().take(from) {
        values.set(i, t.clone());
    }
    values.set(from, start);
    Ok(run_nodes(graph, weights, values, from + 1, graph.output(), RunOptions::default())?.logits)
}

/// The interpreter's loop over nodes `first..=last`, the earlier ones' outputs in `values`;
/// the output's `logits` are node `last`'s output.
fn run_nodes(
    graph: &Graph,
    weights: &Weights,
    mut values: Values,
    first: NodeId,
    last: NodeId,
    opts: RunOptions,
) -> Result<Output> {
    let mut bn_stats = vec![];
    let train = opts.mode == Mode::Train;
    for (i, node) in graph.nodes.iter().enumerate().take(last + 1).skip(first) {
        let xs = values.inputs(node)?;
        let y = match &node.op {
            Op::BatchNorm2d { eps, .. } if train => {
                let (y, stats) = bn_train(node, i, xs[0], weights, *eps)?;
                bn_stats.push(stats);
                y
            }
            // A backward that is right for overlapping windows.
            Op::MaxPool2d(p) if train => ops::max_pool2d(xs[0], p, true)?,
            Op::Dropout { p } if train => candle_nn::ops::dropout(xs[0], *p)?,
            _ => eval_node(node, &xs, weights)?,
        };
        values.set(i, y);
        values.release_inputs(node);
    }
    let logits = values.get(last)?.clone();
    Ok(Output { logits, taps: values.into_taps(), bn_stats, node_ms: vec![] })
}

/// Where a model's weights come from.
#[derive(Clone, Copy, Debug)]
pub enum WeightsSource<'a> {
    /// Deterministic random weights ("untrained") from a seed.
    Random(u64),
    /// The bytes of a weights file (what the browser holds): safetensors or a `.pth`/`.pt`
    /// written by `torch.save`, told apart by the bytes.
    Bytes(&'a [u8]),
    /// A weights file on disk (either format).
    File(&'a Path),
}

/// A model whose architecture was recognised from its weights file.
pub struct Loaded {
    pub model: Model,
    /// CIFAR ResNets: the shortcut option the tensors show.
    pub shortcut: Option<crate::ShortcutOption>,
    /// Where the tensors fit more than one architecture: which was chosen, how to pick another.
    pub note: Option<String>,
    pub format: Format,
}

/// A network with its weights, ready for inference.
pub struct Model {
    pub arch: &'static ArchInfo,
    pub graph: Graph,
    pub weights: Weights,
    /// Compiled on first use: inference (folded) and taps (unfolded).
    folded: OnceLock<FastPlan>,
    unfolded: OnceLock<FastPlan>,
}

impl Model {
    pub fn new(arch: &'static ArchInfo, graph: Graph, weights: Weights) -> Self {
        Model { arch, graph, weights, folded: OnceLock::new(), unfolded: OnceLock::new() }
    }

    /// The one way the CLI, the browser's worker and the benches get a model: `arch` as the zoo
    /// describes it, with weights from `source`, strictly matched by name and shape.
    pub fn load(
        arch: &'static ArchInfo,
        source: WeightsSource,
        device: &Device,
    ) -> std::result::Result<Self, WeightsError> {
        Self::load_graph(arch, arch.graph(), source, device)
    }

    /// [`Model::load`] for a variant of the architecture's graph (e.g. the CIFAR ResNets'
    /// shortcut option B).
    pub fn load_graph(
        arch: &'static ArchInfo,
        graph: Graph,
        source: WeightsSource,
        device: &Device,
    ) -> std::result::Result<Self, WeightsError> {
        let weights = match source {
            WeightsSource::Random(seed) => Weights::random(&graph, seed, device)?,
            WeightsSource::Bytes(bytes) => Weights::from_bytes(bytes, &graph, arch.name, device)?,
            WeightsSource::File(path) => Weights::load(path, &graph, arch.name, device)?,
        };
        Ok(Self::new(arch, graph, weights))
    }

    /// A weights file's bytes (either format) whose architecture is not given: the file is
    /// parsed once, its architecture recognised from the tensors' names and shapes
    /// ([`crate::recognise::recognise`]) and loaded strictly.
    pub fn load_recognised(bytes: &[u8], device: &Device) -> std::result::Result<Loaded, WeightsError> {
        let file = TensorFile::parse(bytes)?;
        let r = crate::recognise::recognise(&file)?;
        let weights = Weights::from_file(&file, &r.graph, r.arch.name, device)?;
        Ok(Loaded {
            model: Self::new(r.arch, r.graph, weights),
            shortcut: r.shortcut,
            note: r.note,
            format: file.format,
        })
    }

    /// The architecture with deterministic random weights ("untrained").
    pub fn random(arch: &'static ArchInfo, seed: u64, device: &Device) -> Result<Self> {
        Self::load(arch, WeightsSource::Random(seed), device).map_err(|e| match e {
            WeightsError::Candle(e) => e,
            e => candle_core::Error::Msg(e.to_string()),
        })
    }

    pub fn device(&self) -> Device {
        self.weights.iter().next().map(|(_, t)| t.device().clone()).unwrap_or(Device::Cpu)
    }

    /// The folded plan when the fast path can take `x` (see [`kernels::is_plain`]).
    fn fast(&self, x: &Tensor) -> Result<Option<&FastPlan>> {
        match kernels::is_plain(x) && matches!(self.device(), Device::Cpu) {
            true => cached(&self.folded, || FastPlan::folded(&self.graph, &self.weights)).map(Some),
            false => Ok(None),
        }
    }

    /// Logits: on the CPU fast path (BatchNorm folded, compiled once) where it applies, else
    /// through the reference interpreter (other devices, inputs that record gradients).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.fast(x)? {
            Some(plan) => Ok(plan.run(&self.graph, &self.weights, x, false, None)?.logits),
            None => self.forward_reference(x),
        }
    }

    /// [`Model::forward`] on the fast path, timed node by node with `now` (ms): where an
    /// inference spends its time.
    pub fn forward_timed(&self, x: &Tensor, now: &dyn Fn() -> f64) -> Result<(Tensor, Vec<f64>)> {
        let Some(plan) = self.fast(x)? else { candle_core::bail!("timing needs the CPU fast path") };
        let out = plan.run(&self.graph, &self.weights, x, false, Some(now))?;
        Ok((out.logits, out.node_ms))
    }

    /// Logits layer by layer as described, with Candle's own ops (no folding, no fast kernels):
    /// the reference the fast paths are tested against.
    pub fn forward_reference(&self, x: &Tensor) -> Result<Tensor> {
        Ok(run(&self.graph, &self.weights, x, RunOptions::default())?.logits)
    }

    /// Logits and every layer's output (index = node id).
    pub fn forward_taps(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let taps = RunOptions { taps: true, ..Default::default() };
        let out = match kernels::is_plain(x) && matches!(self.device(), Device::Cpu) {
            true => cached(&self.unfolded, || FastPlan::unfolded(&self.graph, &self.weights))?.run(
                &self.graph,
                &self.weights,
                x,
                true,
                None,
            )?,
            false => run(&self.graph, &self.weights, x, taps)?,
        };
        Ok((out.logits, out.taps))
    }
}

fn cached(cell: &OnceLock<FastPlan>, make: impl FnOnce() -> Result<FastPlan>) -> Result<&FastPlan> {
    match cell.get() {
        Some(p) => Ok(p),
        None => {
            let p = make()?;
            Ok(cell.get_or_init(|| p))
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax(logits: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input that records gradients takes the differentiable ops: saliency can backpropagate.
    #[test]
    fn gradients_still_flow() -> Result<()> {
        let dev = Device::Cpu;
        let model = Model::random(crate::find_arch("cifar-resnet20").expect("in the zoo"), 1, &dev)?;
        let x = candle_core::Var::randn(0f32, 1.0, (1, 3, 32, 32), &dev)?;
        let y = model.forward(x.as_tensor())?;
        let grads = y.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("the forward must not cut the graph");
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        // And it agrees with the fast path on the same values.
        let fast = model.forward(&x.as_tensor().detach())?;
        // Random weights give logits far from 1: the tolerance is relative to them.
        let scale = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
        let diff = (fast - &y)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4 * scale, "{diff} (logits up to {scale})");
        Ok(())
    }

    #[test]
    fn loading_is_strict_and_names_the_source() {
        let arch = crate::find_arch("cifar-resnet20").expect("in the zoo");
        let err = Model::load(arch, WeightsSource::Bytes(b"not safetensors"), &Device::Cpu)
            .err()
            .expect("bad bytes");
        assert!(matches!(err, WeightsError::Format(_)), "{err}");
        let missing = Path::new("/nonexistent/w.safetensors");
        let err = Model::load(arch, WeightsSource::File(missing), &Device::Cpu).err().expect("no file");
        assert!(matches!(err, WeightsError::Io { .. }), "{err}");
        let other = Model::random(crate::find_arch("cifar-resnet32").expect("in the zoo"), 0, &Device::Cpu)
            .expect("random weights");
        let bytes = other.weights.to_safetensors(None).expect("serialises");
        let err = Model::load(arch, WeightsSource::Bytes(&bytes), &Device::Cpu).err().expect("other arch");
        assert!(matches!(err, WeightsError::Mismatch(_)), "{err}");
        let same = Model::load(other.arch, WeightsSource::Bytes(&bytes), &Device::Cpu).expect("same arch");
        assert_eq!(same.weights.len(), other.weights.len());
    }
}
