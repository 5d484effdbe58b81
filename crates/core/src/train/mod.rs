//! Native training through the same graph interpreter the explorer uses: SGD with momentum and
//! weight decay, the paper's schedules and augmentation, cross-entropy, and a step that updates
//! BatchNorm's running statistics as PyTorch does. Device-agnostic: the tensors live wherever
//! the weights were put (CPU, or CUDA with the `cuda` feature).

pub mod augment;
pub mod conv;
pub mod run;
pub mod schedule;
pub mod sgd;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var, D};

use crate::model::{run, Mode, Model, RunOptions};
use crate::spec::{Graph, ParamKind};
use crate::weights::Weights;

pub use augment::{Augment, Rng};
pub use run::{EpochMetrics, Run, RunConfig, RunError};
pub use schedule::{LrSchedule, Schedule};
pub use sgd::{Sgd, SgdConfig};

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

/// A network being trained: trainable parameters as `Var`s, running statistics as buffers,
/// and the optimiser.
pub struct Trainer {
    pub graph: Graph,
    params: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Tensor>,
    pub sgd: Sgd,
    device: Device,
}

impl Trainer {
    /// Takes `weights` (random or loaded) onto `device`.
    pub fn new(graph: Graph, weights: &Weights, sgd: SgdConfig, device: &Device) -> Result<Self> {
        let kinds: BTreeMap<String, ParamKind> =
            graph.param_specs().into_iter().map(|p| (p.name, p.kind)).collect();
        let mut params = BTreeMap::new();
        let mut buffers = BTreeMap::new();
        for (name, t) in weights.iter() {
            let t = t.to_device(device)?;
            match kinds.get(name) {
                Some(k) if k.trainable() => {
                    params.insert(name.clone(), Var::from_tensor(&t.to_dtype(DType::F32)?)?);
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
        Ok(Trainer { graph, params, buffers, sgd: Sgd::new(sgd), device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters as the live `Var`s the next step differentiates, with the running
    /// statistics: the forward pass's input only. Saving and evaluation take [`Self::state_dict`].
    fn live_weights(&self) -> Weights {
        let mut map = self.buffers.clone();
        for (name, v) in &self.params {
            map.insert(name.clone(), v.as_tensor().clone());
        }
        Weights::from_map(map)
    }

    /// The state dict (parameters and running statistics) detached from the autograd graph: save
    /// it, evaluate with it, or load it in the browser.
    pub fn state_dict(&self) -> Weights {
        let mut map = self.buffers.clone();
        for (name, v) in &self.params {
            map.insert(name.clone(), v.as_tensor().detach());
        }
        Weights::from_map(map)
    }

    /// One SGD step on a normalised batch `x` with labels (u32): forward with batch
    /// statistics, backward, update, then the running statistics. A non-finite loss leaves
    /// every tensor as it was.
    pub fn step(&mut self, x: &Tensor, labels: &Tensor, lr: f64) -> Result<StepStats> {
        let weights = self.live_weights();
        let out = run(&self.graph, &weights, x, RunOptions { mode: Mode::Train, taps: false })?;
        let loss = cross_entropy(&out.logits, labels)?;
        let loss_value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let samples = x.dim(0)?;
        let correct = correct(&out.logits, labels)?;
        if !loss_value.is_finite() {
            return Ok(StepStats { loss: loss_value, correct, samples });
        }
        let grads = loss.backward()?;
        for (name, var) in &self.params {
            // A parameter the loss does not reach (none in the zoo) simply keeps its value.
            if let Some(g) = grads.get(var.as_tensor()) {
                self.sgd.update(name, var, g, lr)?;
            }
        }
        for s in &out.bn_stats {
            let name = &self.graph.nodes[s.node].name;
            let unbiased = s.count as f64 / (s.count.max(2) - 1) as f64;
            let m = BN_MOMENTUM;
            let mean = self.buffer(&format!("{name}.running_mean"))?;
            let var = self.buffer(&format!("{name}.running_var"))?;
            let new_mean = ((mean * (1.0 - m))? + (&s.mean * m)?)?;
            let new_var = ((var * (1.0 - m))? + (&s.var * (m * unbiased))?)?;
            self.buffers.insert(format!("{name}.running_mean"), new_mean);
            self.buffers.insert(format!("{name}.running_var"), new_var);
            let count = format!("{name}.num_batches_tracked");
            if let Some(c) = self.buffers.get(&count) {
                let c = c.to_dtype(DType::I64)?.to_scalar::<i64>()? + 1;
                self.buffers.insert(count, Tensor::new(c, &self.device)?);
            }
        }
        Ok(StepStats { loss: loss_value, correct, samples })
    }

    fn buffer(&self, name: &str) -> Result<&Tensor> {
        self.buffers.get(name).ok_or_else(|| candle_core::Error::Msg(format!("no buffer {name}")))
    }
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
