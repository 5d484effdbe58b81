//! VGG (Simonyan & Zisserman 2014) configurations A, B, D, E in torchvision's names
//! (`features.N`, `classifier.N`), and the CIFAR-10 VGG-19 with BatchNorm.

use crate::spec::{Graph, GraphBuilder, NodeId, Shape};

/// A conv stage: number of 3×3 convs, each followed by ReLU (and BN for the CIFAR net), then a
/// 2×2 max-pool.
pub const VGG11: [(usize, usize); 5] = [(1, 64), (1, 128), (2, 256), (2, 512), (2, 512)];
pub const VGG13: [(usize, usize); 5] = [(2, 64), (2, 128), (2, 256), (2, 512), (2, 512)];
pub const VGG16: [(usize, usize); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];
pub const VGG19: [(usize, usize); 5] = [(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)];

/// The `features` part; layers are numbered like torchvision's `nn.Sequential`.
fn features(g: &mut GraphBuilder, cfg: &[(usize, usize); 5], batch_norm: bool, bias: bool) -> NodeId {
    let mut x = g.input();
    let mut idx = 0;
    let mut next = || {
        idx += 1;
        format!("features.{}", idx - 1)
    };
    // The paper (and Caffe) name them by block: conv4_1 is block 4's first conv.
    for (stage, &(convs, ch)) in cfg.iter().enumerate() {
        g.begin_stage(&format!("block{}", stage + 1));
        for i in 0..convs {
            let paper = format!("{}_{}", stage + 1, i + 1);
            x = g.conv(&next(), x, ch, 3, 1, 1, bias);
            g.paper_name(x, format!("conv{paper}"));
            if batch_norm {
                x = g.bn(&next(), x);
            }
            x = g.relu(&next(), x);
            g.paper_name(x, format!("relu{paper}"));
        }
        x = g.max_pool(&next(), x, 2, 2, 0, false);
        g.paper_name(x, format!("pool{}", stage + 1));
    }
    x
}

/// ImageNet VGG, 224×224 input, 1000 classes.
pub fn vgg(cfg: &[(usize, usize); 5]) -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 224, 224));
    let x = features(&mut g, cfg, false, true);
    g.begin_stage("classifier");
    let x = g.adaptive_avg_pool("avgpool", x, 7, 7);
    let x = g.flatten("flatten", x, 512 * 7 * 7);
    let x = g.linear("classifier.0", x, 4096);
    g.paper_name(x, "fc6".into());
    let x = g.relu("classifier.1", x);
    let x = g.dropout("classifier.2", x, 0.5);
    let x = g.linear("classifier.3", x, 4096);
    g.paper_name(x, "fc7".into());
    let x = g.relu("classifier.4", x);
    let x = g.dropout("classifier.5", x, 0.5);
    let x = g.linear("classifier.6", x, 1000);
    g.paper_name(x, "fc8".into());
    g.finish()
}

/// The CIFAR-10 VGG-19: 3×3 convs with BN, five 2×2 max-pools down to 1×1, one 512→10 linear
/// layer (as in the widely used pytorch-cifar `VGG('VGG19')`).
pub fn cifar_vgg19() -> Graph {
    let mut g = GraphBuilder::new(Shape::new(3, 32, 32));
    let x = features(&mut g, &VGG19, true, true);
    g.begin_stage("classifier");
    let x = g.flatten("flatten", x, 512);
    g.linear("classifier", x, 10);
    g.finish()
}
