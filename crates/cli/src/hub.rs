//! `resnet weights fetch ARCH` and `--weights hub:ARCH`: torchvision's ImageNet weights from the
//! Hugging Face hub (timm's safetensors copies), on request only. The `hf-hub` crate does the
//! download into the hub's own cache (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`,
//! shared with Python's `huggingface_hub`), so a second fetch needs no network.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_core::hub::{hub_weights, parse_hub, HubWeights, DEFAULT_HUB, HUB_WEIGHTS};
use resnet_core::{Model, WeightsSource};
use serde::Serialize;

use crate::fmt::{Align, Table};
use crate::{emit, shown, to_json};

#[derive(Args, Debug)]
pub struct WeightsArgs {
    #[command(subcommand)]
    pub command: WeightsCommand,
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Download an ImageNet ResNet's pretrained weights (torchvision's) from the Hugging Face
    /// hub into its cache, check that they fit, and print where they are.
    Fetch(FetchArgs),
    /// The architectures with pretrained weights on the hub, and which are in the cache.
    List(HubListArgs),
    /// Write an architecture's deterministic random weights (He initialisation, the page's
    /// "untrained" weights) as safetensors under PyTorch's names: a start for training elsewhere.
    Init(InitArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub arch: crate::ArchArgs,
    /// The safetensors file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The seed: the same seed gives the same weights on every platform.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Architecture: resnet18, resnet34, resnet50, resnet101 or resnet152.
    pub arch: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// One JSON document instead of the text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct HubListArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Where the hub is and where its files are kept.
#[derive(Args, Clone, Debug, Default)]
pub struct HubArgs {
    /// The hub's address. Default: $HF_ENDPOINT, else https://huggingface.co.
    #[arg(long, value_name = "URL")]
    pub hub: Option<String>,
    /// The cache folder. Default: $HF_HOME/hub, else ~/.cache/huggingface/hub.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl HubArgs {
    fn endpoint(&self) -> Result<String> {
        let given = self.hub.clone().or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty()));
        parse_hub(given.as_deref().unwrap_or(DEFAULT_HUB)).map_err(|e| anyhow!(e))
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        }
    }
}

/// A file of the hub on this machine.
pub struct Fetched {
    pub path: PathBuf,
    /// It was in the cache already: nothing was downloaded.
    pub cached: bool,
    pub bytes: u64,
}

fn repo(w: &HubWeights) -> Repo {
    Repo::with_revision(w.repo.to_string(), RepoType::Model, w.revision.to_string())
}

/// The hub weights of `arch`, or an error naming the architectures that have some.
pub fn weights_of(arch: &str) -> Result<&'static HubWeights> {
    hub_weights(arch).ok_or_else(|| {
        let names: Vec<&str> = HUB_WEIGHTS.iter().map(|w| w.arch).collect();
        anyhow!(
            "no hub weights for '{arch}': only {} have some (other nets take --weights FILE)",
            names.join(", ")
        )
    })
}

/// The file of `w` from the cache, or downloaded into it (a progress bar on stderr when it is a
/// terminal and not `quiet`).
pub fn fetch(w: &HubWeights, hub: &HubArgs, quiet: bool) -> Result<Fetched> {
    let cache = hub.cache();
    if let Some(path) = cache.repo(repo(w)).get(w.file) {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        return Ok(Fetched { path, cached: true, bytes });
    }
    let endpoint = hub.endpoint()?;
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(endpoint)
        .with_progress(false)
        .with_retries(2)
        .build()
        .map_err(|e| anyhow!("cannot start the download: {e}"))?;
    let api_repo = api.repo(repo(w));
    let url = api_repo.url(w.file);
    let failed = |e: hf_hub::api::sync::ApiError| anyhow!("cannot fetch {url}: {e}");
    let meta = quietly(|| api.metadata(&url))
        .ok_or_else(|| anyhow!("cannot fetch {url}: the hub's answer is malformed"))?
        .map_err(failed)?;
    // The names become paths in the cache, and the size a file on disk: neither may be the
    // server's to choose freely.
    let safe = |s: &str| {
        !s.is_empty()
            && !s.contains("..")
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !safe(meta.etag()) || !safe(meta.commit_hash()) {
        bail!("cannot fetch {url}: the hub's etag or commit is not a plain name");
    }
    let limit = 2 * w.approx_bytes() + (16 << 20);
    if meta.size() as u64 > limit {
        bail!(
            "cannot fetch {url}: the hub says it is {} bytes, far more than {}'s weights",
            meta.size(),
            w.arch
        );
    }
    let bar = Bar::new(quiet, &w.file_name());
    let path = quietly(|| api_repo.download_with_progress(w.file, bar.clone()))
        .ok_or_else(|| anyhow!("cannot fetch {url}: the hub's answer is malformed"))?
        .map_err(failed)?;
    bar.0.finish_and_clear();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Fetched { path, cached: false, bytes })
}

/// Runs `f`, turning a panic inside hf-hub (it asserts on some malformed answers) into `None`
/// without a trace on stderr: the caller says what went wrong.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    std::panic::set_hook(hook);
    out
}

/// hf-hub's progress, as an indicatif bar on stderr (hidden when stderr is not a terminal).
#[derive(Clone)]
struct Bar(ProgressBar);

impl Bar {
    fn new(quiet: bool, name: &str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let pb = ProgressBar::new(0);
        let style =
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
        pb.set_message(name.to_string());
        Bar(pb)
    }
}

impl Progress for Bar {
    fn init(&mut self, size: usize, _filename: &str) {
        self.0.set_length(size as u64);
    }
    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }
    fn finish(&mut self) {}
}

/// `--weights hub:ARCH`: the cached file of ARCH's hub weights, fetched first if need be.
pub fn resolve(path: &Path, quiet: bool) -> Result<Option<PathBuf>> {
    let Some(arch) = path.to_str().and_then(|s| s.strip_prefix("hub:")) else { return Ok(None) };
    let w = weights_of(arch)?;
    let f = fetch(w, &HubArgs::default(), quiet)?;
    if !f.cached && !quiet {
        eprintln!("fetched {} ({:.1} MB) into {}", w.repo, f.bytes as f64 / 1e6, f.path.display());
    }
    Ok(Some(f.path))
}

#[derive(Serialize)]
struct FetchJson<'a> {
    arch: &'a str,
    repo: &'a str,
    file: &'a str,
    url: String,
    path: String,
    bytes: u64,
    cached: bool,
    origin: &'a str,
    licence: &'a str,
}

pub fn run(args: &WeightsArgs) -> Result<ExitCode> {
    match &args.command {
        WeightsCommand::Fetch(a) => fetch_command(a),
        WeightsCommand::List(a) => list_command(a),
        WeightsCommand::Init(a) => init_command(a),
    }
}

fn init_command(args: &InitArgs) -> Result<ExitCode> {
    let (arch, graph) = args.arch.resolve()?;
    let weights = resnet_core::Weights::random(&graph, args.seed, &Device::Cpu)?;
    let meta = [("arch", arch.name.to_string()), ("init", format!("He, seed {}", args.seed))];
    weights
        .save(&args.out, Some(meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .map_err(|e| anyhow!("cannot write {}: {e}", args.out.display()))?;
    eprintln!(
        "{}: {} tensors, random weights (seed {}) in {}",
        arch.name,
        weights.len(),
        args.seed,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch_command(args: &FetchArgs) -> Result<ExitCode> {
    let w = weights_of(&args.arch)?;
    let f = fetch(w, &args.hub, args.json)?;
    // Strict: every tensor by name and shape, as `--weights` will load it.
    Model::load(w.arch_info(), WeightsSource::File(&f.path), &Device::Cpu)
        .map_err(|e| anyhow!("the hub's {}/{} does not fit {}: {e}", w.repo, w.file, w.arch))?;
    let url = w.url(&args.hub.endpoint()?);
    if args.json {
        return emit(&to_json(&FetchJson {
            arch: w.arch,
            repo: w.repo,
            file: w.file,
            url,
            path: shown(&f.path),
            bytes: f.bytes,
            cached: f.cached,
            origin: w.origin,
            licence: w.licence,
        })?)
        .map(|_| ExitCode::SUCCESS);
    }
    let how = if f.cached { "in the cache already" } else { "downloaded" };
    emit(&format!(
        "{}: {} ({})\n  from {url}\n  in   {} ({:.1} MB, {how})\nuse:  resnet predict --weights hub:{} IMAGE   (or --weights {})\n",
        w.arch,
        w.origin,
        w.licence,
        f.path.display(),
        f.bytes as f64 / 1e6,
        w.arch,
        f.path.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ListRow<'a> {
    arch: &'a str,
    repo: &'a str,
    file: &'a str,
    approx_bytes: u64,
    cached: Option<String>,
    licence: &'a str,
}

fn list_command(args: &HubListArgs) -> Result<ExitCode> {
    let cache = args.hub.cache();
    let rows: Vec<ListRow> = HUB_WEIGHTS
        .iter()
        .map(|w| ListRow {
            arch: w.arch,
            repo: w.repo,
            file: w.file,
            approx_bytes: w.approx_bytes(),
            cached: cache.repo(repo(w)).get(w.file).map(|p| shown(&p)),
            licence: w.licence,
        })
        .collect();
    if args.json {
        return emit(&to_json(&rows)?).map(|_| ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        ("Arch", Align::Left),
        ("Hub repository", Align::Left),
        ("Size", Align::Right),
        ("In the cache", Align::Left),
    ]);
    for r in &rows {
        t.row(vec![
            r.arch.to_string(),
            r.repo.to_string(),
            format!("{:.0} MB", r.approx_bytes as f64 / 1e6),
            r.cached.clone().unwrap_or_else(|| "no (resnet weights fetch ".to_string() + r.arch + ")"),
        ]);
    }
    emit(&format!(
        "{}torchvision's ImageNet weights (BSD-3-Clause), as timm re-hosts them on the Hugging Face hub.\n",
        t.render()
    ))?;
    Ok(ExitCode::SUCCESS)
}
