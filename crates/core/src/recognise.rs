//! Which architecture of the zoo a weights file is for, from its tensors' names and shapes.

use std::collections::BTreeMap;

use crate::arch::{ArchInfo, Family, ShortcutOption, ZOO};
use crate::spec::{Graph, ParamSpec};
use crate::tensors::TensorFile;
use crate::weights::{Mismatch, WeightsError};

/// The architecture a file's tensors fit.
#[derive(Debug)]
pub struct Recognised {
    pub arch: &'static ArchInfo,
    /// CIFAR ResNets: the shortcut option the tensors show (B has projection convs).
    pub shortcut: Option<ShortcutOption>,
    pub graph: Graph,
    /// Where the tensors fit more than one architecture: which was chosen and how to pick
    /// another.
    pub note: Option<String>,
}

impl Recognised {
    /// The name with the shortcut option where it is not the default ("cifar-resnet20 (B)").
    pub fn label(&self) -> String {
        match self.shortcut {
            Some(ShortcutOption::B) => format!("{} (shortcut option B)", self.arch.name),
            _ => self.arch.name.to_string(),
        }
    }
}

/// Every graph the zoo builds: each architecture, and the CIFAR ResNets with option B too.
fn candidates() -> Vec<(&'static ArchInfo, Option<ShortcutOption>, Graph)> {
    let mut out = vec![];
    for arch in ZOO {
        if arch.has_shortcut_option() {
            out.push((arch, Some(ShortcutOption::A), arch.graph_with(ShortcutOption::A)));
            out.push((arch, Some(ShortcutOption::B), arch.graph_with(ShortcutOption::B)));
        } else {
            out.push((arch, None, arch.graph()));
        }
    }
    out
}

/// Among architectures with the same tensors: residual nets before plain ones (a plain CIFAR
/// net's tensors are a ResNet's with option A, whose shortcuts have none), then the zoo's order
/// (ResNet v1.5 before v1: torchvision's layout).
fn preference(arch: &ArchInfo) -> (u8, usize) {
    let plain = matches!(arch.family, Family::Plain | Family::CifarPlain) as u8;
    (plain, ZOO.iter().position(|a| a.name == arch.name).unwrap_or(usize::MAX))
}

/// Why the tensors cannot tell `chosen` from `other`.
fn why(chosen: &ArchInfo, other: &ArchInfo) -> &'static str {
    match (chosen.family, other.family) {
        (Family::ResNet, Family::ResNet) => {
            "v1 and v1.5 differ only in which conv of a downsampling bottleneck has stride 2"
        }
        (Family::CifarResNet, Family::CifarPlain) => {
            "option-A shortcuts have no tensors, so the plain net has the same ones"
        }
        _ => "they have the same tensor names and shapes",
    }
}

/// The one architecture whose tensors are exactly the file's (names and shapes; an absent
/// `num_batches_tracked` is fine). Where several fit, the preferred one with a note naming the
/// others; where none does, [`WeightsError::Unrecognised`] with the closest one's differences.
pub fn recognise(file: &TensorFile) -> Result<Recognised, WeightsError> {
    if file.tensors.is_empty() {
        return Err(WeightsError::Format("the file holds no tensors".into()));
    }
    let mut exact = vec![];
    let mut closest: Option<Mismatch> = None;
    for (arch, shortcut, graph) in candidates() {
        let expected: BTreeMap<String, ParamSpec> =
            graph.param_specs().into_iter().map(|p| (p.name.clone(), p)).collect();
        let m = Mismatch::between(arch.name, &expected, file.shapes());
        if m.is_empty() {
            exact.push((arch, shortcut, graph));
        } else if closest.as_ref().is_none_or(|c| m.count() < c.count()) {
            closest = Some(m);
        }
    }
    exact.sort_by_key(|(a, _, _)| preference(a));
    let mut exact = exact.into_iter();
    let Some((arch, shortcut, graph)) = exact.next() else {
        return Err(WeightsError::Unrecognised(closest.expect("the zoo is not empty")));
    };
    let others: Vec<&ArchInfo> = exact.map(|(a, _, _)| a).collect();
    let note = (!others.is_empty()).then(|| {
        let names: Vec<&str> = others.iter().map(|a| a.name).collect();
        format!(
            "the tensors fit {} and {} ({}); chose {}, pass --arch {} for the other",
            arch.name,
            names.join(", "),
            why(arch, others[0]),
            arch.name,
            names[0]
        )
    });
    Ok(Recognised { arch, shortcut, graph, note })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::TensorFile;
    use crate::Model;
    use candle_core::Device;

    fn file_of(arch: &'static ArchInfo, graph: Graph) -> Vec<u8> {
        Model::load_graph(arch, graph, crate::WeightsSource::Random(1), &Device::Cpu)
            .expect("random")
            .weights
            .to_safetensors(None)
            .expect("serialises")
    }

    /// Every zoo entry's own tensors are recognised as it, or as the architecture it cannot be
    /// told from, with a note.
    #[test]
    fn every_architecture_is_recognised() {
        for (arch, shortcut, graph) in candidates() {
            if graph.param_specs().iter().map(|p| p.elements()).sum::<usize>() > 30_000_000 {
                continue; // the VGGs and AlexNet: same code path, 500 MB of random weights
            }
            let bytes = file_of(arch, graph);
            let file = TensorFile::parse(&bytes).unwrap();
            let r = recognise(&file).unwrap();
            let same = r.arch.name == arch.name && r.shortcut == shortcut;
            match arch.name {
                "resnet50-v1" | "resnet101-v1" | "resnet152-v1" => {
                    assert_eq!(r.arch.name, arch.name.trim_end_matches("-v1"));
                    let note = r.note.expect("a note");
                    assert!(note.contains(&format!("--arch {}", arch.name)), "{note}");
                }
                n if n.starts_with("cifar-plain") => {
                    assert_eq!(r.arch.name, n.replace("plain", "resnet"));
                    assert!(r.note.expect("a note").contains(&format!("--arch {n}")));
                }
                "resnet50" | "resnet101" | "resnet152" => {
                    assert!(same);
                    assert!(r.note.expect("a note").contains("-v1"));
                }
                _ => {
                    assert!(same, "{} recognised as {}", arch.name, r.label());
                    if !arch.name.starts_with("cifar-resnet") || shortcut == Some(ShortcutOption::B) {
                        assert!(r.note.is_none(), "{}: {:?}", arch.name, r.note);
                    }
                }
            }
        }
    }

    #[test]
    fn a_file_that_fits_nothing_names_the_closest() {
        let arch = crate::find_arch("resnet18").unwrap();
        let mut model = Model::random(arch, 1, &Device::Cpu).unwrap();
        let fc = candle_core::Tensor::zeros((10, 512), candle_core::DType::F32, &Device::Cpu).unwrap();
        model.weights.insert("fc.weight".into(), fc);
        let bytes = model.weights.to_safetensors(None).unwrap();
        let err = recognise(&TensorFile::parse(&bytes).unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("closest is resnet18 (0 missing, 0 unexpected, 1 with the wrong shape)"),
            "{msg}"
        );
        assert!(msg.contains("wrong shape fc.weight: expected [1000, 512], found [10, 512]"), "{msg}");
    }
}
