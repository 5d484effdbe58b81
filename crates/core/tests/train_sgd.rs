//! The optimiser against PyTorch's update rule worked by hand, the schedules, the
//! augmentation, and one training step's BatchNorm bookkeeping.

use candle_core::{DType, Device, Tensor, Var};
use resnet_core::spec::{GraphBuilder, Shape};
use resnet_core::train::{Augment, LrSchedule, Rng, Schedule, Sgd, SgdConfig, Trainer};
use resnet_core::{find_arch, Weights};

fn close(a: &[f32], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_matches_pytorch_by_hand() {
    // torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01), w = [1, -2]:
    // step 1, g = [0.5, 0.25]: d = g + 0.01·w = [0.51, 0.23]; v = d; w = [0.949, -2.023].
    // step 2, g = [-0.3, 0.1]: d = [-0.29051, 0.07977]; v = 0.9·[0.51, 0.23] + d
    //   = [0.16849, 0.28677]; w = [0.932151, -2.051677].
    let dev = Device::Cpu;
    let w = Var::new(&[1.0f32, -2.0], &dev).unwrap();
    let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, weight_decay: 0.01 });
    sgd.update("w", &w, &Tensor::new(&[0.5f32, 0.25], &dev).unwrap(), 0.1).unwrap();
    close(&w.as_tensor().to_vec1::<f32>().unwrap(), &[0.949, -2.023]);
    close(&sgd.state()["w"].to_vec1::<f32>().unwrap(), &[0.51, 0.23]);
    sgd.update("w", &w, &Tensor::new(&[-0.3f32, 0.1], &dev).unwrap(), 0.1).unwrap();
    close(&w.as_tensor().to_vec1::<f32>().unwrap(), &[0.932151, -2.051677]);
    close(&sgd.state()["w"].to_vec1::<f32>().unwrap(), &[0.16849, 0.28677]);

    // Without momentum and decay it is plain gradient descent.
    let w = Var::new(&[1.0f32], &dev).unwrap();
    let mut plain = Sgd::new(SgdConfig { momentum: 0.0, weight_decay: 0.0 });
    plain.update("w", &w, &Tensor::new(&[2.0f32], &dev).unwrap(), 0.5).unwrap();
    close(&w.as_tensor().to_vec1::<f32>().unwrap(), &[0.0]);
}

#[test]
fn schedules() {
    let s = |schedule, warmup_epochs| LrSchedule {
        base_lr: 0.1,
        schedule,
        warmup_epochs,
        epochs: 8,
        batches_per_epoch: 10,
    };
    let paper = s(Schedule::Paper, 0.0);
    let at = |s: &LrSchedule, e, b| (s.lr(e, b) * 1e6).round() / 1e6;
    assert_eq!(at(&paper, 0, 0), 0.1);
    assert_eq!(at(&paper, 3, 9), 0.1);
    assert_eq!(at(&paper, 4, 0), 0.01); // 50 %
    assert_eq!(at(&paper, 5, 9), 0.01);
    assert_eq!(at(&paper, 6, 0), 0.001); // 75 %
    assert_eq!(at(&paper, 7, 9), 0.001);
    let cosine = s(Schedule::Cosine, 0.0);
    assert_eq!(at(&cosine, 0, 0), 0.1);
    assert_eq!(at(&cosine, 4, 0), 0.05);
    assert!(cosine.lr(7, 9) < 0.001 && cosine.lr(7, 9) > 0.0);
    let step: Schedule = "step:3,6".parse().unwrap();
    assert_eq!(step, Schedule::Step(vec![3, 6]));
    let step = s(step, 0.0);
    assert_eq!(at(&step, 2, 9), 0.1);
    assert_eq!(at(&step, 3, 0), 0.01);
    assert_eq!(at(&step, 6, 0), 0.001);
    // Warm-up: a tenth of the rate for the first 1.5 epochs (the paper's 0.01 for ResNet-110).
    let warm = s(Schedule::Paper, 1.5);
    assert_eq!(at(&warm, 0, 0), 0.01);
    assert_eq!(at(&warm, 1, 4), 0.01);
    assert_eq!(at(&warm, 1, 5), 0.1);
    for bad in ["steps", "step:", "step:a,3", "step:0", "linear"] {
        assert!(bad.parse::<Schedule>().is_err(), "{bad}");
    }
}

#[test]
fn augmentation_pads_crops_and_flips() {
    // A 4×4 image, 1 channel, values 1..=16; pad 2 → crops of 4×4 shifted by −2..=2.
    let src: Vec<u8> = (1..=16).collect();
    let aug = Augment { height: 4, width: 4, channels: 1, crop_h: 4, crop_w: 4, pad: 2, flip: true };
    let mut seen = std::collections::HashSet::new();
    let mut rng = Rng::new(1);
    for _ in 0..2000 {
        let mut dst = vec![0u8; 16];
        aug.apply(&src, &mut dst, &mut rng);
        // Every output is a shifted (and perhaps mirrored) copy: reconstruct and check.
        let found = (-2..=2isize)
            .flat_map(|oy| (-2..=2isize).flat_map(move |ox| [(oy, ox, false), (oy, ox, true)]))
            .find(|&(oy, ox, flip)| {
                (0..4).all(|y| {
                    (0..4).all(|x| {
                        let xx = if flip { 3 - x } else { x };
                        let (sy, sx) = (oy + y as isize, ox + xx as isize);
                        let v = if (0..4).contains(&sy) && (0..4).contains(&sx) {
                            src[(sy * 4 + sx) as usize]
                        } else {
                            0
                        };
                        dst[(y * 4 + x) as usize] == v
                    })
                })
            });
        seen.insert(found.expect("a padded crop, maybe flipped"));
    }
    // All 25 offsets × 2 flips occur.
    assert_eq!(seen.len(), 50);
    // RGB pixels move as a whole, and the batch version is reproducible from its seed.
    let rgb: Vec<u8> = (0..3 * 8 * 8 * 3).map(|i| (i % 251) as u8).collect();
    let aug = Augment::paper(8, 3);
    let a = aug.apply_batch(&rgb, 42, 3, 100);
    assert_eq!(a, aug.apply_batch(&rgb, 42, 3, 100));
    assert_ne!(a, aug.apply_batch(&rgb, 42, 4, 100));
    assert_eq!(a.len(), rgb.len());
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let mut a: Vec<usize> = (0..100).collect();
    Rng::derived(5, 1, 0).shuffle(&mut a);
    let mut b: Vec<usize> = (0..100).collect();
    Rng::derived(5, 1, 0).shuffle(&mut b);
    assert_eq!(a, b);
    assert_ne!(a, (0..100).collect::<Vec<_>>());
    a.sort();
    assert_eq!(a, (0..100).collect::<Vec<_>>());
}

#[test]
fn batch_tensor_normalises_like_the_cpu_preprocessing() {
    let pre = find_arch("cifar-resnet20").unwrap().preprocess();
    let px: Vec<u8> = (0..2 * 4 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let x = pre.batch_tensor(&px, 4, &Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[2, 3, 4, 4]);
    let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for n in 0..2 {
        for c in 0..3 {
            for i in 0..16 {
                let want = (px[(n * 16 + i) * 3 + c] as f32 / 255.0 - pre.mean[c]) / pre.std[c];
                assert_eq!(v[(n * 3 + c) * 16 + i], want);
            }
        }
    }
}

#[test]
fn a_step_updates_batchnorm_running_statistics_as_pytorch() {
    let mut g = GraphBuilder::new(Shape::new(1, 2, 2));
    let x = g.input();
    let x = g.bn("bn", x);
    let x = g.flatten("flatten", x, 4);
    g.linear("fc", x, 2);
    let graph = g.finish();
    let dev = Device::Cpu;
    let w = Weights::random(&graph, 0, &dev).unwrap();
    let mut t = Trainer::new(graph, &w, SgdConfig::default(), &dev).unwrap();
    // 2 samples × 4 pixels: mean 2.25, squared deviations sum to 59.5: unbiased var 8.5.
    let x = Tensor::new(&[1f32, 2., 3., 4., 5., 6., 0., -3.], &dev).unwrap().reshape((2, 1, 2, 2)).unwrap();
    let y = Tensor::new(&[0u32, 1], &dev).unwrap();
    let stats = t.step(&x, &y, 0.1).unwrap();
    assert!(stats.loss.is_finite() && stats.samples == 2);
    let w = t.state_dict().unwrap();
    let get = |n: &str| {
        w.get(n).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
    };
    assert!((get("bn.running_mean") - 0.225).abs() < 1e-6);
    assert!((get("bn.running_var") - (0.9 + 0.85)).abs() < 1e-6);
    assert_eq!(w.get("bn.num_batches_tracked").unwrap().to_scalar::<i64>().unwrap(), 1);
    // The trainable parameters moved; a diverged step (NaN input) changes nothing.
    let before = t.state_dict().unwrap().get("fc.weight").unwrap().to_vec2::<f32>().unwrap();
    let nan = Tensor::new(&[f32::NAN; 8], &dev).unwrap().reshape((2, 1, 2, 2)).unwrap();
    assert!(!t.step(&nan, &y, 0.1).unwrap().loss.is_finite());
    assert_eq!(t.state_dict().unwrap().get("fc.weight").unwrap().to_vec2::<f32>().unwrap(), before);
    assert_eq!(t.state_dict().unwrap().get("bn.num_batches_tracked").unwrap().to_scalar::<i64>().unwrap(), 1);
}
