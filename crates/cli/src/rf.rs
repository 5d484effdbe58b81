//! `resnet rf`: what one unit of a layer sees and what it depends on, on one image — its
//! theoretical receptive field (from the same description as the layer table) and its effective
//! receptive field, |∂unit/∂input| ([`resnet_core::Model::effective_rf`]), as numbers and as a
//! heat map over the network's input crop.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use clap::Args;
use resnet_core::explain::{heat_map, overlay, Erf};
use serde::Serialize;

use crate::decode::decode_file;
use crate::{emit, shown, to_json, ModelArgs};

#[derive(Args, Debug)]
pub struct RfArgs {
    #[command(flatten)]
    pub arch: ModelArgs,
    /// Weights (a PyTorch .pth/.pt or safetensors file).
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// The layer, by its name in `resnet summary`.
    #[arg(long, value_name = "NODE")]
    pub layer: String,
    /// The unit: channel, row, column of the layer's output (default: the centre pixel, in the
    /// channel most active there).
    #[arg(long, value_name = "C,Y,X", value_parser = parse_unit)]
    pub unit: Option<(usize, usize, usize)>,
    /// Write the effective receptive field over the input crop as PNG.
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
    /// One JSON document instead of the text.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

fn parse_unit(s: &str) -> Result<(usize, usize, usize), String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("'{s}' is not a unit: three numbers, channel,row,column (e.g. 3,8,8)"))?;
    match v[..] {
        [c, y, x] => Ok((c, y, x)),
        _ => Err(format!("'{s}' is not a unit: three numbers, channel,row,column (e.g. 3,8,8)")),
    }
}

#[derive(Serialize)]
struct Unit {
    channel: usize,
    y: usize,
    x: usize,
    /// The unit's value on this image.
    value: f32,
}

#[derive(Serialize)]
struct RfJson<'a> {
    arch: &'a str,
    image: String,
    layer: String,
    unit: Unit,
    /// The theoretical receptive field: its size, and the input rows `[y0, y1)` and columns
    /// `[x0, x1)` it covers (clipped to the input).
    rf: resnet_core::spec::RfBox,
    /// Sides of the smallest squares around the field's centre holding half and 90 % of the
    /// effective receptive field's mass.
    half: usize,
    ninety: usize,
    /// |∂unit/∂input| summed over the input's channels: the input's rows of values.
    erf: Vec<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay: Option<String>,
}

pub fn rf(args: &RfArgs) -> Result<ExitCode> {
    let device = Device::Cpu;
    let model = args.arch.load_model(&args.weights, &device, args.json)?;
    let g = &model.graph;
    let layer = g.node(&args.layer).filter(|&i| i > 0).ok_or_else(|| {
        anyhow!(
            "--layer {}: no such layer in {} (see `resnet summary --arch {}`)",
            args.layer,
            model.arch.name,
            model.arch.name
        )
    })?;
    let img = decode_file(&args.image)?;
    let input = model
        .arch
        .preprocess()
        .prepare(&img.as_image())
        .map_err(|e| anyhow!("{}: {e}", args.image.display()))?;
    let x = input.tensor(&device)?;
    let (_, taps) = model.forward_taps(&x)?;
    let out = &taps[layer];
    let (c, h, w) = match out.dims() {
        &[1, c, h, w] => (c, h, w),
        &[1, c] => (c, 1, 1),
        d => bail!("layer {}: unexpected output {d:?}", args.layer),
    };
    let acts: Vec<f32> = out.flatten_all()?.to_vec1()?;
    let at = |ch: usize, y: usize, xx: usize| acts[(ch * h + y) * w + xx];
    let (channel, y, xx) = match args.unit {
        Some((ch, y, xx)) if ch < c && y < h && xx < w => (ch, y, xx),
        Some((ch, y, xx)) => bail!(
            "--unit {ch},{y},{xx}: {} has {c} channels of {h}×{w} (channel 0..{}, row 0..{}, column 0..{})",
            args.layer,
            c - 1,
            h - 1,
            w - 1
        ),
        None => {
            let (y, xx) = (h / 2, w / 2);
            let ch = (0..c).max_by(|&a, &b| at(a, y, xx).total_cmp(&at(b, y, xx))).unwrap_or(0);
            (ch, y, xx)
        }
    };
    let erf = model.effective_rf(&x, layer, channel, y, xx)?;
    let overlay = match &args.out {
        Some(path) => Some(write_erf(&erf, &input.view, input.side, path)?),
        None => None,
    };
    let (half, ninety) = (erf.mass_side(0.5), erf.mass_side(0.9));
    let value = at(channel, y, xx);
    if args.json {
        let json = RfJson {
            arch: model.arch.name,
            image: shown(&args.image),
            layer: args.layer.clone(),
            unit: Unit { channel, y, x: xx, value },
            rf: erf.rf,
            half,
            ninety,
            erf: erf.values.chunks(erf.width).map(<[f32]>::to_vec).collect(),
            overlay,
        };
        return emit(&to_json(&json)?).map(|_| ExitCode::SUCCESS);
    }
    let b = &erf.rf;
    let mut text = format!(
        "{} · {} unit (channel {channel}, row {y}, column {xx}) = {value:.4}\n",
        shown(&args.image),
        args.layer
    );
    text.push_str(&format!(
        "  receptive field: {0}×{0} px of the {1}×{2} input, rows {3}..{4}, columns {5}..{6}\n",
        b.size, erf.height, erf.width, b.y0, b.y1, b.x0, b.x1
    ));
    if half == 0 {
        text.push_str(
            "  effective: none — the unit is 0 here (its ReLU is off), so no gradient reaches the input\n",
        );
    } else {
        text.push_str(&format!(
            "  effective: half of |∂unit/∂input| within {half}×{half} px, 90 % within {ninety}×{ninety} px\n"
        ));
    }
    if let Some(o) = overlay {
        text.push_str(&format!("  heat map: {o}\n"));
    }
    emit(&text).map(|_| ExitCode::SUCCESS)
}

/// The effective receptive field over the `side`×`side` crop, as PNG; returns the path shown.
fn write_erf(erf: &Erf, view: &[u8], side: usize, path: &std::path::Path) -> Result<String> {
    let heat = heat_map(&erf.values, (erf.width, erf.height), (side, side));
    let blended = overlay(view, &heat, 0.7);
    let img = image::RgbImage::from_raw(side as u32, side as u32, blended).context("heat map size")?;
    img.save(path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(shown(path))
}
