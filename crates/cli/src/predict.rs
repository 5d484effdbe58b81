//! `resnet predict`: top-5 classes of images, with softmax probabilities.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use resnet_core::Model;
use serde::Serialize;

use crate::decode::decode_file;
use crate::{emit, read_labels, shown, to_json, ModelArgs};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub arch: ModelArgs,
    /// Weights: a PyTorch .pth/.pt (torch.save: a state_dict or a checkpoint holding one) or
    /// a safetensors file, with PyTorch's names.
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// Class names, one a line, in the model's output order. Default: the built-in names
    /// (ImageNet-1k's 1,000 in torchvision's order, CIFAR-10's, the digits).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub top: u16,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Images: PNG, JPEG, GIF, BMP or WebP, any size (resized and centre-cropped as the model
    /// expects).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
pub struct Ranked {
    pub index: usize,
    pub label: String,
    pub prob: f32,
}

#[derive(Serialize)]
struct ImageResult {
    image: String,
    /// The `--top N` most probable classes, best first.
    top: Vec<Ranked>,
    logits: Vec<f32>,
}

#[derive(Serialize, Clone)]
struct ImageError {
    image: String,
    error: String,
}

#[derive(Serialize)]
struct PredictJson<'a> {
    arch: &'a str,
    weights: String,
    results: Vec<ImageResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ImageError>,
}

/// The class names for `model`: from `--labels`, else the dataset's, else the ids.
pub fn class_labels(model: &Model, labels: Option<&PathBuf>) -> Result<Vec<String>> {
    let n = model.graph.num_classes();
    if let Some(path) = labels {
        let names = read_labels(path)?;
        if names.len() != n {
            bail!(
                "labels {}: {} names, but {} has {n} classes",
                path.display(),
                names.len(),
                model.arch.name
            );
        }
        return Ok(names);
    }
    Ok(match model.arch.dataset.labels() {
        Some(names) if names.len() == n => names.iter().map(|s| s.to_string()).collect(),
        _ => (0..n).map(|i| i.to_string()).collect(),
    })
}

/// The `k` most probable classes of one row of probabilities.
pub fn top_k(probs: &[f32], labels: &[String], k: usize) -> Vec<Ranked> {
    resnet_core::format::top_k(probs, k)
        .into_iter()
        .map(|(i, prob)| Ranked { index: i, label: labels[i].clone(), prob })
        .collect()
}

/// Images per forward pass (bounded memory for large nets and many images).
const BATCH: usize = 16;

pub fn predict(args: &PredictArgs) -> Result<ExitCode> {
    let device = Device::Cpu;
    let model = args.arch.load_model(&args.weights, &device, args.json)?;
    let labels = class_labels(&model, args.labels.as_ref())?;
    let prep = model.arch.preprocess();

    let mut inputs: Vec<(String, Tensor)> = vec![];
    let mut errors = vec![];
    for path in &args.images {
        let tensor = decode_file(path).and_then(|img| {
            prep.to_tensor(&img.as_image(), &device).map_err(|e| anyhow!("{}: {e}", path.display()))
        });
        match tensor {
            Ok(t) => inputs.push((shown(path), t)),
            Err(e) => errors.push(ImageError { image: shown(path), error: format!("{e:#}") }),
        }
    }

    let mut results = vec![];
    for chunk in inputs.chunks(BATCH) {
        let x = Tensor::cat(&chunk.iter().map(|(_, t)| t).collect::<Vec<_>>(), 0)?;
        let logits = model.forward(&x)?;
        let probs = resnet_core::model::softmax(&logits)?.to_vec2::<f32>()?;
        let logits = logits.to_vec2::<f32>()?;
        for (((image, _), p), l) in chunk.iter().zip(probs).zip(logits) {
            let top = top_k(&p, &labels, args.top as usize);
            results.push(ImageResult { image: image.clone(), top, logits: l });
        }
    }

    if args.json {
        let json = PredictJson {
            arch: model.arch.name,
            weights: shown(&args.weights),
            results,
            errors: errors.clone(),
        };
        emit(&to_json(&json)?)?;
    } else {
        let mut out = String::new();
        let width = results.iter().flat_map(|r| &r.top).map(|t| t.label.chars().count()).max().unwrap_or(0);
        for r in &results {
            out.push_str(&format!("{}\n", r.image));
            for (rank, t) in r.top.iter().enumerate() {
                let pad = " ".repeat(width - t.label.chars().count());
                out.push_str(&format!(
                    "  {}. {}{pad}  {:6.2} %  (class {})\n",
                    rank + 1,
                    t.label,
                    t.prob * 100.0,
                    t.index
                ));
            }
        }
        emit(&out)?;
    }
    // Every good image has its result; each bad one gets its own error line.
    for e in &errors {
        eprintln!("error: {}", e.error);
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
