//! Weights as PyTorch users hold them, through the binary: `.pth` files from `torch.save`
//! without `--arch` (the architecture recognised and named), against the safetensors file and
//! against torchvision itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet")).args(args).output().expect("the binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn core_fixture(name: &str) -> String {
    root().join("crates/core/tests/fixtures").join(name).display().to_string()
}

fn sample(name: &str) -> String {
    root().join("www/samples").join(name).display().to_string()
}

/// A command that must succeed: its stdout as JSON (with `--json`) and its stderr.
fn run_ok(args: &[&str]) -> (Value, String) {
    let o = resnet(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?} failed: {err}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let json = match args.contains(&"--json") {
        true => serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}")),
        false => Value::String(out),
    };
    (json, err)
}

fn logits(j: &Value) -> Vec<f64> {
    j["results"][0]["logits"].as_array().expect("logits").iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn a_pth_without_arch_is_recognised_in_every_command() {
    let pth = core_fixture("resnet20.pth");
    let cat = sample("cat-0.jpg");
    let (text, err) = run_ok(&["predict", "--weights", &pth, &cat]);
    assert!(
        err.contains("arch: cifar-resnet20 (shortcut option A) (recognised from the PyTorch .pth file"),
        "{err}"
    );
    assert!(err.contains("pass --arch cifar-plain20"), "{err}");
    assert!(text.as_str().unwrap().contains("1. cat"), "{text}");

    let (j, err) = run_ok(&["predict", "--weights", &pth, "--json", &cat]);
    assert_eq!(j["arch"], "cifar-resnet20");
    assert!(!err.contains("arch: "), "JSON mode names the arch in the JSON: {err}");
    let shipped = root().join("www/weights/cifar10-resnet20.safetensors").display().to_string();
    let (want, _) = run_ok(&["predict", "--arch", "cifar-resnet20", "--weights", &shipped, "--json", &cat]);
    assert_eq!(logits(&j), logits(&want), "the .pth and the safetensors file give the same logits");
    let (st, err) = run_ok(&["predict", "--weights", &shipped, "--json", &cat]);
    assert_eq!(logits(&st), logits(&want));
    assert!(err.contains("note: "), "{err}");

    let (j, _) = run_ok(&["explain", "--weights", &pth, "--json", &cat]);
    assert_eq!(j["arch"], "cifar-resnet20");
    let (j, _) = run_ok(&["stream", "--weights", &pth, "--json", &cat]);
    assert_eq!(j["arch"], "cifar-resnet20");
    let data = std::env::temp_dir().join(format!("resnet-weights-test-{}", std::process::id()));
    for class in ["cat", "ship"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        std::fs::copy(sample(&format!("{class}-0.jpg")), data.join(class).join("0.jpg")).unwrap();
    }
    let (j, err) = run_ok(&["eval", "--weights", &pth, "--data", &data.display().to_string(), "--json"]);
    assert_eq!(j["arch"], "cifar-resnet20", "{err}");
    let _ = std::fs::remove_dir_all(&data);

    let (j, _) = run_ok(&["predict", "--weights", &core_fixture("lenet5-checkpoint.pth"), "--json", &cat]);
    assert_eq!(j["arch"], "lenet5");
}

/// Must fail with one `error: weights FILE: …` line first, no panic, nothing on stdout.
fn fails(args: &[&str], needle: &str) -> String {
    let o = resnet(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}");
    assert!(err.starts_with("error: weights "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(err.lines().next().unwrap().contains(needle), "{args:?}: '{needle}' not in {err}");
    err
}

#[test]
fn bad_weights_files_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("resnet-bad-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pth = std::fs::read(core_fixture("resnet20.pth")).unwrap();
    let cat = sample("cat-0.jpg");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let cut = write("cut.pth", &pth[..pth.len() / 2]);
    fails(&["predict", "--weights", &cut, &cat], "zip archive cannot be read");
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", &cut, &cat], "zip archive cannot be read");
    let garbage = write("garbage.pth", b"this is not a weights file at all");
    fails(&["predict", "--weights", &garbage, &cat], "not a weights file");
    let empty = write("empty.safetensors", b"");
    fails(&["stream", "--weights", &empty, &cat], "empty");
    // Another architecture: named with its differences; with --arch, every one of them.
    let err = fails(
        &["predict", "--arch", "cifar-resnet32", "--weights", &core_fixture("resnet20.pth"), &cat],
        "do not fit",
    );
    assert!(err.contains("60 missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn python() -> Option<PathBuf> {
    let py = root().join("bench/.venv/bin/python");
    match py.exists() {
        true => Some(py),
        false => {
            eprintln!("SKIPPED: no torch (bench/.venv) to make torchvision's files with");
            None
        }
    }
}

/// torchvision's networks saved with torch.save: `resnet predict` without `--arch` names the
/// architecture and gives torchvision's logits (its eval transform) to 2e-3 of their range.
#[test]
fn torchvision_state_dicts_give_torchvisions_logits() {
    let Some(py) = python() else { return };
    let has_torchvision = Command::new(&py)
        .env("LD_LIBRARY_PATH", root().join("bench/.venv/cuda-stubs"))
        .args(["-c", "import torchvision"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torchvision {
        eprintln!("SKIPPED: bench/.venv has torch but no torchvision to make torchvision's files with");
        return;
    }
    let out = std::env::temp_dir().join(format!("resnet-torchvision-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let script = root().join("crates/cli/tests/fixtures/make_torchvision_check.py");
    // RESNET_TORCHVISION_ARCHS=resnet18,resnet152 to choose others.
    let archs = std::env::var("RESNET_TORCHVISION_ARCHS").unwrap_or("resnet18,resnet50,vgg16".into());
    for arch in archs.split(',') {
        let made = Command::new(&py)
            .env("LD_LIBRARY_PATH", root().join("bench/.venv/cuda-stubs"))
            .arg(&script)
            .arg(&out)
            .arg(arch)
            .arg(sample("dog-0.jpg"))
            .output()
            .expect("python runs");
        assert!(made.status.success(), "{arch}: {}", String::from_utf8_lossy(&made.stderr));
        let pth = out.join(format!("{arch}.pth")).display().to_string();
        let png = out.join(format!("{arch}-input.png")).display().to_string();
        let (j, err) = run_ok(&["predict", "--weights", &pth, "--json", &png]);
        assert_eq!(j["arch"], arch, "{err}");
        let want: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{arch}.json"))).unwrap()).unwrap();
        let want: Vec<f64> = want["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = logits(&j);
        let range = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let diff = got.iter().zip(&want).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{arch}: max |Δlogit| {diff:.2e} of max |logit| {range:.3} ({:.2e})", diff / range);
        assert!(diff < 2e-3 * range, "{arch}: max |Δlogit| {diff} vs max |logit| {range}");
        let top = j["results"][0]["top"][0].clone();
        let best = (0..want.len()).max_by(|&a, &b| want[a].total_cmp(&want[b])).unwrap();
        assert_eq!(top["index"], best, "{arch}: top-1");
        assert_eq!(top["label"], resnet_core::arch::imagenet_classes()[best], "ImageNet's names");
        let _ = std::fs::remove_file(&pth);
    }
    let _ = std::fs::remove_dir_all(&out);
}
