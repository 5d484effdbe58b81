//! The engine the worker runs, natively: the wasm test's fixture is the native answer, every
//! shipped sample is classified as its class (the e2e test relies on it), and the maps the page
//! asks for have the stage's shape.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};

use resnet_core::arch::CIFAR10_CLASSES;
use resnet_core::Image;
use resnet_web::engine::Engine;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn engine(arch: &str, file: &str) -> Engine {
    let bytes = std::fs::read(repo().join("www/weights").join(file)).unwrap();
    Engine::load(arch, Some(&bytes), 0).unwrap()
}

#[test]
fn fixture_logits_are_the_native_ones() {
    let mut e = engine("cifar-resnet20", "cifar10-resnet20.safetensors");
    let pixels = std::fs::read(repo().join("crates/web/tests/fixtures/cat-0.rgb")).unwrap();
    let img = Image { width: 32, height: 32, channels: 3, data: &pixels };
    let r = e.run(&img, 1, &|| 0.0).unwrap();
    let text =
        std::fs::read_to_string(repo().join("crates/web/tests/fixtures/cat-0.resnet20-logits.txt")).unwrap();
    let expected: Vec<f32> = text.lines().map(|l| l.parse().unwrap()).collect();
    // zip stops at the shorter side: without these an empty or truncated fixture would pass.
    assert_eq!(expected.len(), CIFAR10_CLASSES.len(), "the fixture holds one logit per class");
    assert_eq!(r.logits.len(), expected.len(), "{:?} vs {expected:?}", r.logits);
    // As close as the wasm test asks: the fixture came from one instruction set, and fused
    // multiply-adds (AVX2, AVX-512, relaxed SIMD) round differently from a mul and an add.
    for (a, b) in r.logits.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-4, "{:?} vs {expected:?}", r.logits);
    }
    // The fixture is the first cat sample, decoded.
    let jpeg = image::open(repo().join("www/samples/cat-0.jpg")).unwrap().to_rgb8();
    assert_eq!(jpeg.as_raw(), &pixels);
}

#[test]
fn every_sample_is_classified_as_its_class() {
    for (arch, file) in [
        ("cifar-resnet20", "cifar10-resnet20.safetensors"),
        ("cifar-resnet56", "cifar10-resnet56.safetensors"),
    ] {
        let mut e = engine(arch, file);
        for (class, name) in CIFAR10_CLASSES.iter().enumerate() {
            for i in 0..3 {
                let path = repo().join(format!("www/samples/{name}-{i}.jpg"));
                let rgb = image::open(&path).unwrap().to_rgb8();
                let img = Image { width: 32, height: 32, channels: 3, data: rgb.as_raw() };
                let r = e.run(&img, 0, &|| 0.0).unwrap();
                assert_eq!(resnet_web::viz::top_k(&r.probs, 1)[0].0, class, "{arch} {}", path.display());
            }
        }
    }
}

#[test]
fn maps_have_the_stage_shapes_and_filters_the_conv1_shape() {
    let mut e = engine("cifar-resnet20", "cifar10-resnet20.safetensors");
    assert!(e.maps(&[1]).is_err(), "no maps before a run");
    let img = Image { width: 40, height: 30, channels: 4, data: &[128; 40 * 30 * 4] };
    let r = e.run(&img, 7, &|| 0.0).unwrap();
    assert_eq!((r.job, r.side, r.view.len()), (7, 32, 32 * 32 * 3));
    assert!((r.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let g = e.graph();
    let nodes: Vec<usize> = ["layer1.2.relu", "layer2.2.relu", "layer3.2.relu", "linear"]
        .iter()
        .map(|n| g.node(n).unwrap())
        .collect();
    let shapes: Vec<[usize; 3]> = e.maps(&nodes).unwrap().iter().map(|m| m.shape).collect();
    assert_eq!(shapes, vec![[16, 32, 32], [32, 16, 16], [64, 8, 8], [10, 1, 1]]);
    let f = e.filters().unwrap().unwrap();
    assert_eq!(f.shape, [16, 3, 3, 3]);
    assert_eq!(f.data.len(), 16 * 27);
}

#[test]
fn untrained_nets_are_deterministic_and_bad_weights_are_errors() {
    let a = Engine::load("lenet5", None, 0).unwrap().filters().unwrap().unwrap();
    let b = Engine::load("lenet5", None, 0).unwrap().filters().unwrap().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.shape, [6, 1, 5, 5]);
    let err = Engine::load("cifar-resnet20", Some(b"not safetensors"), 0).err().unwrap();
    assert!(err.contains("safetensors"), "{err}");
    assert!(Engine::load("no-such-net", None, 0).is_err());
}

/// The worker's Grad-CAM is the core's, on the last run's taps: the map of the default layer
/// for the top class, another class on request, and an error before any run.
#[test]
fn cams_come_from_the_last_run() {
    use resnet_core::explain::CamMethod;
    let mut e = engine("cifar-resnet20", "cifar10-resnet20.safetensors");
    let layer = e.graph().default_cam_layer().unwrap();
    assert!(e.cam(layer, None, CamMethod::GradCam, &|| 0.0).is_err(), "no image yet");
    let pixels = std::fs::read(repo().join("crates/web/tests/fixtures/cat-0.rgb")).unwrap();
    let img = Image { width: 32, height: 32, channels: 3, data: &pixels };
    let r = e.run(&img, 1, &|| 0.0).unwrap();
    let top = resnet_web::viz::top_k(&r.probs, 1)[0].0;
    let cam = e.cam(layer, None, CamMethod::GradCam, &|| 0.0).unwrap();
    assert_eq!((cam.class, cam.height, cam.width, cam.values.len()), (top, 8, 8, 64));
    let other = e.cam(layer, Some(8), CamMethod::GradCam, &|| 0.0).unwrap();
    assert_eq!(other.class, 8);
    assert_ne!(other.values, cam.values, "another class, another map");
}

/// What the residual-stream panel and the diagram draw (9 blocks, 19 3×3 responses for
/// ResNet-20), and the effective receptive field the page asks for on a click: at the input's
/// resolution, inside the hovered box.
#[test]
fn run_measures_the_stream_and_erf_answers_a_unit() {
    let mut e = engine("cifar-resnet20", "cifar10-resnet20.safetensors");
    assert!(e.erf(5, 0, 0, 0, &|| 0.0).is_err(), "no ERF before a run");
    let rgb = image::open(repo().join("www/samples/ship-0.jpg")).unwrap().to_rgb8();
    let img = Image { width: 32, height: 32, channels: 3, data: rgb.as_raw() };
    let r = e.run(&img, 1, &|| 0.0).unwrap();
    assert_eq!(r.blocks.len(), 9);
    assert_eq!(r.responses.len(), 19);
    let g = e.graph();
    let layer = g.node("layer1.0.bn1").unwrap(); // before its ReLU: every unit has a gradient
    let (erf, _) = e.erf(layer, 2, 0, 31, &|| 0.0).unwrap();
    assert_eq!((erf.height, erf.width, erf.rf.size), (32, 32, 5));
    assert_eq!((erf.rf.y0, erf.rf.y1, erf.rf.x0, erf.rf.x1), (0, 3, 29, 32));
    let outside: f32 =
        erf.values.iter().enumerate().filter(|(i, _)| i / 32 >= 3 || i % 32 < 29).map(|(_, v)| v).sum();
    assert_eq!(outside, 0.0);
    assert!(erf.values.iter().sum::<f32>() > 0.0);
    assert!(e.erf(layer, 16, 0, 0, &|| 0.0).is_err(), "layer1 has 16 channels");
    assert!(e.erf(10_000, 0, 0, 0, &|| 0.0).is_err());
}
