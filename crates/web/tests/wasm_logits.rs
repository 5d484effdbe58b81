//! The same logits in WebAssembly as natively: ResNet-20 on a fixed CIFAR-10 image, against the
//! native logits in `fixtures/` (which `native.rs` checks against the native build on every
//! run). Runs in Node under wasm-bindgen-test (scripts/test.d/20-web).
#![cfg(target_arch = "wasm32")]

use resnet_core::Image;
use resnet_web::engine::Engine;
use wasm_bindgen_test::wasm_bindgen_test;

const WEIGHTS: &[u8] = include_bytes!("../../../www/weights/cifar10-resnet20.safetensors");
const PIXELS: &[u8] = include_bytes!("fixtures/cat-0.rgb");
const LOGITS: &str = include_str!("fixtures/cat-0.resnet20-logits.txt");

#[wasm_bindgen_test]
fn resnet20_logits_match_native() {
    let mut engine = Engine::load("cifar-resnet20", Some(WEIGHTS), 0).unwrap();
    let img = Image { width: 32, height: 32, channels: 3, data: PIXELS };
    let r = engine.run(&img, 1, &|| 0.0).unwrap();
    let expected: Vec<f32> = LOGITS.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(r.logits.len(), expected.len());
    let diff = r.logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    wasm_bindgen_test::console_log!("max |wasm − native| over {} logits: {diff:e}", expected.len());
    assert!(diff <= 1e-4, "wasm logits differ from native by {diff}: {:?} vs {expected:?}", r.logits);
    // The taps the page shows come from the same run.
    let maps = engine.maps(&[engine.graph().node("layer3.2.relu").unwrap()]).unwrap();
    assert_eq!(maps[0].shape, [64, 8, 8]);
}
