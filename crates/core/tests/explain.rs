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
