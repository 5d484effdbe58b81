//! What crosses the worker boundary: plain data only (bytes, shapes, f32 buffers), never UI
//! state. Every request carries a job number so the page can drop answers it no longer wants.

use resnet_core::explain::{BlockResponse, CamMethod, Erf, LayerResponse};
use serde::{Deserialize, Serialize};

/// The broadcast channel a weights file's `File` travels on to the worker, as a
/// [`WeightsFileMessage`]-shaped JS object `{ token, file }`.
pub const WEIGHTS_CHANNEL: &str = "resnet-explorer-weights-file";

/// The names of the fields of the object posted on [`WEIGHTS_CHANNEL`].
pub struct WeightsFileMessage;

impl WeightsFileMessage {
    pub const TOKEN: &'static str = "token";
    pub const FILE: &'static str = "file";
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Build `arch`: with safetensors bytes (pretrained) or deterministic random weights.
    Load { job: u32, arch: String, weights: Option<Vec<u8>>, seed: u64 },
    /// Load the user's weights file (PyTorch `.pth`/`.pt` or safetensors) as the architecture
    /// its tensors fit. The file is not in this message: the page posts its `File` (a handle;
    /// no bytes are copied) on [`WEIGHTS_CHANNEL`] with the same `token`, and the worker reads
    /// the bytes once, straight into its own memory.
    LoadFile { job: u32, token: u64 },
    /// Classify decoded pixels (RGBA, row-major) and keep every layer's output for `Maps`.
    Run { job: u32, width: u32, height: u32, rgba: Vec<u8> },
    /// Some layers' outputs of the last run: only what the page shows, never all taps.
    Maps { job: u32, nodes: Vec<usize> },
    /// The class activation map of `layer` on the last run's image, for `class` (default: the
    /// top-1); the gradient is computed in the worker.
    Cam { job: u32, layer: usize, class: Option<usize>, method: CamMethod },
    /// The effective receptive field of one unit of `layer` on the last run's image.
    Erf { job: u32, layer: usize, channel: usize, y: usize, x: usize },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    Loaded {
        job: u32,
        filters: Option<FilterBank>,
        ms: f64,
        /// The worker's WebAssembly memory now, bytes (it never shrinks).
        memory: f64,
    },
    /// `LoadFile` `job`'s file has not arrived on the channel: post it again (a worker that was
    /// still starting when it was posted did not hear it).
    FileLate {
        job: u32,
    },
    /// Reading a weights file: `done` of `total` bytes.
    Reading {
        job: u32,
        done: f64,
        total: f64,
    },
    /// The user's weights file loaded as `arch` (the CIFAR ResNets: with option-B shortcuts
    /// where `shortcut_b`); `note` where the tensors fit more than one architecture.
    LoadedFile {
        job: u32,
        arch: String,
        shortcut_b: bool,
        note: Option<String>,
        filters: Option<FilterBank>,
        ms: f64,
        /// As in `Loaded`.
        memory: f64,
    },
    Ran(RunResult),
    Maps {
        job: u32,
        maps: Vec<FeatureMap>,
    },
    /// A map over [`MAP_PART`] values comes in parts, in order: decoding VGG's 12.8 MB maps
    /// in one message held the page's main thread 60–165 ms.
    MapPart {
        job: u32,
        node: usize,
        shape: [usize; 3],
        offset: usize,
        #[serde(with = "f32_bytes")]
        values: Vec<f32>,
    },
    Cam {
        job: u32,
        cam: CamMap,
    },
    /// `ms`: the backward's time in the worker.
    Erf {
        job: u32,
        erf: Erf,
        ms: f64,
    },
    Error {
        job: u32,
        message: String,
    },
}

/// A class activation map at its layer's resolution, `height × width`, non-negative.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CamMap {
    pub layer: usize,
    pub class: usize,
    pub method: CamMethod,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
    /// The backward's time in the worker, ms.
    pub ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub job: u32,
    /// The crop the network sees, RGB8, `side`×`side`.
    pub view: Vec<u8>,
    pub side: u32,
    pub logits: Vec<f32>,
    pub probs: Vec<f32>,
    /// The inference itself (BatchNorm folded), in ms: the median of `inference_runs`.
    pub inference_ms: f64,
    /// Every timed run of it on this image, ms (a fast net runs a few times).
    pub inference_runs: Vec<f64>,
    /// That inference's time per node, ms (index = node id; the nodes a fused conv computes,
    /// its BatchNorm, add and ReLU, take ~0).
    pub node_ms: Vec<f64>,
    /// The second, unfolded pass that keeps every layer's output, in ms.
    pub taps_ms: f64,
    /// The threads those passes ran on (more than one in the browser's threaded build).
    pub threads: u32,
    /// The vector instructions they ran with ("SIMD128", or "relaxed SIMD" in the build the
    /// page loads where the browser has it).
    pub instructions: String,
    /// The residual stream on this image, per block with a residual branch.
    pub blocks: Vec<BlockResponse>,
    /// The std of every 3×3 layer's response (Fig. 7).
    pub responses: Vec<LayerResponse>,
    /// The worker's WebAssembly memory after this run, bytes (0 outside a worker).
    pub memory: f64,
}

/// The first conv layer's weights, `out × in × k × k`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FilterBank {
    pub node: usize,
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

/// One layer's output for one image, `C × H × W` (vectors are `C × 1 × 1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeatureMap {
    pub node: usize,
    pub shape: [usize; 3],
    #[serde(with = "f32_bytes")]
    pub data: Vec<f32>,
}

/// The most values one message carries (4 MB).
pub const MAP_PART: usize = 1 << 20;

/// A map to send: itself, or its parts of at most `part` values.
pub fn map_messages(job: u32, map: FeatureMap, part: usize) -> Vec<Response> {
    if map.data.len() <= part {
        return vec![Response::Maps { job, maps: vec![map] }];
    }
    let (node, shape) = (map.node, map.shape);
    map.data
        .chunks(part)
        .enumerate()
        .map(|(i, values)| Response::MapPart { job, node, shape, offset: i * part, values: values.to_vec() })
        .collect()
}

/// A map put back together from its parts (see [`map_messages`]).
#[derive(Debug, Default)]
pub struct MapParts {
    node: usize,
    shape: [usize; 3],
    data: Vec<f32>,
}

impl MapParts {
    /// Adds a part; the whole map once it is complete. A part out of order (or of another map)
    /// starts over from it, and only a first part starts a map.
    pub fn add(
        &mut self,
        node: usize,
        shape: [usize; 3],
        offset: usize,
        values: Vec<f32>,
    ) -> Option<FeatureMap> {
        let total = shape.iter().product::<usize>();
        let continues = node == self.node && shape == self.shape && offset == self.data.len() && offset > 0;
        if !continues {
            self.data = Vec::new();
            if offset != 0 || values.len() > total {
                return None;
            }
            (self.node, self.shape) = (node, shape);
            self.data.reserve_exact(total);
        }
        if self.data.len() + values.len() > total {
            self.data = Vec::new();
            return None;
        }
        self.data.extend_from_slice(&values);
        (self.data.len() == total).then(|| FeatureMap { node, shape, data: std::mem::take(&mut self.data) })
    }
}

/// The values the page keeps in maps beyond those on screen (64 MB of f32): stepping through
/// VGG-16 used to keep every layer's (60 M values), and each new map grew the page's memory
/// (~20 ms a step in fresh pages) where a freed one is now reused.
pub const MAP_BUDGET: usize = 16 << 20;

/// Drops the oldest maps (`order`: oldest first) other than the `wanted` ones until the values
/// held (`len` of each) are within `budget`; `order` keeps the nodes still held.
pub fn evict<M>(
    maps: &mut std::collections::HashMap<usize, M>,
    order: &mut Vec<usize>,
    wanted: &[usize],
    budget: usize,
    len: impl Fn(&M) -> usize,
) {
    order.retain(|n| maps.contains_key(n));
    let mut held: usize = maps.values().map(&len).sum();
    order.retain(|n| {
        if held <= budget || wanted.contains(n) {
            return true;
        }
        held -= maps.remove(n).as_ref().map_or(0, &len);
        false
    });
}

/// A `Vec<f32>` as one run of little-endian bytes: serde's default writes and reads it value by
/// value, and decoding a VGG layer's 3.2 M values that way held the page's main thread ~100 ms.
mod f32_bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        match cfg!(target_endian = "little") {
            true => s.serialize_bytes(bytemuck::cast_slice(values)),
            false => s.serialize_bytes(&values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()),
        }
    }

    /// Read in place from the message (no copy of the bytes first), then one copy into floats.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        struct Floats;
        impl Visitor<'_> for Floats {
            type Value = Vec<f32>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("f32 values as little-endian bytes")
            }
            fn visit_bytes<E: Error>(self, b: &[u8]) -> Result<Vec<f32>, E> {
                if !b.len().is_multiple_of(4) {
                    return Err(E::custom(format!("{} bytes are not a whole number of f32", b.len())));
                }
                let mut values = vec![0f32; b.len() / 4];
                bytemuck::cast_slice_mut::<f32, u8>(&mut values).copy_from_slice(b);
                if cfg!(target_endian = "big") {
                    values.iter_mut().for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
                }
                Ok(values)
            }
        }
        d.deserialize_bytes(Floats)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::FeatureMap;

    #[test]
    fn a_large_map_comes_in_parts_and_is_put_back_together() {
        use super::{map_messages, MapParts, Response};
        let map = FeatureMap { node: 3, shape: [2, 3, 4], data: (0..24).map(|i| i as f32).collect() };
        let messages = map_messages(9, map.clone(), 10);
        assert_eq!(messages.len(), 3, "24 values in parts of 10");
        let mut parts = MapParts::default();
        let mut whole = None;
        for m in messages {
            let bytes = bincode::serialize(&m).unwrap();
            let Response::MapPart { job: 9, node, shape, offset, values } =
                bincode::deserialize(&bytes).unwrap()
            else {
                panic!("a part")
            };
            assert!(whole.is_none(), "complete only after the last part");
            whole = parts.add(node, shape, offset, values);
        }
        assert_eq!(whole.map(|m| m.data), Some(map.data.clone()));
        // A small map is one message; a part out of order gives nothing and starts nothing.
        assert!(
            matches!(&map_messages(1, map.clone(), 24)[..], [Response::Maps { job: 1, maps }] if maps[0].data == map.data)
        );
        assert!(parts.add(3, [2, 3, 4], 10, vec![0.0; 10]).is_none());
        assert!(parts.add(3, [2, 3, 4], 0, vec![0.0; 10]).is_none());
        assert!(parts.add(3, [2, 3, 4], 20, vec![0.0; 4]).is_none(), "a missing part: nothing");
        assert!(parts.add(3, [2, 3, 4], 0, vec![0.0; 30]).is_none(), "more values than the shape holds");
    }

    #[test]
    fn the_page_keeps_the_maps_shown_and_the_latest_within_its_budget() {
        use std::collections::HashMap;
        let mut maps: HashMap<usize, usize> = (1..=5).map(|n| (n, 10)).collect();
        let mut order = vec![1, 2, 3, 4, 5, 9];
        super::evict(&mut maps, &mut order, &[1, 4], 30, |&v| v);
        // 50 values: the oldest not wanted go first (2, then 3); 1 and 4 are on screen.
        assert_eq!(order, vec![1, 4, 5], "a node not held leaves the order too");
        let mut kept: Vec<_> = maps.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 4, 5]);
        // The wanted maps stay whatever their size.
        super::evict(&mut maps, &mut order, &[1, 4, 5], 0, |&v| v);
        assert_eq!(maps.len(), 3);
        super::evict(&mut maps, &mut order, &[], 10, |&v| v);
        assert_eq!(order, vec![5], "the latest that fits");
    }

    #[test]
    fn a_map_crosses_the_worker_boundary_unchanged() {
        let m = FeatureMap { node: 7, shape: [2, 1, 2], data: vec![1.5, -0.0, f32::MAX, f32::NAN] };
        let bytes = bincode::serialize(&m).unwrap();
        // node, shape, the byte count, then the values' bytes as they are.
        assert_eq!(bytes.len(), 8 + 24 + 8 + 16);
        assert_eq!(&bytes[40..44], &1.5f32.to_le_bytes());
        let back: FeatureMap = bincode::deserialize(&bytes).unwrap();
        assert_eq!((back.node, back.shape), (7, [2, 1, 2]));
        assert_eq!(&back.data[..3], &m.data[..3]);
        assert!(back.data[3].is_nan());
        let mut cut = bytes.clone();
        cut.truncate(cut.len() - 1);
        assert!(bincode::deserialize::<FeatureMap>(&cut).is_err());
    }
}

impl FeatureMap {
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.shape[1] * self.shape[2];
        &self.data[c * n..(c + 1) * n]
    }
}
