//! Times every kernel that can run each of ResNet's stems and strided convs (and ResNet-20's
//! stride-1 stem), one image, interleaved in rounds, and prints the kernel `ConvPath::of`
//! picks: the evidence for its thresholds. `RAYON_NUM_THREADS=1 cargo run --release -p
//! resnet-core --example conv_kernels [NAME-FILTER]`.

use candle_core::{Device, Tensor};
use resnet_core::kernels::conv::{ConvPath, PreparedConv};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let cases: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
        ("r20 stem", 3, 32, 16, 3, 1, 1),
        ("r20 l2 s2", 16, 32, 32, 3, 2, 1),
        ("r20 l3 s2", 32, 16, 64, 3, 2, 1),
        ("r18 stem", 3, 224, 64, 7, 2, 3),
        ("r18 l2 s2", 64, 56, 128, 3, 2, 1),
        ("r18 l3 s2", 128, 28, 256, 3, 2, 1),
        ("r18 l4 s2", 256, 14, 512, 3, 2, 1),
        ("r18 ds2", 64, 56, 128, 1, 2, 0),
        ("r18 ds3", 128, 28, 256, 1, 2, 0),
        ("r18 ds4", 256, 14, 512, 1, 2, 0),
        ("r50 c2 l2", 128, 56, 128, 3, 2, 1),
        ("r50 c2 l3", 256, 28, 256, 3, 2, 1),
        ("r50 c2 l4", 512, 14, 512, 3, 2, 1),
        ("r50 ds2", 256, 56, 512, 1, 2, 0),
        ("r50 ds3", 512, 28, 1024, 1, 2, 0),
    ];
    let filter = std::env::args().nth(1).unwrap_or_default();
    for &(name, c, h, oc, k, s, p) in cases {
        if !name.contains(&filter) {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (1, c, h, h), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (oc, c, k, k), &dev)?;
        let b = Tensor::randn(0f32, 1.0, oc, &dev)?;
        let mut line = format!("{name:10} chosen {:?}", ConvPath::of(c, k, s, p));
        let mut outs = vec![];
        let paths: Vec<ConvPath> = if (k, s, p) == (3, 1, 1) {
            vec![ConvPath::Winograd, ConvPath::Direct, ConvPath::Im2col]
        } else {
            vec![ConvPath::Direct, ConvPath::Im2col]
        };
        let convs: Vec<_> = paths
            .iter()
            .map(|&path| PreparedConv::with_path(&w, Some(&b), p, s, Some((h, h)), path))
            .collect::<candle_core::Result<_>>()?;
        let mut times = vec![vec![]; convs.len()];
        for conv in &convs {
            outs.push(conv.forward(&x, None, true)?);
        }
        let t0 = Instant::now();
        while times[0].len() < 20 || (t0.elapsed().as_secs_f64() < 1.0 && times[0].len() < 3000) {
            for (i, conv) in convs.iter().enumerate() {
                let a = Instant::now();
                conv.forward(&x, None, true)?;
                times[i].push(a.elapsed().as_secs_f64() * 1e3);
            }
        }
        let macs = (oc * c * k * k * outs[0].dim(2)? * outs[0].dim(3)?) as f64;
        for (path, t) in paths.iter().zip(&mut times) {
            t.sort_by(f64::total_cmp);
            let (mn, md) = (t[0], t[t.len() / 2]);
            line += &format!("  {path:?} min {mn:.4} med {md:.4} ({:.1} GMAC/s)", macs / mn / 1e6);
        }
        let d = (&outs[0] - &outs[1])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        println!("{line}  diff {d:.2e}");
    }
    Ok(())
}
