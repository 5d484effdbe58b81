//! The worker's side of a user's weights file, natively (the same code runs in the browser):
//! recognised from its bytes, built, and its filters the shipped weights' own.

use std::path::Path;

use resnet_web::engine::Engine;

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)).expect(rel)
}

#[test]
fn a_pth_is_recognised_and_runs_the_shipped_weights() {
    let pth = read("crates/core/tests/fixtures/resnet20.pth");
    let (file, recognised) = Engine::recognise(&pth).expect("recognised");
    assert_eq!(recognised.arch.name, "cifar-resnet20");
    assert!(recognised.note.as_deref().is_some_and(|n| n.contains("cifar-plain20")));
    let engine = Engine::from_recognised(&file, recognised).expect("built");
    let shipped = read("www/weights/cifar10-resnet20.safetensors");
    let reference = Engine::load("cifar-resnet20", Some(&shipped), 0).expect("shipped weights");
    let (a, b) = (engine.filters().unwrap().unwrap(), reference.filters().unwrap().unwrap());
    assert_eq!((a.node, a.shape), (b.node, b.shape));
    assert_eq!(a.data, b.data, "conv1's filters are the file's");
}

#[test]
fn bad_files_are_errors_before_any_tensor_is_made() {
    let pth = read("crates/core/tests/fixtures/resnet20.pth");
    for bytes in [&pth[..pth.len() / 2], &pth[..10], b"<html>not weights</html>".as_slice(), &[]] {
        let err = Engine::recognise(bytes).expect_err("an error");
        assert!(!err.is_empty() && !err.contains("panicked"), "{err}");
    }
}
