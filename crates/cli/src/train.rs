//! `resnet train`: trains any network of the zoo from scratch (or resumes a run) through the
//! core's training step, on CPU or CUDA. A run directory holds everything:
//!
//! - `metrics.jsonl`: one line per epoch (lr, train and val loss/accuracy, images/s, seconds);
//! - `last.safetensors`: the model in PyTorch's names (loadable by `resnet eval`/`predict`, the
//!   browser and PyTorch), its metadata carrying the training state;
//! - `optim-<step>.safetensors`: the momentum buffers that go with it;
//! - `best.safetensors`: the model of the epoch with the best validation accuracy.
//!
//! Every file is written to a temporary name and renamed, and `last.safetensors` (the commit
//! point) is renamed last, so a run killed at any moment resumes from a consistent state.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_core::train::{evaluate, input_tensor, Augment, LrSchedule, Rng, Schedule, SgdConfig, Trainer};
use resnet_core::{ArchInfo, Preprocess, Weights};
use serde::{Deserialize, Serialize};

use crate::data::{self, LabeledImages, LoadOptions, Split};

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub arch: crate::ArchArgs,
    /// Training images: an ImageFolder tree (a root with train/ and test/ uses train/) or a
    /// folder of CIFAR-10 binary batches (data_batch_1..5.bin).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation images (the test split of such a root or folder); evaluated after every
    /// epoch, never trained on.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Without --val: hold out this fraction of the training images (seeded) for validation.
    #[arg(long, conflicts_with = "val", value_parser = parse_fraction)]
    pub val_split: Option<f64>,
    /// The run directory: metrics, checkpoints, best model.
    #[arg(long)]
    pub out: PathBuf,
    /// Epochs in the whole run (164 ≈ the paper's 64k iterations of batch 128 on CIFAR-10).
    #[arg(long, default_value_t = 164)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(2..))]
    pub batch_size: u64,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// paper (÷10 at 50 % and 75 % of the run), cosine, constant, or step:E1,E2 (÷10 after
    /// E1 and after E2 epochs).
    #[arg(long, default_value = "paper")]
    pub schedule: Schedule,
    /// Train the first E epochs (fractions allowed) at a tenth of the rate: the paper's
    /// warm-up for ResNet-110 (0.01 for ~400 iterations ≈ 1 epoch).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// cpu, or cuda (a build with `--features cuda`); cuda:N picks a GPU.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seeds the initial weights, the shuffling, the augmentation and the --val-split hold-out.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Use only N images of each split (evenly spread over the classes): quick runs and tests.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Use only N validation images (default: --limit).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Turn off the random crop and flip.
    #[arg(long)]
    pub no_augment: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!("'{s}' is not a fraction between 0 and 1 (e.g. 0.1)")),
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// The rate of the epoch's last step.
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

/// Where a run stands; saved in the checkpoint's metadata.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    arch: String,
    /// Epochs finished.
    epochs_done: usize,
    /// Batches of the next epoch already trained (a checkpoint taken on Ctrl-C).
    batches_done: usize,
    step: u64,
    batch_size: u64,
    seed: u64,
    train_images: usize,
    /// Sums over the batches of an interrupted epoch.
    loss_sum: f64,
    correct: usize,
    seen: usize,
    train_seconds: f64,
    /// The momentum buffers' file.
    optimizer: String,
}

const STATE_KEY: &str = "resnet_train_state";

/// Set by Ctrl-C; the loop checks it between steps.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How `run` ended (errors aside).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    Interrupted,
}

/// The images one split uses: a dataset and the indices of its images in it.
struct Subset<'a> {
    data: &'a LabeledImages,
    idx: Vec<usize>,
}

impl Subset<'_> {
    fn len(&self) -> usize {
        self.idx.len()
    }

    /// Pixels (N×H×W×3) and labels of the images at positions `pos` of the subset.
    fn gather(&self, pos: &[usize]) -> (Vec<u8>, Vec<u32>) {
        let mut px = Vec::with_capacity(pos.len() * self.data.image_bytes());
        let mut labels = Vec::with_capacity(pos.len());
        for &p in pos {
            let i = self.idx[p];
            px.extend_from_slice(self.data.image(i));
            labels.push(self.data.labels[i]);
        }
        (px, labels)
    }
}

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            if !cfg!(feature = "cuda") {
                bail!(
                    "--device {name}: this resnet was built without CUDA; \
                     rebuild with `cargo build --release -p resnet-cli --features cuda`"
                );
            }
            let ordinal = match name.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| anyhow!("--device {name}: expected cuda or cuda:N"))?,
                None => 0,
            };
            Device::new_cuda(ordinal).with_context(|| format!("--device {name}: no usable CUDA device"))
        }
        _ => bail!("--device {name}: expected cpu, cuda or cuda:N"),
    }
}

pub fn train(args: &TrainArgs) -> Result<std::process::ExitCode> {
    // First Ctrl-C: finish the step, save, exit. Second: leave at once.
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the step and saving a checkpoint (Ctrl-C again to quit now)");
    })
    .context("cannot install the Ctrl-C handler")?;
    match run(args)? {
        Outcome::Finished => Ok(std::process::ExitCode::SUCCESS),
        Outcome::Interrupted => Ok(std::process::ExitCode::from(130)),
    }
}

fn load_split(path: &Path, prep: &Preprocess, split: Split, limit: Option<usize>) -> Result<LabeledImages> {
    let t = Instant::now();
    let set = data::load_with(path, prep, &LoadOptions { limit, split, progress: None })
        .with_context(|| format!("loading {}", path.display()))?;
    if set.is_empty() {
        bail!("{}: no images", path.display());
    }
    eprintln!(
        "{}: {} images, {} classes ({}), decoded in {:.1} s",
        path.display(),
        set.len(),
        set.classes.len(),
        set.format,
        t.elapsed().as_secs_f64()
    );
    Ok(set)
}

/// Trains as `args` say; returns how the run ended.
pub fn run(args: &TrainArgs) -> Result<Outcome> {
    let (arch, graph): (&'static ArchInfo, _) = args.arch.resolve()?;
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number");
    }
    let device = parse_device(&args.device)?;
    let prep = arch.preprocess();
    let out = &args.out;

    // Where the run stands: fresh, or resumed from its last checkpoint.
    let last = out.join("last.safetensors");
    let resumed = match (args.resume, last.exists()) {
        (true, true) => Some(read_state(&last)?),
        (true, false) => {
            eprintln!("--resume: no checkpoint in {} yet; starting a new run", out.display());
            None
        }
        (false, true) => bail!(
            "{} already holds a run (last.safetensors); pass --resume to continue it, or choose another --out",
            out.display()
        ),
        (false, false) => None,
    };
    if let Some(s) = &resumed {
        if s.arch != arch.name {
            bail!("{} is a run of {}, not {}", out.display(), s.arch, arch.name);
        }
        if s.batch_size != args.batch_size && s.batches_done > 0 {
            bail!(
                "the checkpoint stopped inside an epoch with --batch-size {}; resume with it",
                s.batch_size
            );
        }
        if s.epochs_done >= args.epochs {
            eprintln!("{}: all {} epochs are done", out.display(), args.epochs);
            return Ok(Outcome::Finished);
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    // Data.
    let train_set = load_split(&args.data, &prep, Split::Train, args.limit)?;
    let classes = graph.num_classes();
    if train_set.classes.len() > classes {
        bail!(
            "{} has {} classes but {} has {} outputs",
            args.data.display(),
            train_set.classes.len(),
            arch.name,
            classes
        );
    }
    let val_set = match &args.val {
        Some(v) => Some(load_split(v, &prep, Split::Test, args.val_limit.or(args.limit))?),
        None => None,
    };
    let mut all: Vec<usize> = (0..train_set.len()).collect();
    let (train, val) = match (&val_set, args.val_split) {
        (Some(v), _) => {
            if v.classes != train_set.classes {
                bail!("--val has classes {:?}, --data has {:?}", v.classes, train_set.classes);
            }
            (Subset { data: &train_set, idx: all }, Some(Subset { data: v, idx: (0..v.len()).collect() }))
        }
        (None, Some(f)) => {
            Rng::derived(args.seed, 0x5E1D, 0).shuffle(&mut all);
            let held = ((all.len() as f64 * f).round() as usize).clamp(1, all.len() - 1);
            let mut val_idx = all.split_off(all.len() - held);
            let mut train_idx = all;
            train_idx.sort_unstable();
            val_idx.sort_unstable();
            eprintln!(
                "holding out {} of the {} training images for validation",
                val_idx.len(),
                train_set.len()
            );
            (Subset { data: &train_set, idx: train_idx }, Some(Subset { data: &train_set, idx: val_idx }))
        }
        (None, None) => (Subset { data: &train_set, idx: all }, None),
    };
    if val.is_none() {
        eprintln!("no validation set (--val or --val-split): best.safetensors will not be written");
    }
    let batch = args.batch_size as usize;
    let n = train.len();
    // A last batch of one sample cannot be batch-normalised: drop it.
    let batches = if n % batch == 1 { n / batch } else { n.div_ceil(batch) };
    if batches == 0 {
        bail!("{n} training images: too few for a batch");
    }

    // Model and optimiser.
    let sgd = SgdConfig { momentum: args.momentum, weight_decay: args.weight_decay };
    let mut state = resumed.clone().unwrap_or(State {
        arch: arch.name.to_string(),
        batch_size: args.batch_size,
        seed: args.seed,
        ..Default::default()
    });
    let mut trainer = match &resumed {
        Some(s) => {
            let w = Weights::load(&last, &graph, arch.name, &device)?;
            let mut t = Trainer::new(graph.clone(), &w, sgd, &device)?;
            let optim = out.join(&s.optimizer);
            let buffers = candle_core::safetensors::load(&optim, &device)
                .with_context(|| format!("loading the optimiser state {}", optim.display()))?;
            t.sgd.set_state(buffers.into_iter().collect());
            t
        }
        None => Trainer::new(graph.clone(), &Weights::random(&graph, args.seed, &device)?, sgd, &device)?,
    };
    let seed = state.seed;
    state.train_images = n;
    state.batch_size = args.batch_size;
    let schedule = LrSchedule {
        base_lr: args.lr,
        schedule: args.schedule.clone(),
        warmup_epochs: args.warmup_epochs,
        epochs: args.epochs,
        batches_per_epoch: batches,
    };
    let metrics_path = out.join("metrics.jsonl");
    let mut history = read_metrics(&metrics_path)?;
    // Lines past the checkpoint belong to an epoch that will run again.
    history.retain(|m| m.epoch <= state.epochs_done);
    write_metrics(&metrics_path, &history)?;
    let mut best = history.iter().filter_map(|m| m.val_acc).fold(f64::NEG_INFINITY, f64::max);

    let size = train_set.size;
    let augment = Augment::paper(size, 3);
    let tty = std::io::stderr().is_terminal();
    eprintln!(
        "training {} on {} ({n} images, {batches} batches of {batch}) for epochs {}..={} of {}",
        arch.name,
        device_name(&device),
        state.epochs_done + 1,
        args.epochs,
        args.epochs
    );
    if state.batches_done > 0 {
        eprintln!("resuming epoch {} at batch {}", state.epochs_done + 1, state.batches_done + 1);
    }

    for epoch in state.epochs_done..args.epochs {
        let epoch_start = Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        Rng::derived(seed, 0x5487_FF1E, epoch as u64).shuffle(&mut order);
        let bar = progress_bar(tty, epoch + 1, args.epochs, batches);
        bar.set_position(state.batches_done as u64);
        let mut lr = schedule.lr(epoch, state.batches_done);
        let mut next_log = Instant::now();
        for b in state.batches_done..batches {
            let t = Instant::now();
            let pos = &order[b * batch..((b + 1) * batch).min(n)];
            let (px, labels) = train.gather(pos);
            let px = match args.no_augment {
                true => px,
                false => augment.apply_batch(&px, seed, epoch as u64, (b * batch) as u64),
            };
            let x = input_tensor(&px, (pos.len(), size, size, 3), &prep, &device)?;
            let y = Tensor::new(labels, &device)?;
            lr = schedule.lr(epoch, b);
            let s = trainer.step(&x, &y, lr)?;
            if !s.loss.is_finite() {
                bar.abandon();
                bail!(
                    "training diverged: the loss is {} at epoch {}, step {} of {} (step {} of the run); \
                     nothing was saved from this epoch: the last good checkpoint ({} epochs) in {} is intact. \
                     Try a lower --lr or --warmup-epochs.",
                    s.loss,
                    epoch + 1,
                    b + 1,
                    batches,
                    state.step + 1,
                    state.epochs_done,
                    out.display()
                );
            }
            state.step += 1;
            state.batches_done = b + 1;
            state.loss_sum += s.loss as f64 * s.samples as f64;
            state.correct += s.correct;
            state.seen += s.samples;
            state.train_seconds += t.elapsed().as_secs_f64();
            let (loss, acc, ips) = running(&state);
            if tty {
                bar.set_position((b + 1) as u64);
                bar.set_message(format!("loss {loss:.4} acc {:.2}% {ips:.0} img/s lr {lr:.4}", acc * 100.0));
            } else if next_log.elapsed().as_secs_f64() >= 30.0 && b + 1 < batches {
                next_log = Instant::now();
                eprintln!(
                    "epoch {}/{} step {}/{batches}: loss {loss:.4} acc {:.2}% {ips:.0} img/s lr {lr}",
                    epoch + 1,
                    args.epochs,
                    b + 1,
                    acc * 100.0
                );
            }
            if INTERRUPTED.load(Ordering::SeqCst) && b + 1 < batches {
                bar.abandon();
                save_checkpoint(out, &trainer, &mut state, None)?;
                eprintln!(
                    "interrupted: checkpoint saved in {} at epoch {}, step {}/{batches}; continue with --resume",
                    out.display(),
                    epoch + 1,
                    b + 1
                );
                return Ok(Outcome::Interrupted);
            }
        }
        bar.finish_and_clear();

        // Validation, with the network as it will be saved (running statistics, folded BN).
        let weights = trainer.state_dict();
        let v = match &val {
            Some(v) => Some(evaluate_subset(&graph, &weights, v, &prep, &device, batch.max(256))?),
            None => None,
        };
        let (train_loss, train_acc, ips) = running(&state);
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss,
            train_acc,
            val_loss: v.map(|v| v.loss),
            val_acc: v.map(|v| v.accuracy),
            images_per_sec: ips,
            seconds: epoch_start.elapsed().as_secs_f64(),
            step: state.step,
        };
        history.push(m.clone());
        // The metrics line first, the checkpoint (the commit point) last: a crash between the
        // two repeats this epoch, and its line is dropped on resume.
        write_metrics(&metrics_path, &history)?;
        if let Some(acc) = m.val_acc {
            if acc > best {
                best = acc;
                let meta = HashMap::from([
                    ("arch".to_string(), arch.name.to_string()),
                    ("epoch".to_string(), (epoch + 1).to_string()),
                    ("val_acc".to_string(), acc.to_string()),
                ]);
                weights.save(&out.join("best.safetensors"), Some(meta))?;
            }
        }
        // The next epoch starts from zero sums, in the checkpoint too: a run resumed from it
        // must not count this epoch's batches again.
        state.epochs_done = epoch + 1;
        state.batches_done = 0;
        state.loss_sum = 0.0;
        state.correct = 0;
        state.seen = 0;
        state.train_seconds = 0.0;
        save_checkpoint(out, &trainer, &mut state, Some(&weights))?;
        let val_text = match (m.val_loss, m.val_acc) {
            (Some(l), Some(a)) => format!(", val loss {l:.4} acc {:.2}%", a * 100.0),
            _ => String::new(),
        };
        eprintln!(
            "epoch {}/{}: lr {} train loss {:.4} acc {:.2}%{val_text}, {:.0} img/s, {:.1} s",
            m.epoch,
            args.epochs,
            m.lr,
            m.train_loss,
            m.train_acc * 100.0,
            m.images_per_sec,
            m.seconds
        );
        if INTERRUPTED.load(Ordering::SeqCst) && epoch + 1 < args.epochs {
            eprintln!(
                "interrupted: checkpoint saved in {} after epoch {}; continue with --resume",
                out.display(),
                epoch + 1
            );
            return Ok(Outcome::Interrupted);
        }
    }
    let best_text =
        if best.is_finite() { format!("; best val acc {:.2}%", best * 100.0) } else { String::new() };
    eprintln!("done: {}{best_text}", out.join("last.safetensors").display());
    Ok(Outcome::Finished)
}

/// Mean loss, accuracy and images/s of the epoch so far.
fn running(s: &State) -> (f64, f64, f64) {
    let n = s.seen.max(1) as f64;
    (s.loss_sum / n, s.correct as f64 / n, s.seen as f64 / s.train_seconds.max(1e-9))
}

fn evaluate_subset(
    graph: &resnet_core::Graph,
    weights: &Weights,
    set: &Subset,
    prep: &Preprocess,
    device: &Device,
    batch: usize,
) -> Result<resnet_core::train::EvalStats> {
    let size = set.data.size;
    let positions: Vec<usize> = (0..set.len()).collect();
    let batches = positions.chunks(batch).map(|pos| {
        let (px, labels) = set.gather(pos);
        let x = input_tensor(&px, (pos.len(), size, size, 3), prep, device)?;
        Ok((x, Tensor::new(labels, device)?))
    });
    Ok(evaluate(graph, weights, batches)?)
}

fn progress_bar(tty: bool, epoch: usize, epochs: usize, batches: usize) -> ProgressBar {
    if !tty {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

fn device_name(d: &Device) -> &'static str {
    if d.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}

/// Writes the momentum buffers, then the model (the commit point), then removes optimiser
/// files no checkpoint refers to.
fn save_checkpoint(
    out: &Path,
    trainer: &Trainer,
    state: &mut State,
    weights: Option<&Weights>,
) -> Result<()> {
    let optimizer = format!("optim-{}.safetensors", state.step);
    let buffers: BTreeMap<String, Tensor> = trainer.sgd.state().clone();
    Weights::from_map(buffers)
        .save(&out.join(&optimizer), Some(HashMap::from([("step".to_string(), state.step.to_string())])))?;
    state.optimizer = optimizer.clone();
    let meta = HashMap::from([
        ("arch".to_string(), state.arch.clone()),
        ("epoch".to_string(), state.epochs_done.to_string()),
        (STATE_KEY.to_string(), serde_json::to_string(state)?),
    ]);
    let owned;
    let weights = match weights {
        Some(w) => w,
        None => {
            owned = trainer.state_dict();
            &owned
        }
    };
    weights.save(&out.join("last.safetensors"), Some(meta))?;
    for entry in std::fs::read_dir(out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("optim-") && name != optimizer {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn read_state(path: &Path) -> Result<State> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let json = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)).ok_or_else(|| {
        anyhow!("{}: not a checkpoint of `resnet train` (no training state)", path.display())
    })?;
    serde_json::from_str(json).with_context(|| format!("{}: unreadable training state", path.display()))
}

pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line {l}", path.display())))
        .collect()
}

/// Rewrites the whole file (temporary + rename): small, and never half-written.
fn write_metrics(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    for m in history {
        writeln!(f, "{}", serde_json::to_string(m)?)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
