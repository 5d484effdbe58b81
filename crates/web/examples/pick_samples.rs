//! Chooses the page's sample images: for each CIFAR-10 class, the first test images that both
//! pretrained nets (ResNet-20 and ResNet-56) classify correctly, copied to `www/samples/`
//! as `<class>-<i>.jpg`; writes the wasm-vs-native fixture (one sample's pixels and its
//! ResNet-20 logits) to `crates/web/tests/fixtures/`.
//!
//! cargo run --release -p resnet-web --example pick_samples -- ../shared/datasets/cifar10/test

#![cfg_attr(target_arch = "wasm32", allow(unused))]

use std::path::{Path, PathBuf};

use resnet_core::arch::CIFAR10_CLASSES;
use resnet_core::Image;
use resnet_web::engine::Engine;

const PER_CLASS: usize = 3;

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or("../shared/datasets/cifar10/test".into()));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let load = |arch: &str, file: &str| {
        let bytes = std::fs::read(repo.join("www/weights").join(file)).expect("weights in www/weights");
        Engine::load(arch, Some(&bytes), 0).unwrap()
    };
    let mut nets = [
        load("cifar-resnet20", "cifar10-resnet20.safetensors"),
        load("cifar-resnet56", "cifar10-resnet56.safetensors"),
    ];
    let out = repo.join("www/samples");
    std::fs::create_dir_all(&out).unwrap();
    for (class, name) in CIFAR10_CLASSES.iter().enumerate() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(root.join(name)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut picked = 0;
        for f in files {
            let rgb = image::open(&f).unwrap().to_rgb8();
            let img = Image {
                width: rgb.width() as usize,
                height: rgb.height() as usize,
                channels: 3,
                data: rgb.as_raw(),
            };
            // Confidently right on both nets, so the page's answer does not hinge on rounding.
            let ok = nets.iter_mut().all(|n| {
                let r = n.run(&img, 0, &|| 0.0).unwrap();
                resnet_web::viz::top_k(&r.probs, 1)[0].0 == class && r.probs[class] > 0.8
            });
            if !ok {
                continue;
            }
            std::fs::copy(&f, out.join(format!("{name}-{picked}.jpg"))).unwrap();
            if class == 3 && picked == 0 {
                let fixtures = repo.join("crates/web/tests/fixtures");
                std::fs::create_dir_all(&fixtures).unwrap();
                std::fs::write(fixtures.join("cat-0.rgb"), rgb.as_raw()).unwrap();
                let r = nets[0].run(&img, 0, &|| 0.0).unwrap();
                let text: String = r.logits.iter().map(|v| format!("{v:e}\n")).collect();
                std::fs::write(fixtures.join("cat-0.resnet20-logits.txt"), text).unwrap();
            }
            println!("{name}-{picked}.jpg ← {}", f.display());
            picked += 1;
            if picked == PER_CLASS {
                break;
            }
        }
    }
}
