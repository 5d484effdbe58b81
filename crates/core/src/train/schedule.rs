//! Learning-rate schedules, evaluated per iteration so that a step lands where the paper puts
//! it (32k and 48k of 64k iterations = 50 % and 75 % of the run).

use std::f64::consts::PI;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// ÷10 at 50 % and at 75 % of the run.
    Paper,
    /// Half a cosine from the base rate to 0.
    Cosine,
    /// ÷10 after each listed number of epochs (PyTorch's `MultiStepLR`: `step:100,150` trains
    /// epochs 1–100 at the base rate, 101–150 at a tenth, the rest at a hundredth).
    Step(Vec<usize>),
    /// The base rate throughout.
    Constant,
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "paper" => Ok(Schedule::Paper),
            "cosine" => Ok(Schedule::Cosine),
            "constant" => Ok(Schedule::Constant),
            _ => {
                let Some(list) = s.strip_prefix("step:") else {
                    return Err(format!(
                        "unknown schedule '{s}': expected paper, cosine, constant or step:E1,E2,…"
                    ));
                };
                let mut epochs = list
                    .split(',')
                    .map(|e| match e.trim().parse::<usize>() {
                        Ok(v) if v >= 1 => Ok(v),
                        _ => Err(format!("schedule '{s}': '{e}' is not an epoch number (1, 2, …)")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                epochs.sort_unstable();
                Ok(Schedule::Step(epochs))
            }
        }
    }
}

/// A schedule with its base rate and an optional warm-up.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub schedule: Schedule,
    /// Epochs (fractions allowed) at a tenth of the base rate first — the paper's warm-up for
    /// ResNet-110 (0.01 for the first 400 iterations, then 0.1).
    pub warmup_epochs: f64,
    pub epochs: usize,
    pub batches_per_epoch: usize,
}

impl LrSchedule {
    /// The rate for batch `batch` (0-based) of epoch `epoch` (0-based).
    pub fn lr(&self, epoch: usize, batch: usize) -> f64 {
        let per = self.batches_per_epoch.max(1) as f64;
        let iter = epoch as f64 * per + batch as f64;
        if iter < self.warmup_epochs * per {
            return self.base_lr * 0.1;
        }
        let total = (self.epochs.max(1) as f64) * per;
        let t = iter / total;
        match &self.schedule {
            Schedule::Paper => {
                let drops = (t >= 0.5) as i32 + (t >= 0.75) as i32;
                self.base_lr * 0.1f64.powi(drops)
            }
            Schedule::Cosine => self.base_lr * 0.5 * (1.0 + (PI * t.min(1.0)).cos()),
            Schedule::Step(at) => {
                let drops = at.iter().filter(|&&e| epoch >= e).count() as i32;
                self.base_lr * 0.1f64.powi(drops)
            }
            Schedule::Constant => self.base_lr,
        }
    }
}
