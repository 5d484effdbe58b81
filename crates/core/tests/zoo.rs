//! The layer table against published numbers, and against a real forward pass.

mod common;

use candle_core::{Device, Tensor};
use resnet_core::spec::{GraphBuilder, Op, Shape};
use resnet_core::{find_arch, Model, ZOO};

fn summary(name: &str) -> resnet_core::Summary {
    find_arch(name).unwrap().graph().summary(None).unwrap()
}

#[test]
fn parameter_counts_match_the_published_ones() {
    for (name, params) in [
        ("resnet18", 11_689_512u64),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("vgg16", 138_357_544),
        ("vgg19", 143_667_240),
        ("cifar-resnet20", 269_722),
        ("cifar-resnet32", 464_154),
        ("cifar-resnet44", 658_586),
        ("cifar-resnet56", 853_018),
        ("cifar-resnet110", 1_727_962),
        ("googlenet", 6_624_904),
        ("alexnet", 62_378_344),
        ("lenet5", 61_706),
    ] {
        assert_eq!(summary(name).total_params, params, "{name}");
        assert_eq!(find_arch(name).unwrap().graph().total_params(), params, "{name}");
    }
}

#[test]
fn macs_match_the_published_ones() {
    for (name, macs) in [
        ("resnet18", 1_814_073_344u64),
        ("resnet34", 3_663_761_408),
        ("resnet50", 4_089_184_256),
        ("resnet50-v1", 3_857_973_248),
        ("vgg19", 19_632_062_464),
        ("googlenet", 1_498_376_192),
        ("cifar-resnet20", 40_551_040),
    ] {
        assert_eq!(summary(name).total_macs, macs, "{name}");
    }
    // The paper's rounded figures for the v1 bottleneck nets.
    let g = |n: &str| summary(n).total_macs as f64 / 1e9;
    assert!((g("resnet101-v1") - 7.57).abs() < 0.01, "{}", g("resnet101-v1"));
    assert!((g("resnet152-v1") - 11.28).abs() < 0.01, "{}", g("resnet152-v1"));
}

#[test]
fn vgg16_activation_memory() {
    let s = summary("vgg16");
    assert_eq!(s.total_activations, 15_237_608);
    let mib = s.activation_bytes as f64 / (1024.0 * 1024.0);
    assert!((mib - 58.1).abs() < 0.05, "{mib}");
}

#[test]
fn alexnet_worked_examples() {
    let s = summary("alexnet");
    let conv1 = s.layers.iter().find(|r| r.name == "conv1").unwrap();
    assert_eq!(conv1.out_shape, [96, 55, 55]);
    assert_eq!(conv1.params, 34_848 + 96);
    let pool1 = s.layers.iter().find(|r| r.name == "pool1").unwrap();
    assert_eq!(pool1.out_shape, [96, 27, 27]);
    // A 5×5 conv with 10 filters, stride 1, pad 2 on 32×32×3.
    let mut g = GraphBuilder::new(Shape::new(3, 32, 32));
    let x = g.input();
    g.conv("conv", x, 10, 5, 1, 2, true);
    let s = g.finish().summary(None).unwrap();
    assert_eq!(s.layers[0].out_shape, [10, 32, 32]);
    assert_eq!(s.total_params, 760);
}

#[test]
fn zfnet_sizes_follow_the_paper() {
    let s = summary("zfnet");
    let sizes: Vec<usize> = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
        .iter()
        .map(|n| s.layers.iter().find(|r| &r.name == n).unwrap().out_shape[1])
        .collect();
    assert_eq!(sizes, [110, 55, 26, 13, 13, 13, 13, 6]);
}

#[test]
fn residual_adds_pools_and_concats_are_rows() {
    let s = summary("resnet18");
    assert!(s.layers.iter().any(|r| r.name == "layer1.0.add" && r.kind == "Add"));
    assert!(s.layers.iter().any(|r| r.name == "maxpool" && r.out_shape == [64, 56, 56]));
    let s = summary("googlenet");
    let c = s.layers.iter().find(|r| r.name == "inception3a.concat").unwrap();
    assert_eq!(c.out_shape, [256, 28, 28]);
    assert!(s.layers.iter().any(|r| r.note.as_deref().is_some_and(|n| n.contains("5×5"))));
}

#[test]
fn bad_input_sizes_name_the_layer() {
    let err = find_arch("vgg16").unwrap().graph().shapes(Some(Shape::new(3, 16, 16))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer features.30 (MaxPool2d): kernel 2 is larger than the padded input 1 (1 + 2×0)"
    );
    let g = find_arch("resnet18").unwrap().graph();
    let err = find_arch("alexnet").unwrap().graph().shapes(Some(Shape::new(3, 300, 300))).unwrap_err();
    assert!(err.to_string().contains("fc6"), "{err}");
    let err = find_arch("lenet5").unwrap().graph().shapes(Some(Shape::new(1, 10, 10))).unwrap_err();
    assert!(err.to_string().contains("conv2"), "{err}");
    assert!(g.shapes(Some(Shape::new(1, 224, 224))).is_err());
    // Fully convolutional nets take other sizes.
    let s = g.summary(Some(Shape::new(3, 64, 64))).unwrap();
    assert_eq!(s.layers.last().unwrap().out_shape, [1000, 1, 1]);
}

/// The table's shapes are the shapes a real forward pass produces, for every net.
#[test]
fn table_shapes_equal_forward_shapes() {
    let dev = Device::Cpu;
    for arch in ZOO {
        // The big ImageNet nets are covered by their smaller siblings' code paths.
        if [
            "resnet101",
            "resnet152",
            "resnet101-v1",
            "resnet152-v1",
            "vgg13",
            "vgg19",
            "vgg11",
            "plain34",
            "resnet34",
        ]
        .contains(&arch.name)
        {
            continue;
        }
        let model = Model::random(arch, 1, &dev).unwrap();
        let s = model.graph.summary(None).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, s.input[0], s.input[1], s.input[2]), &dev).unwrap();
        let (logits, taps) = model.forward_taps(&x).unwrap();
        assert_eq!(logits.dims(), [1, model.graph.num_classes()], "{}", arch.name);
        for (row, tap) in s.layers.iter().zip(&taps[1..]) {
            let want: Vec<usize> = match tap.rank() {
                2 => vec![row.out_shape[0]],
                _ => row.out_shape.to_vec(),
            };
            assert_eq!(&tap.dims()[1..], want.as_slice(), "{} {}", arch.name, row.name);
        }
    }
}

/// BatchNorm folded into the convs gives the same logits as the layer-by-layer net.
#[test]
fn folded_batchnorm_equals_reference() {
    let dev = Device::Cpu;
    for name in ["cifar-resnet20", "resnet18", "googlenet", "cifar-vgg19", "resnet50"] {
        let arch = find_arch(name).unwrap();
        let mut model = Model::random(arch, 7, &dev).unwrap();
        common::vary_running_stats(&mut model, &dev);
        let input = model.graph.input;
        let x = Tensor::randn(0f32, 1.0, (2, input.c, input.h, input.w), &dev).unwrap();
        let a = model.forward(&x).unwrap();
        let b = model.forward_reference(&x).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}

#[test]
fn cifar_shortcut_options() {
    let arch = find_arch("cifar-resnet20").unwrap();
    let b = arch.graph_with(resnet_core::ShortcutOption::B);
    assert!(b.param_specs().iter().any(|p| p.name == "layer2.0.shortcut.0.weight"));
    assert!(b.total_params() > arch.graph().total_params());
    let a = arch.graph();
    assert!(a.nodes.iter().any(|n| matches!(n.op, Op::ShortcutA { .. })));
    let plain = find_arch("cifar-plain20").unwrap().graph();
    assert!(plain.nodes.iter().all(|n| !matches!(n.op, Op::Add)));
    assert_eq!(plain.total_params(), a.total_params());
}

/// Receptive field and jump, from the same description as the shapes: the stem of ResNet-18,
/// a residual sum (the widest branch), a downsampling block's projection, and VGG-16's
/// well-known 196 (conv5_3) and 212 (pool5).
#[test]
fn receptive_fields_follow_kernels_and_strides() {
    let rows = |arch: &str| summary(arch).layers;
    let at = |rows: &[resnet_core::LayerRow], name: &str| {
        let r = rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name}"));
        (r.rf, r.jump)
    };
    let r18 = rows("resnet18");
    assert_eq!(at(&r18, "conv1"), (7, 2));
    assert_eq!(at(&r18, "bn1"), (7, 2));
    assert_eq!(at(&r18, "maxpool"), (11, 4));
    assert_eq!(at(&r18, "layer1.0.conv1"), (19, 4));
    assert_eq!(at(&r18, "layer1.0.conv2"), (27, 4));
    assert_eq!(at(&r18, "layer1.0.add"), (27, 4), "the residual branch is the wider");
    assert_eq!(at(&r18, "layer1.1.add"), (43, 4));
    assert_eq!(at(&r18, "layer2.0.conv1"), (43 + 2 * 4, 8));
    assert_eq!(at(&r18, "layer2.0.downsample.0"), (43, 8), "a 1×1 projection only strides");
    let vgg = rows("vgg16");
    assert_eq!(at(&vgg, "features.28"), (196, 16), "conv5_3");
    assert_eq!(at(&vgg, "features.30"), (212, 32), "pool5");
    // The head sees everything: the 7×7 map of pool5 is flattened into one vector.
    assert_eq!(at(&vgg, "flatten"), (212 + 6 * 32, 7 * 32));
    let r20 = rows("cifar-resnet20");
    assert_eq!(at(&r20, "conv1"), (3, 1));
    assert_eq!(at(&r20, "layer1.2.relu"), (3 + 3 * 2 * 2, 1));
    assert_eq!(at(&r20, "layer2.0.shortcut"), (15, 2), "option A subsamples");
}

/// The depth in the name is the weight layers on the longest path.
#[test]
fn depth_is_the_number_in_the_name() {
    for (arch, depth) in [
        ("lenet5", 5),
        ("alexnet", 8),
        ("vgg16", 16),
        ("vgg19", 19),
        ("googlenet", 22),
        ("resnet18", 18),
        ("resnet50", 50),
        ("resnet152", 152),
        ("cifar-resnet20", 20),
        ("cifar-resnet56", 56),
        ("cifar-plain20", 20),
    ] {
        assert_eq!(resnet_core::find_arch(arch).unwrap().graph().depth(), depth, "{arch}");
    }
}

#[test]
fn vgg_layers_carry_the_papers_names() {
    let paper = |arch: &str, layer: &str| {
        let g = find_arch(arch).unwrap().graph();
        g.nodes[g.node(layer).unwrap()].paper.clone()
    };
    assert_eq!(paper("vgg16", "features.17").as_deref(), Some("conv4_1"));
    assert_eq!(paper("vgg16", "features.18").as_deref(), Some("relu4_1"));
    assert_eq!(paper("vgg16", "features.23").as_deref(), Some("pool4"));
    assert_eq!(paper("vgg16", "features.28").as_deref(), Some("conv5_3"));
    assert_eq!(paper("vgg16", "classifier.6").as_deref(), Some("fc8"));
    assert_eq!(paper("vgg19", "features.34").as_deref(), Some("conv5_4"));
    // With BatchNorm the numbering shifts; the paper's names do not.
    assert_eq!(paper("cifar-vgg19", "features.27").as_deref(), Some("conv4_1"));
    assert_eq!(paper("cifar-vgg19", "features.28"), None, "a BatchNorm has no name in the paper");
    assert_eq!(paper("resnet18", "layer1.0.conv1"), None);
}
