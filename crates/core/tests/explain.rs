//! Class activation maps against PyTorch: Grad-CAM and Grad-CAM++ of the shipped ResNet-20 on
//! two samples, at three layers, for the top and the second class, as
//! `tests/fixtures/make_cam_fixture.py` computed them with torch (pytorch-grad-cam's
//! definitions). Correlation ≥ 0.999 and values within 1e-3 (Grad-CAM++: 5e-3) of the largest.

use std::path::Path;

use candle_core::Device;
use resnet_core::explain::CamMethod;
use resnet_core::{find_arch, Model, WeightsSource};
use serde_json::Value;

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) =
        (a.iter().map(|&x| x as f64).sum::<f64>() / n, b.iter().map(|&x| x as f64).sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - ma) * (y as f64 - mb)).sum();
    let va: f64 = a.iter().map(|&x| (x as f64 - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|&y| (y as f64 - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-30)
}

#[test]
fn cams_equal_pytorch_on_the_shipped_resnet20() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/cam-resnet20.json")).unwrap(),
    )
    .unwrap();
    let arch = find_arch("cifar-resnet20").unwrap();
    let weights = root.join("../..").join(fixture["weights"].as_str().unwrap());
    let model = Model::load(arch, WeightsSource::File(&weights), &Device::Cpu).unwrap();
    let prep = arch.preprocess();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let sample = &fixture["samples"][case["sample"].as_str().unwrap()];
        let pixels: Vec<u8> =
            sample["pixels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        let x = prep.batch_tensor(&pixels, 32, &Device::Cpu).unwrap();
        // The same input gives the same logits as torch.
        let logits: Vec<f32> = model.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in logits.iter().zip(sample["logits"].as_array().unwrap()) {
            assert!((a - b.as_f64().unwrap() as f32).abs() < 1e-3, "{logits:?} vs {}", sample["logits"]);
        }
        let layer = model.graph.node(case["layer"].as_str().unwrap()).unwrap();
        let class = case["class"].as_u64().unwrap() as usize;
        for method in [CamMethod::GradCam, CamMethod::GradCamPlusPlus] {
            let want: Vec<f32> = case[method.name()]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
                .collect();
            let cam = model.cam(&x, layer, Some(class), method).unwrap();
            assert_eq!((cam.class, cam.values.len()), (class, want.len()));
            let what = format!("{} {} class {class} {}", case["sample"], case["layer"], method.name());
            let r = correlation(&cam.values, &want);
            assert!(r >= 0.999, "{what}: correlation {r}");
            let peak = want.iter().copied().fold(0f32, f32::max);
            let diff = cam.values.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // Grad-CAM++'s g³ terms amplify float32 rounding (numpy's as much as ours).
            let tol = if method == CamMethod::GradCam { 1e-3 } else { 5e-3 };
            assert!(diff <= tol * peak.max(1e-6), "{what}: max difference {diff}, peak {peak}");
        }
    }
}

#[test]
fn cams_of_every_method_and_bad_requests() {
    let arch = find_arch("cifar-resnet20").unwrap();
    let model = Model::random(arch, 3, &Device::Cpu).unwrap();
    let x = candle_core::Tensor::randn(0f32, 1.0, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let layer = model.graph.default_cam_layer().unwrap();
    assert_eq!(model.graph.nodes[layer].name, "layer3.2.relu");
    for method in CamMethod::ALL {
        let cam = model.cam(&x, layer, None, method).unwrap();
        assert_eq!((cam.height, cam.width), (8, 8));
        assert!(cam.values.iter().all(|&v| v >= 0.0 && v.is_finite()), "{method:?}");
    }
    let linear = model.graph.node("linear").unwrap();
    assert!(model
        .cam(&x, linear, None, CamMethod::GradCam)
        .unwrap_err()
        .to_string()
        .contains("no spatial map"));
    assert!(model
        .cam(&x, layer, Some(10), CamMethod::GradCam)
        .unwrap_err()
        .to_string()
        .contains("10 classes"));
    let two = candle_core::Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(model.cam(&two, layer, None, CamMethod::GradCam).is_err());
}

/// The residual stream of the shipped ResNet-20: one measurement per block (9), finite, the
/// branch smaller than the stream it adds to in most blocks; a plain net gets ‖H(x) − x‖ / ‖x‖.
#[test]
fn residual_stream_per_block() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let arch = find_arch("cifar-resnet20").unwrap();
    let weights = root.join("www/weights/cifar10-resnet20.safetensors");
    let model = Model::load(arch, WeightsSource::File(&weights), &Device::Cpu).unwrap();
    let img = sample_pixels("cat-0.jpg");
    let x = arch.preprocess().batch_tensor(&img, 32, &Device::Cpu).unwrap();
    let (_, taps) = model.forward_taps(&x).unwrap();
    let stream = resnet_core::explain::residual_stream(&model.graph, &taps).unwrap();
    assert_eq!(stream.len(), 9);
    assert_eq!(stream[3].block, "layer2.0");
    for b in &stream {
        let (r, c) = (b.ratio.unwrap(), b.cosine.unwrap());
        assert!(r.is_finite() && r > 0.0 && (-1.0..=1.0).contains(&c) && b.response_std > 0.0, "{b:?}");
    }
    assert!(stream.iter().filter(|b| b.ratio.unwrap() < 1.0).count() >= 5, "{stream:?}");
    // By hand for one block: ‖F‖ / ‖x‖ from the taps themselves.
    let g = &model.graph;
    let v = |n: &str| taps[g.node(n).unwrap()].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (f, s) = (v("layer1.1.bn2"), v("layer1.0.relu"));
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((stream[1].ratio.unwrap() - norm(&f) / norm(&s)).abs() < 1e-4);

    let plain = Model::random(find_arch("cifar-plain20").unwrap(), 1, &Device::Cpu).unwrap();
    let (_, taps) = plain.forward_taps(&x).unwrap();
    let stream = resnet_core::explain::residual_stream(&plain.graph, &taps).unwrap();
    assert_eq!(stream.len(), 9);
    assert!(stream.iter().all(|b| b.cosine.is_none()));
    assert!(stream[0].ratio.is_some() && stream[3].ratio.is_none(), "shapes change at layer2.0");
}

/// The RGB8 pixels of a 32×32 sample, as the fixture holds them.
fn sample_pixels(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cam-resnet20.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fixture["samples"][name]["pixels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect()
}
