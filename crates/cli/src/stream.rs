//! `resnet stream`: the residual stream measured on one image — per block, how large F(x) is
//! against what the shortcut carries (‖F(x)‖ / ‖x‖), how aligned (cos), and the std of F(x)
//! (the paper's Fig. 7). Blocks that barely change x are near the identity; for a plain net,
//! the ratio is ‖H(x) − x‖ / ‖x‖.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use candle_core::Device;
use clap::Args;
use resnet_core::explain::{layer_responses, residual_stream, BlockResponse, LayerResponse};
use serde::Serialize;

use crate::decode::decode_file;
use crate::fmt::{Align, Table};
use crate::{emit, shown, to_json, ModelArgs};

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(flatten)]
    pub arch: ModelArgs,
    /// Weights: a PyTorch .pth/.pt (torch.save: a state_dict or a checkpoint holding one) or
    /// a safetensors file, with PyTorch's names.
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

#[derive(Serialize)]
struct StreamJson<'a> {
    arch: &'a str,
    image: String,
    blocks: Vec<BlockResponse>,
    /// The std of every 3×3 layer's response (after BN, before the ReLU or the add): Fig. 7.
    responses: Vec<LayerResponse>,
}

pub fn stream(args: &StreamArgs) -> Result<ExitCode> {
    let device = Device::Cpu;
    let model = args.arch.load_model(&args.weights, &device, args.json)?;
    if !model.graph.blocks.iter().any(|b| b.residual.is_some()) {
        bail!(
            "{} has no residual blocks (the stream is measured on ResNets and plain nets)",
            model.arch.name
        );
    }
    let img = decode_file(&args.image)?;
    let x = model
        .arch
        .preprocess()
        .to_tensor(&img.as_image(), &device)
        .map_err(|e| anyhow!("{}: {e}", args.image.display()))?;
    let (_, taps) = model.forward_taps(&x)?;
    let blocks = residual_stream(&model.graph, &taps)?;
    let responses = layer_responses(&model.graph, &taps)?;
    if args.json {
        let json = StreamJson { arch: model.arch.name, image: shown(&args.image), blocks, responses };
        return emit(&to_json(&json)?).map(|_| ExitCode::SUCCESS);
    }
    let residual = blocks.iter().any(|b| b.cosine.is_some());
    let ratio = if residual { "‖F(x)‖/‖x‖" } else { "‖H(x)−x‖/‖x‖" };
    let mut t = Table::new(&[
        ("Block", Align::Left),
        (ratio, Align::Right),
        ("cos(F(x), x)", Align::Right),
        ("std F(x)", Align::Right),
    ]);
    let num = |v: Option<f32>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    for b in &blocks {
        t.row(vec![b.block.clone(), num(b.ratio), num(b.cosine), format!("{:.3}", b.response_std)]);
    }
    let mut out = format!("{} on {}\n\n", model.arch.name, shown(&args.image));
    out.push_str(&t.render());
    out.push_str(if residual {
        "\nA small ratio: the block adds little to x and is near the identity (He et al., Fig. 7: residual\nfunctions are generally closer to zero than the plain net's layers).\n"
    } else {
        "\nA plain block must transform x itself: no shortcut carries it past the block.\n"
    });
    let mut t = Table::new(&[("3×3 layer", Align::Left), ("std of its response", Align::Right)]);
    for r in &responses {
        t.row(vec![r.layer.clone(), format!("{:.3}", r.std)]);
    }
    out.push_str("\nLayer responses (after BN, before the ReLU or the add), as in He et al.'s Fig. 7:\n\n");
    out.push_str(&t.render());
    emit(&out).map(|_| ExitCode::SUCCESS)
}
