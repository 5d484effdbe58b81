//! `resnet explain`: where the net looks — a class activation map (Grad-CAM, Grad-CAM++ or
//! EigenCAM, [`resnet_core::explain`]) of one layer per image, as numbers (`--json`) and as a
//! heat map over the crop the network sees (`--out`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use clap::Args;
use resnet_core::explain::{overlay, Cam, CamMethod};
use serde::Serialize;

use crate::decode::decode_file;
use crate::predict::class_labels;
use crate::{emit, shown, to_json, ModelArgs};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub arch: ModelArgs,
    /// Weights: a PyTorch .pth/.pt (torch.save: a state_dict or a checkpoint holding one) or
    /// a safetensors file, with PyTorch's names.
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// gradcam, gradcam++ or eigencam (pytorch-grad-cam's definitions).
    #[arg(long, default_value = "gradcam", value_parser = |s: &str| s.parse::<CamMethod>())]
    pub method: CamMethod,
    /// The layer, by its name in `resnet summary` (default: the last block's output).
    #[arg(long, value_name = "NODE")]
    pub layer: Option<String>,
    /// The class to explain (default: each image's top-1).
    #[arg(long, value_name = "K")]
    pub class: Option<usize>,
    /// Class names, one a line (as for `predict`).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Write the heat map over the network's input crop as PNG; with several images, FILE-1.png,
    /// FILE-2.png, … in their order.
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
    /// The heat map's opacity in the overlay, 0 to 1.
    #[arg(long, default_value_t = 0.5, value_parser = parse_opacity)]
    pub opacity: f32,
    /// One JSON document instead of the text.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

fn parse_opacity(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(o) if (0.0..=1.0).contains(&o) => Ok(o),
        _ => Err(format!("'{s}' is not an opacity between 0 and 1")),
    }
}

#[derive(Serialize)]
struct CamJson {
    image: String,
    method: CamMethod,
    layer: String,
    class: usize,
    label: String,
    /// The map at the layer's own resolution: `h` rows of `w` values, non-negative.
    cam: Vec<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay: Option<String>,
}

#[derive(Serialize)]
struct ExplainJson<'a> {
    arch: &'a str,
    results: Vec<CamJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

/// Where the overlay of image `i` of `n` goes.
fn overlay_path(out: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().map_or("overlay".into(), |s| s.to_string_lossy().into_owned());
    let ext = out.extension().map_or("png".into(), |e| e.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{}.{ext}", i + 1))
}

pub fn explain(args: &ExplainArgs) -> Result<ExitCode> {
    let device = Device::Cpu;
    let model = args.arch.load_model(&args.weights, &device, args.json)?;
    let labels = class_labels(&model, args.labels.as_ref())?;
    let g = &model.graph;
    let layer = match &args.layer {
        Some(name) => g.node(name).filter(|&i| i > 0).ok_or_else(|| {
            anyhow!(
                "--layer {name}: no such layer in {} (see `resnet summary --arch {}`)",
                model.arch.name,
                model.arch.name
            )
        })?,
        None => g
            .default_cam_layer()
            .ok_or_else(|| anyhow!("{} has no layer with a spatial map", model.arch.name))?,
    };
    if let Some(k) = args.class.filter(|&k| k >= labels.len()) {
        bail!("--class {k}: {} has {} classes (0 to {})", model.arch.name, labels.len(), labels.len() - 1);
    }
    let prep = model.arch.preprocess();
    let (mut results, mut errors) = (vec![], vec![]);
    for (i, path) in args.images.iter().enumerate() {
        let one = || -> Result<CamJson> {
            let img = decode_file(path)?;
            let input = prep.prepare(&img.as_image()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let cam = model.cam(&input.tensor(&device)?, layer, args.class, args.method)?;
            let overlay = match &args.out {
                Some(out) => Some(write_overlay(
                    &cam,
                    &input.view,
                    input.side,
                    args.opacity,
                    &overlay_path(out, i, args.images.len()),
                )?),
                None => None,
            };
            Ok(CamJson {
                image: shown(path),
                method: cam.method,
                layer: g.nodes[layer].name.clone(),
                class: cam.class,
                label: labels[cam.class].clone(),
                cam: cam.rows(),
                overlay,
            })
        };
        match one() {
            Ok(r) => results.push(r),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if args.json {
        emit(&to_json(&ExplainJson { arch: model.arch.name, results, errors: errors.clone() })?)?;
    } else {
        let mut out = String::new();
        for r in &results {
            let (h, w) = (r.cam.len(), r.cam.first().map_or(0, Vec::len));
            let (peak, at) = r
                .cam
                .iter()
                .enumerate()
                .flat_map(|(y, row)| row.iter().enumerate().map(move |(x, &v)| (v, (y, x))))
                .fold((0f32, (0, 0)), |best, c| if c.0 > best.0 { c } else { best });
            out.push_str(&format!(
                "{}\n  {} of {} ({h}×{w}) for class {} ({}): peak {peak:.4} at row {}, column {}\n",
                r.image,
                r.method.name(),
                r.layer,
                r.class,
                r.label,
                at.0,
                at.1
            ));
            if let Some(o) = &r.overlay {
                out.push_str(&format!("  overlay: {o}\n"));
            }
        }
        emit(&out)?;
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The heat map over the `side`×`side` crop, written as PNG; returns the path as shown.
fn write_overlay(cam: &Cam, view: &[u8], side: usize, opacity: f32, path: &Path) -> Result<String> {
    let blended = overlay(view, &cam.heat_map(side, side), opacity);
    let img = image::RgbImage::from_raw(side as u32, side as u32, blended).context("overlay size")?;
    img.save(path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(shown(path))
}
