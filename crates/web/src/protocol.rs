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
    /// The inference itself (BatchNorm folded), in ms.
    pub inference_ms: f64,
    /// That inference's time per node, ms (index = node id; the nodes a fused conv computes,
    /// its BatchNorm, add and ReLU, take ~0).
    pub node_ms: Vec<f64>,
    /// The second, unfolded pass that keeps every layer's output, in ms.
    pub taps_ms: f64,
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
    pub data: Vec<f32>,
}

impl FeatureMap {
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.shape[1] * self.shape[2];
        &self.data[c * n..(c + 1) * n]
    }
}
