//! resnet-core: ResNet and the CNNs before it (LeNet, AlexNet, ZFNet, VGG, GoogLeNet) in
//! Candle. One description per network ([`spec::Graph`]) drives the forward pass, the layer
//! table and the diagram; weights use PyTorch's names.

pub mod arch;
pub mod explain;
pub mod format;
pub mod hub;
pub mod image_file;
pub mod kernels;
pub mod manifest;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod profile;
pub mod pth;
pub mod recognise;
pub mod rng;
pub mod spec;
pub mod tensors;
pub mod train;
pub mod weights;

pub use arch::{find as find_arch, ArchInfo, Dataset, ShortcutOption, ZOO};
pub use model::{Loaded, Mode, Model, RunOptions, WeightsSource};
pub use preprocess::{Image, Preprocess};
pub use spec::{Graph, LayerRow, Shape, Summary};
pub use tensors::{Format, TensorFile};
pub use weights::{Weights, WeightsError};
