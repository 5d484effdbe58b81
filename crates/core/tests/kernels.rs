//! The inference fast paths (folded BatchNorm, `kernels::conv`) against the plain Candle forward
//! on every network of the zoo: logits of `forward` and of `forward_taps` within 1e-4.

mod common;

use candle_core::{Device, Tensor};
use resnet_core::{Model, ZOO};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn fast_paths_equal_reference_on_the_zoo() {
    let dev = Device::Cpu;
    for arch in ZOO {
        let mut model = Model::random(arch, 3, &dev).unwrap();
        common::vary_running_stats(&mut model, &dev);
        let s = model.graph.input;
        let x = Tensor::randn(0f32, 1.0, (1, s.c, s.h, s.w), &dev).unwrap();
        let reference = model.forward_reference(&x).unwrap();
        let scale =
            reference.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        // Absolute 1e-4 on logits of order 1; relative for random nets whose logits are larger.
        let tol = 1e-4 * scale.max(1.0);
        let fast = max_diff(&model.forward(&x).unwrap(), &reference);
        assert!(fast <= tol, "{}: forward differs by {fast} (tolerance {tol})", arch.name);
        let taps = max_diff(&model.forward_taps(&x).unwrap().0, &reference);
        assert!(taps <= tol, "{}: forward_taps differs by {taps} (tolerance {tol})", arch.name);
    }
}

/// A batch runs image by image, whole images to each thread where there are at least as many
/// as threads, each image's layers split among them where there are fewer: the logits are the
/// reference's either way, and each image's are what it gets alone.
#[test]
fn batches_equal_their_images_on_any_threads() {
    let dev = Device::Cpu;
    for (name, batch, threads) in
        [("cifar-resnet20", 5, 2), ("cifar-resnet20", 2, 3), ("resnet18", 3, 2), ("resnet18", 1, 2)]
    {
        let model = Model::random(resnet_core::find_arch(name).unwrap(), 11, &dev).unwrap();
        let s = model.graph.input;
        let x = Tensor::randn(0f32, 1.0, (batch, s.c, s.h, s.w), &dev).unwrap();
        let reference = model.forward_reference(&x).unwrap();
        let scale =
            reference.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let tol = 1e-4 * scale.max(1.0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let logits = pool.install(|| model.forward(&x)).unwrap();
        assert_eq!(logits.dims(), reference.dims());
        let off = max_diff(&logits, &reference);
        assert!(off <= tol, "{name} ×{batch} on {threads} threads: off the reference by {off}");
        for i in 0..batch {
            let alone = model.forward(&x.narrow(0, i, 1).unwrap()).unwrap();
            let off = max_diff(&logits.narrow(0, i, 1).unwrap(), &alone);
            assert!(off <= tol, "{name} image {i} of {batch}: off its logits alone by {off}");
        }
    }
}

/// The timed forward (the benchmark's profile) computes the same logits and gives every node
/// the time between its clock readings: with a clock that advances 1 ms per reading, each node
/// after the input takes exactly 1 ms.
#[test]
fn timed_forward_times_every_node() {
    let dev = Device::Cpu;
    let model = Model::random(resnet_core::find_arch("cifar-resnet20").unwrap(), 5, &dev).unwrap();
    let s = model.graph.input;
    let x = Tensor::randn(0f32, 1.0, (1, s.c, s.h, s.w), &dev).unwrap();
    let readings = std::cell::Cell::new(0u32);
    let now = || {
        readings.set(readings.get() + 1);
        readings.get() as f64
    };
    let (logits, ms) = model.forward_timed(&x, &now).unwrap();
    assert_eq!(max_diff(&logits, &model.forward(&x).unwrap()), 0.0);
    let n = model.graph.nodes.len();
    assert_eq!(ms.len(), n);
    assert_eq!(ms[0], 0.0, "the input takes no time");
    assert!(ms[1..].iter().all(|&t| t == 1.0), "one clock step per node: {ms:?}");
    assert_eq!(readings.get() as usize, n, "one reading before the first node, one after each");
}
