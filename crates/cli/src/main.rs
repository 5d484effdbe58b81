//! `resnet`: layer tables, predictions and accuracy for the resnet-core model zoo.
//!
//! Every command prints a table for people and, with `--json`, one JSON document for machines.
//! Errors are one `error: …` line on stderr and a non-zero exit status, never a panic trace.

mod data;
mod decode;
mod eval;
mod explain;
mod fmt;
mod hub;
mod predict;
mod rf;
mod stream;
mod summary;
mod train;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use resnet_core::{ArchInfo, Graph, Model, ShortcutOption, WeightsError, WeightsSource};

#[derive(Parser)]
#[command(
    name = "resnet",
    version,
    about = "Look inside ResNet and the CNNs before it: layer tables, predictions, accuracy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The layer table: every layer's kernel/stride/padding, output shape, parameters, MACs and
    /// activations, computed from the architecture without running it.
    Summary(summary::SummaryArgs),
    /// Top-5 classes of one or more images.
    Predict(predict::PredictArgs),
    /// Accuracy (overall and per class) over a labelled dataset.
    Eval(eval::EvalArgs),
    /// Where the net looks: a class activation map (Grad-CAM, Grad-CAM++, EigenCAM) per image.
    Explain(explain::ExplainArgs),
    /// The residual stream on one image: per block ‖F(x)‖/‖x‖, cos(F(x), x) and the std of F(x).
    Stream(stream::StreamArgs),
    /// What one unit sees (its receptive field) and depends on (|∂unit/∂input|) on one image.
    Rf(rf::RfArgs),
    /// The architectures, with their parameters and MACs.
    List(summary::ListArgs),
    /// Train a network from scratch or resume a run: SGD, schedules, checkpoints, metrics.
    Train(train::TrainArgs),
    /// Pretrained weights from the Hugging Face hub (torchvision's ImageNet ResNets), fetched
    /// on request into the hub's cache: `weights fetch resnet50`, then `--weights hub:resnet50`.
    Weights(hub::WeightsArgs),
}

/// The architecture and how to build it; shared by the commands.
#[derive(Args, Clone, Debug)]
pub struct ArchArgs {
    /// Architecture (see `resnet list`), e.g. cifar-resnet20, resnet50, vgg16.
    #[arg(long, value_name = "NAME")]
    pub arch: String,
    /// Shortcut option of the CIFAR ResNets: A (zero-padding identity, the default) or B
    /// (1×1 projection where the shape changes).
    #[arg(long, value_name = "A|B", value_parser = parse_shortcut)]
    pub shortcut: Option<ShortcutOption>,
}

impl ArchArgs {
    pub fn resolve(&self) -> Result<(&'static ArchInfo, Graph)> {
        let arch = resnet_core::find_arch(&self.arch).map_err(|e| anyhow!(e))?;
        let graph = match self.shortcut {
            None => arch.graph(),
            Some(s) if arch.has_shortcut_option() => arch.graph_with(s),
            Some(_) => bail!("--shortcut applies to the CIFAR ResNets (cifar-resnet*), not {}", arch.name),
        };
        Ok((arch, graph))
    }
}

/// The architecture of a command that takes `--weights`: named, or recognised from the file.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Architecture (see `resnet list`), e.g. cifar-resnet20, resnet50, vgg16. Default: the
    /// one the weights file's tensor names and shapes fit (printed on stderr).
    #[arg(long, value_name = "NAME")]
    pub arch: Option<String>,
    /// Shortcut option of the CIFAR ResNets: A (zero-padding identity, the default) or B
    /// (1×1 projection where the shape changes).
    #[arg(long, value_name = "A|B", value_parser = parse_shortcut)]
    pub shortcut: Option<ShortcutOption>,
}

impl ModelArgs {
    /// The architecture with weights from `path` (a PyTorch .pth/.pt or safetensors file),
    /// strictly matched by name and shape. Without `--arch` the architecture is recognised
    /// from the file and named on stderr (unless `json`: the JSON's "arch" names it).
    /// `hub:ARCH` is ARCH's pretrained file from the hub's cache, fetched first if need be.
    pub fn load_model(&self, path: &Path, device: &Device, json: bool) -> Result<Model> {
        let from_hub = hub::resolve(path, json)?;
        let path = from_hub.as_deref().unwrap_or(path);
        if let Some(name) = &self.arch {
            let (arch, graph) = ArchArgs { arch: name.clone(), shortcut: self.shortcut }.resolve()?;
            return Model::load_graph(arch, graph, WeightsSource::File(path), device)
                .map_err(|e| weights_error(path, e));
        }
        let io = |e: std::io::Error| WeightsError::Io { path: shown(path), msg: e.to_string() };
        let bytes = std::fs::read(path).map_err(|e| weights_error(path, io(e)))?;
        let loaded = Model::load_recognised(&bytes, device).map_err(|e| weights_error(path, e))?;
        let label = match loaded.shortcut {
            Some(s) if loaded.model.arch.has_shortcut_option() => {
                format!("{} (shortcut option {s:?})", loaded.model.arch.name)
            }
            _ => loaded.model.arch.name.to_string(),
        };
        if let Some(want) = self.shortcut {
            if loaded.shortcut != Some(want) {
                bail!("weights {}: the tensors are {label}, not shortcut option {want:?}", path.display());
            }
        }
        if !json {
            eprintln!("arch: {label} (recognised from the {} file {})", loaded.format.name(), path.display());
        }
        if let Some(note) = &loaded.note {
            eprintln!("note: {note}");
        }
        Ok(loaded.model)
    }
}

fn parse_shortcut(s: &str) -> Result<ShortcutOption, String> {
    match s {
        "A" | "a" => Ok(ShortcutOption::A),
        "B" | "b" => Ok(ShortcutOption::B),
        _ => Err("expected A or B".into()),
    }
}

/// At most this many names per kind of mismatch; the count says how many there are.
const MAX_LISTED: usize = 12;

fn weights_error(path: &Path, e: WeightsError) -> anyhow::Error {
    let file = path.display();
    match e {
        WeightsError::Io { msg, .. } if msg.contains("No such file") => {
            anyhow!("weights {file}: no such file")
        }
        WeightsError::Io { msg, .. } => anyhow!("weights {file}: {msg}"),
        WeightsError::Format(msg) => anyhow!("weights {file}: {msg}"),
        WeightsError::Unrecognised(_) => {
            anyhow!(
                "weights {file}: {e}\n(with --arch NAME every difference from that architecture is listed)"
            )
        }
        WeightsError::Mismatch(m) => {
            let mut s = format!(
                "weights {file} do not fit {}: {} missing, {} unexpected, {} with the wrong shape \
                 (wrong --arch or --shortcut?)",
                m.arch,
                m.missing.len(),
                m.unexpected.len(),
                m.wrong_shape.len()
            );
            let mut list = |lines: Vec<String>| {
                let n = lines.len();
                for l in lines.into_iter().take(MAX_LISTED) {
                    s.push_str("\n  ");
                    s.push_str(&l);
                }
                if n > MAX_LISTED {
                    s.push_str(&format!("\n  … and {} more", n - MAX_LISTED));
                }
            };
            list(m.missing.iter().map(|(n, sh)| format!("missing     {n} {sh:?}")).collect());
            list(m.unexpected.iter().map(|(n, sh)| format!("unexpected  {n} {sh:?}")).collect());
            list(
                m.wrong_shape
                    .iter()
                    .map(|(n, want, got)| format!("wrong shape {n}: expected {want:?}, found {got:?}"))
                    .collect(),
            );
            anyhow!(s)
        }
        e => anyhow!("weights {file}: {e}"),
    }
}

/// Writes a command's output to stdout; a closed pipe (`resnet list | head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow!("cannot write output: {e}")),
        _ => Ok(()),
    }
}

pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// A path as given on the command line, for messages and JSON.
pub fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// The labels file, one class name a line.
pub fn read_labels(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("labels {}: {}", path.display(), decode::io_message(&e)))?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let labels = match labels.last().is_some_and(|l| l.is_empty()) {
        true => labels[..labels.len() - 1].to_vec(),
        false => labels,
    };
    if labels.is_empty() {
        bail!("labels {}: the file is empty", path.display());
    }
    Ok(labels)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Summary(a) => summary::summary(&a),
        Command::List(a) => summary::list(&a),
        Command::Predict(a) => predict::predict(&a),
        Command::Eval(a) => eval::eval(&a),
        Command::Explain(a) => explain::explain(&a),
        Command::Stream(a) => stream::stream(&a),
        Command::Rf(a) => rf::rf(&a),
        Command::Train(a) => train::train(&a),
        Command::Weights(a) => hub::run(&a),
    }
}

/// A usage error as one line: clap's first paragraph (the message, with any list of missing
/// arguments) joined up, and where to look.
fn one_line(rendered: &str) -> String {
    let first = rendered.trim().split("\n\n").next().unwrap_or_default();
    let joined = first.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{joined} (see resnet --help)")
}

fn main() -> ExitCode {
    // Errors are one line: Candle would attach a backtrace to each one when RUST_BACKTRACE is
    // set (as on developers' machines); panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with status 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
