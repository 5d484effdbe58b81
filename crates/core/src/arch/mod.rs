//! The model zoo: every architecture by name, with its input and preprocessing.

pub mod alexnet;
pub mod cifar_resnet;
pub mod googlenet;
pub mod lenet;
pub mod resnet;
pub mod vgg;

pub use cifar_resnet::ShortcutOption;

use crate::preprocess::Preprocess;
use crate::spec::Graph;
use resnet::{BlockType, ResNetConfig};

/// What the network was made for: decides the labels and the preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Dataset {
    ImageNet,
    Cifar10,
    /// 32×32 grey digits (LeNet-5).
    Digits,
}

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// ImageNet-1k's 1,000 class names, one a line, in torchvision's order (class 0 = tench).
pub const IMAGENET1K_TXT: &str = include_str!("../../assets/imagenet1k.txt");

/// [`IMAGENET1K_TXT`] as names.
pub fn imagenet_classes() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| IMAGENET1K_TXT.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

impl Dataset {
    /// The class names, in the networks' output order.
    pub fn labels(self) -> Option<&'static [&'static str]> {
        match self {
            Dataset::Cifar10 => Some(&CIFAR10_CLASSES),
            Dataset::Digits => Some(&DIGITS),
            Dataset::ImageNet => Some(imagenet_classes()),
        }
    }

    pub fn preprocess(self, arch_input: usize) -> Preprocess {
        match self {
            Dataset::ImageNet => Preprocess {
                resize: arch_input * 256 / 224,
                crop: arch_input,
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
                grey: false,
            },
            // The shared CIFAR weights were trained with ImageNet's statistics.
            Dataset::Cifar10 => Preprocess {
                resize: 32,
                crop: 32,
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
                grey: false,
            },
            Dataset::Digits => {
                Preprocess { resize: 32, crop: 32, mean: [0.1307; 3], std: [0.3081; 3], grey: true }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    ResNet,
    Plain,
    CifarResNet,
    CifarPlain,
    Vgg,
    AlexNet,
    GoogLeNet,
    LeNet,
}

/// One entry of the zoo.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ArchInfo {
    pub name: &'static str,
    pub family: Family,
    pub dataset: Dataset,
    pub description: &'static str,
    #[serde(skip)]
    build: fn(Option<ShortcutOption>) -> Graph,
}

impl ArchInfo {
    /// The network with its default shortcuts (option A for CIFAR ResNets).
    pub fn graph(&self) -> Graph {
        (self.build)(None)
    }

    /// CIFAR ResNets: choose the shortcut option; other families ignore it.
    pub fn graph_with(&self, shortcut: ShortcutOption) -> Graph {
        (self.build)(Some(shortcut))
    }

    pub fn preprocess(&self) -> Preprocess {
        self.dataset.preprocess(self.graph().input.h)
    }

    pub fn has_shortcut_option(&self) -> bool {
        self.family == Family::CifarResNet
    }
}

fn imagenet_resnet(block: BlockType, layers: [usize; 4], residual: bool) -> Graph {
    resnet::resnet(&ResNetConfig { block, layers, residual, num_classes: 1000 })
}

const BASIC: BlockType = BlockType::Basic;
const V15: BlockType = BlockType::Bottleneck { stride_on_3x3: true };
const V1: BlockType = BlockType::Bottleneck { stride_on_3x3: false };

macro_rules! arch {
    ($name:literal, $family:ident, $dataset:ident, $desc:literal, $build:expr) => {
        ArchInfo {
            name: $name,
            family: Family::$family,
            dataset: Dataset::$dataset,
            description: $desc,
            build: $build,
        }
    };
}

/// Every architecture, in the order of the story: LeNet to ResNet.
pub static ZOO: &[ArchInfo] = &[
    arch!("lenet5", LeNet, Digits, "LeNet-5 (1998): tanh convs and average-pool subsampling", |_| {
        lenet::lenet5()
    }),
    arch!("alexnet", AlexNet, ImageNet, "AlexNet (2012), single tower, 227×227 input", |_| alexnet::alexnet(
    )),
    arch!("zfnet", AlexNet, ImageNet, "ZFNet (2013): AlexNet with a 7×7/2 first layer", |_| alexnet::zfnet(
    )),
    arch!("vgg11", Vgg, ImageNet, "VGG-11 (configuration A)", |_| vgg::vgg(&vgg::VGG11)),
    arch!("vgg13", Vgg, ImageNet, "VGG-13 (configuration B)", |_| vgg::vgg(&vgg::VGG13)),
    arch!("vgg16", Vgg, ImageNet, "VGG-16 (configuration D)", |_| vgg::vgg(&vgg::VGG16)),
    arch!("vgg19", Vgg, ImageNet, "VGG-19 (configuration E)", |_| vgg::vgg(&vgg::VGG19)),
    arch!("cifar-vgg19", Vgg, Cifar10, "VGG-19 with BatchNorm for 32×32 CIFAR-10", |_| vgg::cifar_vgg19()),
    arch!("googlenet", GoogLeNet, ImageNet, "GoogLeNet / Inception v1 (2014), torchvision layout", |_| {
        googlenet::googlenet()
    }),
    arch!("plain18", Plain, ImageNet, "18-layer plain net (ResNet-18 without shortcuts)", |_| {
        imagenet_resnet(BASIC, [2, 2, 2, 2], false)
    }),
    arch!("plain34", Plain, ImageNet, "34-layer plain net (ResNet-34 without shortcuts)", |_| {
        imagenet_resnet(BASIC, [3, 4, 6, 3], false)
    }),
    arch!("resnet18", ResNet, ImageNet, "ResNet-18: BasicBlocks [2,2,2,2]", |_| imagenet_resnet(
        BASIC,
        [2, 2, 2, 2],
        true
    )),
    arch!("resnet34", ResNet, ImageNet, "ResNet-34: BasicBlocks [3,4,6,3]", |_| imagenet_resnet(
        BASIC,
        [3, 4, 6, 3],
        true
    )),
    arch!("resnet50", ResNet, ImageNet, "ResNet-50 v1.5: Bottlenecks [3,4,6,3], stride on the 3×3", |_| {
        imagenet_resnet(V15, [3, 4, 6, 3], true)
    }),
    arch!("resnet101", ResNet, ImageNet, "ResNet-101 v1.5: Bottlenecks [3,4,23,3]", |_| imagenet_resnet(
        V15,
        [3, 4, 23, 3],
        true
    )),
    arch!("resnet152", ResNet, ImageNet, "ResNet-152 v1.5: Bottlenecks [3,8,36,3]", |_| imagenet_resnet(
        V15,
        [3, 8, 36, 3],
        true
    )),
    arch!("resnet50-v1", ResNet, ImageNet, "ResNet-50 as in the paper: stride on the first 1×1", |_| {
        imagenet_resnet(V1, [3, 4, 6, 3], true)
    }),
    arch!("resnet101-v1", ResNet, ImageNet, "ResNet-101 as in the paper", |_| imagenet_resnet(
        V1,
        [3, 4, 23, 3],
        true
    )),
    arch!("resnet152-v1", ResNet, ImageNet, "ResNet-152 as in the paper", |_| imagenet_resnet(
        V1,
        [3, 8, 36, 3],
        true
    )),
    arch!("cifar-plain20", CifarPlain, Cifar10, "20-layer plain CIFAR net (§4.2)", |_| {
        cifar_resnet::cifar_resnet(3, None)
    }),
    arch!("cifar-plain32", CifarPlain, Cifar10, "32-layer plain CIFAR net", |_| cifar_resnet::cifar_resnet(
        5, None
    )),
    arch!("cifar-plain44", CifarPlain, Cifar10, "44-layer plain CIFAR net", |_| cifar_resnet::cifar_resnet(
        7, None
    )),
    arch!("cifar-plain56", CifarPlain, Cifar10, "56-layer plain CIFAR net", |_| cifar_resnet::cifar_resnet(
        9, None
    )),
    arch!("cifar-resnet20", CifarResNet, Cifar10, "ResNet-20 for CIFAR-10 (§4.2, n = 3)", |s| {
        cifar_resnet::cifar_resnet(3, Some(s.unwrap_or_default()))
    }),
    arch!("cifar-resnet32", CifarResNet, Cifar10, "ResNet-32 for CIFAR-10 (n = 5)", |s| {
        cifar_resnet::cifar_resnet(5, Some(s.unwrap_or_default()))
    }),
    arch!("cifar-resnet44", CifarResNet, Cifar10, "ResNet-44 for CIFAR-10 (n = 7)", |s| {
        cifar_resnet::cifar_resnet(7, Some(s.unwrap_or_default()))
    }),
    arch!("cifar-resnet56", CifarResNet, Cifar10, "ResNet-56 for CIFAR-10 (n = 9)", |s| {
        cifar_resnet::cifar_resnet(9, Some(s.unwrap_or_default()))
    }),
    arch!("cifar-resnet110", CifarResNet, Cifar10, "ResNet-110 for CIFAR-10 (n = 18)", |s| {
        cifar_resnet::cifar_resnet(18, Some(s.unwrap_or_default()))
    }),
];

#[derive(Debug, thiserror::Error)]
#[error("unknown architecture '{0}'; known: {known}", known = ZOO.iter().map(|a| a.name).collect::<Vec<_>>().join(", "))]
pub struct UnknownArch(pub String);

pub fn find(name: &str) -> Result<&'static ArchInfo, UnknownArch> {
    ZOO.iter().find(|a| a.name == name).ok_or_else(|| UnknownArch(name.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn imagenet_has_its_thousand_names() {
        let names = super::Dataset::ImageNet.labels().expect("built in");
        assert_eq!(names.len(), 1000);
        assert_eq!((names[0], names[207], names[999]), ("tench", "golden retriever", "toilet tissue"));
    }
}
