//! The `resnet` binary end to end: layer tables against the published numbers, predictions,
//! accuracy on the shared CIFAR-10 test set, and a clean error for every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use resnet_core::{find_arch, Model, Weights};
use serde_json::Value;

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet")).args(args).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed and returns its JSON.
fn json(args: &[&str]) -> Value {
    let o = resnet(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {}", stdout(&o)))
}

/// Runs a command that must fail cleanly: non-zero exit, `error: …` on stderr (its first line
/// naming `needle`), nothing on stdout, no panic.
fn fails(args: &[&str], needle: &str) -> String {
    let o = resnet(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
    assert!(err.starts_with("error: "), "{args:?}: stderr is not one error line: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?} panicked: {err}");
    let first = err.lines().next().unwrap();
    assert!(first.contains(needle), "{args:?}: '{needle}' not in the first line: {err}");
    assert!(o.stdout.is_empty(), "{args:?} printed: {}", stdout(&o));
    err
}

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if p.join("weights").is_dir() && p.join("datasets/cifar10/test").is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: ../shared (weights, CIFAR-10 test set) is not beside the repository");
        None
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Random weights for `arch`, saved with `Weights::save`.
fn random_weights(arch: &str, seed: u64, dir: &Path) -> PathBuf {
    let model = Model::random(find_arch(arch).unwrap(), seed, &Device::Cpu).unwrap();
    let path = dir.join(format!("{arch}-{seed}.safetensors"));
    model.weights.save(&path, None).unwrap();
    path
}

/// A 48×40 RGB test picture with some structure.
fn picture(path: &Path) {
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x + y) * 3) as u8])
    });
    img.save(path).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn summary_totals_are_the_published_numbers() {
    for (arch, params, macs) in [
        ("resnet50", 25_557_032u64, 4_089_184_256u64),
        ("resnet18", 11_689_512, 1_814_073_344),
        ("cifar-resnet20", 269_722, 40_551_040),
        ("vgg19", 143_667_240, 19_632_062_464),
        ("googlenet", 6_624_904, 1_498_376_192),
    ] {
        let j = json(&["summary", "--arch", arch, "--json"]);
        assert_eq!(j["arch"], arch);
        assert_eq!(j["total_params"], params, "{arch}");
        assert_eq!(j["total_macs"], macs, "{arch}");
        // The totals are the sums of the rows.
        let layers = j["layers"].as_array().unwrap();
        let sum = |k: &str| layers.iter().map(|l| l[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!((sum("params"), sum("macs")), (params, macs), "{arch}");
    }
    let j = json(&["summary", "--arch", "vgg16", "--json"]);
    assert_eq!(j["total_activations"], 15_237_608);
    // VGG's layers also carry the paper's names, in the JSON and in the table.
    let row =
        |name: &str| j["layers"].as_array().unwrap().iter().find(|l| l["name"] == name).cloned().unwrap();
    assert_eq!(row("features.17")["paper"], "conv4_1");
    assert!(row("features.18").get("paper").is_some_and(|p| p == "relu4_1"));
    let text = stdout(&resnet(&["summary", "--arch", "vgg16"]));
    assert!(text.contains("features.17 (conv4_1)"), "{text}");
}

#[test]
fn summary_rows_and_shapes() {
    let j = json(&["summary", "--arch", "resnet50", "--json"]);
    assert_eq!(j["input"], serde_json::json!([3, 224, 224]));
    let layers = j["layers"].as_array().unwrap();
    let graph = find_arch("resnet50").unwrap().graph();
    assert_eq!(layers.len(), graph.nodes.len() - 1, "one row per layer");
    for l in layers {
        for key in [
            "name",
            "kind",
            "kernel",
            "stride",
            "padding",
            "out_shape",
            "params",
            "macs",
            "activations",
            "rf",
            "jump",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
        assert_eq!(l["out_shape"].as_array().unwrap().len(), 3);
    }
    let row = |name: &str| layers.iter().find(|l| l["name"] == name).unwrap().clone();
    assert_eq!(row("conv1")["out_shape"], serde_json::json!([64, 112, 112]));
    assert_eq!((row("conv1")["kernel"].clone(), row("conv1")["stride"].clone()), (7.into(), 2.into()));
    assert_eq!(row("layer1.0.add")["kind"], "Add");
    assert_eq!((row("maxpool")["rf"].clone(), row("maxpool")["jump"].clone()), (11.into(), 4.into()));
    assert_eq!(row("fc")["out_shape"], serde_json::json!([1000, 1, 1]));

    // Other input sizes: square and H×W.
    let j = json(&["summary", "--arch", "resnet18", "--input", "64", "--json"]);
    assert_eq!(j["input"], serde_json::json!([3, 64, 64]));
    let j = json(&["summary", "--arch", "resnet18", "--input", "240x320", "--json"]);
    let layers = j["layers"].as_array().unwrap();
    let conv1 = layers.iter().find(|l| l["name"] == "conv1").unwrap();
    assert_eq!(conv1["out_shape"], serde_json::json!([64, 120, 160]));

    // Option B adds the projection convs.
    let a = json(&["summary", "--arch", "cifar-resnet20", "--json"]);
    let b = json(&["summary", "--arch", "cifar-resnet20", "--shortcut", "B", "--json"]);
    assert_eq!(a["shortcut"], "A");
    assert!(b["total_params"].as_u64() > a["total_params"].as_u64());
    assert!(b["layers"].as_array().unwrap().iter().any(|l| l["name"] == "layer2.0.shortcut.0"));
}

#[test]
fn summary_table_for_people() {
    let o = resnet(&["summary", "--arch", "cifar-resnet20"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for needle in [
        "Layer",
        "k/s/p",
        "RF/jump",
        "Output C×H×W",
        "layer3.2.add",
        "3/1/1",
        "64×8×8",
        "269,722",
        "40,551,040",
        "MiB",
    ] {
        assert!(out.contains(needle), "'{needle}' not in\n{out}");
    }
    let o = resnet(&["list"]);
    let out = stdout(&o);
    assert!(o.status.success() && out.contains("resnet152-v1") && out.contains("25,557,032"), "{out}");
}

#[test]
fn list_json_has_every_architecture() {
    let j = json(&["list", "--json"]);
    let archs = j["architectures"].as_array().unwrap();
    assert_eq!(archs.len(), resnet_core::ZOO.len());
    let r50 = archs.iter().find(|a| a["name"] == "resnet50").unwrap();
    assert_eq!((r50["params"].as_u64(), r50["macs"].as_u64()), (Some(25_557_032), Some(4_089_184_256)));
    let r20 = archs.iter().find(|a| a["name"] == "cifar-resnet20").unwrap();
    assert_eq!(r20["input"], serde_json::json!([3, 32, 32]));
}

#[test]
fn bad_arguments_are_clean_errors() {
    let err = fails(&["summary", "--arch", "resnet9"], "unknown architecture 'resnet9'");
    assert!(err.contains("cifar-resnet20"), "the known names are listed: {err}");
    fails(&["summary", "--arch", "resnet18", "--input", "abc"], "--input");
    fails(&["summary", "--arch", "resnet18", "--input", "0"], "--input");
    fails(&["summary", "--arch", "resnet18", "--input", "3x4x5"], "--input");
    fails(&["summary", "--arch", "vgg16", "--input", "16"], "features.30");
    fails(&["summary", "--arch", "alexnet", "--input", "300"], "fc6");
    fails(&["summary", "--arch", "resnet18", "--shortcut", "B"], "--shortcut");
    fails(&["summary", "--arch", "cifar-resnet20", "--shortcut", "C"], "--shortcut");
    fails(&["summary"], "--arch");
    fails(&["frobnicate"], "frobnicate");
    // Help is not an error.
    let o = resnet(&["--help"]);
    assert!(o.status.success() && stdout(&o).contains("summary"));
}

#[test]
fn bad_files_are_clean_errors() {
    let dir = tmp_dir("bad");
    let weights = random_weights("cifar-resnet20", 1, &dir);
    let w = s(&weights);
    let img = dir.join("ok.png");
    picture(&img);
    let ok = s(&img);

    // Weights: missing, not safetensors, empty, wrong architecture, wrong shortcut option.
    fails(
        &["predict", "--arch", "cifar-resnet20", "--weights", "/nonexistent/w.safetensors", ok],
        "no such file",
    );
    let text = dir.join("text.safetensors");
    std::fs::write(&text, "hello, I am not a tensor file").unwrap();
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", s(&text), ok], "not a weights file");
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, "").unwrap();
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", s(&empty), ok], "the file is empty");
    let err =
        fails(&["predict", "--arch", "cifar-resnet32", "--weights", w, ok], "do not fit cifar-resnet32");
    assert!(err.contains("missing     layer1.3.conv1.weight"), "names are listed: {err}");
    let err = fails(&["predict", "--arch", "resnet18", "--weights", w, ok], "do not fit resnet18");
    assert!(err.contains("… and"), "long lists are cut: {err}");
    assert!(err.lines().count() < 60, "{err}");
    let err =
        fails(&["predict", "--arch", "cifar-resnet20", "--shortcut", "B", "--weights", w, ok], "do not fit");
    assert!(err.contains("layer2.0.shortcut.0.weight"), "{err}");
    fails(&["eval", "--arch", "cifar-resnet56", "--weights", w, "--data", s(&dir)], "do not fit");

    // Images: missing, not an image, empty, truncated (PNG and JPEG), a directory.
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, "/nonexistent/cat.jpg"], "no such file");
    let not_image = dir.join("notes.jpg");
    std::fs::write(&not_image, "these are not pixels").unwrap();
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, s(&not_image)], "not an image");
    let zero = dir.join("zero.png");
    std::fs::write(&zero, "").unwrap();
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, s(&zero)], "empty file");
    for ext in ["png", "jpg"] {
        let full = dir.join(format!("big.{ext}"));
        let img = image::RgbImage::from_fn(200, 150, |x, y| {
            image::Rgb([(x ^ y) as u8, (x * 3) as u8, (y * 7) as u8])
        });
        img.save(&full).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.join(format!("truncated.{ext}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, s(&cut)], "truncated");
    }
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, s(&dir)], "directory");
    // The browser's checks, the same here: a header declaring 20000×20000 is refused before
    // decoding; bytes after a JPEG's end marker (a camera's trailer) are not an error.
    let mut huge = std::fs::read(ok).unwrap();
    huge[16..24].copy_from_slice(&[0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20]);
    let huge_png = dir.join("huge.png");
    std::fs::write(&huge_png, huge).unwrap();
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, s(&huge_png)], "too large");
    let trailer = dir.join("trailer.jpg");
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30])).save(&trailer).unwrap();
    let mut bytes = std::fs::read(&trailer).unwrap();
    bytes.extend_from_slice(b"camera trailer after the end-of-image marker");
    std::fs::write(&trailer, bytes).unwrap();
    let j =
        json(&["predict", "--arch", "cifar-resnet20", "--weights", w, "--json", "--top", "3", s(&trailer)]);
    let top = j["results"][0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3, "`top` holds the --top N classes: {j}");

    // One bad image among good ones: the good one is still predicted, the bad one reported.
    let o = resnet(&["predict", "--arch", "cifar-resnet20", "--weights", w, ok, s(&not_image)]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("ok.png"), "{}", stdout(&o));
    assert!(stderr(&o).starts_with("error: ") && stderr(&o).contains("notes.jpg"));

    // Labels file with the wrong number of names; missing labels file.
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    fails(&["predict", "--arch", "cifar-resnet20", "--weights", w, "--labels", s(&labels), ok], "2 names");
    fails(
        &["predict", "--arch", "cifar-resnet20", "--weights", w, "--labels", "/nonexistent/l.txt", ok],
        "labels",
    );

    // Datasets: missing, holding nothing usable, bad CIFAR binary, bad batch size.
    fails(
        &["eval", "--arch", "cifar-resnet20", "--weights", w, "--data", "/nonexistent/data"],
        "no such file",
    );
    let empty_dir = tmp_dir("empty-data");
    fails(
        &["eval", "--arch", "cifar-resnet20", "--weights", w, "--data", s(&empty_dir)],
        "neither class folders",
    );
    std::fs::write(empty_dir.join("test_batch.bin"), [0u8; 1000]).unwrap();
    fails(&["eval", "--arch", "cifar-resnet20", "--weights", w, "--data", s(&empty_dir)], "3073-byte");
    fails(
        &["eval", "--arch", "cifar-resnet20", "--weights", w, "--data", s(&dir), "--batch-size", "0"],
        "--batch-size",
    );
    let broken = tmp_dir("broken-folder");
    std::fs::create_dir_all(broken.join("cat")).unwrap();
    std::fs::write(broken.join("cat/0.jpg"), "garbage").unwrap();
    let err = fails(&["eval", "--arch", "cifar-resnet20", "--weights", w, "--data", s(&broken)], "0.jpg");
    assert!(err.contains("not an image"), "{err}");
    for d in [dir, empty_dir, broken] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// Weights saved with `Weights::save` load in `predict` and give the logits of the in-process
/// model on the same image.
#[test]
fn saved_weights_round_trip_through_predict() {
    let dir = tmp_dir("roundtrip");
    for arch in ["cifar-resnet20", "lenet5"] {
        let weights = random_weights(arch, 42, &dir);
        let img = dir.join("picture.png");
        picture(&img);
        let j = json(&["predict", "--arch", arch, "--weights", s(&weights), "--json", s(&img)]);
        assert_eq!(j["arch"], arch);
        let result = &j["results"][0];
        assert_eq!(result["image"], s(&img));
        let logits: Vec<f32> =
            result["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();

        let info = find_arch(arch).unwrap();
        let model = Model::random(info, 42, &Device::Cpu).unwrap();
        let pixels = image::open(&img).unwrap().to_rgb8();
        let input = resnet_core::Image { width: 48, height: 40, channels: 3, data: pixels.as_raw() };
        let x = info.preprocess().to_tensor(&input, &Device::Cpu).unwrap();
        let want: Vec<f32> = model.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(logits.len(), want.len());
        for (a, b) in logits.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{arch}: {logits:?} vs {want:?}");
        }
        // Also the reloaded file equals what was saved.
        let graph = info.graph();
        let loaded = Weights::load(&weights, &graph, arch, &Device::Cpu).unwrap();
        assert_eq!(loaded.len(), model.weights.len());

        let top5 = result["top"].as_array().unwrap();
        assert_eq!(top5.len(), 5);
        let probs: Vec<f64> = top5.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|p| p[0] >= p[1]), "{probs:?}");
        let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(top5[0]["index"], best);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn predict_shared_test_images() {
    let Some(shared) = shared() else { return };
    let weights = shared.join("weights/cifar10-resnet20.safetensors");
    let test = shared.join("datasets/cifar10/test");
    let classes = resnet_core::arch::CIFAR10_CLASSES;
    let images: Vec<PathBuf> = classes.iter().map(|c| test.join(c).join("0001.jpg")).collect();
    let mut args = vec!["predict", "--arch", "cifar-resnet20", "--weights", s(&weights), "--json"];
    args.extend(images.iter().map(|p| s(p)));
    let j = json(&args);
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    let mut correct = 0;
    for (r, class) in results.iter().zip(classes) {
        let top5 = r["top"].as_array().unwrap();
        let total: f64 = top5.iter().map(|t| t["prob"].as_f64().unwrap()).sum();
        assert!(total > 0.0 && total <= 1.0 + 1e-5, "{total}");
        assert_eq!(r["logits"].as_array().unwrap().len(), 10);
        correct += (top5[0]["label"] == class) as usize;
    }
    // 81 % accuracy on this test set: 10 images with fewer than 6 right would be a broken net.
    assert!(correct >= 6, "only {correct}/10 right: {j}");

    // The table shows names and percentages.
    let o = resnet(&["predict", "--arch", "cifar-resnet20", "--weights", s(&weights), s(&images[3])]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("1. ") && stdout(&o).contains(" %"), "{}", stdout(&o));
}

fn eval_accuracy(arch: &str, shared: &Path, extra: &[&str]) -> Value {
    let weights = shared.join(format!("weights/cifar10-{}.safetensors", arch.trim_start_matches("cifar-")));
    let data = shared.join("datasets/cifar10/test");
    let mut args = vec!["eval", "--arch", arch, "--weights", s(&weights), "--data", s(&data), "--json"];
    args.extend(extra);
    let j = json(&args);
    eprintln!(
        "{arch}: {} images, accuracy {:.4}, {:.1} s ({:.0} images/s)",
        j["images"], j["accuracy"], j["elapsed_s"], j["images_per_s"]
    );
    j
}

/// The must-show figures: the shared CIFAR ResNets on the whole (JPEG) test set.
#[test]
fn eval_shared_resnet20_and_resnet56() {
    let Some(shared) = shared() else { return };
    for (arch, min) in [("cifar-resnet20", 0.805), ("cifar-resnet56", 0.825)] {
        let j = eval_accuracy(arch, &shared, &[]);
        assert_eq!(j["images"], 10_000);
        let acc = j["accuracy"].as_f64().unwrap();
        assert!(acc >= min, "{arch}: accuracy {acc} < {min}");
        let per_class = j["per_class"].as_object().unwrap();
        assert_eq!(per_class.len(), 10);
        assert!(per_class.values().all(|v| v.as_f64().unwrap() > 0.5), "{per_class:?}");
        let mean = per_class.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / 10.0;
        assert!((mean - acc).abs() < 1e-9, "balanced test set: mean per-class = overall");
    }
}

/// The same images as an ImageFolder tree and as CIFAR-10 binary give the same predictions.
#[test]
fn eval_image_folder_and_cifar_binary_agree() {
    let Some(shared) = shared() else { return };
    let dir = tmp_dir("formats");
    let (folder, binary) = (dir.join("folder"), dir.join("binary"));
    let mut records = vec![];
    for (label, class) in resnet_core::arch::CIFAR10_CLASSES.iter().enumerate() {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..20 {
            let src = shared.join(format!("datasets/cifar10/test/{class}/{i:04}.jpg"));
            let dst = folder.join(class).join(format!("{i:04}.jpg"));
            std::fs::copy(&src, &dst).unwrap();
            let rgb = image::open(&src).unwrap().to_rgb8();
            records.push(label as u8);
            for ch in 0..3 {
                records.extend(rgb.pixels().map(|p| p[ch]));
            }
        }
    }
    std::fs::create_dir_all(&binary).unwrap();
    std::fs::write(binary.join("test_batch.bin"), &records).unwrap();
    let weights = shared.join("weights/cifar10-resnet20.safetensors");
    let eval = |data: &Path, extra: &[&str]| {
        let args = ["eval", "--arch", "cifar-resnet20", "--weights", s(&weights), "--data", s(data)];
        resnet(&[&args[..], extra].concat())
    };
    let run = |data: &Path| {
        let o = eval(data, &["--json", "--batch-size", "7"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let (a, b) = (run(&folder), run(&binary));
    assert_eq!((a["format"].as_str(), b["format"].as_str()), (Some("ImageFolder"), Some("CIFAR-10 binary")));
    assert_eq!(a["images"], 200);
    assert_eq!(a["correct"], b["correct"]);
    assert_eq!(a["confusion"], b["confusion"]);
    assert!(a["accuracy"].as_f64().unwrap() > 0.6, "{a}");
    // --limit on a folder picks every class; the table names them.
    let limited: Value = serde_json::from_slice(&eval(&folder, &["--json", "--limit", "30"]).stdout).unwrap();
    assert_eq!(limited["images"], 30);
    assert!(limited["per_class_images"].as_object().unwrap().values().all(|v| v == 3));
    let o = eval(&binary, &["--limit", "50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("overall") && stdout(&o).contains("images/s"), "{}", stdout(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The ResNet-20 weights and the cat sample the page ships (in the repository).
fn shipped() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    (root.join("www/weights/cifar10-resnet20.safetensors"), root.join("www/samples/cat-0.jpg"))
}

/// `resnet explain` on the shipped ResNet-20 (in the repository): the map at the layer's
/// resolution, non-negative, for predict's top-1 by default; the overlay PNG of the crop; a
/// chosen layer and class; clear errors.
#[test]
fn explain_maps_and_overlays() {
    let (weights, cat) = shipped();
    let ship = cat.with_file_name("ship-0.jpg");
    let w = s(&weights);
    let dir = tmp_dir("explain");
    let out = dir.join("cam.png");
    let explain = |extra: &[&str]| {
        json(&[&["explain", "--arch", "cifar-resnet20", "--weights", w, "--json"][..], extra].concat())
    };
    let j = explain(&["--out", s(&out), s(&cat), s(&ship)]);
    assert_eq!(j["arch"], "cifar-resnet20");
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let top1 = |img: &Path| {
        let p = json(&["predict", "--arch", "cifar-resnet20", "--weights", w, "--json", s(img)]);
        p["results"][0]["top"][0]["index"].clone()
    };
    for (r, img) in results.iter().zip([&cat, &ship]) {
        assert_eq!((r["method"].as_str(), r["layer"].as_str()), (Some("gradcam"), Some("layer3.2.relu")));
        assert_eq!(r["class"], top1(img), "the default class is the top-1");
        let cam = r["cam"].as_array().unwrap();
        assert_eq!(cam.len(), 8);
        let values: Vec<f64> =
            cam.iter().flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap())).collect();
        assert_eq!(values.len(), 64);
        assert!(values.iter().all(|&v| v >= 0.0) && values.iter().any(|&v| v > 0.0), "{values:?}");
    }
    for i in 1..=2 {
        let png = image::open(dir.join(format!("cam-{i}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (32, 32));
    }
    let j = explain(&["--method", "gradcam++", "--layer", "layer2.0.conv1", "--class", "8", s(&cat)]);
    let r = &j["results"][0];
    assert_eq!(
        (r["class"].as_u64(), r["label"].as_str(), r["cam"].as_array().unwrap().len()),
        (Some(8), Some("ship"), 16)
    );
    let base = ["explain", "--arch", "cifar-resnet20", "--weights", w];
    fails(&[&base[..], &["--layer", "nope", s(&cat)]].concat(), "--layer nope: no such layer");
    fails(&[&base[..], &["--layer", "linear", s(&cat)]].concat(), "no spatial map");
    fails(&[&base[..], &["--class", "10", s(&cat)]].concat(), "--class 10");
    let o = resnet(&[&base[..], &["--method", "saliency", s(&cat)]].concat());
    assert!(!o.status.success() && stderr(&o).contains("gradcam, gradcam++, eigencam"), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `resnet stream`: one row per residual block of ResNet-20 (9), in JSON as in the table.
#[test]
fn stream_measures_every_block() {
    let (weights, cat) = shipped();
    let j = json(&["stream", "--arch", "cifar-resnet20", "--weights", s(&weights), "--json", s(&cat)]);
    let blocks = j["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 9);
    assert_eq!(blocks[8]["block"], "layer3.2");
    assert!(blocks
        .iter()
        .all(|b| b["ratio"].as_f64().unwrap() > 0.0 && b["cosine"].as_f64().unwrap().abs() <= 1.0));
    let responses = j["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 19, "bn1 and the two BatchNorms of each of the 9 blocks");
    assert!(responses.iter().all(|r| r["std"].as_f64().unwrap() > 0.0));
    let o = resnet(&["stream", "--arch", "cifar-resnet20", "--weights", s(&weights), s(&cat)]);
    assert!(
        o.status.success()
            && stdout(&o).contains("‖F(x)‖/‖x‖")
            && stdout(&o).contains("layer2.0")
            && stdout(&o).contains("layer3.2.bn2"),
        "{}",
        stdout(&o)
    );
}

/// `resnet rf`: a unit's receptive field (the layer table's size, clipped to the input) and its
/// effective receptive field, zero outside that box and mostly in a smaller square; a PNG.
#[test]
fn rf_shows_what_a_unit_sees_and_depends_on() {
    let (weights, cat) = shipped();
    let png = tmp_dir("rf").join("erf.png");
    let j = json(&[
        "rf",
        "--arch",
        "cifar-resnet20",
        "--weights",
        s(&weights),
        "--layer",
        "layer2.0.relu",
        "--json",
        "--out",
        s(&png),
        s(&cat),
    ]);
    let (c, y, x) = (
        j["unit"]["channel"].as_u64().unwrap(),
        j["unit"]["y"].as_u64().unwrap(),
        j["unit"]["x"].as_u64().unwrap(),
    );
    assert_eq!((y, x), (8, 8), "the centre of the 16×16 map");
    assert!(c < 32 && j["unit"]["value"].as_f64().unwrap() > 0.0, "the channel most active there");
    let rf = &j["rf"];
    assert_eq!(rf["size"], 21);
    assert_eq!((rf["y0"].as_u64(), rf["y1"].as_u64()), (Some(6), Some(27)));
    let erf: Vec<Vec<f64>> = serde_json::from_value(j["erf"].clone()).unwrap();
    assert_eq!((erf.len(), erf[0].len()), (32, 32));
    for (r, row) in erf.iter().enumerate() {
        for (col, v) in row.iter().enumerate() {
            if !(6..27).contains(&r) || !(6..27).contains(&col) {
                assert_eq!(*v, 0.0, "({r}, {col}) is outside the receptive field");
            }
        }
    }
    let (half, ninety) = (j["half"].as_u64().unwrap(), j["ninety"].as_u64().unwrap());
    assert!(half >= 1 && half <= ninety && ninety < 21, "{half} {ninety}");
    assert_eq!(image::image_dimensions(&png).unwrap(), (32, 32));
    let with_unit = |unit: &str| {
        let args = ["rf", "--arch", "cifar-resnet20", "--weights", s(&weights), "--layer", "layer2.0.relu"];
        resnet(&[&args[..], &["--unit", unit, s(&cat)]].concat())
    };
    let o = with_unit("0,16,0");
    assert!(!o.status.success() && stderr(&o).contains("16×16"), "{}", stderr(&o));
    let o = with_unit("1,2");
    assert!(!o.status.success() && stderr(&o).contains("channel,row,column"), "{}", stderr(&o));
}
