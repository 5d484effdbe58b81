//! The fast CPU training plan against the Candle-op path it replaces on the CPU: the same loss,
//! every gradient, and the same parameters, running statistics and momentum after three SGD
//! steps, on the zoo's CIFAR nets (both shortcut options, plain, VGG), LeNet-5 and ResNet-18.
//!
//! The nets run at small inputs and batches: a ReLU input within rounding of zero lets a
//! gradient through on one path and not the other (both right to f32 precision), and fewer
//! activations make that unlikely; the seeds are fixed.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use resnet_core::train::{fast, Rng, SgdConfig, TrainPath, Trainer};
use resnet_core::ShortcutOption;
use resnet_core::{find_arch, Graph, Weights};

fn batch(n: usize, (c, h, w): (usize, usize, usize), classes: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> =
        (0..n * c * h * w).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.below(classes) as u32).collect();
    (Tensor::from_vec(x, (n, c, h, w), &Device::Cpu).unwrap(), Tensor::from_vec(y, n, &Device::Cpu).unwrap())
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Compares tensors by name: ‖a − b‖ ≤ tol·max(‖a‖, floor), the floor being 1 % of the median
/// tensor norm, for tensors that are zero in theory and rounding noise in fact (the gradient of
/// a conv bias that BatchNorm cancels). A norm, not the largest element: a ReLU input within
/// rounding of 0 may let a gradient through on one path and not the other.
fn compare(
    what: &str,
    a: &BTreeMap<String, Tensor>,
    b: &BTreeMap<String, Tensor>,
    tol: f64,
    zero: &[String],
) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: the same names");
    let mut norms: Vec<f64> = a.values().map(|t| norm(&flat(t))).collect();
    norms.sort_by(f64::total_cmp);
    let floor = 0.01 * norms[norms.len() / 2];
    let mut bad = vec![];
    for (name, t) in a {
        let (x, y) = (flat(t), flat(&b[name]));
        assert_eq!(x.len(), y.len(), "{what} {name}");
        if zero.contains(name) {
            // Zero in theory: rounding noise on both paths, far below every real gradient.
            assert!(norm(&x).max(norm(&y)) < 1e-3 * floor * 100.0, "{what} {name}: not ≈ 0");
            continue;
        }
        let diff = norm(&x.iter().zip(&y).map(|(p, q)| p - q).collect::<Vec<_>>());
        let r = diff / norm(&x).max(floor).max(1e-12);
        if r > tol {
            bad.push(format!("{name}: {r:e}"));
        }
    }
    assert!(bad.is_empty(), "{what}: relative differences {bad:?}");
}

fn state(w: &Weights) -> BTreeMap<String, Tensor> {
    w.iter().map(|(n, t)| (n.clone(), t.clone())).collect()
}

/// `lr`: the first step's learning rate (then lr/2, lr/3). Small: on random data a large step
/// makes the next losses chaotic in the weights, and rounding differences grow without bound.
fn same_training(label: &str, graph: Graph, input: (usize, usize, usize), n: usize, lr: f64) {
    same_steps(label, graph, input, n, lr, 3)
}

fn same_steps(label: &str, graph: Graph, input: (usize, usize, usize), n: usize, lr: f64, steps: u64) {
    assert_eq!(fast::unsupported(&graph), None, "{label}: the fast plan has every op");
    let dev = Device::Cpu;
    let w = Weights::random(&graph, 3, &dev).unwrap();
    let sgd = SgdConfig { momentum: 0.9, weight_decay: 5e-4 };
    let mut reference = Trainer::with_path(graph.clone(), &w, sgd, &dev, TrainPath::Candle).unwrap();
    let mut ours = Trainer::with_path(graph.clone(), &w, sgd, &dev, TrainPath::Fast).unwrap();
    assert_eq!(ours.path(), TrainPath::Fast);
    let classes = graph.num_classes();
    let seed: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(11);
    let (x, y) = batch(n, input, classes, seed);
    let (l_ref, g_ref) = reference.gradients(&x, &y).unwrap();
    let (l_ours, g_ours) = ours.gradients(&x, &y).unwrap();
    assert!((l_ref - l_ours).abs() <= 1e-4 * l_ref.abs(), "{label}: loss {l_ours} vs {l_ref}");
    // A conv bias that BatchNorm follows gets no gradient (BatchNorm subtracts the mean).
    let zero: Vec<String> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            matches!(n.op, resnet_core::spec::Op::Conv2d(c) if c.bias)
                && graph
                    .nodes
                    .iter()
                    .any(|m| m.inputs == [*i] && matches!(m.op, resnet_core::spec::Op::BatchNorm2d { .. }))
        })
        .map(|(_, n)| format!("{}.bias", n.name))
        .collect();
    compare(&format!("{label}: gradient of"), &g_ref, &g_ours, 1e-4, &zero);
    for step in 0..steps {
        let (x, y) = batch(n, input, classes, 100 + step);
        let lr = lr / (step + 1) as f64;
        let a = reference.step(&x, &y, lr).unwrap();
        let b = ours.step(&x, &y, lr).unwrap();
        assert!(
            (a.loss - b.loss).abs() <= 1e-4 * a.loss.abs(),
            "{label} step {step}: loss {} vs {}",
            b.loss,
            a.loss
        );
        assert_eq!(a.samples, b.samples);
    }
    compare(
        &format!("{label}: after {steps} steps,"),
        &state(&reference.state_dict().unwrap()),
        &state(&ours.state_dict().unwrap()),
        1e-4,
        &[],
    );
    // Momentum: those biases' buffers are weight decay plus rounding noise; skip them.
    let momentum = |t: &Trainer| {
        let mut m = t.optimizer_state().unwrap();
        m.retain(|name, _| !zero.contains(name));
        m
    };
    compare(&format!("{label}: momentum of"), &momentum(&reference), &momentum(&ours), 1e-4, &[]);
}

#[test]
fn cifar_resnet20_option_a() {
    same_training("cifar-resnet20 (A)", find_arch("cifar-resnet20").unwrap().graph(), (3, 32, 32), 4, 2e-3);
    same_training(
        "cifar-resnet20 (A), 8×8",
        find_arch("cifar-resnet20").unwrap().graph(),
        (3, 8, 8),
        6,
        2e-3,
    );
}

#[test]
fn cifar_resnet20_option_b() {
    let g = find_arch("cifar-resnet20").unwrap().graph_with(ShortcutOption::B);
    same_training("cifar-resnet20 (B)", g, (3, 8, 8), 5, 2e-3);
}

#[test]
fn cifar_plain20() {
    same_training("cifar-plain20", find_arch("cifar-plain20").unwrap().graph(), (3, 8, 8), 4, 2e-3);
}

#[test]
fn cifar_vgg19() {
    // Five 2×2 max-pools: 32×32 is the smallest input, and with 16 plain layers of up to 65k
    // activations an image, a second step already meets a ReLU flip (see the module doc) on
    // some thread counts: one step.
    same_steps("cifar-vgg19", find_arch("cifar-vgg19").unwrap().graph(), (3, 32, 32), 4, 2e-4, 1);
}

#[test]
fn lenet5_tanh_and_average_pools() {
    let g = find_arch("lenet5").unwrap().graph();
    let s = g.input;
    same_training("lenet5", g, (s.c, s.h, s.w), 5, 2e-3);
}

#[test]
fn resnet18_at_a_small_input() {
    // The 7×7/2 stem, the overlapping 3×3/2 max-pool, projections, down to 1×1.
    same_training("resnet18", find_arch("resnet18").unwrap().graph(), (3, 64, 64), 4, 2e-4);
}

#[test]
fn auto_falls_back_once_with_the_reason() {
    let g = find_arch("vgg11").unwrap().graph();
    let w = Weights::random(&g, 0, &Device::Cpu).unwrap();
    let t = Trainer::new(g.clone(), &w, SgdConfig::default(), &Device::Cpu).unwrap();
    assert_eq!(t.path(), TrainPath::Candle);
    // VGG-11's first op without a kernel: the 7×7 adaptive pool (Dropout comes after it).
    assert_eq!(t.fallback(), Some("the fast plan has no kernel for AdaptiveAvgPool2d (avgpool)"));
    let err = Trainer::with_path(g, &w, SgdConfig::default(), &Device::Cpu, TrainPath::Fast).err().unwrap();
    assert!(err.to_string().contains("no kernel for AdaptiveAvgPool2d"), "{err}");
}

#[test]
fn small_graphs() {
    use resnet_core::spec::GraphBuilder;
    use resnet_core::Shape;
    for (k, s, p, bn) in
        [(1, 2, 0, false), (1, 2, 0, true), (3, 2, 1, false), (3, 1, 1, true), (1, 1, 0, true)]
    {
        let mut g = GraphBuilder::new(Shape::new(4, 8, 8));
        let x = g.input();
        let mut x = g.conv("c", x, 6, k, s, p, false);
        if bn {
            x = g.bn("bn", x);
        }
        let x = g.adaptive_avg_pool("pool", x, 1, 1);
        let x = g.flatten("flatten", x, 6);
        g.linear("fc", x, 3);
        same_training(&format!("k{k} s{s} p{p} bn{bn}"), g.finish(), (4, 8, 8), 4, 2e-3);
    }
}

/// A conv output read by a BatchNorm and by a residual add: the add's backward writes that
/// gradient first, so the BatchNorm adds its own to it (not the in-place path); with and
/// without the fused ReLU.
#[test]
fn batchnorm_input_with_a_second_consumer() {
    use resnet_core::spec::GraphBuilder;
    use resnet_core::Shape;
    for relu in [false, true] {
        let mut g = GraphBuilder::new(Shape::new(3, 8, 8));
        let x = g.input();
        let x = g.conv("c", x, 8, 3, 1, 1, false);
        let mut y = g.bn("bn", x);
        if relu {
            y = g.relu("relu", y);
        }
        let y = g.add("add", y, x);
        let y = g.adaptive_avg_pool("pool", y, 1, 1);
        let y = g.flatten("flatten", y, 8);
        g.linear("fc", y, 3);
        same_training(&format!("bn + add, relu {relu}"), g.finish(), (3, 8, 8), 4, 2e-3);
    }
}

#[test]
fn pools_after_relu() {
    use resnet_core::spec::GraphBuilder;
    use resnet_core::Shape;
    for (k, s, p, relu) in [(2, 2, 0, false), (2, 2, 0, true), (3, 2, 1, false), (3, 2, 1, true)] {
        let mut g = GraphBuilder::new(Shape::new(3, 8, 8));
        let x = g.input();
        let x = g.conv("c", x, 8, 3, 1, 1, false);
        let mut x = g.bn("bn", x);
        if relu {
            x = g.relu("relu", x);
        }
        let x = g.max_pool("pool", x, k, s, p, false);
        let x = g.flatten("flatten", x, 8 * 16);
        g.linear("fc", x, 3);
        same_training(&format!("pool k{k} s{s} p{p} relu {relu}"), g.finish(), (3, 8, 8), 4, 2e-3);
    }
}
