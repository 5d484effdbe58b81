//! Native training through the same graph interpreter the explorer uses: SGD with momentum and
//! weight decay, the paper's schedules and augmentation, cross-entropy, and a step that updates
//! BatchNorm's running statistics as PyTorch does. Device-agnostic: the tensors live wherever
//! the weights were put (CPU, or CUDA with the `cuda` feature).

pub mod augment;
pub mod conv;
pub mod fast;
pub mod run;
pub mod schedule;
pub mod sgd;
pub mod snapshot;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var, D};

use crate::model::{run, Mode, Model, RunOptions};
use crate::spec::{Graph, ParamKind};
use crate::weights::Weights;

pub use augment::{Augment, Rng};
pub use run::{EpochMetrics, Run, RunConfig, RunError};
pub use schedule::{LrSchedule, Schedule};
pub use sgd::{Sgd, SgdConfig};
pub use snapshot::Snapshot;

/// PyTorch's BatchNorm default: `running = (1 − m)·running + m·batch`.
pub const BN_MOMENTUM: f64 = 0.1;

/// Mean cross-entropy of `logits` (N×K) against class indices (N, u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}

/// How many rows' arg-max equals the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    let hits = pred.eq(&labels.to_dtype(pred.dtype())?)?;
    Ok(hits.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

/// Loss and accuracy of one step (summed over its samples).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean loss of the batch; not finite when training diverged (no update was made then).
    pub loss: f32,
    pub correct: usize,
    pub samples: usize,
}

/// Which implementation a [`Trainer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrainPath {
    /// The fast CPU plan where it has every op of the net and the device is the CPU, else Candle.
    #[default]
    Auto,
    /// Candle's differentiable ops on any device: the reference.
    Candle,
    /// The fast CPU plan; an error where it cannot run.
    Fast,
}

/// The Candle-op path's state: trainable parameters as `Var`s, running statistics as buffers,
/// and the optimiser.
struct CandleState {
    params: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Tensor>,
    sgd: Sgd,
}

enum Engine {
    Candle(CandleState),
    Fast(Box<fast::FastTrainer>),
}

/// A network being trained, on the fast CPU plan or Candle's ops (see [`TrainPath`]).
pub struct Trainer {
    pub graph: Graph,
    engine: Engine,
    /// Why the fast plan is not used, where `Auto` fell back.
    fallback: Option<String>,
    device: Device,
}

impl Trainer {
    /// Takes `weights` (random or loaded) onto `device`, on the fast plan where it can run.
    pub fn new(graph: Graph, weights: &Weights, sgd: SgdConfig, device: &Device) -> Result<Self> {
        Self::with_path(graph, weights, sgd, device, TrainPath::Auto)
    }

    pub fn with_path(
        graph: Graph,
        weights: &Weights,
        sgd: SgdConfig,
        device: &Device,
        path: TrainPath,
    ) -> Result<Self> {
        let kinds: BTreeMap<String, ParamKind> =
            graph.param_specs().into_iter().map(|p| (p.name, p.kind)).collect();
        let mut params = BTreeMap::new();
        let mut buffers = BTreeMap::new();
        for (name, t) in weights.iter() {
            let t = t.to_device(device)?;
            match kinds.get(name) {
                Some(k) if k.trainable() => {
                    params.insert(name.clone(), t.to_dtype(DType::F32)?);
                }
                Some(_) => {
                    buffers.insert(name.clone(), t);
                }
                None => candle_core::bail!("weights have {name}, which the network does not use"),
            }
        }
        for name in kinds.keys() {
            if !params.contains_key(name) && !buffers.contains_key(name) {
                candle_core::bail!("weights lack {name}");
            }
        }
        let why_not_fast = match device.is_cpu() {
            false => Some(format!("the fast plan runs on the CPU, not {device:?}")),
            true => fast::unsupported(&graph).map(|op| format!("the fast plan has no kernel for {op}")),
        };
        if let (TrainPath::Fast, Some(why)) = (path, &why_not_fast) {
            candle_core::bail!("cannot train on the fast plan: {why}");
        }
        let engine = match path != TrainPath::Candle && why_not_fast.is_none() {
            true => Engine::Fast(Box::new(fast::FastTrainer::new(graph.clone(), &params, buffers, sgd)?)),
            false => {
                let params =
                    params.into_iter().map(|(n, t)| Ok((n, Var::from_tensor(&t)?))).collect::<Result<_>>()?;
                Engine::Candle(CandleState { params, buffers, sgd: Sgd::new(sgd) })
            }
        };
        // Asking for Candle is not a fallback.
        let fallback = why_not_fast.filter(|_| path != TrainPath::Candle);
        Ok(Trainer { graph, engine, fallback, device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The implementation that runs: `Fast` or `Candle`.
    pub fn path(&self) -> TrainPath {
        match self.engine {
            Engine::Fast(_) => TrainPath::Fast,
            Engine::Candle(_) => TrainPath::Candle,
        }
    }

    /// Why `Auto` chose the Candle path (say it once in the log).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The parameters as the live `Var`s the next step differentiates, with the running
    /// statistics: the forward pass's input only. Saving and evaluation take [`Self::state_dict`].
    fn live_weights(c: &CandleState) -> Weights {
        let mut map = c.buffers.clone();
        for (name, v) in &c.params {
            map.insert(name.clone(), v.as_tensor().clone());
        }
        Weights::from_map(map)
    }

    /// The state dict (parameters and running statistics) detached from the autograd graph: save
    /// it, evaluate with it, or load it in the browser.
    pub fn state_dict(&self) -> Result<Weights> {
        let c = match &self.engine {
            Engine::Fast(f) => return f.state_dict(),
            Engine::Candle(c) => c,
        };
        let mut map = c.buffers.clone();
        for (name, v) in &c.params {
            map.insert(name.clone(), v.as_tensor().detach());
        }
        Ok(Weights::from_map(map))
    }

    /// SGD's momentum buffers by parameter name (empty before the first step).
    pub fn optimizer_state(&self) -> Result<BTreeMap<String, Tensor>> {
        match &self.engine {
            Engine::Fast(f) => f.optimizer_state(),
            Engine::Candle(c) => Ok(c.sgd.state().clone()),
        }
    }

    /// Restores buffers saved from [`Self::optimizer_state`].
    pub fn set_optimizer_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        match &mut self.engine {
            Engine::Fast(f) => f.set_optimizer_state(state),
            Engine::Candle(c) => {
                c.sgd.set_state(state);
                Ok(())
            }
        }
    }

    /// Mean loss and every parameter's gradient on a batch in training mode, changing nothing.
    pub fn gradients(&mut self, x: &Tensor, labels: &Tensor) -> Result<(f32, BTreeMap<String, Tensor>)> {
        let c = match &mut self.engine {
            Engine::Fast(f) => return f.gradients(x, labels),
            Engine::Candle(c) => c,
        };
        let out = run(&self.graph, &Self::live_weights(c), x, RunOptions { mode: Mode::Train, taps: false })?;
        let loss = cross_entropy(&out.logits, labels)?;
        let grads = loss.backward()?;
        let mut map = BTreeMap::new();
        for (name, var) in &c.params {
            if let Some(g) = grads.get(var.as_tensor()) {
                map.insert(name.clone(), g.detach());
            }
        }
        Ok((loss.to_dtype(DType::F32)?.to_scalar::<f32>()?, map))
    }

    /// One SGD step on a normalised batch `x` with labels (u32): forward with batch
    /// statistics, backward, update, then the running statistics. A non-finite loss leaves
    /// every tensor as it was.
    pub fn step(&mut self, x: &Tensor, labels: &Tensor, lr: f64) -> Result<StepStats> {
        let c = match &mut self.engine {
            Engine::Fast(f) => return f.step(x, labels, lr),
            Engine::Candle(c) => c,
        };
        let weights = Self::live_weights(c);
        let out = run(&self.graph, &weights, x, RunOptions { mode: Mode::Train, taps: false })?;
        let loss = cross_entropy(&out.logits, labels)?;
        let loss_value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let samples = x.dim(0)?;
        let correct = correct(&out.logits, labels)?;
        if !loss_value.is_finite() {
            return Ok(StepStats { loss: loss_value, correct, samples });
        }
        let grads = loss.backward()?;
        for (name, var) in &c.params {
            // A parameter the loss does not reach (none in the zoo) simply keeps its value.
            if let Some(g) = grads.get(var.as_tensor()) {
                c.sgd.update(name, var, g, lr)?;
            }
        }
        for s in &out.bn_stats {
            update_running(&mut c.buffers, &self.graph.nodes[s.node].name, &s.mean, &s.var, s.count)?;
        }
        Ok(StepStats { loss: loss_value, correct, samples })
    }
}

/// PyTorch's update of BatchNorm `name`'s running statistics from a batch's mean and biased
/// variance over `count` elements per channel (the running variance is unbiased), and its
/// batch counter.
pub(crate) fn update_running(
    buffers: &mut BTreeMap<String, Tensor>,
    name: &str,
    mean: &Tensor,
    var: &Tensor,
    count: usize,
) -> Result<()> {
    let buffer = |b: &BTreeMap<String, Tensor>, n: &str| {
        b.get(n).cloned().ok_or_else(|| candle_core::Error::Msg(format!("no buffer {n}")))
    };
    let unbiased = count as f64 / (count.max(2) - 1) as f64;
    let m = BN_MOMENTUM;
    let (rm, rv) = (format!("{name}.running_mean"), format!("{name}.running_var"));
    let old_mean = buffer(buffers, &rm)?;
    let old_var = buffer(buffers, &rv)?;
    let mean = mean.to_device(old_mean.device())?.to_dtype(old_mean.dtype())?;
    let var = var.to_device(old_var.device())?.to_dtype(old_var.dtype())?;
    let new_mean = ((old_mean * (1.0 - m))? + (mean * m)?)?;
    let new_var = ((old_var * (1.0 - m))? + (var * (m * unbiased))?)?;
    buffers.insert(rm, new_mean);
    buffers.insert(rv, new_var);
    let counter = format!("{name}.num_batches_tracked");
    if let Some(c) = buffers.get(&counter) {
        let n = c.to_dtype(DType::I64)?.to_scalar::<i64>()? + 1;
        let device = c.device().clone();
        buffers.insert(counter, Tensor::new(n, &device)?);
    }
    Ok(())
}

/// Mean loss and accuracy of `weights` on batches in eval mode (running statistics, BatchNorm
/// folded into the convs: exactly what `resnet eval` and the browser compute).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalStats {
    pub loss: f64,
    pub accuracy: f64,
    pub samples: usize,
}

/// Evaluates `model` on `(input, labels)` batches from `batches`.
pub fn evaluate<I>(model: &Model, batches: I) -> Result<EvalStats>
where
    I: IntoIterator<Item = Result<(Tensor, Tensor)>>,
{
    let (mut loss_sum, mut hits, mut n) = (0f64, 0usize, 0usize);
    for batch in batches {
        let (x, labels) = batch?;
        let logits = model.forward(&x)?;
        let b = x.dim(0)?;
        let loss = cross_entropy(&logits, &labels)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        loss_sum += loss as f64 * b as f64;
        hits += correct(&logits, &labels)?;
        n += b;
    }
    let d = n.max(1) as f64;
    Ok(EvalStats { loss: loss_sum / d, accuracy: hits as f64 / d, samples: n })
}
