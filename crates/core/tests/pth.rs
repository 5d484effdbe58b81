//! Weights as PyTorch writes them: `.pth` files from `torch.save` (made by
//! tests/fixtures/make_pth_fixtures.py), recognised and loaded from their bytes.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use resnet_core::{Format, Model, ShortcutOption, WeightsError, WeightsSource};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shipped_resnet20() -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../www/weights/cifar10-resnet20.safetensors");
    std::fs::read(path).expect("the shipped weights")
}

/// Element i is ((i * 37) % 101) / 50 - 1, as in the fixture script.
fn ramp(shape: (usize, usize, usize, usize)) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n).map(|i| (((i * 37) % 101) as f64 / 50.0 - 1.0) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn logits(model: &Model, x: &Tensor) -> Vec<f32> {
    model.forward(x).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_torch_state_dict_gives_the_safetensors_logits() {
    let dev = Device::Cpu;
    let pth = fixture("resnet20.pth");
    let loaded = Model::load_recognised(&pth, &dev).unwrap();
    assert_eq!(loaded.model.arch.name, "cifar-resnet20");
    assert_eq!(loaded.shortcut, Some(ShortcutOption::A));
    assert_eq!(loaded.format, Format::Pth);
    let note = loaded.note.expect("option A cannot be told from the plain net");
    assert!(note.contains("--arch cifar-plain20"), "{note}");
    let reference = Model::load(loaded.model.arch, WeightsSource::Bytes(&shipped_resnet20()), &dev).unwrap();
    // Every tensor is bit for bit the same.
    for (name, t) in reference.weights.iter() {
        let got = loaded.model.weights.get(name).unwrap_or_else(|| panic!("{name} not loaded"));
        let diff = (got.to_dtype(candle_core::DType::F64).unwrap()
            - t.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
    let x = ramp((2, 3, 32, 32));
    assert_eq!(logits(&loaded.model, &x), logits(&reference, &x));
    // With the architecture given, the same file loads through the ordinary path.
    let given = Model::load(reference.arch, WeightsSource::Bytes(&pth), &dev).unwrap();
    assert_eq!(logits(&given, &x), logits(&reference, &x));
}

/// A DataParallel training checkpoint (`module.` names, the state dict under `state_dict`, an
/// epoch and optimizer state beside it): recognised, loaded, and its logits PyTorch's.
#[test]
fn a_checkpoint_with_module_prefixes_gives_torchs_logits() {
    let loaded = Model::load_recognised(&fixture("lenet5-checkpoint.pth"), &Device::Cpu).unwrap();
    assert_eq!(loaded.model.arch.name, "lenet5");
    assert!(loaded.note.is_none());
    let want: serde_json::Value =
        serde_json::from_slice(&fixture("lenet5-checkpoint.json")).expect("the fixture's JSON");
    let want: Vec<f32> =
        want["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let got = logits(&loaded.model, &ramp((1, 1, 32, 32)));
    assert_eq!(got.len(), 10);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5 * w.abs().max(1.0), "{got:?} vs PyTorch's {want:?}");
    }
}

#[test]
fn another_architectures_file_is_refused_with_every_difference() {
    let arch = resnet_core::find_arch("cifar-resnet32").unwrap();
    let err = Model::load(arch, WeightsSource::Bytes(&fixture("resnet20.pth")), &Device::Cpu).err().unwrap();
    let WeightsError::Mismatch(m) = &err else { panic!("{err}") };
    // ResNet-32 has 2 more blocks per stage, 6 blocks of 2 convs and 2 BatchNorms (4 tensors each).
    assert_eq!((m.missing.len(), m.unexpected.len(), m.wrong_shape.len()), (60, 0, 0), "{err}");
}

/// Truncations, garbage and flipped bytes of a real .pth: each an error that says what is
/// wrong, never a panic.
#[test]
fn broken_files_are_clear_errors() {
    let pth = fixture("resnet20.pth");
    let dev = Device::Cpu;
    for cut in [0, 3, 10, 100, 1000, pth.len() / 2, pth.len() - 100, pth.len() - 1] {
        let err = Model::load_recognised(&pth[..cut], &dev).err().expect("truncated");
        let msg = err.to_string();
        assert!(matches!(err, WeightsError::Format(_)), "cut at {cut}: {msg}");
        assert!(!msg.is_empty() && msg.len() < 400, "cut at {cut}: {msg}");
    }
    let err = Model::load_recognised(b"<html>404 Not Found</html>", &dev).err().unwrap();
    assert!(err.to_string().contains("not a weights file"), "{err}");
    let st = shipped_resnet20();
    let err = Model::load_recognised(&st[..st.len() / 2], &dev).err().unwrap();
    assert!(err.to_string().contains("safetensors"), "{err}");
    // Seeded byte flips anywhere: an error or (in tensor data) other numbers, never a panic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut b = pth.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly the pickle and the zip directories, where the structure is.
            let at = match next() % 3 {
                0 => (next() as usize) % b.len(),
                1 => (next() as usize) % 14_200,
                _ => b.len() - 1 - (next() as usize) % 6_000,
            };
            b[at] ^= 1 << (next() % 8);
        }
        let _ = Model::load_recognised(&b, &dev);
    }
}
