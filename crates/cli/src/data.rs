//! Labelled image sets for `eval` and `train`: ImageFolder trees (one folder per class, in
//! sorted order) and the CIFAR-10 binary format (`data_batch_{1..5}.bin`, `test_batch.bin`),
//! decoded in parallel into compact RGB8 crops of the size the model takes. The crops come from
//! the core's [`Preprocess::view`], so resizing and centre-cropping are the same as in `predict`
//! and in the browser; normalisation happens per batch in [`Preprocess::batch_tensor`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use resnet_core::arch::CIFAR10_CLASSES;
use resnet_core::{Image, Preprocess};

use crate::decode::{decode_file, io_message};

/// Bytes of one CIFAR-10 binary record: the label, then 1024 R, 1024 G and 1024 B bytes.
pub const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// File extensions an ImageFolder tree may hold (as torchvision's `IMG_EXTENSIONS`, for the
/// formats we decode). Other files are ignored.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "gif", "bmp", "webp"];

/// Which part of a dataset to read where it has both (CIFAR-10 binary batches, or an
/// ImageFolder root holding `train/` and `test/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Split {
    Train,
    #[default]
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    ImageFolder,
    CifarBinary,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::ImageFolder => "ImageFolder",
            Format::CifarBinary => "CIFAR-10 binary",
        })
    }
}

/// Decoded, resized and cropped images with their labels.
#[derive(Clone, Debug)]
pub struct LabeledImages {
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// Side of the square crops.
    pub size: usize,
    /// N × size × size × 3, RGB8, row-major (grey models get luma in all three).
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    /// Where each image came from (`file.bin#record` for CIFAR-10 binary).
    #[allow(dead_code)] // for callers that report single images
    pub paths: Vec<PathBuf>,
    pub format: Format,
}

impl LabeledImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image (`size × size × 3`).
    pub fn image_bytes(&self) -> usize {
        self.size * self.size * 3
    }

    /// Image `i` as `size × size × 3` RGB8.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Images `range` as a normalised N×C×H×W f32 tensor (C = 1 for grey models).
    pub fn tensor(&self, range: Range<usize>, prep: &Preprocess, device: &Device) -> Result<Tensor> {
        let n = self.image_bytes();
        Ok(prep.batch_tensor(&self.pixels[range.start * n..range.end * n], self.size, device)?)
    }

    /// Labels `range` as a u32 tensor of N.
    #[allow(dead_code)] // API for `train`
    pub fn labels_tensor(&self, range: Range<usize>, device: &Device) -> Result<Tensor> {
        Ok(Tensor::new(&self.labels[range], device)?)
    }

    /// The images at `indices` (e.g. a shuffled mini-batch): normalised N×C×H×W and u32 labels.
    #[allow(dead_code)] // API for `train`
    pub fn batch(&self, indices: &[usize], prep: &Preprocess, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_bytes());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok((prep.batch_tensor(&pixels, self.size, device)?, Tensor::new(labels, device)?))
    }
}

/// Options beyond the directory and the preprocessing.
#[derive(Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// At most this many images: the first N records of CIFAR-10 binary (already shuffled), or
    /// N evenly spaced images of an ImageFolder tree (so every class is represented).
    pub limit: Option<usize>,
    pub split: Split,
    /// Called from the decoding threads with (images done so far, total).
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
}

/// Loads the test split of `dir` (see [`load_with`]).
#[allow(dead_code)] // the short form, for tests and callers without options
pub fn load(dir: &Path, prep: &Preprocess, limit: Option<usize>) -> Result<LabeledImages> {
    load_with(dir, prep, &LoadOptions { limit, ..Default::default() })
}

/// Loads a dataset, detecting its format:
/// - a folder with `*_batch*.bin` files (or one such file) is CIFAR-10 binary: the test split
///   is `test_batch.bin` (all batch files when it is absent), the train split
///   `data_batch_{1..5}.bin`;
/// - a folder of class folders is an ImageFolder tree; a root holding `train/` and `test/`
///   (or `val/`) folders is resolved to the split first.
pub fn load_with(path: &Path, prep: &Preprocess, opts: &LoadOptions) -> Result<LabeledImages> {
    if prep.crop == 0 {
        bail!("preprocessing crops to 0×0");
    }
    match detect(path)? {
        Format::CifarBinary => load_cifar_binary(path, prep, opts),
        Format::ImageFolder => load_image_folder(&split_dir(path, opts.split), prep, opts),
    }
}

/// Which format `path` holds.
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{}: {}", path.display(), io_message(&e)))?;
    if meta.is_file() {
        return match is_cifar_batch(path) {
            true => Ok(Format::CifarBinary),
            false => bail!("{}: expected a dataset folder or a CIFAR-10 *_batch*.bin file", path.display()),
        };
    }
    let entries = read_dir_sorted(path)?;
    if entries.iter().any(|p| p.is_file() && is_cifar_batch(p)) {
        return Ok(Format::CifarBinary);
    }
    if entries.iter().any(|p| p.is_dir()) {
        return Ok(Format::ImageFolder);
    }
    bail!("{}: neither class folders (ImageFolder) nor CIFAR-10 *_batch*.bin files found", path.display())
}

fn is_cifar_batch(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".bin") && name.contains("_batch")
}

/// Visible entries of a folder, sorted by name.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| anyhow!("{}: {}", dir.display(), io_message(&e)))?;
    let mut out = vec![];
    for entry in rd {
        let entry = entry.map_err(|e| anyhow!("{}: {}", dir.display(), io_message(&e)))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// `root/train` or `root/test` (`root/val`) when `root` holds the splits, else `root`.
fn split_dir(root: &Path, split: Split) -> PathBuf {
    let has = |name: &str| root.join(name).is_dir();
    let splits = has("train") && (has("test") || has("val"));
    if !splits {
        return root.to_path_buf();
    }
    match split {
        Split::Train => root.join("train"),
        Split::Test if has("test") => root.join("test"),
        Split::Test => root.join("val"),
    }
}

/// Every image file under `dir`, recursively, in sorted order.
fn image_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in read_dir_sorted(dir)? {
        if p.is_dir() {
            image_files(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn load_image_folder(dir: &Path, prep: &Preprocess, opts: &LoadOptions) -> Result<LabeledImages> {
    let class_dirs: Vec<PathBuf> = read_dir_sorted(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        bail!("{}: no class folders", dir.display());
    }
    let mut classes = vec![];
    let mut paths = vec![];
    let mut labels = vec![];
    for (label, class_dir) in class_dirs.iter().enumerate() {
        let before = paths.len();
        image_files(class_dir, &mut paths)?;
        if paths.len() == before {
            bail!("{}: class folder holds no images ({})", class_dir.display(), IMAGE_EXTENSIONS.join(", "));
        }
        labels.resize(paths.len(), label as u32);
        classes.push(class_dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
    }
    let total = paths.len();
    if let Some(limit) = opts.limit.filter(|&l| l < total) {
        let keep: Vec<usize> = (0..limit).map(|i| i * total / limit).collect();
        paths = keep.iter().map(|&i| paths[i].clone()).collect();
        labels = keep.iter().map(|&i| labels[i]).collect();
    }
    let size = prep.crop;
    let pixels = decode_parallel(paths.len(), size, opts.progress, |i, out| {
        let img = decode_file(&paths[i])?;
        crop_into(prep, &img.as_image(), out).map_err(|e| anyhow!("{}: {e}", paths[i].display()))
    })?;
    Ok(LabeledImages { classes, size, pixels, labels, paths, format: Format::ImageFolder })
}

fn crop_into(prep: &Preprocess, img: &Image, out: &mut [u8]) -> Result<()> {
    let view = prep.view(img)?;
    if view.len() != out.len() {
        bail!("the crop has {} bytes, expected {}", view.len(), out.len());
    }
    out.copy_from_slice(&view);
    Ok(())
}

/// The CIFAR-10 batch files for `split`.
fn cifar_files(path: &Path, split: Split) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let batches: Vec<PathBuf> =
        read_dir_sorted(path)?.into_iter().filter(|p| p.is_file() && is_cifar_batch(p)).collect();
    let named = |p: &PathBuf, prefix: &str| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))
    };
    let files: Vec<PathBuf> = match split {
        Split::Train => batches.iter().filter(|p| named(p, "data_batch")).cloned().collect(),
        Split::Test => match batches.iter().find(|p| named(p, "test_batch")) {
            Some(t) => vec![t.clone()],
            None => batches.clone(),
        },
    };
    if files.is_empty() {
        bail!("{}: no {split:?} batches (data_batch_N.bin / test_batch.bin) found", path.display());
    }
    Ok(files)
}

/// Class names: `batches.meta.txt` beside the batches (the official archive has it), else
/// CIFAR-10's.
fn cifar_classes(path: &Path) -> Vec<String> {
    let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")) } else { path };
    let names: Vec<String> = std::fs::read_to_string(dir.join("batches.meta.txt"))
        .map(|s| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    match names.is_empty() {
        true => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        false => names,
    }
}

fn load_cifar_binary(path: &Path, prep: &Preprocess, opts: &LoadOptions) -> Result<LabeledImages> {
    let classes = cifar_classes(path);
    let mut records = vec![];
    let mut paths = vec![];
    for file in cifar_files(path, opts.split)? {
        if opts.limit.is_some_and(|l| paths.len() >= l) {
            break;
        }
        let bytes = std::fs::read(&file).map_err(|e| anyhow!("{}: {}", file.display(), io_message(&e)))?;
        if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
            bail!(
                "{}: {} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records",
                file.display(),
                bytes.len()
            );
        }
        for (i, _) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
            paths.push(PathBuf::from(format!("{}#{i}", file.display())));
        }
        records.extend_from_slice(&bytes);
    }
    if let Some(limit) = opts.limit.filter(|&l| l < paths.len()) {
        paths.truncate(limit);
        records.truncate(limit * CIFAR_RECORD);
    }
    let mut labels = Vec::with_capacity(paths.len());
    for (i, rec) in records.chunks_exact(CIFAR_RECORD).enumerate() {
        if rec[0] as usize >= classes.len() {
            bail!("{}: label {} is not one of the {} classes", paths[i].display(), rec[0], classes.len());
        }
        labels.push(rec[0] as u32);
    }
    let size = prep.crop;
    let pixels = decode_parallel(paths.len(), size, opts.progress, |i, out| {
        let rec = &records[i * CIFAR_RECORD + 1..(i + 1) * CIFAR_RECORD];
        let mut rgb = [0u8; 32 * 32 * 3];
        for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&[rec[p], rec[1024 + p], rec[2048 + p]]);
        }
        crop_into(prep, &Image { width: 32, height: 32, channels: 3, data: &rgb }, out)
    })?;
    Ok(LabeledImages { classes, size, pixels, labels, paths, format: Format::CifarBinary })
}

/// Runs `decode(i, out)` for every image on all cores (at least 2 threads), each writing its
/// `size × size × 3` crop. Stops at the first error.
fn decode_parallel(
    n: usize,
    size: usize,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    decode: impl Fn(usize, &mut [u8]) -> Result<()> + Sync,
) -> Result<Vec<u8>> {
    let bytes = size * size * 3;
    let mut pixels = vec![0u8; n * bytes];
    if n == 0 {
        return Ok(pixels);
    }
    let threads = std::thread::available_parallelism().map_or(2, |t| t.get()).max(2).min(n);
    let done = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    // Interleaved blocks of 64 images, so threads finish together whatever the file sizes.
    const BLOCK: usize = 64;
    let mut blocks: Vec<Vec<(usize, &mut [u8])>> = (0..threads).map(|_| vec![]).collect();
    for (i, out) in pixels.chunks_exact_mut(bytes).enumerate() {
        blocks[(i / BLOCK) % threads].push((i, out));
    }
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = blocks
            .into_iter()
            .map(|work| {
                let (decode, done, failed) = (&decode, &done, &failed);
                s.spawn(move || -> Result<()> {
                    for (i, out) in work {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if let Err(e) = decode(i, out) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(p) = progress {
                            p(d, n);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a decoding thread crashed"))))
            .collect()
    });
    for r in results {
        r.context("cannot load the dataset")?;
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREP: Preprocess = Preprocess {
        resize: 32,
        crop: 32,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        grey: false,
    };

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("resnet-cli-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i as u8).wrapping_mul(seed)));
        r
    }

    #[test]
    fn cifar_binary_records_are_planar_rgb() {
        let dir = tmp("cifar");
        let mut train = cifar_record(3, 1);
        train.extend(cifar_record(7, 2));
        std::fs::write(dir.join("data_batch_1.bin"), &train).unwrap();
        std::fs::write(dir.join("test_batch.bin"), cifar_record(9, 3)).unwrap();
        assert_eq!(detect(&dir).unwrap(), Format::CifarBinary);
        let test = load(&dir, &PREP, None).unwrap();
        assert_eq!((test.len(), test.labels[0], test.classes[9].as_str()), (1, 9, "truck"));
        let rec = cifar_record(9, 3);
        // Pixel 5 is (R, G, B) from the three planes.
        assert_eq!(&test.image(0)[15..18], &[rec[1 + 5], rec[1 + 1024 + 5], rec[1 + 2048 + 5]]);
        let opts = LoadOptions { split: Split::Train, ..Default::default() };
        let train = load_with(&dir, &PREP, &opts).unwrap();
        assert_eq!(train.labels, [3, 7]);
        let limited = load_with(&dir, &PREP, &LoadOptions { limit: Some(1), ..opts }).unwrap();
        assert_eq!(limited.labels, [3]);
        let t = train.tensor(0..2, &PREP, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [2, 3, 32, 32]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let r = cifar_record(3, 1);
        assert!((v[1024] - (r[1025] as f32 / 255.0 - 0.456) / 0.224).abs() < 1e-6);
        std::fs::write(dir.join("test_batch.bin"), [1u8; 100]).unwrap();
        let err = load(&dir, &PREP, None).unwrap_err().to_string();
        assert!(err.contains("3073-byte"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn image_folder_classes_sorted_and_limit_spans_classes() {
        let dir = tmp("folder");
        for (class, colour) in [("b_cat", [200u8, 10, 10]), ("a_dog", [10, 200, 10])] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..3 {
                let img = image::RgbImage::from_pixel(40, 36, image::Rgb(colour));
                img.save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        std::fs::write(dir.join("a_dog/notes.txt"), "not an image, ignored").unwrap();
        let data = load(&dir, &PREP, None).unwrap();
        assert_eq!(data.classes, ["a_dog", "b_cat"]);
        assert_eq!(data.labels, [0, 0, 0, 1, 1, 1]);
        assert_eq!(&data.image(4)[..3], &[200, 10, 10]);
        assert_eq!(data.class_counts(), [3, 3]);
        let two = load(&dir, &PREP, Some(2)).unwrap();
        assert_eq!(two.labels, [0, 1]);
        let (x, y) = data.batch(&[5, 0], &PREP, &Device::Cpu).unwrap();
        assert_eq!((x.dims(), y.to_vec1::<u32>().unwrap()), ([2, 3, 32, 32].as_slice(), vec![1, 0]));
        std::fs::write(dir.join("a_dog/3.png"), b"garbage").unwrap();
        let err = format!("{:#}", load(&dir, &PREP, None).unwrap_err());
        assert!(err.contains("3.png") && err.contains("not an image"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
