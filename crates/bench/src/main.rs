//! `resnet-bench`: times one model at one batch size on the CPU and prints one JSON object.
//!
//! Threads: Candle's CPU backend splits work over rayon's global pool and sizes gemm's
//! parallelism from `RAYON_NUM_THREADS`, both read once per process. So `bench/run` starts one
//! process per thread count with that variable set, and this program reports what it got:
//! rayon's pool size, Candle's thread count, and the CPU time / wall time of the timed loop
//! (≈ 1 for one thread, up to 2 for two) as evidence that the setting took effect.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use resnet_core::train::{SgdConfig, TrainPath, Trainer};
use resnet_core::{find_arch, Model, WeightsSource};
use serde::Serialize;

const USAGE: &str = "usage: resnet-bench --model NAME [--weights FILE.safetensors] [--batch N] \
[--input FILE.f32] [--mode fast|taps|reference|profile|kernels|train|train-candle] [--warmup N] [--min-iters N] \
[--max-iters N] [--budget-s SECONDS] [--logits-out FILE.f32]

--mode kernels: each conv shape of the model timed in the forward on every kernel that can run it
(--budget-s per shape; 0: one round), against the kernel the rule picks.";

struct Args {
    model: String,
    weights: Option<PathBuf>,
    batch: usize,
    input: Option<PathBuf>,
    mode: String,
    warmup: usize,
    min_iters: usize,
    max_iters: usize,
    budget_s: f64,
    logits_out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: String::new(),
        weights: None,
        batch: 1,
        input: None,
        mode: "fast".into(),
        warmup: 3,
        min_iters: 10,
        max_iters: 200,
        budget_s: 3.0,
        logits_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag}: '{v}' is not a count"));
        match flag.as_str() {
            "--model" => a.model = value,
            "--weights" => a.weights = Some(value.into()),
            "--batch" => a.batch = num(&value)?,
            "--input" => a.input = Some(value.into()),
            "--mode" => a.mode = value,
            "--warmup" => a.warmup = num(&value)?,
            "--min-iters" => a.min_iters = num(&value)?,
            "--max-iters" => a.max_iters = num(&value)?,
            "--budget-s" => {
                a.budget_s = value.parse().map_err(|_| format!("--budget-s: '{value}' is not a number"))?
            }
            "--logits-out" => a.logits_out = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if a.model.is_empty() {
        return Err(format!("--model is required\n{USAGE}"));
    }
    if !matches!(
        a.mode.as_str(),
        "fast" | "taps" | "reference" | "profile" | "kernels" | "train" | "train-candle"
    ) {
        return Err(format!(
            "--mode must be fast, taps, reference, profile, kernels, train or train-candle, not '{}'",
            a.mode
        ));
    }
    if a.batch == 0 || a.min_iters == 0 || a.max_iters < a.min_iters {
        return Err("--batch and --min-iters must be ≥ 1 and --max-iters ≥ --min-iters".into());
    }
    Ok(a)
}

/// What one run prints (a timed loop); `--mode profile` prints a [`resnet_core::profile::Profile`].
#[derive(Serialize)]
struct Timing<'a> {
    model: &'a str,
    mode: &'a str,
    batch: usize,
    /// rayon's pool and Candle's thread count: both must equal `RAYON_NUM_THREADS`.
    rayon_threads: usize,
    candle_threads: usize,
    /// CPU time / wall time of the timed loop: ≈ 1 for one thread, up to 2 for two.
    cpu_per_wall: f64,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    p90_ms: f64,
    gflops: f64,
}

/// CPU time of the whole process (all threads), seconds.
fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_PROCESS_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What `--mode train` prints: SGD steps (forward, backward, update) on one fixed batch.
#[derive(Serialize)]
struct TrainTiming<'a> {
    model: &'a str,
    mode: &'a str,
    /// "fast" (the CPU training plan) or "candle" (Candle's autograd).
    path: &'a str,
    batch: usize,
    rayon_threads: usize,
    candle_threads: usize,
    cpu_per_wall: f64,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    p90_ms: f64,
    images_per_s: f64,
    /// The process's resident memory at its peak, and before the model was built.
    peak_rss_mb: f64,
    base_rss_mb: f64,
}

/// A line of /proc/self/status in MiB (`VmRSS`, `VmHWM`); 0 where there is none.
fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Times [`Trainer::step`] on `x` with labels `i mod classes`, lr 0.01 (small, so repeating
/// one batch stays finite).
fn train_bench(a: &Args, model: &Model, x: &Tensor, base_rss_mb: f64) -> Result<(), String> {
    let e = |e: candle_core::Error| e.to_string();
    let path = if a.mode == "train" { TrainPath::Auto } else { TrainPath::Candle };
    let mut trainer =
        Trainer::with_path(model.graph.clone(), &model.weights, SgdConfig::default(), x.device(), path)
            .map_err(e)?;
    let classes = model.graph.nodes[model.graph.output()].channels as u32;
    let labels: Vec<u32> = (0..a.batch as u32).map(|i| i % classes).collect();
    let labels = Tensor::new(labels, x.device()).map_err(e)?;
    let mut step = || -> Result<(), String> {
        let stats = trainer.step(x, &labels, 0.01).map_err(e)?;
        match stats.loss.is_finite() {
            true => Ok(()),
            false => Err(format!("{}: the loss diverged", a.model)),
        }
    };
    for _ in 0..a.warmup.max(1) {
        step()?;
    }
    let mut times = vec![];
    let (wall0, cpu0) = (Instant::now(), process_cpu_s());
    while times.len() < a.max_iters
        && (times.len() < a.min_iters || wall0.elapsed().as_secs_f64() < a.budget_s)
    {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), process_cpu_s() - cpu0);
    times.sort_by(f64::total_cmp);
    let median_ms = median(&times);
    let timing = TrainTiming {
        model: &a.model,
        mode: &a.mode,
        path: match trainer.path() {
            TrainPath::Fast => "fast",
            _ => "candle",
        },
        batch: a.batch,
        rayon_threads: rayon::current_num_threads(),
        candle_threads: candle_core::utils::get_num_threads(),
        cpu_per_wall: cpu / wall,
        iters: times.len(),
        median_ms,
        min_ms: times[0],
        p90_ms: quantile(&times, 0.9),
        images_per_s: a.batch as f64 / (median_ms / 1e3),
        peak_rss_mb: status_mb("VmHWM:"),
        base_rss_mb,
    };
    println!("{}", serde_json::to_string(&timing).map_err(|e| e.to_string())?);
    Ok(())
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let base_rss_mb = status_mb("VmRSS:");
    let e = |e: candle_core::Error| e.to_string();
    let arch = find_arch(&a.model).map_err(|e| e.to_string())?;
    let device = Device::Cpu;
    let source = match &a.weights {
        Some(path) => WeightsSource::File(path),
        None => WeightsSource::Random(0),
    };
    let model = Model::load(arch, source, &device).map_err(|e| e.to_string())?;
    if a.mode == "profile" {
        let t0 = Instant::now();
        let now = || t0.elapsed().as_secs_f64() * 1e3;
        let profile = resnet_core::profile::profile_forward(&model, a.min_iters, &now).map_err(e)?;
        println!("{}", serde_json::to_string(&profile).map_err(|e| e.to_string())?);
        return Ok(());
    }
    if a.mode == "kernels" {
        let t0 = Instant::now();
        let now = || t0.elapsed().as_secs_f64() * 1e3;
        let choices = resnet_core::profile::kernel_choices(&model, a.budget_s * 1e3, &now).map_err(e)?;
        println!("{}", serde_json::to_string(&choices).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let s = model.graph.input;
    let n = a.batch * s.c * s.h * s.w;
    let data: Vec<f32> = match &a.input {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))?;
            if bytes.len() != n * 4 {
                return Err(format!(
                    "{}: {} bytes, expected {} ({}×{}×{}×{} f32)",
                    path.display(),
                    bytes.len(),
                    n * 4,
                    a.batch,
                    s.c,
                    s.h,
                    s.w
                ));
            }
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        None => (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect(),
    };
    let x = Tensor::from_vec(data, (a.batch, s.c, s.h, s.w), &device).map_err(e)?;
    if a.mode.starts_with("train") {
        return train_bench(&a, &model, &x, base_rss_mb);
    }
    let forward = |x: &Tensor| -> candle_core::Result<Tensor> {
        match a.mode.as_str() {
            "taps" => Ok(model.forward_taps(x)?.0),
            "reference" => model.forward_reference(x),
            _ => model.forward(x),
        }
    };

    let logits = forward(&x).map_err(e)?;
    for _ in 1..a.warmup {
        forward(&x).map_err(e)?;
    }
    let mut times = vec![];
    let (wall0, cpu0) = (Instant::now(), process_cpu_s());
    while times.len() < a.max_iters
        && (times.len() < a.min_iters || wall0.elapsed().as_secs_f64() < a.budget_s)
    {
        let t = Instant::now();
        forward(&x).map_err(e)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), process_cpu_s() - cpu0);
    times.sort_by(f64::total_cmp);

    if let Some(path) = &a.logits_out {
        let v: Vec<f32> = logits.flatten_all().and_then(|t| t.to_vec1()).map_err(e)?;
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|err| format!("{}: {err}", path.display()))?;
    }
    let macs = model.graph.summary(None).map_err(|e| e.to_string())?.total_macs;
    let median_ms = median(&times);
    let timing = Timing {
        model: &a.model,
        mode: &a.mode,
        batch: a.batch,
        rayon_threads: rayon::current_num_threads(),
        candle_threads: candle_core::utils::get_num_threads(),
        cpu_per_wall: cpu / wall,
        iters: times.len(),
        median_ms,
        min_ms: times[0],
        p90_ms: quantile(&times, 0.9),
        gflops: 2.0 * macs as f64 * a.batch as f64 / (median_ms * 1e6),
    };
    println!("{}", serde_json::to_string(&timing).map_err(|e| e.to_string())?);
    Ok(())
}

fn main() {
    if let Err(msg) = run() {
        eprintln!("resnet-bench: {msg}");
        std::process::exit(1);
    }
}
