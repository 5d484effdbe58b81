//! `resnet train`: trains any network of the zoo from scratch (or resumes a run), on CPU or
//! CUDA. The run itself — its directory, checkpoints, metrics and resume logic — is the core's
//! [`resnet_core::train::run`]; this file parses the arguments, loads the images and shows
//! progress (a bar on a terminal, a line every 30 s otherwise), and turns Ctrl-C into a
//! checkpoint.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use resnet_core::format;
use resnet_core::train::run::{self, EpochEnd, Images, Opened, Status, Subset};
use resnet_core::train::{Run, RunConfig, RunError, Schedule, SgdConfig, TrainPath};
use resnet_core::Preprocess;

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
    /// Write a replay file per epoch (snapshots/epoch-NNN.safetensors, tens of kilobytes): the
    /// first conv's filters, activation maps of two fixed validation images and the epoch's
    /// metrics, for the explorer's training replay.
    #[arg(long)]
    pub snapshots: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!("'{s}' is not a fraction between 0 and 1 (e.g. 0.1)")),
    }
}

/// Set by Ctrl-C; the loop checks it between steps.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How `run` ended (errors aside).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    Interrupted,
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

/// The images `set` holds, as the core's training takes them.
fn images(set: &LabeledImages) -> Images<'_> {
    Images { pixels: &set.pixels, labels: &set.labels, side: set.size }
}

/// The CLI's words for the core's run errors (the flags a user can change).
fn run_error(e: RunError) -> anyhow::Error {
    match e {
        RunError::Exists(dir) => anyhow!(
            "{} already holds a run (last.safetensors); pass --resume to continue it, or choose another --out",
            dir.display()
        ),
        e @ RunError::Diverged { .. } => anyhow!("{e}. Try a lower --lr or --warmup-epochs."),
        e => anyhow!(e),
    }
}

/// Trains as `args` say; returns how the run ended.
pub fn run(args: &TrainArgs) -> Result<Outcome> {
    let (arch, graph) = args.arch.resolve()?;
    let config = RunConfig {
        epochs: args.epochs,
        batch_size: args.batch_size as usize,
        lr: args.lr,
        sgd: SgdConfig { momentum: args.momentum, weight_decay: args.weight_decay },
        schedule: args.schedule.clone(),
        warmup_epochs: args.warmup_epochs,
        seed: args.seed,
        augment: !args.no_augment,
    };
    let device = parse_device(&args.device)?;
    let prep = arch.preprocess();
    let out = &args.out;

    // Before loading any data: is there a run to continue, and may it go on like this?
    match run::status(out, arch, &config, args.resume).map_err(run_error)? {
        Status::Done { epochs } => {
            eprintln!("{}: all {epochs} epochs are done", out.display());
            return Ok(Outcome::Finished);
        }
        Status::New if args.resume => {
            eprintln!("--resume: no checkpoint in {} yet; starting a new run", out.display())
        }
        _ => {}
    }

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
    let (train, val) = match (&val_set, args.val_split) {
        (Some(v), _) => {
            if v.classes != train_set.classes {
                bail!("--val has classes {:?}, --data has {:?}", v.classes, train_set.classes);
            }
            (Subset::all(images(&train_set)), Some(Subset::all(images(v))))
        }
        (None, Some(f)) => {
            let (train_idx, val_idx) = run::split_validation(train_set.len(), f, args.seed)
                .map_err(|e| anyhow!("--val-split {f}: {e}"))?;
            eprintln!(
                "holding out {} of the {} training images for validation",
                val_idx.len(),
                train_set.len()
            );
            let images = images(&train_set);
            (Subset { images, idx: train_idx }, Some(Subset { images, idx: val_idx }))
        }
        (None, None) => (Subset::all(images(&train_set)), None),
    };
    if val.is_none() {
        eprintln!("no validation set (--val or --val-split): best.safetensors will not be written");
    }

    let mut run =
        match Run::open(out, arch, graph, config, args.resume, train.len(), &device).map_err(run_error)? {
            Opened::New(r) | Opened::Resumed(r) => r,
            Opened::Done { epochs } => {
                eprintln!("{}: all {epochs} epochs are done", out.display());
                return Ok(Outcome::Finished);
            }
        };
    if args.snapshots {
        run.enable_snapshots(val.as_ref().unwrap_or(&train)).map_err(run_error)?;
    }
    let (batches, epochs) = (run.batches(), args.epochs);
    let start = run.checkpoint().clone();
    eprintln!(
        "training {} on {} ({} images, {batches} batches of {}) for epochs {}..={epochs} of {epochs}",
        arch.name,
        device_name(&device),
        train.len(),
        args.batch_size,
        start.epochs_done + 1,
    );
    match run.trainer().fallback() {
        Some(why) => eprintln!("{why}: training on Candle's ops (slower)"),
        None if run.trainer().path() == TrainPath::Fast => {
            eprintln!("training on the fast CPU plan ({} threads)", candle_core::utils::get_num_threads())
        }
        None => {}
    }
    if start.batches_done > 0 {
        eprintln!("resuming epoch {} at batch {}", start.epochs_done + 1, start.batches_done + 1);
    }

    let tty = std::io::stderr().is_terminal();
    for epoch in run.epochs_left() {
        let bar = progress_bar(tty, epoch + 1, epochs, batches);
        bar.set_position(run.checkpoint().batches_done as u64);
        let mut next_log = Instant::now();
        let end = run
            .train_epoch(&train, |s| {
                let acc = s.accuracy * 100.0;
                let (loss, ips, lr) = (s.loss, s.images_per_sec, format::lr(s.lr));
                if tty {
                    bar.set_position(s.batch as u64);
                    bar.set_message(format!("loss {loss:.4} acc {acc:.2}% {ips:.0} img/s lr {lr}"));
                } else if next_log.elapsed().as_secs_f64() >= 30.0 && s.batch < s.batches {
                    next_log = Instant::now();
                    eprintln!(
                        "epoch {}/{epochs} step {}/{batches}: loss {loss:.4} acc {acc:.2}% {ips:.0} img/s lr {lr}",
                        epoch + 1,
                        s.batch
                    );
                }
                !INTERRUPTED.load(Ordering::SeqCst)
            })
            .map_err(|e| {
                bar.abandon();
                run_error(e)
            })?;
        if end == EpochEnd::Stopped {
            bar.abandon();
            eprintln!(
                "interrupted: checkpoint saved in {} at epoch {}, step {}/{batches}; continue with --resume",
                out.display(),
                epoch + 1,
                run.checkpoint().batches_done
            );
            return Ok(Outcome::Interrupted);
        }
        bar.finish_and_clear();
        let m = run.finish_epoch(val.as_ref()).map_err(run_error)?;
        let val_text = match (m.val_loss, m.val_acc) {
            (Some(l), Some(a)) => format!(", val loss {l:.4} acc {:.2}%", a * 100.0),
            _ => String::new(),
        };
        eprintln!(
            "epoch {}/{epochs}: lr {} train loss {:.4} acc {:.2}%{val_text}, {:.0} img/s, {:.1} s",
            m.epoch,
            format::lr(m.lr),
            m.train_loss,
            m.train_acc * 100.0,
            m.images_per_sec,
            m.seconds
        );
        if INTERRUPTED.load(Ordering::SeqCst) && epoch + 1 < epochs {
            eprintln!(
                "interrupted: checkpoint saved in {} after epoch {}; continue with --resume",
                out.display(),
                epoch + 1
            );
            return Ok(Outcome::Interrupted);
        }
    }
    let best_text = run.best().map_or(String::new(), |b| format!("; best val acc {:.2}%", b * 100.0));
    eprintln!("done: {}{best_text}", out.join("last.safetensors").display());
    Ok(Outcome::Finished)
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
