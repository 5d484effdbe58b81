//! AlexNet (Krizhevsky et al. 2012) as a single tower, and ZFNet (Zeiler & Fergus 2013), which
//! changed its first layers after looking at what they learned.

use crate::spec::{Graph, GraphBuilder, NodeId, Shape};

/// fc6..fc8 with dropout, as in both papers.
fn classifier(mut g: GraphBuilder, x: NodeId, features: usize) -> Graph {
    g.begin_stage("classifier");
    let x = g.flatten("flatten", x, features);
    let x = g.linear("fc6", x, 4096);
    let x = g.relu("relu6", x);
    let x = g.dropout("drop6", x, 0.5);
    let x = g.linear("fc7", x, 4096);
    let x = g.relu("relu7", x);
    let x = g.dropout("drop7", x, 0.5);
    g.linear("fc8", x, 1000);
    g.finish()
}

/// 227×227 input (the size at which conv1's 11×11/4 gives 55×55), 96-256-384-384-256 convs,
/// local response normalisation after the first two ReLUs.
pub fn alexnet() -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 227, 227));
    g.begin_stage("features");
    let x = g.input();
    let x = g.conv("conv1", x, 96, 11, 4, 0, true);
    let x = g.relu("relu1", x);
    let x = g.lrn("norm1", x);
    let x = g.max_pool("pool1", x, 3, 2, 0, false);
    let x = g.conv("conv2", x, 256, 5, 1, 2, true);
    let x = g.relu("relu2", x);
    let x = g.lrn("norm2", x);
    let x = g.max_pool("pool2", x, 3, 2, 0, false);
    let x = g.conv("conv3", x, 384, 3, 1, 1, true);
    let x = g.relu("relu3", x);
    let x = g.conv("conv4", x, 384, 3, 1, 1, true);
    let x = g.relu("relu4", x);
    let x = g.conv("conv5", x, 256, 3, 1, 1, true);
    let x = g.relu("relu5", x);
    let x = g.max_pool("pool5", x, 3, 2, 0, false);
    classifier(g, x, 256 * 6 * 6)
}

/// 224×224 input; conv1 7×7/2 (padding 1) and conv2 stride 2, conv3/4/5 of 512/1024/512
/// filters; ceil-mode pools give the paper's 110-55-26-13-13-13-13-6.
pub fn zfnet() -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 224, 224));
    g.begin_stage("features");
    let x = g.input();
    let x = g.conv("conv1", x, 96, 7, 2, 1, true);
    let x = g.relu("relu1", x);
    let x = g.max_pool("pool1", x, 3, 2, 0, true);
    let x = g.lrn("norm1", x);
    let x = g.conv("conv2", x, 256, 5, 2, 0, true);
    let x = g.relu("relu2", x);
    let x = g.max_pool("pool2", x, 3, 2, 0, true);
    let x = g.lrn("norm2", x);
    let x = g.conv("conv3", x, 512, 3, 1, 1, true);
    let x = g.relu("relu3", x);
    let x = g.conv("conv4", x, 1024, 3, 1, 1, true);
    let x = g.relu("relu4", x);
    let x = g.conv("conv5", x, 512, 3, 1, 1, true);
    let x = g.relu("relu5", x);
    let x = g.max_pool("pool5", x, 3, 2, 0, true);
    classifier(g, x, 512 * 6 * 6)
}
