//! GoogLeNet / Inception v1 (Szegedy et al. 2014) in torchvision's layout and names
//! (`BasicConv2d` = conv + BN(eps 0.001) + ReLU), without the auxiliary heads.

use crate::spec::{BlockKind, Graph, GraphBuilder, NodeId, Shape};

/// `BasicConv2d` named `name.conv` / `name.bn` / `name.relu`.
fn basic_conv(
    g: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    out: usize,
    k: usize,
    s: usize,
    p: usize,
) -> NodeId {
    let x = g.conv(&format!("{name}.conv"), x, out, k, s, p, false);
    let x = g.bn_eps(&format!("{name}.bn"), x, 1e-3);
    g.relu(&format!("{name}.relu"), x)
}

/// One Inception module: 1×1 | 1×1→3×3 | 1×1→"5×5" | pool→1×1, concatenated.
#[allow(clippy::too_many_arguments)]
fn inception(
    g: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    ch1: usize,
    ch3red: usize,
    ch3: usize,
    ch5red: usize,
    ch5: usize,
    pool_proj: usize,
) -> NodeId {
    let block = g.begin_block(name, BlockKind::Inception, x);
    let first = g.len();
    let b1 = basic_conv(g, "branch1", x, ch1, 1, 1, 0);
    let y = basic_conv(g, "branch2.0", x, ch3red, 1, 1, 0);
    let b2 = basic_conv(g, "branch2.1", y, ch3, 3, 1, 1);
    let y = basic_conv(g, "branch3.0", x, ch5red, 1, 1, 0);
    let b3 = basic_conv(g, "branch3.1", y, ch5, 3, 1, 1);
    g.note(b3 - 2, "3×3 where the paper has 5×5: torchvision's layout, so its weights load");
    let y = g.max_pool("branch4.0", x, 3, 1, 1, true);
    let b4 = basic_conv(g, "branch4.1", y, pool_proj, 1, 1, 0);
    let ends = [b1, b2, b3, b4];
    let mut start = first;
    let branches = ends
        .iter()
        .map(|&end| {
            let nodes = (start..=end).collect();
            start = end + 1;
            nodes
        })
        .collect();
    let out = g.concat("concat", ends.to_vec());
    g.block_mut(block).branches = branches;
    g.end_block(out);
    out
}

pub fn googlenet() -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 224, 224));
    let x = g.input();
    g.begin_stage("stem");
    let x = basic_conv(&mut g, "conv1", x, 64, 7, 2, 3);
    let x = g.max_pool("maxpool1", x, 3, 2, 0, true);
    let x = basic_conv(&mut g, "conv2", x, 64, 1, 1, 0);
    let x = basic_conv(&mut g, "conv3", x, 192, 3, 1, 1);
    let x = g.max_pool("maxpool2", x, 3, 2, 0, true);
    g.begin_stage("inception3");
    let x = inception(&mut g, "inception3a", x, 64, 96, 128, 16, 32, 32);
    let x = inception(&mut g, "inception3b", x, 128, 128, 192, 32, 96, 64);
    let x = g.max_pool("maxpool3", x, 3, 2, 0, true);
    g.begin_stage("inception4");
    let x = inception(&mut g, "inception4a", x, 192, 96, 208, 16, 48, 64);
    let x = inception(&mut g, "inception4b", x, 160, 112, 224, 24, 64, 64);
    let x = inception(&mut g, "inception4c", x, 128, 128, 256, 24, 64, 64);
    let x = inception(&mut g, "inception4d", x, 112, 144, 288, 32, 64, 64);
    let x = inception(&mut g, "inception4e", x, 256, 160, 320, 32, 128, 128);
    let x = g.max_pool("maxpool4", x, 2, 2, 0, true);
    g.begin_stage("inception5");
    let x = inception(&mut g, "inception5a", x, 256, 160, 320, 32, 128, 128);
    let x = inception(&mut g, "inception5b", x, 384, 192, 384, 48, 128, 128);
    g.begin_stage("head");
    let x = g.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = g.flatten("flatten", x, 1024);
    let x = g.dropout("dropout", x, 0.2);
    g.linear("fc", x, 1000);
    g.finish()
}
