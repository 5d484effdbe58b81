//! Runs a [`Graph`] on Candle tensors. One interpreter serves inference (BatchNorm folded into
//! the convs), exploration (every layer's output kept as a tap) and training (batch statistics).

use std::sync::OnceLock;

use candle_core::{DType, Device, Module, Tensor, D};

use crate::arch::ArchInfo;
use crate::kernels;
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
}

/// A conv with the following BatchNorm folded in: `bn(conv(x, W)) = conv(x, W·s) + (β − μ·s)`
/// with `s = γ / sqrt(σ² + ε)`.
#[derive(Clone, Debug)]
pub struct FoldedConv {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// Folds each conv whose only consumer is a BatchNorm. Index = conv node.
pub fn fold_batchnorm(graph: &Graph, weights: &Weights) -> candle_core::Result<Vec<Option<FoldedConv>>> {
    let fan_out = graph.fan_out();
    let mut folded = vec![None; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::BatchNorm2d { eps, .. } = node.op else { continue };
        let conv = node.inputs[0];
        let Op::Conv2d(c) = &graph.nodes[conv].op else { continue };
        if fan_out[conv] != 1 {
            continue;
        }
        let (scale, shift) = bn_affine(weights, &graph.nodes[i].name, eps)?;
        let w = weights.tensor(&format!("{}.weight", graph.nodes[conv].name))?;
        let weight = w.broadcast_mul(&scale.reshape((c.out_ch, 1, 1, 1))?)?;
        let bias = match weights.get(&format!("{}.bias", graph.nodes[conv].name)) {
            Some(b) => ((b * &scale)? + shift)?,
            None => shift,
        };
        folded[conv] = Some(FoldedConv { weight, bias });
    }
    Ok(folded)
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

/// Runs `graph` on `x` (N×C×H×W). `folded` (from [`fold_batchnorm`]) replaces conv + BN pairs
/// in eval mode when no taps are asked for.
pub fn run(
    graph: &Graph,
    weights: &Weights,
    folded: Option<&[Option<FoldedConv>]>,
    x: &Tensor,
    opts: RunOptions,
) -> candle_core::Result<Output> {
    run_impl(graph, weights, folded, x, opts, true)
}

/// `fast_conv`: convs through [`kernels::conv`] (inference fast path) rather than Candle's own.
fn run_impl(
    graph: &Graph,
    weights: &Weights,
    folded: Option<&[Option<FoldedConv>]>,
    x: &Tensor,
    opts: RunOptions,
    fast_conv: bool,
) -> candle_core::Result<Output> {
    let conv = |x: &Tensor, w: &Tensor, padding: usize, stride: usize| match fast_conv {
        true => kernels::conv::conv2d(x, w, padding, stride),
        false => x.conv2d(w, padding, stride, 1, 1),
    };
    let (_, c, h, w) = x.dims4()?;
    graph.shapes(Some(Shape::new(c, h, w))).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let folded = if opts.taps || opts.mode == Mode::Train { None } else { folded };
    let mut uses = graph.fan_out();
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    let mut bn_stats = vec![];
    values[0] = Some(x.clone());
    let param = |node: &str, p: &str| weights.tensor(&format!("{node}.{p}"));
    for (i, node) in graph.nodes.iter().enumerate().skip(1) {
        let input = |k: usize| -> candle_core::Result<&Tensor> {
            values[node.inputs[k]]
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg(format!("{}: input already freed", node.name)))
        };
        let y = match &node.op {
            Op::Input => unreachable!("only node 0 is the input"),
            Op::Conv2d(cfg) => match folded.and_then(|f| f[i].as_ref()) {
                Some(f) => {
                    let y = conv(input(0)?, &f.weight, cfg.padding, cfg.stride)?;
                    y.broadcast_add(&per_channel(&f.bias)?)?
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
                let src = node.inputs[0];
                if folded.is_some_and(|f| f[src].is_some()) {
                    // The conv already applied this BN: pass its output on.
                    input(0)?.clone()
                } else if opts.mode == Mode::Train {
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
                } else {
                    let (scale, shift) = bn_affine(weights, &node.name, *eps)?;
                    input(0)?.broadcast_mul(&per_channel(&scale)?)?.broadcast_add(&per_channel(&shift)?)?
                }
            }
            Op::Relu => input(0)?.relu()?,
            Op::Tanh => input(0)?.tanh()?,
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
            Op::Add => (input(0)? + input(1)?)?,
            Op::Concat => {
                let xs = (0..node.inputs.len()).map(input).collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&xs, 1)?
            }
            Op::ShortcutA { out_ch, stride } => ops::shortcut_a(input(0)?, *out_ch, *stride)?,
        };
        values[i] = Some(y);
        if !opts.taps {
            for &j in &node.inputs {
                uses[j] -= 1;
                if uses[j] == 0 {
                    values[j] = None;
                }
            }
        }
    }
    let logits = values[graph.output()].clone().expect("the output was just computed");
    let taps = if opts.taps { values } else { vec![] };
    Ok(Output { logits, taps, bn_stats })
}

/// A network with its weights, ready for inference.
pub struct Model {
    pub arch: &'static ArchInfo,
    pub graph: Graph,
    pub weights: Weights,
    folded: OnceLock<Vec<Option<FoldedConv>>>,
}

impl Model {
    pub fn new(arch: &'static ArchInfo, graph: Graph, weights: Weights) -> Self {
        Model { arch, graph, weights, folded: OnceLock::new() }
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
        let folded = match self.folded.get() {
            Some(f) => f,
            None => {
                let f = fold_batchnorm(&self.graph, &self.weights)?;
                self.folded.get_or_init(|| f)
            }
        };
        Ok(run(&self.graph, &self.weights, Some(folded), x, RunOptions::default())?.logits)
    }

    /// Logits layer by layer as described, with Candle's own ops (no folding, no fast kernels):
    /// the reference the fast paths are tested against.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(run_impl(&self.graph, &self.weights, None, x, RunOptions::default(), false)?.logits)
    }

    /// Logits and every layer's output (index = node id).
    pub fn forward_taps(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let out = run(&self.graph, &self.weights, None, x, RunOptions { taps: true, ..Default::default() })?;
        let taps = out.taps.into_iter().map(|t| t.expect("taps keep every node")).collect();
        Ok((out.logits, taps))
    }
}

/// Softmax over the last dimension.
pub fn softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)
}
