//! SGD with momentum and weight decay, PyTorch's `torch.optim.SGD` update rule exactly
//! (dampening 0, no Nesterov): `d = g + λ·w`, `v = μ·v + d` (`v = d` on the first step),
//! `w −= lr·v`. candle-nn's SGD has neither momentum nor weight decay.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    /// The paper's CIFAR-10 settings.
    fn default() -> Self {
        SgdConfig { momentum: 0.9, weight_decay: 1e-4 }
    }
}

/// The optimiser: its configuration and one momentum buffer per parameter (by name, so the
/// state saves next to the weights).
#[derive(Clone, Debug)]
pub struct Sgd {
    pub config: SgdConfig,
    momentum: BTreeMap<String, Tensor>,
}

impl Sgd {
    pub fn new(config: SgdConfig) -> Self {
        Sgd { config, momentum: BTreeMap::new() }
    }

    /// One update of parameter `name` with gradient `grad`.
    pub fn update(&mut self, name: &str, param: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let SgdConfig { momentum, weight_decay } = self.config;
        // Detached: the update is not part of any autograd graph, and a buffer that kept its
        // history would hold every earlier step's tensors alive.
        let w = param.as_tensor().detach();
        let grad = grad.detach();
        let d = if weight_decay != 0.0 { (&grad + (&w * weight_decay)?)? } else { grad };
        let step = if momentum != 0.0 {
            let v = match self.momentum.get(name) {
                Some(v) => ((v * momentum)? + d)?,
                None => d,
            };
            self.momentum.insert(name.to_string(), v.clone());
            v
        } else {
            d
        };
        param.set(&(&w - (step * lr)?)?)
    }

    /// The momentum buffers (empty before the first step).
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.momentum
    }

    /// Restores buffers saved from [`Sgd::state`].
    pub fn set_state(&mut self, state: BTreeMap<String, Tensor>) {
        self.momentum = state;
    }
}
