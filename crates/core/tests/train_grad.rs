//! Gradient checks by central finite differences, in f64: the convolution, BatchNorm in
//! training mode, the option-A shortcut and the overlapping 3×3/2 max-pool, alone and inside
//! whole networks (cifar-resnet20, resnet18) run by the same interpreter that trains them.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use resnet_core::model::{run, Mode, RunOptions};
use resnet_core::spec::{GraphBuilder, Pool, Shape};
use resnet_core::train::Rng;
use resnet_core::{find_arch, ops, Graph, Weights};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let u1 = 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `f(inputs)` must be a scalar. Compares autograd's gradient with central differences at up
/// to `samples` coordinates of every input; returns the largest relative error seen.
fn check(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], samples: usize, what: &str) -> f64 {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let as_t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = f(&as_t).unwrap().backward().unwrap();
    let eval = |xs: &[Tensor]| f(xs).unwrap().to_scalar::<f64>().unwrap();
    let h = 1e-6;
    let mut worst = 0f64;
    let mut rng = Rng::new(7);
    for (k, v) in vars.iter().enumerate() {
        let g: Vec<f64> = grads
            .get(v.as_tensor())
            .expect("gradient reaches every input")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = inputs[k].flatten_all().unwrap().to_vec1().unwrap();
        let n = base.len();
        let idx: Vec<usize> =
            if n <= samples { (0..n).collect() } else { (0..samples).map(|_| rng.below(n)).collect() };
        for j in idx {
            let shifted = |delta: f64| {
                let mut b = base.clone();
                b[j] += delta;
                let mut xs = inputs.to_vec();
                xs[k] = Tensor::from_vec(b, inputs[k].dims(), &Device::Cpu).unwrap();
                eval(&xs)
            };
            let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
            let err = (g[j] - fd).abs() / (1e-6 + g[j].abs().max(fd.abs()));
            assert!(
                (g[j] - fd).abs() < 1e-7 || err < 1e-4,
                "{what}: input {k} [{j}]: autograd {} vs finite difference {fd}",
                g[j]
            );
            worst = worst.max(err);
        }
    }
    worst
}

/// A fixed random projection makes the output a scalar whose gradient reaches every element.
fn project(y: &Tensor, seed: u64) -> Result<Tensor> {
    (y * randn(y.dims(), seed))?.sum_all()
}

#[test]
fn conv2d_gradients() {
    for (stride, padding) in [(1, 1), (2, 1), (2, 0)] {
        let f = move |xs: &[Tensor]| project(&xs[0].conv2d(&xs[1], padding, stride, 1, 1)?, 3);
        let worst = check(&f, &[randn(&[2, 3, 7, 7], 1), randn(&[4, 3, 3, 3], 2)], 40, "conv2d");
        println!("conv2d stride {stride} padding {padding}: worst relative error {worst:.2e}");
    }
}

#[test]
fn overlapping_max_pool_gradients() {
    // The ImageNet stem's 3×3/2 pool with padding 1 (and a ceil-mode variant, as GoogLeNet).
    for ceil_mode in [false, true] {
        let p = Pool { kernel: 3, stride: 2, padding: 1, ceil_mode };
        let f = move |xs: &[Tensor]| project(&ops::max_pool2d(&xs[0], &p, true)?, 4);
        let worst = check(&f, &[randn(&[2, 3, 9, 10], 5)], 200, "max_pool2d 3x3/2");
        println!("max-pool 3×3/2 ceil {ceil_mode}: worst relative error {worst:.2e}");
    }
    // VGG's and LeNet-style 2×2/2 pools: Candle's own backward scales a unique maximum's
    // gradient by 1/k² (it multiplies by the window's mean of the max mask), so training takes
    // the shifted-views path for every kernel.
    let p = Pool { kernel: 2, stride: 2, padding: 0, ceil_mode: false };
    let f = move |xs: &[Tensor]| project(&ops::max_pool2d(&xs[0], &p, true)?, 4);
    let worst = check(&f, &[randn(&[2, 3, 8, 6], 8)], 200, "max_pool2d 2x2/2");
    println!("max-pool 2×2/2: worst relative error {worst:.2e}");
    // The training path computes the same values as Candle's own pooling.
    let x = randn(&[2, 3, 9, 9], 6);
    let p = Pool { kernel: 3, stride: 2, padding: 0, ceil_mode: false };
    let a = ops::max_pool2d(&x, &p, true).unwrap();
    let b = ops::max_pool2d(&x, &p, false).unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert_eq!(diff, 0.0);
}

#[test]
fn option_a_shortcut_gradients() {
    for (out_ch, stride) in [(8, 2), (4, 1), (6, 2)] {
        let f = move |xs: &[Tensor]| project(&ops::shortcut_a(&xs[0], out_ch, stride)?, 8);
        check(&f, &[randn(&[2, 4, 5, 6], 9)], 240, "shortcut A");
    }
}

/// `graph`'s weights, random, in f64; the trainable ones are returned separately, by name.
fn f64_weights(graph: &Graph, seed: u64) -> (Vec<String>, Vec<Tensor>, BTreeMap<String, Tensor>) {
    let w = Weights::random(graph, seed, &Device::Cpu).unwrap();
    let trainable: Vec<String> =
        graph.param_specs().into_iter().filter(|p| p.kind.trainable()).map(|p| p.name).collect();
    let mut rest = BTreeMap::new();
    let (mut names, mut values) = (vec![], vec![]);
    for (name, t) in w.iter() {
        let t = if t.dtype() == DType::I64 { t.clone() } else { t.to_dtype(DType::F64).unwrap() };
        if trainable.contains(name) {
            // Non-trivial γ and β, so their gradients are not special cases.
            let t = if name.contains("bn") && t.rank() == 1 {
                (&t + randn(&[t.elem_count()], name.len() as u64).affine(0.2, 0.0).unwrap()).unwrap()
            } else {
                t
            };
            names.push(name.clone());
            values.push(t);
        } else {
            rest.insert(name.clone(), t);
        }
    }
    (names, values, rest)
}

/// Train-mode loss of `graph` as a function of [input, trainable parameters…].
fn train_loss(
    graph: &Graph,
    names: &[String],
    rest: &BTreeMap<String, Tensor>,
    xs: &[Tensor],
) -> Result<Tensor> {
    let mut map = rest.clone();
    for (n, t) in names.iter().zip(&xs[1..]) {
        map.insert(n.clone(), t.clone());
    }
    let out = run(graph, &Weights::from_map(map), &xs[0], RunOptions { mode: Mode::Train, taps: false })?;
    project(&out.logits, 11)
}

#[test]
fn batchnorm_train_mode_gradients() {
    let mut g = GraphBuilder::new(Shape::new(3, 6, 6));
    let x = g.input();
    let x = g.conv("conv", x, 4, 3, 1, 1, false);
    g.bn("bn", x);
    let graph = g.finish();
    let (names, params, rest) = f64_weights(&graph, 1);
    let mut inputs = vec![randn(&[3, 3, 6, 6], 12)];
    inputs.extend(params);
    let f = |xs: &[Tensor]| train_loss(&graph, &names, &rest, xs);
    let worst = check(&f, &inputs, 60, "conv + BatchNorm (train)");
    println!("conv + BatchNorm train mode: worst relative error {worst:.2e}");
}

/// Whole networks: a few coordinates of the input and of parameters at the start, the middle
/// and the end, so every layer's backward sits between them.
fn check_network(arch: &str, input: Shape, batch: usize, pick: &[&str]) {
    let graph = find_arch(arch).unwrap().graph();
    let (names, params, rest) = f64_weights(&graph, 3);
    let mut all: BTreeMap<String, Tensor> = rest;
    let mut chosen = vec![];
    let mut inputs = vec![randn(&[batch, input.c, input.h, input.w], 13)];
    for (n, t) in names.iter().zip(params) {
        if pick.contains(&n.as_str()) {
            chosen.push(n.clone());
            inputs.push(t);
        } else {
            all.insert(n.clone(), t);
        }
    }
    assert_eq!(chosen.len(), pick.len(), "{arch}: every picked parameter exists");
    let f = |xs: &[Tensor]| train_loss(&graph, &chosen, &all, xs);
    let worst = check(&f, &inputs, 6, arch);
    println!("{arch}: worst relative error {worst:.2e}");
}

#[test]
fn cifar_resnet20_gradients_through_option_a_blocks() {
    check_network(
        "cifar-resnet20",
        Shape::new(3, 8, 8),
        2,
        &[
            "conv1.weight",
            "bn1.weight",
            "layer2.0.conv1.weight",
            "layer2.0.bn2.bias",
            "layer3.2.bn2.weight",
            "linear.weight",
        ],
    );
}

#[test]
fn resnet18_gradients_through_the_stem_max_pool() {
    check_network(
        "resnet18",
        Shape::new(3, 64, 64),
        2,
        &["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.bias"],
    );
}
