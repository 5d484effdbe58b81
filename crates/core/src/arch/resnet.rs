//! ImageNet ResNets (He et al. 2015, Table 1) in torchvision's layout and names, and the plain
//! nets of §4.1: the same stacks without shortcuts.

use crate::spec::{BlockKind, Graph, GraphBuilder, NodeId, Shape, ShortcutKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    Basic,
    /// `stride_on_3x3`: torchvision's v1.5 puts the stride on the 3×3 conv; the paper (v1) on
    /// the first 1×1.
    Bottleneck {
        stride_on_3x3: bool,
    },
}

pub struct ResNetConfig {
    pub block: BlockType,
    pub layers: [usize; 4],
    /// `false` builds the plain counterpart (no shortcuts).
    pub residual: bool,
    pub num_classes: usize,
}

const STAGE_PLANES: [usize; 4] = [64, 128, 256, 512];

pub fn resnet(cfg: &ResNetConfig) -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 224, 224));
    let x = g.input();
    g.begin_stage("stem");
    let x = g.conv("conv1", x, 64, 7, 2, 3, false);
    let x = g.bn("bn1", x);
    let x = g.relu("relu", x);
    let mut x = g.max_pool("maxpool", x, 3, 2, 1, false);
    for (i, (&planes, &n)) in STAGE_PLANES.iter().zip(&cfg.layers).enumerate() {
        let stage = format!("layer{}", i + 1);
        g.begin_stage(&stage);
        for j in 0..n {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            let name = format!("{stage}.{j}");
            x = match cfg.block {
                BlockType::Basic => basic_block(&mut g, &name, x, planes, stride, cfg.residual),
                BlockType::Bottleneck { stride_on_3x3 } => {
                    bottleneck(&mut g, &name, x, planes, stride, stride_on_3x3, cfg.residual)
                }
            };
        }
    }
    g.begin_stage("head");
    let x = g.adaptive_avg_pool("avgpool", x, 1, 1);
    let features = g.channels(x);
    let x = g.flatten("flatten", x, features);
    g.linear("fc", x, cfg.num_classes);
    g.finish()
}

/// The shortcut of torchvision: identity, or `downsample` (1×1 conv + BN) when the shape
/// changes. Returns the shortcut's output and records it on the block.
fn shortcut(g: &mut GraphBuilder, block: usize, x: NodeId, out_ch: usize, stride: usize) -> NodeId {
    if stride == 1 && g.channels(x) == out_ch {
        g.block_mut(block).shortcut = ShortcutKind::Identity;
        return x;
    }
    let conv = g.conv("downsample.0", x, out_ch, 1, stride, 0, false);
    let bn = g.bn("downsample.1", conv);
    let b = g.block_mut(block);
    b.shortcut = ShortcutKind::Projection;
    b.shortcut_nodes = vec![conv, bn];
    bn
}

/// Closes a block: `relu(F(x) + shortcut(x))`, or `relu(F(x))` for a plain net.
pub(crate) fn finish_residual(
    g: &mut GraphBuilder,
    block: usize,
    residual: NodeId,
    shortcut: Option<NodeId>,
) -> NodeId {
    g.block_mut(block).residual = Some(residual);
    let sum = match shortcut {
        Some(s) => {
            let add = g.add("add", residual, s);
            g.block_mut(block).add = Some(add);
            add
        }
        None => residual,
    };
    let out = g.relu("relu", sum);
    g.end_block(out);
    out
}

fn basic_block(
    g: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    planes: usize,
    stride: usize,
    residual: bool,
) -> NodeId {
    let block = g.begin_block(name, BlockKind::Basic, x);
    let y = basic_branch(g, x, planes, stride);
    let s = residual.then(|| shortcut(g, block, x, planes, stride));
    finish_residual(g, block, y, s)
}

/// A BasicBlock's F(x): 3×3 conv (the block's stride), BN, ReLU, 3×3 conv, BN.
pub(crate) fn basic_branch(g: &mut GraphBuilder, x: NodeId, planes: usize, stride: usize) -> NodeId {
    let y = g.conv("conv1", x, planes, 3, stride, 1, false);
    let y = g.bn("bn1", y);
    let y = g.relu("relu1", y);
    let y = g.conv("conv2", y, planes, 3, 1, 1, false);
    g.bn("bn2", y)
}

fn bottleneck(
    g: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    planes: usize,
    stride: usize,
    stride_on_3x3: bool,
    residual: bool,
) -> NodeId {
    let block = g.begin_block(name, BlockKind::Bottleneck, x);
    let (s1, s3) = if stride_on_3x3 { (1, stride) } else { (stride, 1) };
    let y = g.conv("conv1", x, planes, 1, s1, 0, false);
    let y = g.bn("bn1", y);
    let y = g.relu("relu1", y);
    let y = g.conv("conv2", y, planes, 3, s3, 1, false);
    let y = g.bn("bn2", y);
    let y = g.relu("relu2", y);
    let y = g.conv("conv3", y, planes * 4, 1, 1, 0, false);
    let y = g.bn("bn3", y);
    let s = residual.then(|| shortcut(g, block, x, planes * 4, stride));
    finish_residual(g, block, y, s)
}
