//! CIFAR-10 ResNets of He et al. §4.2 (6n+2 layers: 3 stages of 16/32/64 channels) with the
//! tensor names of the shared pretrained weights (akamaster/pytorch_resnet_cifar10), and their
//! plain counterparts.

use super::resnet::{basic_branch, finish_residual};
use crate::spec::{BlockKind, Graph, GraphBuilder, NodeId, Shape, ShortcutKind};

/// How a block whose shape changes gets its shortcut (paper §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShortcutOption {
    /// A: identity with stride-2 subsampling and zero-padded extra channels; no parameters.
    #[default]
    A,
    /// B: 1×1 projection (conv + BN) where the shape changes, identity elsewhere.
    B,
}

/// `n` blocks per stage (depth 6n+2); `shortcut: None` builds the plain net.
pub fn cifar_resnet(n: usize, shortcut: Option<ShortcutOption>) -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 32, 32));
    let x = g.input();
    g.begin_stage("stem");
    let x = g.conv("conv1", x, 16, 3, 1, 1, false);
    let x = g.bn("bn1", x);
    let mut x = g.relu("relu", x);
    for (i, planes) in [16, 32, 64].into_iter().enumerate() {
        let stage = format!("layer{}", i + 1);
        g.begin_stage(&stage);
        for j in 0..n {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            x = block(&mut g, &format!("{stage}.{j}"), x, planes, stride, shortcut);
        }
    }
    g.begin_stage("head");
    let x = g.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = g.flatten("flatten", x, 64);
    g.linear("linear", x, 10);
    g.finish()
}

fn block(
    g: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    planes: usize,
    stride: usize,
    option: Option<ShortcutOption>,
) -> NodeId {
    let block = g.begin_block(name, BlockKind::Basic, x);
    let y = basic_branch(g, x, planes, stride);
    let same_shape = stride == 1 && g.channels(x) == planes;
    let s = option.map(|option| {
        if same_shape {
            g.block_mut(block).shortcut = ShortcutKind::Identity;
            return x;
        }
        let (kind, nodes) = match option {
            ShortcutOption::A => (ShortcutKind::ZeroPad, vec![g.shortcut_a("shortcut", x, planes, stride)]),
            ShortcutOption::B => {
                let conv = g.conv("shortcut.0", x, planes, 1, stride, 0, false);
                (ShortcutKind::Projection, vec![conv, g.bn("shortcut.1", conv)])
            }
        };
        let b = g.block_mut(block);
        b.shortcut = kind;
        b.shortcut_nodes = nodes.clone();
        *nodes.last().unwrap()
    });
    finish_residual(g, block, y, s)
}
