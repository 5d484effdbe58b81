//! A training run and its directory, so that anything (the CLI, a test, a later tool) can start,
//! resume and follow one. The directory holds:
//!
//! - `metrics.jsonl`: one [`EpochMetrics`] line per epoch;
//! - `last.safetensors`: the model in PyTorch's names (loadable by `resnet eval`/`predict`, the
//!   browser and PyTorch), its metadata carrying the [`Checkpoint`];
//! - `optim-<step>.safetensors`: the momentum buffers that go with it;
//! - `best.safetensors`: the model of the epoch with the best validation accuracy;
//! - with [`Run::enable_snapshots`], `snapshots/epoch-NNN.safetensors`: the replay of each epoch
//!   ([`Snapshot`]), epoch 0 being the initial weights.
//!
//! Every file is written to a temporary name and renamed, and `last.safetensors` (the commit
//! point) is written last, so a run killed at any moment resumes from a consistent state.
//!
//! The loop reads as torchvision's reference script: [`Run::open`] (start or resume),
//! [`split_validation`], [`Run::train_epoch`], [`Run::finish_epoch`] (evaluate, log, checkpoint).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::snapshot::{pick_images, Snapshot, SnapshotError};
use super::{evaluate, Augment, EvalStats, LrSchedule, Rng, Schedule, SgdConfig, Trainer};
use crate::arch::ArchInfo;
use crate::model::Model;
use crate::spec::Graph;
use crate::weights::{Weights, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    /// The directory holds a run and resuming was not asked for.
    #[error("{} already holds a run (last.safetensors)", .0.display())]
    Exists(PathBuf),
    /// A run of another architecture.
    #[error("{} is a run of {found}, not {wanted}", dir.display())]
    OtherArch { dir: PathBuf, found: String, wanted: String },
    /// The loss became infinite or NaN; nothing of the epoch was saved.
    #[error(
        "training diverged: the loss is {loss} at epoch {epoch}, step {batch} of {batches} (step {step} of the run); \
         nothing was saved from this epoch: the last good checkpoint ({epochs_done} epochs) in {} is intact",
        dir.display()
    )]
    Diverged {
        loss: f32,
        epoch: usize,
        batch: usize,
        batches: usize,
        step: u64,
        epochs_done: usize,
        dir: PathBuf,
    },
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

pub type Result<T> = std::result::Result<T, RunError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |e| RunError::Io { path: path.to_path_buf(), msg: e.to_string() }
}

/// What a run trains with; the same for every epoch of it.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Epochs in the whole run.
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    pub sgd: SgdConfig,
    pub schedule: Schedule,
    /// The first epochs (fractions allowed) at a tenth of the rate.
    pub warmup_epochs: f64,
    /// Seeds the initial weights, the shuffling and the augmentation.
    pub seed: u64,
    /// The paper's random crop and flip.
    pub augment: bool,
}

impl RunConfig {
    /// Whether the numbers make a run.
    pub fn check(&self) -> Result<()> {
        let invalid = |m: &str| Err(RunError::Invalid(m.into()));
        match () {
            _ if self.epochs == 0 => invalid("the run needs at least 1 epoch"),
            _ if self.batch_size < 2 => {
                invalid("the batch size must be at least 2 (BatchNorm needs 2 samples)")
            }
            _ if !(self.lr > 0.0 && self.lr.is_finite()) => {
                invalid("the learning rate must be a positive number")
            }
            _ => Ok(()),
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// The rate of the epoch's last step (full precision; print it with `format::lr`).
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    /// Training images per second (the training steps only).
    pub images_per_sec: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Optimiser steps so far.
    pub step: u64,
}

/// Where a run stands; saved in `last.safetensors`' metadata.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub arch: String,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Batches of the next epoch already trained (a checkpoint taken on an interrupt).
    pub batches_done: usize,
    pub step: u64,
    pub batch_size: u64,
    pub seed: u64,
    pub train_images: usize,
    /// Sums over the batches of an unfinished epoch.
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub train_seconds: f64,
    /// The momentum buffers' file.
    pub optimizer: String,
}

const STATE_KEY: &str = "resnet_train_state";

impl Checkpoint {
    /// The checkpoint of `last.safetensors`, read from its header alone (a safetensors file
    /// starts with the header's length, then the header; the tensors are not read).
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let bad = |msg: String| RunError::Io { path: path.into(), msg };
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        // safetensors' own bound on a header: a corrupt length allocates nothing.
        let len = u64::from_le_bytes(len);
        if len > 100_000_000 {
            return Err(bad(format!("not a safetensors file: a header of {len} bytes")));
        }
        let mut header = vec![0u8; len as usize];
        f.read_exact(&mut header).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let json = header["__metadata__"][STATE_KEY]
            .as_str()
            .ok_or_else(|| bad("not a checkpoint of `resnet train` (no training state)".into()))?;
        serde_json::from_str(json).map_err(|e| bad(format!("unreadable training state: {e}")))
    }

    /// Mean loss, accuracy and images/s of the epoch so far.
    pub fn running(&self) -> (f64, f64, f64) {
        let n = self.seen.max(1) as f64;
        (self.loss_sum / n, self.correct as f64 / n, self.seen as f64 / self.train_seconds.max(1e-9))
    }
}

/// Images as training keeps them: crops of `side`×`side`×3 RGB8, one label each.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub pixels: &'a [u8],
    pub labels: &'a [u32],
    pub side: usize,
}

/// The images one split uses: a set of images and the indices of its members.
#[derive(Clone, Debug)]
pub struct Subset<'a> {
    pub images: Images<'a>,
    pub idx: Vec<usize>,
}

impl<'a> Subset<'a> {
    /// Every image of `images`.
    pub fn all(images: Images<'a>) -> Self {
        Subset { images, idx: (0..images.labels.len()).collect() }
    }

    pub fn len(&self) -> usize {
        self.idx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// Pixels (N×H×W×3) and labels of the images at positions `pos` of the subset.
    pub fn gather(&self, pos: &[usize]) -> (Vec<u8>, Vec<u32>) {
        let bytes = self.images.side * self.images.side * 3;
        let mut px = Vec::with_capacity(pos.len() * bytes);
        let mut labels = Vec::with_capacity(pos.len());
        for &p in pos {
            let i = self.idx[p];
            px.extend_from_slice(&self.images.pixels[i * bytes..(i + 1) * bytes]);
            labels.push(self.images.labels[i]);
        }
        (px, labels)
    }
}

/// Holds out `fraction` of `n` images (seeded; at least one, and at least one left to train
/// on) for validation: `(train, validation)` indices, each sorted. Fewer than 2 images cannot
/// be split.
pub fn split_validation(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(RunError::Invalid(format!("the validation fraction {fraction} is not between 0 and 1")));
    }
    if n < 2 {
        return Err(RunError::Invalid(format!(
            "cannot hold out {:.0} % of {n} image{} for validation: training and validation both \
             need at least one (use more images, or a separate validation set)",
            fraction * 100.0,
            if n == 1 { "" } else { "s" },
        )));
    }
    let held = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut all: Vec<usize> = (0..n).collect();
    Rng::derived(seed, 0x5E1D, 0).shuffle(&mut all);
    let mut val = all.split_off(n - held);
    all.sort_unstable();
    val.sort_unstable();
    Ok((all, val))
}

/// What a run directory holds, as far as opening it is concerned.
#[derive(Clone, Debug)]
pub enum Status {
    /// Nothing to resume: a new run starts.
    New,
    /// A checkpoint to continue from.
    Resume(Checkpoint),
    /// The run already did every epoch asked for.
    Done { epochs: usize },
}

/// Reads what `dir` holds, checking that the run there can go on as `config` says: cheap, so
/// that a caller can fail before loading any data.
pub fn status(dir: &Path, arch: &ArchInfo, config: &RunConfig, resume: bool) -> Result<Status> {
    config.check()?;
    let last = dir.join("last.safetensors");
    let s = match (resume, last.exists()) {
        (true, true) => Checkpoint::read(&last)?,
        (false, true) => return Err(RunError::Exists(dir.to_path_buf())),
        (_, false) => return Ok(Status::New),
    };
    if s.arch != arch.name {
        return Err(RunError::OtherArch {
            dir: dir.to_path_buf(),
            found: s.arch,
            wanted: arch.name.to_string(),
        });
    }
    if s.batch_size != config.batch_size as u64 && s.batches_done > 0 {
        return Err(RunError::Invalid(format!(
            "the checkpoint stopped inside an epoch with batch size {}; resume with it",
            s.batch_size
        )));
    }
    if s.epochs_done >= config.epochs {
        return Ok(Status::Done { epochs: config.epochs });
    }
    Ok(Status::Resume(s))
}

/// How [`Run::open`] found the directory.
pub enum Opened {
    New(Run),
    Resumed(Run),
    /// The run already did every epoch asked for.
    Done {
        epochs: usize,
    },
}

/// Where one step of [`Run::train_epoch`] left the epoch.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    pub epoch: usize,
    /// Batches of this epoch done, and in all.
    pub batch: usize,
    pub batches: usize,
    pub lr: f64,
    /// The epoch so far: mean loss, accuracy, images/s.
    pub loss: f64,
    pub accuracy: f64,
    pub images_per_sec: f64,
}

/// How [`Run::train_epoch`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochEnd {
    /// Every batch trained: [`Run::finish_epoch`] comes next.
    Trained,
    /// Stopped inside the epoch on request; a checkpoint was saved there.
    Stopped,
}

/// A run being trained: the model and optimiser, where it stands, and its history.
pub struct Run {
    dir: PathBuf,
    arch: &'static ArchInfo,
    graph: Graph,
    config: RunConfig,
    state: Checkpoint,
    trainer: Trainer,
    schedule: LrSchedule,
    history: Vec<EpochMetrics>,
    best: f64,
    batches: usize,
    device: Device,
    /// The last step's rate (the metrics' `lr`).
    lr: f64,
    epoch_start: Instant,
    /// The fixed images of the snapshots (pixels, labels, side), when they are written.
    snapshot_images: Option<(Vec<u8>, Vec<u32>, usize)>,
}

impl Run {
    /// Starts a run in `dir` on `train_images` images, or resumes the one there when `resume`
    /// is set (a missing checkpoint starts a new run). Metrics lines past the checkpoint are
    /// dropped: their epoch runs again.
    pub fn open(
        dir: &Path,
        arch: &'static ArchInfo,
        graph: Graph,
        config: RunConfig,
        resume: bool,
        train_images: usize,
        device: &Device,
    ) -> Result<Opened> {
        let last = dir.join("last.safetensors");
        let resumed = match status(dir, arch, &config, resume)? {
            Status::New => None,
            Status::Resume(s) => Some(s),
            Status::Done { epochs } => return Ok(Opened::Done { epochs }),
        };
        let batch = config.batch_size;
        // A last batch of one sample cannot be batch-normalised: drop it.
        let batches =
            if train_images % batch == 1 { train_images / batch } else { train_images.div_ceil(batch) };
        if batches == 0 {
            return Err(RunError::Invalid(format!("{train_images} training images: too few for a batch")));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let trainer = match &resumed {
            Some(s) => {
                let w = Weights::load(&last, &graph, arch.name, device)?;
                let mut t = Trainer::new(graph.clone(), &w, config.sgd, device)?;
                let optim = dir.join(&s.optimizer);
                let buffers = candle_core::safetensors::load(&optim, device).map_err(|e| RunError::Io {
                    path: optim.clone(),
                    msg: format!("cannot load the optimiser state: {e}"),
                })?;
                t.set_optimizer_state(buffers.into_iter().collect())?;
                t
            }
            None => Trainer::new(
                graph.clone(),
                &Weights::random(&graph, config.seed, device)?,
                config.sgd,
                device,
            )?,
        };
        let mut state = resumed.clone().unwrap_or(Checkpoint {
            arch: arch.name.to_string(),
            seed: config.seed,
            ..Default::default()
        });
        state.train_images = train_images;
        state.batch_size = batch as u64;
        let schedule = LrSchedule {
            base_lr: config.lr,
            schedule: config.schedule.clone(),
            warmup_epochs: config.warmup_epochs,
            epochs: config.epochs,
            batches_per_epoch: batches,
        };
        let metrics = dir.join("metrics.jsonl");
        let mut history = read_metrics(&metrics)?;
        history.retain(|m| m.epoch <= state.epochs_done);
        write_metrics(&metrics, &history)?;
        let best = history.iter().filter_map(|m| m.val_acc).fold(f64::NEG_INFINITY, f64::max);
        let lr = schedule.lr(state.epochs_done, state.batches_done);
        let run = Run {
            dir: dir.to_path_buf(),
            arch,
            graph,
            config,
            state,
            trainer,
            schedule,
            history,
            best,
            batches,
            device: device.clone(),
            lr,
            epoch_start: Instant::now(),
            snapshot_images: None,
        };
        Ok(if resumed.is_some() { Opened::Resumed(run) } else { Opened::New(run) })
    }

    /// The network being trained (which path runs it, and why).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.state
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Batches per epoch.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The epochs still to run (0-based).
    pub fn epochs_left(&self) -> std::ops::Range<usize> {
        self.state.epochs_done..self.config.epochs
    }

    /// The best validation accuracy so far.
    pub fn best(&self) -> Option<f64> {
        self.best.is_finite().then_some(self.best)
    }

    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// Writes a [`Snapshot`] after every epoch from now on, of fixed images of `from` (the
    /// validation set, so that they are never trained on); a run that has not trained yet also
    /// gets epoch 0, its initial weights.
    pub fn enable_snapshots(&mut self, from: &Subset) -> Result<()> {
        let labels = from.idx.iter().map(|&i| from.images.labels[i]);
        let (pixels, labels) = from.gather(&pick_images(labels));
        if labels.is_empty() {
            return Err(RunError::Invalid("no images to take snapshots of".into()));
        }
        self.snapshot_images = Some((pixels, labels, from.images.side));
        if self.state.epochs_done == 0 && self.state.batches_done == 0 {
            let model = Model::new(self.arch, self.graph.clone(), self.trainer.state_dict()?);
            self.write_snapshot(&model, None)?;
        }
        Ok(())
    }

    /// The snapshot of the epoch just done (or of epoch 0), when snapshots are on.
    fn write_snapshot(&self, model: &Model, metrics: Option<&EpochMetrics>) -> Result<()> {
        let Some((pixels, labels, side)) = &self.snapshot_images else { return Ok(()) };
        let epoch = metrics.map_or(0, |m| m.epoch);
        let s = Snapshot::capture(model, epoch, metrics.cloned(), pixels, labels, *side)?;
        let dir = self.dir.join("snapshots");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(Snapshot::file_name(epoch));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, s.to_bytes()?).and_then(|_| std::fs::rename(&tmp, &path)).map_err(io(&path))
    }

    /// Trains the rest of the current epoch on `train` (which must be the set the run was
    /// opened with), calling `on_step` after each step; `on_step` returning `false` stops the
    /// epoch there with a checkpoint (unless it was the epoch's last batch).
    pub fn train_epoch(
        &mut self,
        train: &Subset,
        mut on_step: impl FnMut(&StepReport) -> bool,
    ) -> Result<EpochEnd> {
        let epoch = self.state.epochs_done;
        let (batch, n, seed) = (self.config.batch_size, train.len(), self.state.seed);
        if n != self.state.train_images {
            return Err(RunError::Invalid(format!(
                "the run trains on {} images, not {n}",
                self.state.train_images
            )));
        }
        self.epoch_start = Instant::now();
        self.lr = self.schedule.lr(epoch, self.state.batches_done);
        let mut order: Vec<usize> = (0..n).collect();
        Rng::derived(seed, 0x5487_FF1E, epoch as u64).shuffle(&mut order);
        let side = train.images.side;
        let augment = Augment::paper(side, 3);
        let prep = self.arch.preprocess();
        let with_augment = self.config.augment;
        let first = self.state.batches_done;
        let make = |b: usize| {
            let pos = &order[b * batch..((b + 1) * batch).min(n)];
            let (px, labels) = train.gather(pos);
            let px = match with_augment {
                true => augment.apply_batch(&px, seed, epoch as u64, (b * batch) as u64),
                false => px,
            };
            Ok((prep.batch_tensor(&px, side, &Device::Cpu)?, labels))
        };
        // Natively, batch b + 1 is gathered, augmented and normalised on its own thread while
        // step b runs; the channel holds one batch, so memory stays at two batches' input.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let batches = self.batches;
            std::thread::scope(|scope| {
                let (send, recv) = std::sync::mpsc::sync_channel(1);
                scope.spawn(move || {
                    for b in first..batches {
                        // The trainer stopped early (Ctrl-C, divergence, an error): nobody waits.
                        if send.send(make(b)).is_err() {
                            break;
                        }
                    }
                });
                let stopped = || RunError::Invalid("the data thread stopped before the epoch's end".into());
                self.train_batches(epoch, first, |_| recv.recv().map_err(|_| stopped())?, &mut on_step)
            })
        }
        // The browser's main thread cannot block on another: batches are made in turn.
        #[cfg(target_arch = "wasm32")]
        self.train_batches(epoch, first, make, &mut on_step)
    }

    /// The steps of [`Run::train_epoch`] from `first` on, batch `b` from `next(b)`.
    fn train_batches(
        &mut self,
        epoch: usize,
        first: usize,
        mut next: impl FnMut(usize) -> Result<(Tensor, Vec<u32>)>,
        on_step: &mut impl FnMut(&StepReport) -> bool,
    ) -> Result<EpochEnd> {
        for b in first..self.batches {
            let t = Instant::now();
            let (x, labels) = next(b)?;
            let x = x.to_device(&self.device)?;
            let y = Tensor::new(labels, &self.device)?;
            self.lr = self.schedule.lr(epoch, b);
            let s = self.trainer.step(&x, &y, self.lr)?;
            if !s.loss.is_finite() {
                return Err(RunError::Diverged {
                    loss: s.loss,
                    epoch: epoch + 1,
                    batch: b + 1,
                    batches: self.batches,
                    step: self.state.step + 1,
                    epochs_done: self.state.epochs_done,
                    dir: self.dir.clone(),
                });
            }
            let st = &mut self.state;
            st.step += 1;
            st.batches_done = b + 1;
            st.loss_sum += s.loss as f64 * s.samples as f64;
            st.correct += s.correct;
            st.seen += s.samples;
            st.train_seconds += t.elapsed().as_secs_f64();
            let (loss, accuracy, images_per_sec) = st.running();
            let report = StepReport {
                epoch,
                batch: b + 1,
                batches: self.batches,
                lr: self.lr,
                loss,
                accuracy,
                images_per_sec,
            };
            if !on_step(&report) && b + 1 < self.batches {
                self.save(None)?;
                return Ok(EpochEnd::Stopped);
            }
        }
        Ok(EpochEnd::Trained)
    }

    /// Ends a trained epoch: evaluates on `val` with the network as it will be saved (running
    /// statistics, folded BatchNorm), appends the metrics line, keeps the best model, and
    /// writes the checkpoint (the commit point) last.
    pub fn finish_epoch(&mut self, val: Option<&Subset>) -> Result<EpochMetrics> {
        let epoch = self.state.epochs_done + 1;
        let model = Model::new(self.arch, self.graph.clone(), self.trainer.state_dict()?);
        let v = match val {
            Some(v) => Some(self.evaluate(&model, v)?),
            None => None,
        };
        let (train_loss, train_acc, images_per_sec) = self.state.running();
        let m = EpochMetrics {
            epoch,
            lr: self.lr,
            train_loss,
            train_acc,
            val_loss: v.map(|v| v.loss),
            val_acc: v.map(|v| v.accuracy),
            images_per_sec,
            seconds: self.epoch_start.elapsed().as_secs_f64(),
            step: self.state.step,
        };
        self.history.push(m.clone());
        // The metrics line first, the checkpoint last: a crash between the two repeats this
        // epoch, and its line is dropped on resume.
        write_metrics(&self.dir.join("metrics.jsonl"), &self.history)?;
        self.write_snapshot(&model, Some(&m))?;
        if let Some(acc) = m.val_acc.filter(|&a| a > self.best) {
            self.best = acc;
            let meta = HashMap::from([
                ("arch".to_string(), self.arch.name.to_string()),
                ("epoch".to_string(), epoch.to_string()),
                ("val_acc".to_string(), acc.to_string()),
            ]);
            model.weights.save(&self.dir.join("best.safetensors"), Some(meta))?;
        }
        // The next epoch starts from zero sums, in the checkpoint too: a run resumed from it
        // must not count this epoch's batches again.
        let st = &mut self.state;
        st.epochs_done = epoch;
        st.batches_done = 0;
        st.loss_sum = 0.0;
        st.correct = 0;
        st.seen = 0;
        st.train_seconds = 0.0;
        self.save(Some(&model.weights))?;
        Ok(m)
    }

    fn evaluate(&self, model: &Model, set: &Subset) -> Result<EvalStats> {
        let side = set.images.side;
        let prep = self.arch.preprocess();
        let positions: Vec<usize> = (0..set.len()).collect();
        let batches = positions.chunks(self.config.batch_size.max(256)).map(|pos| {
            let (px, labels) = set.gather(pos);
            Ok((prep.batch_tensor(&px, side, &self.device)?, Tensor::new(labels, &self.device)?))
        });
        Ok(evaluate(model, batches)?)
    }

    /// Writes the momentum buffers, then the model (the commit point), then removes optimiser
    /// files no checkpoint refers to.
    fn save(&mut self, weights: Option<&Weights>) -> Result<()> {
        let dir = &self.dir;
        let optimizer = format!("optim-{}.safetensors", self.state.step);
        let buffers: BTreeMap<String, Tensor> = self.trainer.optimizer_state()?;
        let meta = HashMap::from([("step".to_string(), self.state.step.to_string())]);
        Weights::from_map(buffers).save(&dir.join(&optimizer), Some(meta))?;
        self.state.optimizer = optimizer.clone();
        let state = serde_json::to_string(&self.state).map_err(|e| RunError::Invalid(e.to_string()))?;
        let meta = HashMap::from([
            ("arch".to_string(), self.state.arch.clone()),
            ("epoch".to_string(), self.state.epochs_done.to_string()),
            (STATE_KEY.to_string(), state),
        ]);
        let owned;
        let weights = match weights {
            Some(w) => w,
            None => {
                owned = self.trainer.state_dict()?;
                &owned
            }
        };
        weights.save(&dir.join("last.safetensors"), Some(meta))?;
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("optim-") && name != optimizer {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// The lines of a run's `metrics.jsonl` (none when it does not exist yet).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(path)(e)),
    };
    parse_metrics(&text).map_err(|msg| RunError::Io { path: path.into(), msg })
}

/// The lines of a `metrics.jsonl` text (the browser fetches the shipped runs').
pub fn parse_metrics(text: &str) -> std::result::Result<Vec<EpochMetrics>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad line {l}: {e}")))
        .collect()
}

/// Rewrites the whole file (temporary + rename): small, and never half-written.
fn write_metrics(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        for m in history {
            writeln!(f, "{}", serde_json::to_string(m)?)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_that_leaves_a_side_empty_is_an_error() {
        for (n, f) in [(0, 0.5), (1, 0.1), (1, 0.9)] {
            let err = split_validation(n, f, 0).expect_err("one side would be empty");
            assert!(err.to_string().contains("both need at least one"), "{n} {f}: {err}");
        }
        assert!(split_validation(10, 1.5, 0).is_err());
        // Small sets keep one image on each side.
        for (n, f, held) in [(2, 0.1, 1), (2, 0.9, 1), (10, 0.01, 1), (10, 0.99, 9)] {
            let (train, val) = split_validation(n, f, 3).unwrap();
            assert_eq!((train.len(), val.len()), (n - held, held), "{n} {f}");
        }
        let (train, val) = split_validation(10, 0.25, 7).unwrap();
        assert_eq!((train.len(), val.len()), (7, 3));
        let mut all = [train.clone(), val].concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(split_validation(10, 0.25, 7).unwrap().0, train, "seeded");
    }
}
