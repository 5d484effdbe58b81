//! Pretrained weights on the Hugging Face hub, fetched only when a user asks: torchvision's
//! ImageNet ResNets as timm re-hosts them in safetensors (`timm/resnet50.tv_in1k`: torchvision's
//! `IMAGENET1K_V1` weights under torchvision's own tensor names). One table for the CLI's
//! `resnet weights fetch` and the page's "fetch pretrained weights" button.

use crate::arch::{find, ArchInfo};

/// The hub the CLI and the page fetch from unless told otherwise (`--hub`, `?hub=`).
pub const DEFAULT_HUB: &str = "https://huggingface.co";

/// One architecture's pretrained weights on the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HubWeights {
    /// The zoo entry the file fits.
    pub arch: &'static str,
    /// The hub repository, `owner/name`.
    pub repo: &'static str,
    /// The file in it.
    pub file: &'static str,
    pub revision: &'static str,
    /// Where the weights come from and under which licence.
    pub origin: &'static str,
    pub licence: &'static str,
}

const fn torchvision(arch: &'static str, repo: &'static str) -> HubWeights {
    HubWeights {
        arch,
        repo,
        file: "model.safetensors",
        revision: "main",
        origin: "torchvision's IMAGENET1K_V1 weights, re-hosted by timm",
        licence: "BSD-3-Clause",
    }
}

/// Every architecture with weights on the hub. timm's ResNet-50/101/152 are torchvision's,
/// which put the stride in the 3×3 conv: our v1.5 entries, not the `-v1` ones.
pub const HUB_WEIGHTS: [HubWeights; 5] = [
    torchvision("resnet18", "timm/resnet18.tv_in1k"),
    torchvision("resnet34", "timm/resnet34.tv_in1k"),
    torchvision("resnet50", "timm/resnet50.tv_in1k"),
    torchvision("resnet101", "timm/resnet101.tv_in1k"),
    torchvision("resnet152", "timm/resnet152.tv_in1k"),
];

/// The hub weights of `arch`, if it has any.
pub fn hub_weights(arch: &str) -> Option<&'static HubWeights> {
    HUB_WEIGHTS.iter().find(|w| w.arch == arch)
}

impl HubWeights {
    /// The file's address under `hub` (the hub's `resolve` layout).
    pub fn url(&self, hub: &str) -> String {
        format!("{}/{}/resolve/{}/{}", hub.trim_end_matches('/'), self.repo, self.revision, self.file)
    }

    /// A file name for the download: `resnet50.tv_in1k.safetensors`.
    pub fn file_name(&self) -> String {
        let name = self.repo.rsplit('/').next().unwrap_or(self.repo);
        format!("{name}.safetensors")
    }

    pub fn arch_info(&self) -> &'static ArchInfo {
        find(self.arch).expect("every hub entry names a zoo architecture")
    }

    /// The file's size, near enough for a button ("102 MB"): f32 parameters and running
    /// statistics (the safetensors header and the batch counters add a few kB). Counted once
    /// per entry: the page asks on every render.
    pub fn approx_bytes(&self) -> u64 {
        static SIZES: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
        let sizes = SIZES.get_or_init(|| HUB_WEIGHTS.iter().map(HubWeights::count_bytes).collect());
        HUB_WEIGHTS.iter().position(|w| w.repo == self.repo).map_or_else(|| self.count_bytes(), |i| sizes[i])
    }

    fn count_bytes(&self) -> u64 {
        let graph = self.arch_info().graph();
        let values: usize = graph
            .param_specs()
            .iter()
            .filter(|p| p.kind != crate::spec::ParamKind::BatchCount)
            .map(|p| p.elements())
            .sum();
        values as u64 * 4
    }
}

/// A hub base address as a user typed it: `http(s)://host[:port][/path]`, no query or fragment.
pub fn parse_hub(base: &str) -> Result<String, String> {
    let trimmed = base.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| format!("the hub address '{base}' must start with https:// or http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(format!("the hub address '{base}' is not of the form https://host[:port][/path]"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hub_entry_is_an_imagenet_resnet_of_the_zoo() {
        for w in &HUB_WEIGHTS {
            let a = w.arch_info();
            assert_eq!(a.dataset, crate::Dataset::ImageNet, "{}", w.arch);
            assert!(w.repo.starts_with("timm/") && w.repo.ends_with(".tv_in1k"), "{}", w.repo);
        }
        assert!(hub_weights("resnet50-v1").is_none() && hub_weights("vgg16").is_none());
    }

    #[test]
    fn urls_follow_the_hub_layout() {
        let w = hub_weights("resnet50").unwrap();
        assert_eq!(
            w.url(DEFAULT_HUB),
            "https://huggingface.co/timm/resnet50.tv_in1k/resolve/main/model.safetensors"
        );
        assert_eq!(
            w.url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/timm/resnet50.tv_in1k/resolve/main/model.safetensors"
        );
        assert_eq!(w.file_name(), "resnet50.tv_in1k.safetensors");
    }

    #[test]
    fn sizes_are_the_parameter_counts_in_f32() {
        // torchvision: resnet18 11,689,512 parameters; resnet50 25,557,032 (+ BN statistics).
        let mb = |a| hub_weights(a).unwrap().approx_bytes() as f64 / 1e6;
        assert!((46.0..48.0).contains(&mb("resnet18")), "{}", mb("resnet18"));
        assert!((102.0..103.0).contains(&mb("resnet50")), "{}", mb("resnet50"));
    }

    #[test]
    fn hub_addresses_are_checked() {
        assert_eq!(parse_hub("http://127.0.0.1:9/").unwrap(), "http://127.0.0.1:9");
        assert_eq!(parse_hub("https://hf-mirror.example/hub").unwrap(), "https://hf-mirror.example/hub");
        for bad in ["ftp://x", "huggingface.co", "https://", "https://a?b", "javascript:alert(1)"] {
            assert!(parse_hub(bad).is_err(), "{bad}");
        }
    }
}
