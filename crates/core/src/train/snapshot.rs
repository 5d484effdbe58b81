//! A training run's replay: per epoch, a small safetensors file (tens of kilobytes) with what the
//! explorer shows of a network — the first conv's filters, a few activation maps of fixed test
//! images at the stem and at the end of each stage — and the epoch's metrics. Written by
//! `resnet train --snapshots` (`<run>/snapshots/epoch-NNN.safetensors`, epoch 0 = the random
//! initialisation), read back by the browser's replay slider, from the shipped runs or from a
//! file the user drops.
//!
//! Maps are quantised to one byte over each map's own range (the page draws every map on its own
//! scale anyway), and only a layer's first [`CHANNELS`] channels are kept: the same channels in
//! every epoch, so the replay shows one unit learning.

use std::collections::HashMap;

use candle_core::{DType, Device};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::EpochMetrics;
use crate::model::Model;
use crate::spec::{Graph, NodeId, Op};

/// Channels kept per layer.
pub const CHANNELS: usize = 8;
/// Fixed images per snapshot.
pub const IMAGES: usize = 2;
/// The metadata key that marks a snapshot file (and holds its description).
const KEY: &str = "resnet_snapshot";
/// The format's version; a reader refuses others.
const VERSION: u32 = 1;
/// Bounds a reader checks before allocating anything from a file's description.
const MAX_LAYERS: usize = 64;
const MAX_SIDE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a snapshot file: {0}")]
    Format(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(SnapshotError::Format(msg.into()))
}

/// One layer's kept maps.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotLayer {
    /// The node's PyTorch name (`relu`, `layer1.2.relu`…).
    pub name: String,
    /// Channels kept (the layer's first), of `total_channels`.
    pub channels: usize,
    pub total_channels: usize,
    pub height: usize,
    pub width: usize,
    /// image × channel × height × width, each map scaled to 0..=255 over its `ranges` entry.
    pub maps: Vec<u8>,
    /// Per (image, channel): the map's minimum and maximum before scaling.
    pub ranges: Vec<[f32; 2]>,
}

impl SnapshotLayer {
    /// The map of `channel` on `image`, as bytes (row-major) and its value range.
    pub fn map(&self, image: usize, channel: usize) -> Option<(&[u8], [f32; 2])> {
        if channel >= self.channels {
            return None;
        }
        let k = image * self.channels + channel;
        let plane = self.height * self.width;
        Some((self.maps.get(k * plane..(k + 1) * plane)?, *self.ranges.get(k)?))
    }
}

/// One epoch of a run, as the replay shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub arch: String,
    /// Epochs trained when it was taken (0: the initial weights).
    pub epoch: usize,
    /// The epoch's metrics line (`None` for epoch 0).
    pub metrics: Option<EpochMetrics>,
    /// The first conv's name and weights (out × in × k × k).
    pub filter_layer: String,
    pub filter_shape: [usize; 4],
    pub filters: Vec<f32>,
    /// The fixed images: N × side × side × 3, RGB8, and their labels.
    pub side: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub layers: Vec<SnapshotLayer>,
}

/// What the metadata says; the tensors carry the numbers.
#[derive(Serialize, Deserialize)]
struct Description {
    version: u32,
    arch: String,
    epoch: usize,
    metrics: Option<EpochMetrics>,
    filter_layer: String,
    side: usize,
    labels: Vec<u32>,
    layers: Vec<LayerDescription>,
}

#[derive(Serialize, Deserialize)]
struct LayerDescription {
    name: String,
    total_channels: usize,
}

/// The layers a snapshot keeps: the stem's output (the node before the first stage) and each
/// stage's last node; for a net without stages, every pooling layer's output. Only maps: nodes
/// whose output is a plane (not the classifier's vectors).
pub fn snapshot_layers(graph: &Graph) -> Vec<NodeId> {
    let shapes = graph.shapes(None).unwrap_or_default();
    let mut out = candidate_layers(graph);
    out.retain(|&i| shapes.get(i).is_some_and(|s| s.h * s.w > 1));
    out
}

fn candidate_layers(graph: &Graph) -> Vec<NodeId> {
    let nodes = &graph.nodes;
    let mut out = vec![];
    if let Some(first) = nodes.iter().position(|n| n.stage.is_some()) {
        if first > 1 {
            out.push(first - 1);
        }
        for i in first..nodes.len() {
            let stage = &nodes[i].stage;
            if stage.is_some() && nodes.get(i + 1).is_none_or(|n| n.stage != *stage) {
                out.push(i);
            }
        }
    } else {
        out.extend(
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| matches!(n.op, Op::MaxPool2d(_) | Op::AvgPool2d(_)))
                .map(|(i, _)| i),
        );
    }
    out
}

/// Picks the fixed images from `labels` (positions into a set): the first image of each of the
/// first [`IMAGES`] distinct classes, so the replay compares two kinds of thing.
pub fn pick_images(labels: impl IntoIterator<Item = u32>) -> Vec<usize> {
    let mut seen = vec![];
    let mut picked = vec![];
    for (i, l) in labels.into_iter().enumerate() {
        if !seen.contains(&l) {
            seen.push(l);
            picked.push(i);
            if picked.len() == IMAGES {
                break;
            }
        }
    }
    picked
}

impl Snapshot {
    /// Runs `model` (CPU, inference mode) on `images` (N × side × side × 3) and keeps what the
    /// replay shows.
    pub fn capture(
        model: &Model,
        epoch: usize,
        metrics: Option<EpochMetrics>,
        images: &[u8],
        labels: &[u32],
        side: usize,
    ) -> Result<Self> {
        let graph = &model.graph;
        let Some(first) = graph.nodes.iter().find(|n| matches!(n.op, Op::Conv2d(_))) else {
            return bad("the network has no convolution");
        };
        let w = model.weights.tensor(&format!("{}.weight", first.name))?.to_device(&Device::Cpu)?;
        let dims = w.dims();
        let filter_shape = [dims[0], dims[1], dims[2], dims[3]];
        let filters = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let x = model.arch.preprocess().batch_tensor(images, side, &model.device())?;
        let (_, taps) = model.forward_taps(&x)?;
        let mut layers = vec![];
        for id in snapshot_layers(graph) {
            let t = taps[id].to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            let &[n, c, h, w] = t.dims() else { continue };
            let keep = c.min(CHANNELS);
            let values = t.narrow(1, 0, keep)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let plane = h * w;
            let mut maps = Vec::with_capacity(values.len());
            let mut ranges = Vec::with_capacity(n * keep);
            for m in values.chunks(plane) {
                let (lo, hi) =
                    m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
                maps.extend(m.iter().map(|&v| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8));
                ranges.push([lo, hi]);
            }
            layers.push(SnapshotLayer {
                name: graph.nodes[id].name.clone(),
                channels: keep,
                total_channels: c,
                height: h,
                width: w,
                maps,
                ranges,
            });
        }
        Ok(Snapshot {
            arch: model.arch.name.to_string(),
            epoch,
            metrics,
            filter_layer: first.name.clone(),
            filter_shape,
            filters,
            side,
            images: images.to_vec(),
            labels: labels.to_vec(),
            layers,
        })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let description = Description {
            version: VERSION,
            arch: self.arch.clone(),
            epoch: self.epoch,
            metrics: self.metrics.clone(),
            filter_layer: self.filter_layer.clone(),
            side: self.side,
            labels: self.labels.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| LayerDescription { name: l.name.clone(), total_channels: l.total_channels })
                .collect(),
        };
        let json = serde_json::to_string(&description).map_err(|e| SnapshotError::Format(e.to_string()))?;
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let n = self.labels.len();
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("filters".into(), Dtype::F32, self.filter_shape.to_vec(), f32_bytes(&self.filters)),
            ("images".into(), Dtype::U8, vec![n, self.side, self.side, 3], self.images.clone()),
        ];
        for l in &self.layers {
            let shape = vec![n, l.channels, l.height, l.width];
            owned.push((format!("maps.{}", l.name), Dtype::U8, shape, l.maps.clone()));
            let ranges: Vec<f32> = l.ranges.iter().flatten().copied().collect();
            owned.push((
                format!("ranges.{}", l.name),
                Dtype::F32,
                vec![n, l.channels, 2],
                f32_bytes(&ranges),
            ));
        }
        let mut views = vec![];
        for (name, dtype, shape, data) in &owned {
            let view = TensorView::new(*dtype, shape.clone(), data)
                .map_err(|e| SnapshotError::Format(format!("{name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let meta = HashMap::from([(KEY.to_string(), json)]);
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| SnapshotError::Format(e.to_string()))
    }

    /// Reads a snapshot file, checking every tensor against the description: a wrong or corrupt
    /// file is an error that says what is wrong, and nothing is allocated beyond the file's size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| SnapshotError::Format(e.to_string()))?;
        let Some(json) = header.metadata().as_ref().and_then(|m| m.get(KEY)) else {
            return bad(
                "no training snapshot in it (a weights file? snapshots come from `resnet train --snapshots`)",
            );
        };
        let d: Description = serde_json::from_str(json)
            .map_err(|e| SnapshotError::Format(format!("unreadable description: {e}")))?;
        if d.version != VERSION {
            return bad(format!("version {} (this explorer reads version {VERSION})", d.version));
        }
        if d.layers.len() > MAX_LAYERS || d.side == 0 || d.side > MAX_SIDE || d.labels.len() > 64 {
            return bad("implausible sizes in its description");
        }
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| SnapshotError::Format(e.to_string()))?;
        let n = d.labels.len();
        let get = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, &[u8])> {
            let t = st
                .tensor(name)
                .map_err(|_| SnapshotError::Format(format!("the tensor {name} is missing")))?;
            if t.dtype() != dtype {
                return bad(format!("{name} is {:?}, not {dtype:?}", t.dtype()));
            }
            Ok((t.shape().to_vec(), t.data()))
        };
        let f32s = |data: &[u8]| -> Vec<f32> {
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        let (shape, data) = get("filters", Dtype::F32)?;
        let &[o, i, kh, kw] = shape.as_slice() else { return bad("filters is not out × in × k × k") };
        let filters = f32s(data);
        let (shape, images) = get("images", Dtype::U8)?;
        if shape != [n, d.side, d.side, 3] {
            return bad(format!("images has shape {shape:?}, not [{n}, {0}, {0}, 3]", d.side));
        }
        let mut layers = vec![];
        for l in &d.layers {
            let (shape, maps) = get(&format!("maps.{}", l.name), Dtype::U8)?;
            let &[sn, c, h, w] = shape.as_slice() else {
                return bad(format!("maps.{} is not N × C × H × W", l.name));
            };
            if sn != n || c > l.total_channels || c == 0 {
                return bad(format!("maps.{} has shape {shape:?} for {n} images", l.name));
            }
            let (rshape, rdata) = get(&format!("ranges.{}", l.name), Dtype::F32)?;
            if rshape != [n, c, 2] {
                return bad(format!("ranges.{} has shape {rshape:?}, not [{n}, {c}, 2]", l.name));
            }
            let ranges = f32s(rdata).chunks_exact(2).map(|r| [r[0], r[1]]).collect();
            layers.push(SnapshotLayer {
                name: l.name.clone(),
                channels: c,
                total_channels: l.total_channels,
                height: h,
                width: w,
                maps: maps.to_vec(),
                ranges,
            });
        }
        Ok(Snapshot {
            arch: d.arch,
            epoch: d.epoch,
            metrics: d.metrics,
            filter_layer: d.filter_layer,
            filter_shape: [o, i, kh, kw],
            filters,
            side: d.side,
            images: images.to_vec(),
            labels: d.labels,
            layers,
        })
    }

    /// `snapshots/epoch-NNN.safetensors`, the file name of epoch `epoch` in a run directory.
    pub fn file_name(epoch: usize) -> String {
        format!("epoch-{epoch:03}.safetensors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch;

    fn snapshot(name: &str) -> Snapshot {
        let arch = arch::find(name).unwrap();
        let model = Model::random(arch, 3, &Device::Cpu).unwrap();
        let side = arch.graph().input.h;
        let images: Vec<u8> = (0..IMAGES * side * side * 3).map(|i| (i * 31 % 251) as u8).collect();
        Snapshot::capture(&model, 0, None, &images, &[3, 5], side).unwrap()
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_stays_small() {
        let s = snapshot("cifar-resnet20");
        assert_eq!(s.filter_layer, "conv1");
        assert_eq!(s.filter_shape, [16, 3, 3, 3]);
        let names: Vec<_> = s.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["relu", "layer1.2.relu", "layer2.2.relu", "layer3.2.relu"]);
        let l = &s.layers[2];
        assert_eq!((l.channels, l.total_channels, l.height, l.width), (8, 32, 16, 16));
        // Each map spans its whole byte range (random weights give no constant map here).
        let (map, [lo, hi]) = l.map(1, 7).unwrap();
        assert!(lo < hi && map.contains(&0) && map.contains(&255));
        let bytes = s.to_bytes().unwrap();
        assert!(bytes.len() < 60_000, "{} bytes", bytes.len());
        assert_eq!(Snapshot::from_bytes(&bytes).unwrap(), s);
    }

    #[test]
    fn the_kept_maps_are_the_activations_scaled() {
        let arch = arch::find("cifar-plain20").unwrap();
        let model = Model::random(arch, 1, &Device::Cpu).unwrap();
        let images: Vec<u8> = (0..2 * 32 * 32 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let s = Snapshot::capture(&model, 4, None, &images, &[0, 1], 32).unwrap();
        let x = arch.preprocess().batch_tensor(&images, 32, &Device::Cpu).unwrap();
        let (_, taps) = model.forward_taps(&x).unwrap();
        let id = model.graph.node("layer3.2.relu").unwrap();
        let want = taps[id].get(1).unwrap().get(5).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let l = s.layers.iter().find(|l| l.name == "layer3.2.relu").unwrap();
        let (map, [lo, hi]) = l.map(1, 5).unwrap();
        for (&q, &v) in map.iter().zip(&want) {
            let back = lo + q as f32 / 255.0 * (hi - lo);
            assert!((back - v).abs() <= (hi - lo) / 255.0, "{back} vs {v}");
        }
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let bytes = snapshot("cifar-resnet20").to_bytes().unwrap();
        // A weights file is not a snapshot.
        let weights = Model::random(arch::find("cifar-resnet20").unwrap(), 0, &Device::Cpu).unwrap();
        let w = weights.weights.to_safetensors(None).unwrap();
        assert!(Snapshot::from_bytes(&w).unwrap_err().to_string().contains("no training snapshot"));
        // Truncated anywhere: an error, never a panic.
        for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
            assert!(Snapshot::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A header that claims a huge size allocates nothing.
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Snapshot::from_bytes(&huge).is_err());
    }

    #[test]
    fn the_layers_are_the_stem_and_each_stage_end() {
        let g = arch::find("resnet18").unwrap().graph();
        let names: Vec<_> = snapshot_layers(&g).into_iter().map(|i| g.nodes[i].name.clone()).collect();
        assert_eq!(names, ["maxpool", "layer1.1.relu", "layer2.1.relu", "layer3.1.relu", "layer4.1.relu"]);
        assert_eq!(pick_images([4, 4, 2, 4, 9]), [0, 2]);
    }
}
