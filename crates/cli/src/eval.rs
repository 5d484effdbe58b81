//! `resnet eval`: accuracy over a labelled dataset (ImageFolder tree or CIFAR-10 binary),
//! overall, top-5 and per class, with the time it took.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{Device, D};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::data::{self, LabeledImages, LoadOptions};
use crate::fmt::{thousands, Align, Table};
use crate::{emit, shown, to_json, ModelArgs};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub arch: ModelArgs,
    /// Weights: a PyTorch .pth/.pt (torch.save: a state_dict or a checkpoint holding one) or
    /// a safetensors file, with PyTorch's names.
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// An ImageFolder tree (one folder per class, sorted; a root with train/ and test/ uses
    /// test/) or a CIFAR-10 binary folder (`*_batch*.bin`; test_batch.bin when present).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Images per forward pass.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: u32,
    /// Evaluate at most N images (the first N records of CIFAR-10 binary; N evenly spaced
    /// images of an ImageFolder tree, so every class is represented).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Class name → value, in class order (JSON objects keep the order they are written in).
struct Ordered<T>(Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct EvalJson {
    arch: &'static str,
    weights: String,
    data: String,
    format: String,
    images: usize,
    correct: usize,
    /// Fraction correct, 0..1.
    accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    top5_accuracy: Option<f64>,
    per_class: Ordered<f64>,
    per_class_images: Ordered<usize>,
    /// `confusion[true][predicted]`, in the dataset's class order.
    confusion: Vec<Vec<usize>>,
    batch_size: u32,
    load_s: f64,
    forward_s: f64,
    elapsed_s: f64,
    images_per_s: f64,
}

/// The model output each dataset class corresponds to.
fn class_targets(
    data: &LabeledImages,
    model_labels: Option<&[&str]>,
    num_classes: usize,
) -> Result<Vec<usize>> {
    if let Some(names) = model_labels {
        let by_name: Option<Vec<usize>> =
            data.classes.iter().map(|c| names.iter().position(|n| n == c)).collect();
        if let Some(t) = by_name {
            return Ok(t);
        }
    }
    if data.classes.len() > num_classes {
        bail!(
            "the dataset has {} classes, the model only {num_classes}; its class folders: {}",
            data.classes.len(),
            data.classes.iter().take(12).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok((0..data.classes.len()).collect())
}

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(msg);
    pb
}

pub fn eval(args: &EvalArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let device = Device::Cpu;
    let model = args.arch.load_model(&args.weights, &device, args.json)?;
    let prep = model.arch.preprocess();

    let fmt = data::detect(&args.data)?;
    let loading = bar(0, "decoding");
    let progress = |done: usize, total: usize| {
        loading.set_length(total as u64);
        loading.set_position(done as u64);
    };
    let opts = LoadOptions {
        limit: args.limit.map(|l| l as usize),
        progress: Some(&progress),
        ..Default::default()
    };
    let data = data::load_with(&args.data, &prep, &opts)?;
    loading.finish_and_clear();
    if data.is_empty() {
        bail!("{}: no images", args.data.display());
    }
    let load_time = start.elapsed();
    let num_classes = model.graph.num_classes();
    let targets = class_targets(&data, model.arch.dataset.labels(), num_classes)?;

    let forward_start = Instant::now();
    let n = data.len();
    let k = num_classes.min(5);
    let mut confusion = vec![vec![0usize; data.classes.len()]; data.classes.len()];
    let mut correct = 0;
    let mut correct5 = 0;
    let pb = bar(n as u64, "eval");
    let batch = args.batch_size as usize;
    for first in (0..n).step_by(batch) {
        let range = first..(first + batch).min(n);
        let x = data.tensor(range.clone(), &prep, &device)?;
        let logits = model.forward(&x).context("forward pass")?;
        // Ranks of each image's classes, best first (top-k via a descending sort).
        let ranked = logits.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, k)?.to_vec2::<u32>()?;
        for (i, top) in range.clone().zip(ranked) {
            let truth = data.labels[i] as usize;
            let target = targets[truth];
            let predicted = top[0] as usize;
            if predicted == target {
                correct += 1;
            }
            if top.iter().any(|&t| t as usize == target) {
                correct5 += 1;
            }
            // Confusion in dataset classes; a prediction outside them counts as wrong only.
            if let Some(p) = targets.iter().position(|&t| t == predicted) {
                confusion[truth][p] += 1;
            }
        }
        pb.inc(range.len() as u64);
    }
    pb.finish_and_clear();
    let forward_time = forward_start.elapsed();
    let elapsed = start.elapsed();

    let counts = data.class_counts();
    let class_acc: Vec<f64> = (0..data.classes.len())
        .map(|c| if counts[c] == 0 { 0.0 } else { confusion[c][c] as f64 / counts[c] as f64 })
        .collect();
    let accuracy = correct as f64 / n as f64;
    let top5 = (num_classes > 5).then(|| correct5 as f64 / n as f64);
    let secs = |d: Duration| d.as_secs_f64();
    let images_per_s = n as f64 / secs(forward_time).max(1e-9);

    if args.json {
        let json = EvalJson {
            arch: model.arch.name,
            weights: shown(&args.weights),
            data: shown(&args.data),
            format: fmt.to_string(),
            images: n,
            correct,
            accuracy,
            top5_accuracy: top5,
            per_class: Ordered(data.classes.iter().cloned().zip(class_acc.iter().copied()).collect()),
            per_class_images: Ordered(data.classes.iter().cloned().zip(counts.iter().copied()).collect()),
            confusion,
            batch_size: args.batch_size,
            load_s: secs(load_time),
            forward_s: secs(forward_time),
            elapsed_s: secs(elapsed),
            images_per_s,
        };
        emit(&to_json(&json)?)?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut t = Table::new(&[
        ("Class", Align::Left),
        ("Images", Align::Right),
        ("Correct", Align::Right),
        ("Accuracy", Align::Right),
    ]);
    for (c, name) in data.classes.iter().enumerate() {
        t.row(vec![
            name.clone(),
            thousands(counts[c] as u64),
            thousands(confusion[c][c] as u64),
            format!("{:.2} %", class_acc[c] * 100.0),
        ]);
    }
    t.rule();
    t.row(vec![
        "overall".into(),
        thousands(n as u64),
        thousands(correct as u64),
        format!("{:.2} %", accuracy * 100.0),
    ]);
    let mut out = format!(
        "{} on {} ({}, {} images, {} classes)\n\n",
        model.arch.name,
        args.data.display(),
        fmt,
        thousands(n as u64),
        data.classes.len()
    );
    out.push_str(&t.render());
    if let Some(t5) = top5 {
        out.push_str(&format!("top-5 accuracy: {:.2} %\n", t5 * 100.0));
    }
    out.push_str(&format!(
        "\naccuracy {:.2} % ({} / {})\ntime {:.1} s: loading and decoding {:.1} s, forward {:.1} s \
         ({:.0} images/s, batch {})\n",
        accuracy * 100.0,
        thousands(correct as u64),
        thousands(n as u64),
        secs(elapsed),
        secs(load_time),
        secs(forward_time),
        images_per_s,
        args.batch_size
    ));
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
