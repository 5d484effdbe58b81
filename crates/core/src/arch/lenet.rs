//! LeNet-5 (LeCun et al. 1998): 32×32 grey input, tanh, average-pool subsampling.

use crate::spec::{Graph, GraphBuilder, Shape};

pub fn lenet5() -> Graph {
    let mut g = GraphBuilder::new(Shape::new(1, 32, 32));
    g.begin_stage("features");
    let x = g.input();
    let x = g.conv("conv1", x, 6, 5, 1, 0, true); // C1
    let x = g.tanh("tanh1", x);
    let x = g.avg_pool("pool1", x, 2, 2); // S2
    let c3 = g.conv("conv2", x, 16, 5, 1, 0, true); // C3
    g.note(c3, "every map sees all 6 inputs (the paper wires 60 of the 96 pairs)");
    let x = g.tanh("tanh2", c3);
    let x = g.avg_pool("pool2", x, 2, 2); // S4
    let x = g.conv("conv3", x, 120, 5, 1, 0, true); // C5
    let x = g.tanh("tanh3", x);
    g.begin_stage("classifier");
    let x = g.flatten("flatten", x, 120);
    let x = g.linear("fc1", x, 84); // F6
    let x = g.tanh("tanh4", x);
    g.linear("fc2", x, 10);
    g.finish()
}
